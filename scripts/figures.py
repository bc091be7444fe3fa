"""One command per figure of the papers (experiments.figures): ``python scripts/figures.py <figure> [options]``."""

from experiments.figures import main

if __name__ == "__main__":
    main()
