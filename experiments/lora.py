"""LoRA adapters (Hu et al. 2021) for equinox models, as in Hugging Face peft, and the trainable/frozen split.

A wrapped projection computes ``W x + b + (alpha / r) B A dropout(x)`` with the pretrained ``W, b`` frozen,
``A`` (r x in) drawn like peft's ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(in), 1/sqrt(in))``, and
``B`` (out x r) zero, so a freshly adapted model computes exactly what the original did.

Dropout and keys: every ``__call__`` in :mod:`experiments.encoder` and here takes an optional keyword ``key``.
Without a key the forward pass is deterministic (inference / evaluation, curvature estimates); with a key the
adapter inputs are dropped with probability ``dropout`` (training). The batched ``predict_fn`` splits its key
across examples, the encoder across layers and projections, a projection across tokens, so one key per step
(``jax.random.fold_in(run_key, step)``) is all a trainer passes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

ATTENTION_PROJECTIONS = ("query", "key", "value", "output")


class LoRALinear(eqx.Module):
    """A frozen ``eqx.nn.Linear`` plus the low-rank update ``(alpha / r) B A``; a drop-in for the linear."""

    base: eqx.nn.Linear
    lora_a: Float[Array, "r n_in"]
    lora_b: Float[Array, "n_out r"]
    scale: float = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(self, base: eqx.nn.Linear, *, rank: int, alpha: float, dropout: float, key: PRNGKeyArray):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0 <= dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        n_out, n_in = base.weight.shape
        bound = 1 / n_in**0.5
        self.base = base
        self.lora_a = jr.uniform(key, (rank, n_in), base.weight.dtype, -bound, bound)
        self.lora_b = jnp.zeros((n_out, rank), base.weight.dtype)
        self.scale = alpha / rank
        self.dropout = dropout

    def __call__(self, x: Float[Array, " n_in"], *, key: PRNGKeyArray | None = None) -> Float[Array, " n_out"]:
        """One input vector; ``key`` switches on adapter-input dropout (None: deterministic)."""
        h = x
        if key is not None and self.dropout > 0:
            keep = jr.bernoulli(key, 1 - self.dropout, x.shape)
            h = jnp.where(keep, x / (1 - self.dropout), 0)
        return self.base(x) + self.scale * (self.lora_b @ (self.lora_a @ h))


def _is_linear(node) -> bool:
    return isinstance(node, (eqx.nn.Linear, LoRALinear))


def _linear_paths(model: PyTree) -> list[tuple[str, eqx.nn.Linear]]:
    """``(path, linear)`` of every plain ``eqx.nn.Linear`` in ``model`` (paths like ``.encoder.layers[0].ffn_in``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(model, is_leaf=_is_linear)
    return [(jax.tree_util.keystr(path), node) for path, node in flat if isinstance(node, eqx.nn.Linear)]


def add_lora(
    model: PyTree,
    *,
    key: PRNGKeyArray,
    rank: int = 2,
    alpha: float = 32.0,
    dropout: float = 0.1,
    targets: Sequence[str] | Callable[[str], bool] = ATTENTION_PROJECTIONS,
) -> PyTree:
    """Wrap the selected ``eqx.nn.Linear`` layers of ``model`` in :class:`LoRALinear`.

    Args:
        model: e.g. a :class:`experiments.encoder.QAModel`.
        key: PRNG key for the ``A`` matrices (split per adapter).
        rank, alpha, dropout: the adapter's ``r``, scaling numerator (scale ``alpha / r``) and input dropout.
        targets: names of attention projections (the default wraps ``query``, ``key``, ``value`` and ``output``
            of every :class:`experiments.encoder.SelfAttention`), or a predicate on a linear's path
            (``".encoder.layers[0].attention.query"``).

    Raises ValueError when nothing matches.
    """
    if callable(targets):
        selected = targets
    else:
        suffixes = tuple(f".attention.{name}" for name in targets)
        selected = lambda path: path.endswith(suffixes)
    chosen = [(path, linear) for path, linear in _linear_paths(model) if selected(path)]
    if not chosen:
        raise ValueError(f"add_lora: no eqx.nn.Linear matches targets {targets!r}")
    paths = [path for path, _ in chosen]
    keys = jr.split(key, len(chosen))
    adapters = [LoRALinear(linear, rank=rank, alpha=alpha, dropout=dropout, key=k)
                for (_, linear), k in zip(chosen, keys)]

    def where(m):
        found = dict(_linear_paths(m))
        return [found[path] for path in paths]

    return eqx.tree_at(where, model, adapters)


def lora_layers(model: PyTree) -> list[LoRALinear]:
    """Every :class:`LoRALinear` in ``model``, in tree order."""
    leaves = jax.tree_util.tree_leaves(model, is_leaf=lambda n: isinstance(n, LoRALinear))
    return [leaf for leaf in leaves if isinstance(leaf, LoRALinear)]


def trainable_filter(model: PyTree, *, head: Callable[[PyTree], PyTree] = lambda m: m.span_head) -> PyTree:
    """Boolean spec (``eqx.partition`` filter): True on LoRA ``A``/``B`` and on the arrays of ``head(model)``."""
    spec = jax.tree_util.tree_map(lambda _: False, model)

    def where(s):
        adapters = lora_layers(s)
        return [a.lora_a for a in adapters] + [a.lora_b for a in adapters] + jax.tree_util.tree_leaves(head(s))

    return eqx.tree_at(where, spec, replace_fn=lambda _: True)


def split_trainable(model: PyTree) -> tuple[PyTree, PyTree, Callable[[PyTree], Callable]]:
    """``(trainable, frozen, make_predict_fn)`` for a LoRA-adapted :class:`experiments.encoder.QAModel`.

    ``trainable`` holds the adapters' ``A``/``B`` and the span head (None elsewhere); ``frozen`` the rest,
    ``eqx.combine(trainable, frozen)`` rebuilds the model. ``make_predict_fn(frozen)`` returns

        ``predict_fn(params, inputs, *, key=None) -> logits[b, 2 s]``

    with ``inputs`` a dict of ``input_ids``, ``attention_mask``, ``token_type_ids`` (each ``[b, s]``),
    ``logits[:, :s]`` the start and ``logits[:, s:]`` the end logits (one flat output vector per example, the
    ``kfac_thermo`` convention; ``experiments.squad.SpanCrossEntropy`` is the matching loss), and ``key``
    the dropout key (None: deterministic). Building it from the concrete ``frozen`` is simplest, but every jit
    of a function that calls it then embeds the frozen weights as constants (about 90 MB for MiniLM, slower
    compiles); inside a jitted step that receives ``frozen`` as an argument, build it there instead.
    """
    trainable, frozen = eqx.partition(model, trainable_filter(model))

    def make_predict_fn(frozen: PyTree) -> Callable:
        def predict_fn(params: PyTree, inputs: dict[str, Int[Array, "b s"]], *,
                       key: PRNGKeyArray | None = None) -> Float[Array, "b two_s"]:
            qa = eqx.combine(params, frozen)

            def one(ids, mask, types, k):
                return jnp.concatenate(qa(ids, mask, types, key=k))

            args = (inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
            if key is None:
                return jax.vmap(lambda *a: one(*a, None))(*args)
            return jax.vmap(one)(*args, jr.split(key, args[0].shape[0]))

        return predict_fn

    return trainable, frozen, make_predict_fn
