"""Build an optax optimizer (and its analog device) from the optimizer and device configs."""

from __future__ import annotations

from typing import Any, Callable

import jax.random as jr
import optax
from jax.sharding import Mesh

import kfac_thermo
import thermox

# The element-wise update per float32 parameter: Adam's two moment updates (3 + 4 flops), bias corrections (2),
# m / (sqrt(v) + eps) (3) and the learning rate (1), reading the gradient and both moments and writing the moments
# and the update; SGD's scaling, and with momentum its trace (2 more flops, the trace read and written).
ADAM_UPDATE_WORK = dict(flops_per_param=13.0, bytes_per_param=6 * 4)
SGD_UPDATE_WORK = dict(flops_per_param=1.0, bytes_per_param=2 * 4)
SGD_MOMENTUM_UPDATE_WORK = dict(flops_per_param=3.0, bytes_per_param=4 * 4)


def newton_schulz_work(shape: tuple[int, ...], ns_steps: int) -> kfac_thermo.Work:
    """Muon's matrix work on one parameter of ``shape`` (kind "precondition"; none unless it is a matrix): the
    Frobenius normalisation (3 flops per entry) and ``ns_steps`` quintic Newton-Schulz iterations on the m x n
    matrix oriented so that m <= n: ``A = X X^T`` (2 m^2 n flops), ``B = c1 A + c2 A A`` (2 m^3 + 3 m^2),
    ``X <- c0 X + B X`` (2 m^2 n + 2 m n); each iteration three matrix-product kernels reading X twice, A three
    times and B and X once and writing A, B and X, in float32."""
    if len(shape) != 2:
        return kfac_thermo.digital_work()
    m, n = sorted(shape)
    flops = 3 * m * n + ns_steps * (4 * m * m * n + 2 * m**3 + 3 * m * m + 2 * m * n)
    bytes_ = 4 * (2 * m * n + ns_steps * (4 * m * n + 5 * m * m))
    return kfac_thermo.digital_work(flops={"precondition": flops}, bytes={"precondition": bytes_},
                                    kernels={"precondition": 1 + 3 * ns_steps})


def muon(cfg) -> optax.GradientTransformation:
    """``optax.contrib.muon`` (Newton-Schulz-orthogonalised momentum on the matrices, Adam on the other leaves)
    with its work record: Adam's element-wise work on every parameter (Muon's momentum, Nesterov step and scaling
    take about as much) and :func:`newton_schulz_work` on each matrix."""
    transform = optax.contrib.muon(cfg.learning_rate, ns_steps=cfg.ns_steps, beta=cfg.beta,
                                   weight_decay=cfg.weight_decay, adam_learning_rate=cfg.adam_learning_rate)
    return kfac_thermo.with_work(transform, **ADAM_UPDATE_WORK,
                                 leaf_work=lambda shape: newton_schulz_work(shape, cfg.ns_steps))


def build_device(cfg) -> thermox.AnalogDevice:
    """The :class:`thermox.AnalogDevice` a device config describes (its ``seed`` is the chip's identity)."""
    return thermox.AnalogDevice(
        kappa0=cfg.kappa0, dac_bits=cfg.dac_bits, adc_bits=cfg.adc_bits, coupling_bits=cfg.coupling_bits,
        dac_range=cfg.dac_range, adc_range=cfg.adc_range, mismatch=cfg.mismatch, saturation=cfg.saturation,
        capacity=cfg.capacity, num_readouts=cfg.num_readouts, readout_interval=cfg.readout_interval,
        key=jr.key(cfg.seed) if cfg.mismatch > 0 else None,
    )


def build_optimizer(cfg, device_cfg, *, predict_fn: Callable, loss: Any, seed: int,
                    task_curvature: str = "ggn", example_inputs: Any = None,
                    mesh: Mesh | None = None) -> optax.GradientTransformation:
    """The optimizer named by ``cfg.name`` with its hyperparameters; noise keys derive from ``seed``;
    ``curvature: auto`` takes ``task_curvature``; K-FAC traces the model on ``example_inputs`` (a batch) and,
    given a ``mesh`` of several devices, spreads its per-layer solves over the mesh's ``"data"`` axis."""
    key = jr.fold_in(jr.key(seed), 1)
    name = cfg.name
    curvature = task_curvature if getattr(cfg, "curvature", "auto") == "auto" else cfg.curvature
    if name == "adam":
        return kfac_thermo.with_work(optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
                                     **ADAM_UPDATE_WORK)
    if name == "sgd":
        work = SGD_UPDATE_WORK if cfg.momentum is None else SGD_MOMENTUM_UPDATE_WORK
        return kfac_thermo.with_work(optax.sgd(cfg.learning_rate, momentum=cfg.momentum), **work)
    if name == "muon":
        return muon(cfg)
    if name == "sophia":
        return kfac_thermo.sophia_g(cfg.learning_rate, predict_fn=predict_fn, loss=loss, key=key, b1=cfg.b1,
                                    b2=cfg.b2, gamma=cfg.gamma, eps=cfg.eps, update_interval=cfg.update_interval,
                                    weight_decay=cfg.weight_decay)
    common = dict(predict_fn=predict_fn, loss=loss, damping=cfg.damping)
    if name in ("ngd", "ngd_woodbury", "ngd_cg"):
        extra = {"iterations": cfg.iterations} if name == "ngd_cg" else {}
        factory = getattr(kfac_thermo, name)
        return factory(cfg.learning_rate, curvature=curvature, momentum=cfg.momentum, key=key, **common, **extra)
    device = build_device(device_cfg)
    if name == "tngd":
        return kfac_thermo.tngd(
            cfg.learning_rate, t=cfg.t, delay=cfg.delay, method=cfg.method, dt=cfg.dt, reset=cfg.reset,
            curvature=curvature, momentum=cfg.momentum, device=device, key=key, **common,
        )
    if name == "tngd_adam":
        return kfac_thermo.tngd_adam(
            cfg.learning_rate, t=cfg.t, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, delay=cfg.delay, reset=cfg.reset,
            method=cfg.method, dt=cfg.dt, curvature=curvature, device=device, key=key, **common,
        )
    if name in ("kfac", "thermo_kfac"):
        factory = getattr(kfac_thermo, name)
        options = dict(curvature=curvature, damping_mode=cfg.damping_mode, ema_decay=cfg.ema_decay,
                       curvature_period=cfg.curvature_period, inverse_period=cfg.inverse_period,
                       momentum=cfg.momentum)
        if name == "thermo_kfac":
            options.update(t=cfg.t, method=cfg.method, device=device)
        if mesh is not None and mesh.size > 1:
            options.update(mesh=mesh, solver_axis="data")
        return factory(cfg.learning_rate, example_inputs=example_inputs, key=key, **common, **options)
    raise ValueError(f"unknown optimizer {name!r}")
