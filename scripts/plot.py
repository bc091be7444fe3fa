"""Compare run directories in one figure and table (experiments.plots): ``python scripts/plot.py RUN... --out X``."""

from experiments.plots import main

if __name__ == "__main__":
    main()
