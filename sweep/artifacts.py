"""Trial artefacts in one shared place (`--artifacts DIR_OR_URL`), through Optuna's artifact
stores, so they outlive the machine that made them.

    --artifacts /shared/sweep-artifacts     # a folder every machine mounts (NFS, ...)
    --artifacts s3://bucket/prefix          # an S3-compatible object store (pip install boto3;
                                            #   endpoint and keys from the usual AWS_* variables)

A trial's files keep their names under its key: `<where>/<trial_key>/model.keras`,
`reconstructions.png`, `history.json`, `spec.json` (and `error.txt` for a failed one), as in
`RESULTS/trials/<trial_key>/`. While a trial trains, each checkpoint is uploaded as
`<trial_key>/checkpoint.npz`, so a trial retried on another machine resumes from the last
checkpoint the dead one made; the checkpoint is removed when the trial finishes. Writes to a
folder are atomic (a temporary file renamed into place), so a machine killed mid-upload
leaves the previous checkpoint, never a torn one; S3 writes are atomic by themselves.
Without `--artifacts`, everything stays in the results folder, as before.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import StoreError
from sweep.files import atomic_path

__all__ = ["Artifacts", "SKIPPED"]

SKIPPED = ("checkpoint.npz", "attempts.json", "pack-split")  # bookkeeping, not results: never uploaded by `put_trial`


@functools.lru_cache(maxsize=4)
def _store(where: str):
    """Optuna's artifact store for `where`, and the prefix of every id in it."""
    if where.startswith("s3://"):
        try:
            from optuna.artifacts import Boto3ArtifactStore
        except ImportError as err:  # boto3 missing
            raise StoreError(f"--artifacts {where}: an S3 store needs boto3 (pip install boto3) ({err})") from None
        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        return Boto3ArtifactStore(bucket), prefix.strip("/")
    if "://" in where:
        raise StoreError(f"--artifacts {where}: not a folder or an s3://bucket/prefix URL")
    from optuna.artifacts import FileSystemArtifactStore

    class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
        """Optuna's folder store, writing each file to a temporary and renaming it into
        place (and making a trial's folder on first use)."""

        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.root = Path(root)

        def write(self, artifact_id, content_body) -> None:
            if Path(artifact_id).is_absolute() or ".." in Path(artifact_id).parts:
                raise ValueError(f"invalid artifact id: {artifact_id}")
            target = self.root / artifact_id  # (where Optuna's store reads it back)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target, fsync=True) as tmp, open(tmp, "wb") as handle:
                shutil.copyfileobj(content_body, handle)

    base = Path(where).expanduser().resolve()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"--artifacts {where}: not a writable folder ({err.strerror or err})") from None
    return AtomicFileSystemArtifactStore(base), ""


@dataclass(frozen=True)
class Artifacts:
    """One shared artefact store (picklable: a worker opens it itself)."""

    where: str

    def _id(self, key: str, name: str) -> str:
        prefix = _store(self.where)[1]
        return f"{prefix}/{key}/{name}" if prefix else f"{key}/{name}"

    def check(self) -> None:
        """Open the store now, so a bad `--artifacts` is one line before anything trains."""
        _store(self.where)

    def put(self, key: str, path: Path) -> None:
        """Upload the file `path` as `<key>/<its name>`."""
        with open(path, "rb") as handle:
            _store(self.where)[0].write(self._id(key, Path(path).name), handle)

    def get(self, key: str, name: str, dest: Path) -> bool:
        """Download `<key>/<name>` to `dest` (atomically); False when the store has none."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            reader = _store(self.where)[0].open_reader(self._id(key, name))
        except ArtifactNotFound:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        with reader, atomic_path(dest) as tmp, open(tmp, "wb") as handle:
            shutil.copyfileobj(reader, handle)
        return True

    def remove(self, key: str, name: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            _store(self.where)[0].remove(self._id(key, name))
        except ArtifactNotFound:
            pass

    def put_trial(self, key: str, directory: Path) -> list[str]:
        """Upload a finished trial's files (not its bookkeeping); return their names."""
        names = []
        for path in sorted(Path(directory).iterdir()):
            if path.is_file() and path.name not in SKIPPED and not path.name.startswith("."):
                self.put(key, path)
                names.append(path.name)
        return names

    def location(self, key: str) -> str:
        """Where a trial's files are, for people: a folder path or an s3:// URL."""
        if self.where.startswith("s3://"):
            return f"{self.where.rstrip('/')}/{key}/"
        return f"{os.path.join(str(Path(self.where).expanduser().resolve()), key)}/"
