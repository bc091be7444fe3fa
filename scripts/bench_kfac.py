"""K-FAC and thermodynamic K-FAC step time over Adam, refresh and other steps apart (experiments.bench.kfac):

    python scripts/bench_kfac.py [--quick] [--rounds N] [--out bench_kfac.json]
"""

from experiments.bench.kfac import main

if __name__ == "__main__":
    main()
