"""The benchmark suite (experiments.bench.suite), the same as ``python -m experiments.bench``:

    python scripts/bench.py [--quick] [--out bench.json] [--report bench.md] [--only SECTION,...]
"""

from experiments.bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main(prog="scripts/bench.py"))
