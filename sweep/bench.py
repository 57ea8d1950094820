"""`python -m sweep.bench`: the command line lives in `sweep.cli.bench`."""

from sweep.cli.common import run_main
from sweep.cli.bench import main

if __name__ == "__main__":
    run_main(main)
