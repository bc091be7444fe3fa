"""Code that also runs inside the peers' own virtual environments (the public ``thermox``, ``kfac-jax``).

Some baselines cannot be imported beside this project: the public ``thermox`` has our package's import name and
``kfac-jax`` needs an older jax. Their benchmark then drives a worker script of this directory, run by path by the
peer's interpreter (:class:`experiments.bench.venv.Worker`: ``python -E -s <script>``, so no ``PYTHONPATH`` and no
user site can bring this project in, while the script's own directory is first on its path). The modules here
therefore import only the standard library, numpy, jax and optax, never this project's packages; the worker
scripts import their siblings by plain name (``import protocol``), the main process as
``experiments.bench.workers.<name>``.
"""
