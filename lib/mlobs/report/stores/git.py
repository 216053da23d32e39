"""A report site on a git branch (GitHub Pages' ``gh-pages``, or any remote), with the git CLI.

Each snapshot is a shallow fetch of the branch tip into a private bare repository. A commit builds
the new tree with plumbing (a temporary index on top of the tip's tree: no work tree, nothing
checked out), checks the tree diff — a push never modifies or deletes an existing file other than
``index.html`` / ``versions.json`` / ``.nojekyll``, except a version replaced with ``force`` — and
pushes without ``--force``: the remote accepts only a fast-forward. A rejected push is a conflict:
the publisher fetches again, rebuilds the commit on the new tip (a rebase) and retries.

Credentials never reach argv, logs or a config file: the job token (gh-pages) and any
``user:password@`` in a git URL become an ``http.<url>.extraHeader`` passed to each git process
through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` environment variables, and
the URL git sees (and every message) has no userinfo.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from mlobs.report.stores import (
    MANIFEST,
    Changes,
    StoreConflict,
    StoreRefused,
    StoreUnavailable,
    check_path,
    strip_userinfo,
)

MUTABLE = {"index.html", MANIFEST, ".nojekyll"}
REMOTE_REF = "refs/mlobs/remote"
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "stale info", "failed to update ref",
             "cannot lock ref", "reference already exists", "[remote rejected]")


class GitSnapshot:
    def __init__(self, store: GitStore, commit: str | None) -> None:
        self._store = store
        self.commit = commit  # None: the branch does not exist yet
        self.manifest = self.read(MANIFEST)

    def read(self, path: str) -> bytes | None:
        if self.commit is None:
            return None
        proc = self._store.git("cat-file", "blob", f"{self.commit}:{check_path(path)}", check=False,
                               text=False)
        return proc.stdout if proc.returncode == 0 else None

    def list(self, prefix: str) -> list[str]:
        if self.commit is None:
            return []
        out = self._store.git("ls-tree", "-r", "--name-only", self.commit, "--", prefix).stdout
        return sorted(line for line in out.splitlines() if line)


class GitStore:
    kind = "git"

    def __init__(self, url: str, branch: str, *, token: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if shutil.which("git") is None:
            raise StoreUnavailable("publishing to git needs the git command on PATH")
        parts = urlsplit(url)
        self.url = strip_userinfo(url)  # what git and every message see
        self.branch = branch
        self.display = f"{self.url}#{branch}"
        self._dir = Path(tempfile.mkdtemp(prefix="mlobs-git-"))
        env = dict(env or {})  # the environment the CLI read: git runs in it
        # Inherited GIT_* variables could point git elsewhere or trace its traffic: keep only the
        # transport settings (SSH command, CA bundle, proxy).
        self._env = {k: v for k, v in env.items()
                     if not k.startswith("GIT_") or k.startswith(("GIT_SSH", "GIT_SSL", "GIT_PROXY"))}
        self._env.update({
            "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
            "GIT_DIR": str(self._dir), "LC_ALL": "C",
            "GIT_AUTHOR_NAME": env.get("GIT_AUTHOR_NAME") or "github-actions[bot]",
            "GIT_AUTHOR_EMAIL": env.get("GIT_AUTHOR_EMAIL")
            or "41898282+github-actions[bot]@users.noreply.github.com",
        })
        self._env["GIT_COMMITTER_NAME"] = self._env["GIT_AUTHOR_NAME"]
        self._env["GIT_COMMITTER_EMAIL"] = self._env["GIT_AUTHOR_EMAIL"]
        config = {"commit.gpgsign": "false", "core.hooksPath": "/dev/null", "gc.auto": "0",
                  "protocol.file.allow": "always", "init.defaultBranch": "main"}
        secret = None
        if parts.password is not None or parts.username is not None:
            secret = f"{parts.username or ''}:{parts.password or ''}"
        elif token:
            secret = f"x-access-token:{token}"
        if secret and parts.scheme in ("http", "https"):
            # The header applies to this server's URLs only (as actions/checkout does it).
            base = f"{parts.scheme}://{self.url.split('://', 1)[1].split('/', 1)[0]}/"
            encoded = base64.b64encode(secret.encode()).decode()
            config[f"http.{base}.extraheader"] = f"AUTHORIZATION: basic {encoded}"
        for i, (key, value) in enumerate(config.items()):
            self._env[f"GIT_CONFIG_KEY_{i}"] = key
            self._env[f"GIT_CONFIG_VALUE_{i}"] = value
        self._env["GIT_CONFIG_COUNT"] = str(len(config))
        self._secret_values = [s for s in (secret, token, parts.password) if s]
        self.git("init", "-q", "--bare", str(self._dir))

    # -- plumbing ------------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True, text: bool = True, input: bytes | str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        run_env = {**self._env, **(env or {})}
        proc = subprocess.run(["git", *args], env=run_env, capture_output=True, text=text,
                              input=input, timeout=600)
        if check and proc.returncode != 0:
            raise StoreUnavailable(f"git {args[0]} on {self.display} failed: {self._stderr(proc)}")
        return proc

    def _stderr(self, proc: subprocess.CompletedProcess) -> str:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        lines = [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith("hint:")]
        line = next((ln for ln in lines if ln.lower().startswith(("fatal", "error", "!"))),
                    lines[-1] if lines else f"exit {proc.returncode}")
        for secret in self._secret_values:  # belt and braces: git never prints the header
            line = line.replace(secret, "***")
        return strip_userinfo(line) if "://" in line else line

    # -- the store -----------------------------------------------------------------------------
    def open(self) -> GitSnapshot:
        proc = self.git("fetch", "--quiet", "--depth=1", "--no-tags", self.url,
                        f"+refs/heads/{self.branch}:{REMOTE_REF}", check=False)
        if proc.returncode != 0:
            if "couldn't find remote ref" in proc.stderr.lower():
                return GitSnapshot(self, None)  # first publish: the branch is created
            raise StoreUnavailable(f"cannot fetch {self.display}: {self._stderr(proc)}")
        commit = self.git("rev-parse", "--verify", f"{REMOTE_REF}^{{commit}}").stdout.strip()
        return GitSnapshot(self, commit)

    def commit(self, snapshot: GitSnapshot, changes: Changes) -> None:
        parent = snapshot.commit
        index = self._dir / "mlobs-index"
        index.unlink(missing_ok=True)
        idx_env = {"GIT_INDEX_FILE": str(index)}
        if parent:
            self.git("read-tree", parent, env=idx_env)
        lines = []
        for path, body in changes.files().items():
            sha = self.git("hash-object", "-w", "--stdin", input=body, text=False).stdout.decode().strip()
            lines.append(f"100644 {sha}\t{check_path(path)}")
        for path in changes.delete:
            lines.append(f"0 {'0' * 40}\t{check_path(path)}")
        self.git("update-index", "--index-info", input="\n".join(lines) + "\n", env=idx_env)
        tree = self.git("write-tree", env=idx_env).stdout.strip()
        if parent:
            self._check_append_only(parent, tree, changes)
            if self.git("rev-parse", f"{parent}^{{tree}}").stdout.strip() == tree:
                return  # nothing changed: the site already holds exactly this
        args = ["commit-tree", tree, "-m", changes.message]
        if parent:
            args[2:2] = ["-p", parent]
        commit = self.git(*args).stdout.strip()
        # No '+', no --force: the remote takes it only as a fast-forward of the tip we read.
        proc = self.git("push", "--quiet", "--porcelain", self.url, f"{commit}:refs/heads/{self.branch}",
                        check=False)
        if proc.returncode != 0:
            text = (proc.stdout + proc.stderr).lower()
            if any(marker in text for marker in _REJECTED):
                raise StoreConflict(f"{self.display} moved since it was fetched")
            raise StoreUnavailable(f"cannot push to {self.display}: {self._stderr(proc)}")

    def _check_append_only(self, parent: str, tree: str, changes: Changes) -> None:
        """Before pushing: no existing file changes or disappears, except site files and forced ones."""
        allowed = MUTABLE | set(changes.replace) | set(changes.delete)
        out = self.git("diff-tree", "-r", "--no-renames", "--name-status", parent, tree).stdout
        for line in out.splitlines():
            status, _, path = line.partition("\t")
            if status[:1] in ("M", "D", "T") and path not in allowed:
                what = "modify" if status[:1] != "D" else "delete"
                raise StoreRefused(f"refusing to push to {self.display}: it would {what} the "
                                   f"published file {path}; published files are never rewritten")

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
