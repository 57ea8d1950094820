"""`python -m sweep.report`: the command line lives in `sweep.cli.report`."""

from sweep.cli.common import run_main
from sweep.cli.report import main

if __name__ == "__main__":
    run_main(main)
