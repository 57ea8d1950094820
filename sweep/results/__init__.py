"""Results: the schema of a row (`schema`) and the store of rows (`store`).

    from sweep.results import load_results
    frame = load_results("results")     # one pandas row per trial
    frame = load_results("postgresql://user@host/db")   # a whole cluster's (--storage URL)
    frame["group"].unique()              # its comparable groups: the analysis never pools them
    frame = load_results("results", group="cifar10 reconstruct")   # one group's trials

Nothing here imports Keras.
"""

from sweep.results.schema import COLUMNS, METRICS, OBJECTIVES, Column, spec_columns
from sweep.results.shared import is_url, mask_url, paste_url
from sweep.results.store import (
    GroupError,
    RowStore,
    check_writable,
    comparable_groups,
    completed_keys,
    export,
    groups,
    load_results,
    read_row,
    read_rows,
    single_group,
    write_row,
)

__all__ = [
    "COLUMNS",
    "Column",
    "GroupError",
    "METRICS",
    "OBJECTIVES",
    "RowStore",
    "check_writable",
    "comparable_groups",
    "completed_keys",
    "export",
    "groups",
    "is_url",
    "load_results",
    "mask_url",
    "paste_url",
    "read_row",
    "read_rows",
    "single_group",
    "spec_columns",
    "write_row",
]
