r"""The model function every optimizer calls, ``predict_fn(params, inputs) -> outputs``: its call signature checked
at construction, and the model a branch of ``optax.multi_transform`` / ``optax.masked`` sees.

Masked branches. ``optax.masked`` (and ``multi_transform`` / ``partition``, built on it) hands its inner
transformation the params and updates with every leaf or subtree outside the branch replaced by an
``optax.MaskedNode`` (an empty pytree node: it has no leaves), and the extra arguments (``batch=``) unchanged
(unless ``mask_compatible_extra_args=True``). A curvature needs the model's outputs, hence the other parameters'
values as well: the transforms take them as ``update(..., model_params=params)`` (the whole model's parameters,
as ``predict_fn`` takes them) and K-FAC, whose ``init`` traces the model to find its layers, as
``example_params=`` at construction (arrays or shape structs). With ``theta_b`` the branch's leaves and
``theta_o`` the others, the branch's model is

    f_b(theta_b, x) = predict_fn(theta_b merged into theta_o, x),

so its curvature (GGN, Fisher, K-FAC factors) is over ``theta_b`` only, ``theta_o`` held at this step's values,
exactly the curvature of a model that closes over ``theta_o`` as constants.
"""

from __future__ import annotations

import inspect
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import PyTree

_FIX = ("with equinox, split the model and close over its non-parameter part: params, static = "
        "eqx.partition(model, eqx.is_inexact_array); predict_fn = lambda params, inputs: "
        "jax.vmap(eqx.combine(params, static))(inputs) (flax linen: model.apply; flax nnx: nnx.merge, see the README)")


def check_predict_fn(predict_fn: Callable) -> None:
    """``predict_fn`` must be callable as ``predict_fn(params, inputs)``; a model passed in its place (an equinox,
    flax linen or nnx Module, whose call takes the inputs only) is a TypeError naming the fix."""
    if not callable(predict_fn):
        raise ValueError("predict_fn must be a callable predict_fn(params, inputs) -> outputs")
    try:
        signature = inspect.signature(predict_fn)
    except (TypeError, ValueError):  # no signature to read (a builtin or C extension): checked when first called
        return
    try:
        signature.bind(None, None)
    except TypeError:
        plain = signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                              for p in signature.parameters.values()],
                                  return_annotation=inspect.Signature.empty)
        what = (f"an equinox Module ({type(predict_fn).__name__}), a model called as {plain}"
                if isinstance(predict_fn, eqx.Module) else f"a {type(predict_fn).__name__} called as {plain}")
        raise TypeError(f"predict_fn must be a function predict_fn(params, inputs) -> outputs over a batch; got "
                        f"{what}. Fix: {_FIX}") from None


def _is_masked(node) -> bool:
    return isinstance(node, optax.MaskedNode)


def _has_masked(tree: PyTree) -> bool:
    return any(_is_masked(node) for node in jax.tree_util.tree_leaves(tree, is_leaf=_is_masked))


def _concrete(leaf):
    """A shape struct as zeros (created inside the trace: no memory), an array as it is."""
    return jnp.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf


def branch_predict(name: str, predict_fn: Callable, params: PyTree, model_params: PyTree | None,
                   how_to_give: str) -> Callable:
    """The model of the branch whose params are ``params``: ``predict_fn`` itself when ``params`` hold no
    ``optax.MaskedNode``, else ``f_b`` of the module docstring with the other parameters taken from
    ``model_params`` (arrays, or shape structs for a trace). ``how_to_give`` says where ``model_params`` comes from
    (``update``'s extra argument, or ``example_params=`` at construction) for the error when it is missing."""
    if not _has_masked(params):
        return predict_fn
    if model_params is None:
        raise ValueError(f"{name}: params hold optax.MaskedNode leaves: this transform is a branch of "
                         "optax.multi_transform / optax.masked, which hides the other branches' parameters, and the "
                         f"model needs them to compute a curvature: {how_to_give}")
    if _has_masked(model_params):
        raise ValueError(f"{name}: model_params hold optax.MaskedNode leaves too: they must be the whole model's "
                         "parameters (leave optax.multi_transform's mask_compatible_extra_args=False, the default)")
    try:
        jax.tree_util.tree_map(lambda *_: None, params, model_params, is_leaf=_is_masked)
    except ValueError as error:
        raise ValueError(f"{name}: model_params must be the whole model's parameters, with the structure of params "
                         f"(the branch's, masked): {error}") from None

    def predict(branch_params, inputs):
        merged = jax.tree_util.tree_map(
            lambda mine, whole: jax.tree_util.tree_map(_concrete, whole) if _is_masked(mine) else mine,
            branch_params, model_params, is_leaf=_is_masked)
        return predict_fn(merged, inputs)

    return predict
