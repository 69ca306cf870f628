"""`python -m iaat_jax.prepare NAME...`: the command keeps this name; the code is
iaat_jax/data/prepare.py."""

import sys

from iaat_jax.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
