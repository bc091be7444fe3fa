"""Our K-FAC and thermodynamic K-FAC against DeepMind's kfac-jax (experiments.bench.kfac_jax):

    python scripts/bench_kfac_jax.py [--quick] [--rounds N] [--out bench_kfac_jax.json] [--cache-dir DIR]
"""

from experiments.bench.kfac_jax import main

if __name__ == "__main__":
    raise SystemExit(main())
