"""The one retry policy (mlobs.retry): full jitter, a server's Retry-After, a deadline, attempts —
and every retrying caller in the package goes through it."""

from __future__ import annotations

import ast
import random
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from mlobs.retry import Backoff, retry_after_seconds

LIB = Path(__file__).resolve().parents[1] / "lib" / "mlobs"


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


class Fatal(Exception):
    pass


def failing(times: int, error=Flaky, value="ok"):
    calls = []

    def call():
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error() if isinstance(error, type) else error
        return value

    return call, calls


def test_waits_are_full_jitter_below_the_exponential_ceiling():
    random.seed(11)
    policy = Backoff(base=0.5, cap=4.0, attempts=7)
    waits: list[float] = []
    call, calls = failing(6)
    assert policy.retrying(Flaky, sleep=waits.append)(call) == "ok"
    assert len(calls) == 7 and len(waits) == 6
    ceilings = [min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 7)]  # 0.5 1 2 4 4 4
    assert ceilings == [policy.ceiling(n) for n in range(1, 7)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    # Full jitter, not "equal jitter": over many draws the waits reach well below half the ceiling.
    draws = []
    for _ in range(200):
        call, _ = failing(1)
        policy.retrying(Flaky, sleep=draws.append)(call)
    assert min(draws) < 0.1 and max(draws) > 0.4 and all(0 <= d <= 0.5 for d in draws)


def test_a_servers_retry_after_replaces_the_backoff():
    waits: list[float] = []
    call, _ = failing(2, error=Flaky(retry_after=7.5))
    assert Backoff(base=30, cap=30, attempts=5).retrying(Flaky, sleep=waits.append)(call) == "ok"
    assert waits == [7.5, 7.5]


def test_the_deadline_gives_up_at_once_when_the_next_wait_would_pass_it():
    call, calls = failing(5, error=Flaky(retry_after=3600))
    started = time.monotonic()
    with pytest.raises(Flaky):
        Backoff(base=0.01, cap=0.01, deadline=5.0).retrying(Flaky)(call)
    assert len(calls) == 1 and time.monotonic() - started < 1.0  # no hour-long wait, no retry


def test_the_deadline_bounds_attempts_and_waits_together():
    call, calls = failing(10**6)
    started = time.monotonic()
    with pytest.raises(Flaky):
        Backoff(base=0.02, cap=0.05, deadline=0.4).retrying(Flaky)(call)
    elapsed = time.monotonic() - started
    assert len(calls) >= 3
    assert elapsed < 0.4 + 0.05  # never waits past the deadline (loose: a loaded machine)


def test_attempts_and_single_and_stop_if():
    call, calls = failing(10, error=Flaky(retry_after=0))
    with pytest.raises(Flaky):
        Backoff(base=0.01, cap=0.01, attempts=3).retrying(Flaky)(call)
    assert len(calls) == 3
    call, calls = failing(10, error=Flaky(retry_after=0))
    with pytest.raises(Flaky):
        Backoff(base=0.01, cap=0.01, deadline=60).retrying(Flaky, single=True)(call)
    assert len(calls) == 1
    stopping = []
    call, calls = failing(10, error=Flaky(retry_after=0))

    def stop_after_two() -> bool:
        stopping.append(1)
        return len(calls) >= 2

    with pytest.raises(Flaky):
        Backoff(base=0.01, cap=0.01, deadline=60).retrying(Flaky, stop_if=stop_after_two)(call)
    assert len(calls) == 2


def test_only_what_the_caller_names_is_retried():
    call, calls = failing(3, error=Fatal)
    with pytest.raises(Fatal):
        Backoff(base=0.01, cap=0.01, attempts=5).retrying(Flaky)(call)
    assert len(calls) == 1
    call, calls = failing(2, error=Fatal)
    retried = Backoff(base=0.001, cap=0.001, attempts=5).retrying(lambda e: isinstance(e, Fatal))
    assert retried(call) == "ok" and len(calls) == 3
    seen = []
    call, _ = failing(2, error=Flaky(retry_after=0))
    Backoff(base=0.01, cap=0.01, attempts=5).retrying(
        Flaky, on_retry=lambda error, n, wait: seen.append((type(error), n, wait)))(call)
    assert seen == [(Flaky, 1, 0.0), (Flaky, 2, 0.0)]


def test_bad_policies_are_refused():
    for kwargs in ({"base": 0, "cap": 1, "attempts": 2}, {"base": 1, "cap": float("inf"), "attempts": 2},
                   {"base": 1, "cap": 1}, {"base": 1, "cap": 1, "attempts": 0},
                   {"base": 1, "cap": 1, "deadline": -1}):
        with pytest.raises(ValueError):
            Backoff(**kwargs)


def test_retry_after_header_forms():
    now = 1_800_000_000.0
    assert retry_after_seconds("0") == 0.0 and retry_after_seconds(" 120 ") == 120.0
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "-5", "nan", "inf"):
        assert retry_after_seconds(junk) is None


# --- every retrying caller uses the policy ------------------------------------------------------

RETRYING_MODULES = ["loki/client.py", "evaluate/client.py", "lake/pyiceberg_engine.py",
                    "lake/spark_engine.py",
                    "lake/catalog.py", "report/publish.py"]


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            names.add(f"{node.func.value.id}.{node.func.attr}")
    return names


@pytest.mark.parametrize("module", RETRYING_MODULES)
def test_no_hand_written_retry_loops(module):
    path = LIB / module
    text = path.read_text()
    assert "from mlobs.retry import Backoff" in text
    calls = _calls(path)
    assert not {"time.sleep", "random.uniform", "random.random"} & calls, module
    assert "urllib3.util.retry" not in text and "Retry(" not in text.replace("_Retry(", "")


def test_nothing_else_in_the_package_sleeps_between_attempts():
    sleepers = sorted(str(p.relative_to(LIB)) for p in LIB.rglob("*.py")
                      if {"time.sleep", "random.uniform"} & _calls(p))
    # bento.py polls /readyz while the server starts: a wait for readiness, not a retry.
    assert sleepers == ["evaluate/bento.py"]
