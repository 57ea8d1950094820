"""`python -m sweep.grid`: the command line lives in `sweep.cli.grid`."""

from sweep.cli.common import run_main
from sweep.cli.grid import main

if __name__ == "__main__":
    run_main(main)
