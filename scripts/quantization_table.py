"""Error of thermox.linalg.solve against converter / coupling resolution (experiments.bench.quantization):

    python scripts/quantization_table.py
"""

from experiments.bench.quantization import main

if __name__ == "__main__":
    raise SystemExit(main())
