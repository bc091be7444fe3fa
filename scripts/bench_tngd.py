"""TNGD and NGD step cost over Adam on the paper's MNIST CNN (experiments.bench.steps):

    python scripts/bench_tngd.py [--quick] [--out bench_tngd.json] [--repeats N]
"""

from experiments.bench.steps import main

if __name__ == "__main__":
    main()
