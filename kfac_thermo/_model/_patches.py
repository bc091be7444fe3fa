"""Convolution patches (im2col) of a "conv" layer, and the convolution evaluated as kernel x patches."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._discovery import LayerTap


def patches(layer: LayerTap, act: Array, kernel_shape: tuple[int, ...]) -> Float[Array, "b n_in T"]:
    """Convolution patches ``[i, feature, position]``: features (input channel, then the kernel window, spatial axes
    in the dimension numbers' order), positions (the batch-of-one axis, then the output's spatial axes in that
    order).

    Gathered by one strided slice of the padded input per kernel offset (input dilation as interior padding, kernel
    dilation as spaced offsets), which is pure data movement: XLA's CPU convolution, e.g. through
    ``conv_general_dilated_patches``, costs about as much as the model's forward pass here.
    """
    params = layer.conv_params
    spec = params["dimension_numbers"]
    b = act.shape[0]
    # (b N, C, *spatial): the examples merged into the convolution's own batch axis N.
    x = jnp.transpose(act, [0] + [d + 1 for d in spec.lhs_spec])
    x = x.reshape((-1,) + x.shape[2:])
    window = [kernel_shape[d] for d in spec.rhs_spec[2:]]
    strides, dilation = params["window_strides"], params["rhs_dilation"]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] * 2 + [
        (low, high, d - 1) for (low, high), d in zip(params["padding"], params["lhs_dilation"])])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, d, s in zip(x.shape[2:], window, dilation, strides)]
    slices = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = [0, 0] + [o * d for o, d in zip(offset, dilation)]
        limit = list(x.shape[:2]) + [o + (n - 1) * s + 1 for o, n, s in zip(start[2:], out, strides)]
        slices.append(jax.lax.slice(x, start, limit, [1, 1] + list(strides)))
    stacked = jnp.stack(slices, axis=2).reshape(b, -1, x.shape[1] * len(slices), math.prod(out))  # (b, N, C K, out)
    return jnp.moveaxis(stacked, 1, 2).reshape(b, stacked.shape[2], -1)


def conv_by_patches(layer: LayerTap, out_shape: tuple[int, ...], lhs: Array, rhs: Array) -> Array:
    """A "conv" layer's ``conv_general_dilated(lhs, rhs)`` for one example as its kernel matrix (n_out x n_in) times
    its patches (an im2col product): the same value up to rounding, several times faster than XLA's CPU
    convolution for the few-channel kernels of small CNNs."""
    spec = layer.conv_params["dimension_numbers"].out_spec
    kernel = jnp.transpose(rhs, layer.weight_out + layer.weight_in).reshape(out_shape[spec[1]], -1)
    order = [spec[1], spec[0], *spec[2:]]  # (channels, batch-of-one, spatial): the rows of kernel @ patches
    y = (kernel @ patches(layer, lhs[None], rhs.shape)[0]).reshape([out_shape[d] for d in order])
    return jnp.transpose(y, np.argsort(order))
