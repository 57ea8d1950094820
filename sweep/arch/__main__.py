"""`python -m sweep.arch`: the command line lives in `sweep.cli.arch`."""

from sweep.cli.arch import main
from sweep.cli.common import run_main

if __name__ == "__main__":
    run_main(main)
