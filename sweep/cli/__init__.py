"""The command lines, one module each: `grid`, `tune` (`python -m sweep.optuna`), `report`,
`arch`, `bench`; `common` holds their shared options, progress bar and error rule. The
`python -m` entry points (`sweep/grid.py`, `sweep/optuna.py`, ...) only call into here."""
