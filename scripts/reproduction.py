"""The reproduction table: the papers' claims against the figure runs (experiments.claims)."""

from experiments.claims import main

if __name__ == "__main__":
    main()
