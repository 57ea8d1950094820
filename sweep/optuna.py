"""`python -m sweep.optuna`: the command line lives in `sweep.cli.tune`.

Only an entry point: nothing in the project imports this module, and it imports nothing
named `optuna`, so inside sweep that name always means the Optuna package.
"""

from sweep.cli.common import run_main
from sweep.cli.tune import main

if __name__ == "__main__":
    run_main(main)
