"""Results: the schema of a row (`schema`) and the store of rows (`store`).

    from sweep.results import load_results
    frame = load_results("results")     # one pandas row per trial
    frame = load_results("postgresql://user@host/db")   # a whole cluster's (--storage URL)

Nothing here imports Keras.
"""

from sweep.results.schema import COLUMNS, METRICS, OBJECTIVES, Column, spec_columns
from sweep.results.shared import is_url, mask_url, paste_url
from sweep.results.store import RowStore, check_writable, completed_keys, export, load_results, read_row, read_rows, write_row

__all__ = [
    "COLUMNS",
    "Column",
    "METRICS",
    "OBJECTIVES",
    "RowStore",
    "check_writable",
    "completed_keys",
    "export",
    "is_url",
    "load_results",
    "mask_url",
    "paste_url",
    "read_row",
    "read_rows",
    "spec_columns",
    "write_row",
]
