"""Bayesian logistic regression on the digits: device Langevin samples against a MALA reference
(experiments.langevin), as a markdown table:

    python scripts/langevin_blr.py [--quick] [--out results.md]
"""

from experiments.langevin import main

if __name__ == "__main__":
    raise SystemExit(main())
