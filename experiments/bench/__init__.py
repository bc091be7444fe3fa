"""The benchmark suite: the project against its peers and baselines, every number a ratio measured in one run.

``python -m experiments.bench [--quick] [--out bench.json] [--report bench.md] [--only SECTION,...]``
(:mod:`experiments.bench.suite`). One module per section (``ou``, ``steps``, ``kfac``, ``scaling``, ``memory``,
``kfac_jax``, ``sharding``, ``convergence``), each with ``section(quick, ...) -> dict`` and ``markdown(result)``;
shared pieces: ``problems`` (the models, batches and the one train step every section times), ``timing``,
``tables``, ``venv`` (peers in their own virtual environments), ``results`` (bench.json's keys and the targets
of ``targets.toml``), ``report``; ``workers/`` runs inside the peers' environments.
"""

import os
import pathlib

# XLA's LAPACK calls on CPU (eigh, Cholesky) run on OpenBLAS's own threads, which fight XLA's thread pool for the
# cores: on a 2-core machine that made a 1025 x 1025 eigh take 0.3-3.7 s instead of 70 ms. Set before numpy,
# scipy and jax load OpenBLAS (importing any module of this package runs this first); subprocesses inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository (run directories, scripts/, git)
SECTIONS = ("ou", "steps", "kfac", "scaling", "memory", "kfac_jax", "sharding", "convergence")  # run and report order
