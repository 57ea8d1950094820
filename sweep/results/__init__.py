"""Results: the schema of a row (`schema`) and the store of rows (`store`).

    from sweep.results import load_results
    frame = load_results("results")     # one pandas row per trial

Nothing here imports Keras.
"""

from sweep.results.schema import COLUMNS, METRICS, OBJECTIVES, Column, spec_columns
from sweep.results.store import check_writable, completed_keys, export, load_results, read_row, read_rows, write_row

__all__ = [
    "COLUMNS",
    "Column",
    "METRICS",
    "OBJECTIVES",
    "check_writable",
    "completed_keys",
    "export",
    "load_results",
    "read_row",
    "read_rows",
    "spec_columns",
    "write_row",
]
