r"""Data parallelism with JAX's own sharding: the batch split over a mesh axis, everything else replicated.

A train step jit-compiled on a batch sharded along its leading axis (:func:`shard_batch`) with parameters and
optimizer state replicated (:func:`replicate`) runs data-parallel under XLA's SPMD partitioner: the gradient, the
GGN / Fisher products of the natural-gradient transforms and K-FAC's factor statistics are sums over examples,
which XLA reduces across the data axis. The result equals the single-device run up to the order of those
floating-point reductions. The mesh axes must be ``AxisType.Auto`` (:func:`data_mesh` makes one).

On CPU host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, for testing) wait for each step
before dispatching the next (reading the loss does): XLA's CPU runtime runs the devices' programs on one shared
thread pool, and a deep queue of steps whose all-reduces block pool threads can deadlock it (seen with jaxlib
0.10.2 as "Expected 4 threads to join the rendezvous" and an abort after 40 s).

:func:`distribute` additionally spreads independent per-layer work (K-FAC's factor inversions or device
programming: one analog solver per device, as the thermodynamic K-FAC paper proposes) over the devices of an
axis: item ``i`` is computed on device ``i mod n`` only and broadcast to the others with a sum in which the
other devices contribute exact zeros, so every device holds bitwise the single-device result.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree


def data_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A one-axis mesh named ``axis`` over the first ``num_devices`` devices (all of them by default).

    With several processes (``jax.distributed.initialize``) the devices are the global ones, so
    ``num_devices`` counts devices over all hosts.
    """
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(devices):
        raise ValueError(f"asked for {num_devices!r} devices along mesh axis {axis!r}, but there are "
                         f"{len(devices)} {jax.default_backend()} device(s) (an int from 1 to {len(devices)}; on CPU, "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax makes N)")
    return jax.make_mesh((count,), (axis,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:count])


def axis_size(mesh: Mesh, axis: str) -> int:
    """The number of devices along ``axis`` of ``mesh`` (an error naming the mesh's axes if it has none)."""
    if axis not in mesh.shape:
        raise ValueError(f"mesh has axes {tuple(mesh.shape)}, not {axis!r}")
    return mesh.shape[axis]


def shard_batch(batch: PyTree, mesh: Mesh, axis: str = "data") -> PyTree:
    """Global arrays of this process's batch leaves, split along their leading (example) axis over ``axis``.

    With one process the leaves are the whole batch; with several, each process passes its own consecutive
    slice and the global batch is their concatenation in process order. The global batch size must be a
    multiple of the axis size (every device gets the same number of examples).
    """
    size = axis_size(mesh, axis)
    sharding = NamedSharding(mesh, P(axis))

    def place(leaf):
        leaf = np.asarray(leaf)
        examples = leaf.shape[0] * jax.process_count() if leaf.ndim else 0
        if leaf.ndim == 0 or examples % size:
            raise ValueError(f"a batch of {examples} examples can't be split evenly over the {size} devices of mesh "
                             f"axis {axis!r}: choose a batch size divisible by {size}")
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree_util.tree_map(place, batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` (parameters, optimizer state, PRNG keys) replicated on every device of ``mesh``, from this
    process's values (with several processes, every process must pass the same values)."""
    sharding = NamedSharding(mesh, P())

    def place(leaf):
        if jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


def distribute(
    fns: Sequence[Callable[[Any], PyTree]], operands: Sequence[PyTree], mesh: Mesh, axis: str
) -> list[PyTree]:
    """``[fn(operand) for fn, operand in zip(fns, operands)]``, item ``i`` computed on device ``i mod n`` of
    ``axis`` only (``n`` its size; the other axes of ``mesh`` repeat the work) and then held by all.

    For use inside a jit-compiled function whose operands are replicated. Each ``fn`` must be deterministic in
    its operand (a PRNG key passed as part of it is fine). Outputs may be float, integer or bool arrays.
    """
    size = axis_size(mesh, axis)
    shapes = [jax.eval_shape(fn, operand) for fn, operand in zip(fns, operands)]

    def owned(index: int, fn: Callable, shape: PyTree, operand: PyTree) -> PyTree:
        zeros = lambda _: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        out = jax.lax.cond(jax.lax.axis_index(axis) == index % size, fn, zeros, operand)
        # Only the owner's summand is non-zero, so the sum is its value exactly.
        summed = jax.tree_util.tree_map(
            lambda leaf: jax.lax.psum(leaf.astype(jnp.int32) if leaf.dtype == jnp.bool_ else leaf, axis), out)
        return jax.tree_util.tree_map(lambda total, s: total.astype(s.dtype), summed, shape)

    def body(*operands):
        return [owned(i, fn, shape, op) for i, (fn, shape, op) in enumerate(zip(fns, shapes, operands))]

    return jax.shard_map(body, mesh=mesh, in_specs=tuple(P() for _ in operands), out_specs=P(),
                         check_vma=False)(*operands)
