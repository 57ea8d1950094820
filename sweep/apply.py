"""`python -m sweep.apply`: the command line lives in `sweep.cli.apply`."""

from sweep.cli.apply import main
from sweep.cli.common import run_main

if __name__ == "__main__":
    run_main(main)
