"""``python -m experiments.bench``: the benchmark suite (experiments.bench.suite)."""

from experiments.bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
