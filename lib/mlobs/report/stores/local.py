"""A report site in a local folder (the `report-dir`): today's behaviour, under the store rules.

Several processes may publish into one folder: a lock file beside it serialises commits, and a commit is a
conflict when the manifest changed since the snapshot was read.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from mlobs.report.stores import MANIFEST, Changes, StoreConflict, StoreRefused, check_path


class LocalSnapshot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = self.read(MANIFEST)

    def read(self, path: str) -> bytes | None:
        file = self.root / check_path(path)
        return file.read_bytes() if file.is_file() else None

    def list(self, prefix: str) -> list[str]:
        folder = self.root / prefix.rstrip("/")
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())


class LocalStore:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.display = str(self.root)

    def open(self) -> LocalSnapshot:
        return LocalSnapshot(self.root)

    def commit(self, snapshot: LocalSnapshot, changes: Changes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The lock sits beside the folder, not in it: the folder is served as it is.
        with open(self.root.parent / f".{self.root.name}.mlobs-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if LocalSnapshot(self.root).manifest != snapshot.manifest:
                raise StoreConflict(f"{self.display} changed since it was read")
            # Check every immutable file before writing any: a refusal leaves the folder untouched.
            for path, body in changes.create.items():
                current = self.root / check_path(path)
                if current.is_file() and current.read_bytes() != body:
                    raise StoreRefused(f"{current} is published with different content; "
                                       "published files are never rewritten")
            for path in changes.delete:
                target = self.root / check_path(path)
                if target.is_file():
                    target.unlink()
            for path, body in {**changes.create, **changes.replace}.items():
                target = self.root / path
                if not (target.is_file() and target.read_bytes() == body):
                    _write(target, body)
            for path, body in changes.site.items():
                _write(self.root / check_path(path), body)
            _write(self.root / MANIFEST, changes.manifest)  # last: the commit point

    def close(self) -> None:
        pass


def _write(path: Path, body: bytes) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mlobs-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
