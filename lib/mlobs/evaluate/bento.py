"""Start ``bentoml serve`` on a free loopback port, wait until it is ready, always stop it.

The server runs in its own session (process group) with its output in a log file (under the
action's ``output-dir`` when the mode gives one: kept when the run fails, its last lines quoted
in the error). A Bento that cannot start because a Python module is missing gets an error that
names the module and the two ways to run a Bento whose libraries the action's image lacks. BentoML's
workers start their own sessions too, so stopping signals the whole process tree, not just the
group: SIGTERM first (BentoML shuts its workers down gracefully), SIGKILL after a grace period
for anything still alive. A SIGTERM sent to *us* (a cancelled CI job) is turned into SystemExit
while the server runs, so the ``finally`` that stops it still runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import urllib3

from mlobs.errors import ConfigError, SourceUnavailable, clip

__all__ = ["BentoServer", "BentoStartError", "bentoml_installed", "free_port"]

log = logging.getLogger(__name__)

_POLL_S = 0.25
_TAIL_LINES = 20
_HEARTBEAT_S = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PORT_TAKEN = ("Address already in use", "[Errno 98]")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
DEPENDENCY_ROUTES = (
    "run the Bento in its own container (bentoml containerize; a job `services:` entry) and "
    "attach with bento-url, or run mlobs beside your dependencies with "
    "`uses: org/ml-observability-action/cli@v1` (README: Bentos with their own dependencies)")


class BentoStartError(SourceUnavailable):
    """The Bento exited or did not become ready in time; carries the server log's last lines."""

    def __init__(self, message: str, *, log_tail: list[str], log_path: Path | None) -> None:
        super().__init__(message, hint=f"server log: {log_path}" if log_path else None)
        self.log_tail = log_tail
        self.log_path = log_path


def bentoml_installed() -> bool:
    """Whether ``python -m bentoml`` can run here (the serve extra; not in the action's image)."""
    import importlib.util

    try:
        return importlib.util.find_spec("bentoml") is not None
    except (ImportError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it; a lost race is retried once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class BentoServer:
    """``with BentoServer("service:MyService", cwd=path) as server: ... server.url``.

    ``target`` is anything ``bentoml serve`` accepts: ``module:Class``, a Bento tag from the
    local store, or a path to a Bento / a folder with a bentofile.yaml (relative to ``cwd``).
    The server runs in ``base_env`` (the environment the CLI read: ``CommonSettings.env``) with
    ``env`` added, for the server only.
    """

    target: str
    cwd: Path
    env: dict[str, str] | None = None
    ready_timeout: float = 120.0
    stop_grace: float = 10.0
    log_path: Path | None = None  # default: a temporary file, removed after a clean stop
    keep_log: bool = True  # keep a given log_path after a clean stop too (always kept on failure)
    host: str = "127.0.0.1"
    base_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    url: str = field(default="", init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_log: bool = field(default=False, init=False, repr=False)
    _failed: bool = field(default=False, init=False, repr=False)
    _prev_sigterm: object = field(default=None, init=False, repr=False)

    def __enter__(self) -> BentoServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self._failed = True  # the run failed: keep the log for whoever reads the error
        self.stop()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait for ``/readyz``; on any failure the server is stopped."""
        cwd = Path(self.cwd)
        if not cwd.is_dir():
            raise ConfigError(f"working directory for the Bento does not exist: {cwd}")
        if not bentoml_installed():
            raise ConfigError(
                "the bento input serves the Bento with BentoML, which is not installed where mlobs "
                "runs (the action's image leaves BentoML's server side out: serving needs the "
                f"Bento's own dependencies anyway) — {DEPENDENCY_ROUTES}")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="mlobs-bento-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        self._install_sigterm()
        try:
            for attempt in (1, 2):
                try:
                    self._spawn(cwd)
                    self._wait_ready()
                    return
                except BentoStartError as exc:
                    self._kill()
                    if attempt == 1 and any(p in line for line in exc.log_tail for p in _PORT_TAKEN):
                        log.info("port %s was taken before the Bento bound it; retrying", self.url)
                        continue
                    self._failed = True
                    raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server's whole process tree (idempotent). Keeps the log if the run failed."""
        try:
            self._kill()
        finally:
            self._restore_sigterm()
            removable = self._own_log or not self.keep_log
            if removable and not self._failed and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    def keep(self) -> None:
        """Keep the log after the stop (e.g. some samples failed on the server)."""
        self._failed = True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """Whether the server process is still running."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def failure_hint(self, lines: int = 3) -> str:
        """``server log PATH; last lines: … | …`` for an error raised while the server ran."""
        tail = self.log_tail()
        for line in tail:
            log.error("bento | %s", line)
        shown = _meaningful(tail, lines)
        where = f"server log {self.log_path}"
        return where + (f"; last lines: {' | '.join(shown)}" if shown else "")

    def log_tail(self, lines: int = _TAIL_LINES) -> list[str]:
        """The server log's last non-empty lines, colour codes removed."""
        if self.log_path is None or not self.log_path.exists():
            return []
        tail: deque[str] = deque(maxlen=lines)
        with self.log_path.open("r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = _ANSI.sub("", line).rstrip()
                if line.strip():
                    tail.append(line)
        return list(tail)

    # --- internals ---------------------------------------------------------------------------

    def _spawn(self, cwd: Path) -> None:
        port = free_port(self.host)
        self.url = f"http://{self.host}:{port}"
        env = {**self.base_env, "BENTOML_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1",
               "NO_COLOR": "1", **(self.env or {})}
        # The interpreter running us, not whatever `bentoml` is first on PATH.
        cmd = [sys.executable, "-m", "bentoml", "serve", self.target,
               "--host", self.host, "--port", str(port)]
        assert self.log_path is not None
        with self.log_path.open("ab") as out:
            out.write(f"$ {' '.join(cmd)}  (cwd {cwd})\n".encode())
            out.flush()
            self._proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        log.info("starting Bento %s on %s (log: %s)", self.target, self.url, self.log_path)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.ready_timeout
        next_beat = started + _HEARTBEAT_S
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1.0, read=2.0))
        while True:
            if time.monotonic() >= next_beat:
                next_beat += _HEARTBEAT_S
                last = [line for line in self.log_tail(1) if not line.startswith("$ ")]
                log.info("waiting for the Bento to become ready (%.0f s of %g s)%s",
                         time.monotonic() - started, self.ready_timeout,
                         f"; its log: {_clip(last[0])}" if last else "")
            code = self._proc.poll()
            if code is not None:
                raise self._start_error(f"exited with code {code} before it was ready")
            try:
                if http.request("GET", f"{self.url}/readyz").status == 200:
                    log.info("Bento %s ready after %.1f s", self.target, time.monotonic() - started)
                    return
            except urllib3.exceptions.HTTPError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise self._start_error(f"was not ready after {self.ready_timeout:g} s")
            time.sleep(_POLL_S)

    def _start_error(self, what: str) -> BentoStartError:
        tail = self.log_tail()
        for line in tail:
            log.error("bento | %s", line)
        missing = _missing_module(tail)
        own = self.target.split(":", 1)[0] if ":" in self.target else None
        if missing and own and missing.split(".")[0] == own.split(".")[0]:
            message = (f"the Bento {self.target!r} {what}: there is no module {own!r} in "
                       f"{self.cwd} (check the bento input: module:Service, a Bento tag or a path)")
            return BentoStartError(message, log_tail=tail, log_path=self.log_path)
        if missing:
            message = (f"the Bento {self.target!r} {what}: it needs the Python module {missing!r}, "
                       f"which is not installed where mlobs runs — {DEPENDENCY_ROUTES}")
            return BentoStartError(message, log_tail=tail, log_path=self.log_path)
        last = _last_meaningful(tail)
        message = f"the Bento {self.target!r} {what}" + (f": {last}" if last else "")
        return BentoStartError(message, log_tail=tail, log_path=self.log_path)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        tree = _descendants(proc.pid)  # before signalling: orphans lose their parent link
        _signal_all(proc.pid, tree, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            log.warning("Bento did not stop within %g s of SIGTERM; killing it", self.stop_grace)
        deadline = time.monotonic() + self.stop_grace
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_all(proc.pid, _alive(tree) + _descendants(proc.pid), signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            log.error("Bento process %d survived SIGKILL", proc.pid)

    def _install_sigterm(self) -> None:
        # Only the main thread may set handlers, and only replace the default (terminate).
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._prev_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._prev_sigterm is not None:
            signal.signal(signal.SIGTERM, self._prev_sigterm)  # type: ignore[arg-type]
            self._prev_sigterm = None


def _descendants(pid: int) -> list[int]:
    try:
        import psutil  # a BentoML dependency, so present wherever a Bento can be served
    except ImportError:  # pragma: no cover
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # pragma: no cover - pid reused by someone else's process
            continue
        out.append(pid)
    return out


def _signal_all(leader: int, others: list[int], sig: int) -> None:
    """Signal the leader's process group and each process of the tree (their own groups too)."""
    groups = {leader}
    for pid in others:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())  # never our own group, whatever a child did with its own
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _missing_module(tail: list[str]) -> str | None:
    for line in reversed(tail):
        found = _NO_MODULE.search(line)
        if found:
            return found.group(1)
    return None


def _meaningful(tail: list[str], lines: int) -> list[str]:
    """The log's last exception lines, clipped, oldest first (access-log lines say nothing)."""
    picked = [_clip(line.strip()) for line in tail if _EXCEPTION.match(line.strip())]
    return picked[-lines:]


def _clip(text: str, limit: int = 160) -> str:
    return clip(text, limit)


_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit)\b.*:|^Error:")


def _last_meaningful(tail: list[str]) -> str:
    """The line that says what went wrong: the last exception line, else the last line."""
    for line in reversed(tail):
        text = line.strip()
        if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", text) or text.startswith("Error:"):
            return text
    return tail[-1].strip() if tail else ""
