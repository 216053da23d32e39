"""Where a report site lives: one small interface over a local folder, a git branch and a bucket.

A store is read through a *snapshot* (a consistent view: the manifest and any file) and changed by
one *commit* of a `Changes` set against that snapshot. Every store enforces the same rules itself,
whatever the caller computed:

- ``create`` files are new: a file that already exists must be byte-identical (S3: conditional
  ``If-None-Match: *`` writes; git: the tree diff is checked before pushing; local: compared);
- only the site files (``index.html``, ``versions.json``) are ever rewritten, and ``replace`` /
  ``delete`` only for a version replaced with ``force``;
- the commit is refused with `StoreConflict` when the store moved since the snapshot was read
  (S3: ``If-Match`` on the manifest's ETag; git: a fast-forward-only push; local: a lock and the
  manifest's bytes). The publisher then reads again, plans again and retries.

Stores are imported lazily (boto3 only for ``s3://``) so the other targets never load it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from mlobs.errors import ConfigError, SourceUnavailable

MANIFEST = "versions.json"
INDEX = "index.html"
SITE_FILES = (INDEX, MANIFEST)


class StoreConflict(Exception):
    """The store changed since the snapshot was read: read it again and retry."""


class StoreRefused(ConfigError):
    """The store would have to modify a file that is published (exit 2, nothing written)."""


class StoreUnavailable(SourceUnavailable):
    """The store cannot be reached, read or written (network, credentials, permissions)."""


@dataclass
class Changes:
    create: dict[str, bytes] = field(default_factory=dict)   # new, or byte-identical if present
    replace: dict[str, bytes] = field(default_factory=dict)  # forced: overwritten
    delete: list[str] = field(default_factory=list)          # forced: files a replaced version lost
    site: dict[str, bytes] = field(default_factory=dict)     # index.html (+ .nojekyll): rewritten
    manifest: bytes = b""                                     # versions.json: the commit point
    message: str = "mlobs: publish reports"

    def files(self) -> dict[str, bytes]:
        """Every file this commit leaves in the store, by path."""
        return {**self.create, **self.replace, **self.site, MANIFEST: self.manifest}


class Snapshot(Protocol):
    def read(self, path: str) -> bytes | None: ...

    def list(self, prefix: str) -> list[str]:
        """Paths of the files under ``prefix`` (a folder, ending in ``/``), sorted."""
        ...


class Store(Protocol):
    display: str  # where the site is, safe to print (no credentials)
    kind: str     # local, git, s3

    def open(self) -> Snapshot: ...

    def commit(self, snapshot: Snapshot, changes: Changes) -> None: ...

    def close(self) -> None: ...


_SAFE_PATH = re.compile(r"[A-Za-z0-9._+\-]+(/[A-Za-z0-9._+\-]+)*")


def check_path(path: str) -> str:
    """Store paths are relative, '/'-separated, without '..' (the site builds them itself)."""
    if not _SAFE_PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise ConfigError(f"refusing to write {path!r} into the report store")
    return path


def strip_userinfo(url: str) -> str:
    """The URL without ``user:password@`` (shown in messages; credentials travel separately)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Target:
    """The parsed `publish-to` input."""

    kind: str  # local, gh-pages, git, s3
    location: str = ""  # folder, git URL (may carry userinfo: never print it) or bucket
    branch: str = ""
    prefix: str = ""

    @property
    def display(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.location}/{self.prefix}".rstrip("/")
        if self.kind in ("git", "gh-pages"):
            return f"{strip_userinfo(self.location)}#{self.branch}"
        return self.location


_BRANCH = re.compile(r"[A-Za-z0-9._/\-]{1,200}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def parse_target(text: str | None, report_dir: Path, env: Mapping[str, str]) -> Target:
    """`publish-to`: empty (the local report-dir), gh-pages, git+<url>#<branch>, s3://bucket/prefix."""
    text = (text or "").strip()
    if not text:
        return Target("local", str(report_dir))
    if text == "gh-pages":
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY", "")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+", repo):
            raise ConfigError("publish-to: gh-pages needs GITHUB_REPOSITORY (owner/repo); it is "
                              "set on GitHub's runners — elsewhere use git+<url>#<branch>")
        return Target("gh-pages", f"{server}/{repo}.git", "gh-pages")
    if text.startswith("git+"):
        url, sep, branch = text[4:].partition("#")
        branch = branch.strip() if sep else ""
        if not url or "://" not in url:
            raise ConfigError(f"publish-to {strip_userinfo(text)!r}: expected git+<url>#<branch>, "
                              "e.g. git+https://github.com/org/reports.git#gh-pages")
        if not branch or not _BRANCH.fullmatch(branch) or ".." in branch or branch.startswith(("-", "/")):
            raise ConfigError(f"publish-to {strip_userinfo(text)!r}: name the branch after '#', "
                              "e.g. git+file:///srv/reports.git#gh-pages")
        return Target("git", url, branch)
    if text.startswith("s3://"):
        rest = text[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(f"publish-to {text!r}: {bucket!r} is not a valid bucket name "
                              "(3–63 lower-case letters, digits, '.' and '-')")
        if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
            raise ConfigError(f"publish-to {text!r}: the prefix must be a plain path")
        return Target("s3", bucket, prefix=prefix)
    raise ConfigError(f"publish-to {strip_userinfo(text)!r} is not a known target: use gh-pages, "
                      "git+<url>#<branch> or s3://bucket/prefix (empty: report-dir only)")


def open_store(target: Target, *, token: str | None = None, endpoint: str | None = None,
               env: Mapping[str, str] | None = None) -> Store:
    env = env or {}
    if target.kind == "local":
        from mlobs.report.stores.local import LocalStore

        return LocalStore(Path(target.location))
    if target.kind in ("git", "gh-pages"):
        from mlobs.report.stores.git import GitStore

        return GitStore(target.location, target.branch, token=token if target.kind == "gh-pages" else None,
                        env=env)
    if target.kind == "s3":
        from mlobs.report.stores.s3 import S3Store

        return S3Store(target.location, target.prefix, endpoint=endpoint, env=env)
    raise ConfigError(f"unknown store kind {target.kind!r}")
