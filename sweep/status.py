"""`python -m sweep.status`: the command line lives in `sweep.cli.status`."""

from sweep.cli.common import run_main
from sweep.cli.status import main

if __name__ == "__main__":
    run_main(main)
