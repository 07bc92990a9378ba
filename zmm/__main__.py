"""`python -m zmm`: the same entry point as the `zmm` console script."""

from zmm.cli import main

if __name__ == "__main__":
    main()
