"""`python -m iaat_jax.report RUN... --out=DIR`: the command keeps this name; the code is
iaat_jax/analysis/report.py."""

import sys

from iaat_jax.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
