"""Exact OU path sampling against the public thermox (experiments.bench.ou):

    python scripts/bench_ou.py [--quick] [--out bench_ou.json] [--repeats N] [--cache-dir DIR]
"""

from experiments.bench.ou import main

if __name__ == "__main__":
    raise SystemExit(main())
