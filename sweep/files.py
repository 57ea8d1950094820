"""Files written atomically, and YAML read safely: the two ways sweep touches its own files.

A file that a crash must never leave half-written (a results row, a checkpoint, a study's
Parquet snapshot, a trial's attempt counter) is written to a temporary file beside it and
renamed into place: the rename is atomic, so a reader sees the old file or the new one,
never a torn one. Temporary names start with a dot and end in `.tmp`, so nothing that lists
the real files picks them up, and a crash's leftovers are easy to recognise.

YAML (search-space files, `FIELD=VALUE` on the command line) is read with a SafeLoader that
constructs plain values only (never objects, never code) and reads `1e-3` as a float, as a
person writing a learning rate expects (YAML 1.1 alone wants `1.0e-3`).

And one thing about stderr: `held_native_stderr` holds back what native code writes there
while a framework starts (shown only if starting fails).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import yaml

__all__ = ["TEMPORARY_SUFFIX", "atomic_path", "atomic_write", "held_native_stderr", "load_yaml"]

TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block ends without an
    error, rename it onto `path` (after flushing it to disk with `fsync`). On an error the
    temporary is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes, *, fsync: bool = False) -> Path:
    """Write `data` (text or bytes) to `path` atomically; return the path."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return path


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Plain values (dicts, lists, strings, numbers, booleans, null) from YAML text; raises
    `yaml.YAMLError` on malformed text."""
    return yaml.load(text, Loader=_Loader)


@contextlib.contextmanager
def held_native_stderr():
    """Hold back what native code writes to stderr (TensorFlow's CUDA probing on machines
    without a GPU prints several alarming lines); show it only if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
