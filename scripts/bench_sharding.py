"""Data-parallel step time on N host devices over 1 (experiments.bench.sharding):

    python scripts/bench_sharding.py [--quick] [--devices 4] [--out bench_sharding.json]
"""

from experiments.bench.sharding import main

if __name__ == "__main__":
    main()
