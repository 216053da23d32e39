"""Golden files: every surface of every mode, rendered from fixed inputs, compared byte for byte.

What each mode would send — the pull-request comment, the check-run requests, the job summary and
the step outputs (the dry-run files: the exact payloads) — and the report site's pages (a version,
a comparison, the index) are kept under ``tests/golden/<mode>/<case>/``. A difference fails with a
unified diff of each file that changed.

Nothing here depends on the clock or on chance: the SLO window ends at a fixed instant, the GitHub
context is a fixed pull-request event, the time in the sticky comment's marker is frozen, and the
loopback Bento answers by rule. The two values only the lake decides — a snapshot's id (random in
Iceberg) and its commit time — are read back from the table and shown by name
(``{snapshot:run-v2}``, ``{committed:run-v2}``), so a page that showed the wrong run's id would
still differ.

Refresh after an intended change, then review ``git diff tests/golden``::

    python -m pytest tests/test_golden.py --update-golden
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import loggen
from mlobs.cli import cli
from servers.bento import Double

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
REFRESH = "python -m pytest tests/test_golden.py --update-golden"

HEAD_SHA = "0123456789abcdef0123456789abcdef01234567"  # the pull request's head commit
MERGE_SHA = "fedcba9876543210fedcba9876543210fedcba98"  # GITHUB_SHA of a pull_request run
FROZEN_NOW = datetime(2026, 11, 24, 22, 5, 0, tzinfo=UTC)  # just after the SLO window's end


# -- the harness ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def update(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="module", autouse=True)
def frozen_clock():
    """The sticky comment's marker records when the verdict was seen: freeze that one clock."""
    from mlobs.github import sticky

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return FROZEN_NOW if tz is not None else FROZEN_NOW.replace(tzinfo=None)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sticky, "datetime", FrozenDatetime)
        yield


def github_env(workspace: Path) -> dict[str, str | None]:
    """A pull_request run of octo-org/sentiment, PR #7; everything else the runner sets is unset,
    and so is every MLOBS_*/INPUT_*/SLO_* variable of the machine running the tests."""
    event = workspace / "event.json"
    event.write_text(json.dumps({"number": 7, "pull_request": {"number": 7, "head": {"sha": HEAD_SHA}}}))
    env: dict[str, str | None] = {k: None for k in os.environ
                                  if k.startswith(("GITHUB_", "MLOBS_", "INPUT_", "SLO_", "RUNNER_"))}
    env.update({
        "GITHUB_REPOSITORY": "octo-org/sentiment",
        "GITHUB_SHA": MERGE_SHA,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_WORKFLOW": "models",
    })
    return env


def mlobs(workspace: Path, mode: str, *args: str) -> int:
    """Run a mode in dry-run, in-process, from the workspace (relative paths render the same on
    every machine); returns the exit code."""
    with contextlib.chdir(workspace):
        result = CliRunner().invoke(
            cli, [mode, "--working-directory=.", "--github-token=", "--dry-run", *args],
            env=github_env(workspace), catch_exceptions=False)
    return result.exit_code


def pretty_json(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def dry_run_files(workspace: Path, mode: str, names: dict[str, str]) -> dict[str, str]:
    """Every file the dry run wrote (JSON pretty-printed with sorted keys), with ``names``
    (value → name) substituted, and the workspace's place on this machine shown as
    ``{workspace}``."""
    names = {**names, str(workspace.resolve()): "{workspace}"}
    folder = workspace / ".mlobs" / "dry-run" / mode
    files = {}
    for path in sorted(folder.iterdir()):
        text = path.read_text(encoding="utf-8")
        files[path.name] = pretty_json(text) if path.suffix == ".json" else text
        path.unlink()  # the next run of the same mode must write its own
    return {name: substitute(text, names) for name, text in files.items()}


def substitute(text: str, names: dict[str, str]) -> str:
    for value, name in names.items():
        text = text.replace(value, name)
    return text


def compare(case: str, produced: dict[str, str], update: bool, root: Path = GOLDEN) -> None:
    """``produced`` (relative path → text) against ``tests/golden/<case>/``; with --update-golden,
    write it (and remove files no surface produces any more)."""
    folder = root / case
    existing = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} \
        if folder.is_dir() else set()
    if update:
        for rel in existing - set(produced):
            (folder / rel).unlink()
        for rel, text in produced.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
        return
    problems = []
    for rel in sorted(existing - set(produced)):
        problems.append(f"{case}/{rel}: a golden file that nothing renders any more")
    for rel, text in sorted(produced.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{case}/{rel}: rendered, but there is no golden file")
            continue
        want = path.read_text(encoding="utf-8")
        if want != text:
            diff = difflib.unified_diff(want.splitlines(keepends=True), text.splitlines(keepends=True),
                                        f"golden/{case}/{rel}", f"rendered/{case}/{rel}", n=2)
            problems.append("".join(line if line.endswith("\n") else line + "\n\\ No newline\n"
                                    for line in diff))
    if problems:
        pytest.fail(f"rendered surfaces differ from tests/golden/{case} — if the change is "
                    f"intended, run `{REFRESH}` and review `git diff tests/golden`:\n\n"
                    + "\n".join(problems), pytrace=False)


# -- slo-validate: the bundled contract over a fixed log file ---------------------------------------


def slo_logs(case: str) -> list[dict]:
    v1 = loggen.requests(1500, version="v1", latency_ms=(60, 10), seed=1, pod="a")
    if case == "pass":
        return v1 + loggen.requests(1500, version="v2", latency_ms=(62, 10), client_errors=0.01,
                                    seed=2, pod="b")
    if case == "fail":  # slower, 2 % server errors, and a class mix that moved
        return v1 + loggen.requests(1500, version="v2", latency_ms=(180, 25), server_errors=0.02,
                                    classes={"golden retriever": 0.35, "labrador retriever": 0.15,
                                             "tabby cat": 0.5}, seed=3, pod="b")
    if case == "inconclusive":  # 400 requests of v2 (p99 needs 1000) and no line of the baseline
        return loggen.requests(400, version="v2", latency_ms=(62, 10), seed=4, pod="b")
    if case == "error":  # every line is older than the window: nothing can be evaluated
        return loggen.requests(300, version="v2", start=loggen.END - 90_000, end=loggen.END - 86_400)
    raise AssertionError(case)


SLO_EXIT = {"pass": 0, "fail": 1, "inconclusive": 0, "error": 2}


@pytest.fixture(scope="module")
def slo_runs(tmp_path_factory) -> dict[str, tuple[int, dict[str, str], Path]]:
    runs = {}
    for case in SLO_EXIT:
        workspace = tmp_path_factory.mktemp(f"slo-{case}")
        loggen.write(workspace / "function.log.jsonl", slo_logs(case))
        args = ["--logs-file=function.log.jsonl", f"--window-end={loggen.END:.0f}", "--window=1h",
                "--model-version=v2", "--baseline-version=v1"]
        if case != "error":
            # The bundled contract, as a repository that keeps a copy of it: its lines are in the
            # workspace, so annotations go on the check run (bundled in the image they cannot).
            (workspace / "features").mkdir()
            shutil.copy(REPO / "features" / "production.feature", workspace / "features")
            args.append("--features=features/production.feature")
        code = mlobs(workspace, "slo-validate", *args)
        runs[case] = (code, dry_run_files(workspace, "slo-validate", {}), workspace)
    return runs


@pytest.mark.parametrize("case", list(SLO_EXIT))
def test_slo_validate_surfaces(case, slo_runs, update):
    code, files, _ = slo_runs[case]
    assert code == SLO_EXIT[case]
    assert json.loads(files["outputs.json"])["result"] == case
    compare(f"slo-validate/{case}", files, update)


# -- evaluate: a loopback Bento that answers by rule, a small golden set ----------------------------

CLASSES = ("negative", "neutral", "positive")
ROWS = 90


def golden_set() -> list[dict[str, str]]:
    rows = []
    for i in range(ROWS):
        language = "en" if i % 2 else "de"
        text = (f"review {i}: the battery lasts a day" if language == "en"
                else f"review {i}: der Akku hält einen Tag")
        rows.append({"id": f"s{i:03d}", "text": text, "label": CLASSES[i % 3], "language": language,
                     "length": ("short", "medium", "long")[(i // 3) % 3]})
    return rows


def row_of(text: str) -> int:
    return int(text.split(":", 1)[0].removeprefix("review "))


# Each model version's answer for row i: (label or None, score). Integer arithmetic only.
def _answer(wrong: Callable[[int], bool]) -> Callable[[int], tuple[str | None, float]]:
    def answer(i: int) -> tuple[str | None, float]:
        label = CLASSES[(i + 1) % 3] if wrong(i) else CLASSES[i % 3]
        return label, (55 + (i * 13) % 44) / 100
    return answer


MODELS = {
    "v1": _answer(lambda i: i % 9 == 0),                                  # 10 of 90 wrong
    "v2": _answer(lambda i: i % 10 == 0),                                 # 9 of 90 wrong: better
    "v3": _answer(lambda i: i % 9 == 0 or (i % 3 == 0 and i % 2 == 0)),   # negatives in German fail
}


def refused_model(i: int) -> tuple[str | None, float]:
    return (None, 0.5) if i % 4 == 0 else MODELS["v1"](i)  # a quarter unreadable: over 5 %


def scored(label: str | None, score: float) -> dict:
    """``{"label", "scores"}``: the label's score, the rest shared by the other classes."""
    if label is None:
        return {"label": None, "scores": {}}
    rest = round((1 - score) / (len(CLASSES) - 1), 3)
    return {"label": label, "scores": {c: score if c == label else rest for c in CLASSES}}


class RuleBento:
    """``[{"label", "scores"}]`` per text, like a BentoML service, on the shared loopback Bento (no
    OpenAPI document: inputs go as one list per column); swap ``model`` between runs."""

    def __init__(self) -> None:
        self.model: Callable[[int], tuple[str | None, float]] = MODELS["v1"]
        self.server = Double(lambda texts, _call: (200, [scored(*self.model(row_of(t))) for t in texts]),
                             docs=None)
        self.server.__enter__()
        self.url = self.server.url

    def close(self) -> None:
        self.server.shutdown()


# (case, model, arguments, exit code): run in this order in one workspace, one table.
EVALUATE_CASES = [
    ("no-baseline", "v1", ["--model-version=v1", "--run-id=run-v1"], 0),
    ("gates-hold", "v2", ["--model-version=v2", "--run-id=run-v2", "--baseline-version=v1",
                          "--max-regression=accuracy=0.02,macro_f1=2%"], 0),
    ("gate-failed", "v3", ["--model-version=v3", "--run-id=run-v3", "--baseline-version=v1",
                           "--max-regression=accuracy=0.02,macro_f1=5%,f1[negative]=0.05,ece=0.5"], 1),
    ("refused", "refused", ["--model-version=v4", "--run-id=run-v4", "--baseline-version=v1"], 2),
]


def lake_names(workspace: Path) -> dict[str, str]:
    """Snapshot ids and commit times of the runs in the table, by run id."""
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.engine import open_engine

    config = CatalogConfig.parse(None, "mlobs.predictions", workspace / ".mlobs" / "lake")
    with open_engine("pyiceberg", config) as engine:
        runs = engine.runs()
    names = {}
    for run in runs:
        names[str(run.snapshot_id)] = f"{{snapshot:{run.run_id}}}"
        names[run.committed_at.isoformat().replace("+00:00", "Z")] = f"{{committed:{run.run_id}}}"
    return names


@pytest.fixture(scope="module")
def evaluate_world(tmp_path_factory, slo_runs):
    """Every evaluate case in order, then publish-report of v2 against v1 with v2's SLO results."""
    workspace = tmp_path_factory.mktemp("evaluate")
    rows = golden_set()
    with (workspace / "golden.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    bento = RuleBento()
    runs = {}
    try:
        for case, model, args, _ in EVALUATE_CASES:
            bento.model = refused_model if model == "refused" else MODELS[model]
            code = mlobs(workspace, "evaluate", "--dataset=golden.csv", "--id-column=id",
                         "--input-columns=text", "--label-column=label",
                         "--slice-columns=language,length", f"--bento-url={bento.url}",
                         "--batch-size=16", "--concurrency=1", *args)
            runs[case] = (code, dry_run_files(workspace, "evaluate", lake_names(workspace)))
    finally:
        bento.close()

    shutil.copy(slo_runs["pass"][2] / ".mlobs" / "slo-results.json", workspace / "slo-v2.json")
    code = mlobs(workspace, "publish-report", "--versions=v2", "--baseline-version=v1",
                 "--slo-results=slo-v2.json", "--report-url=https://models.example.com/reports")
    names = lake_names(workspace)
    files = dry_run_files(workspace, "publish-report", names)
    site = workspace / "public"
    for page in ("index.html", "v1/index.html", "v2/index.html", "compare/v1...v2/index.html"):
        if (site / page).is_file():  # else the comparison names the missing page
            files[f"site/{page}"] = substitute((site / page).read_text(encoding="utf-8"), names)
    runs["publish-report"] = (code, files)
    return runs


@pytest.mark.parametrize("case", [c[0] for c in EVALUATE_CASES])
def test_evaluate_surfaces(case, evaluate_world, update):
    code, files = evaluate_world[case]
    expected_code = next(c[3] for c in EVALUATE_CASES if c[0] == case)
    assert code == expected_code, files.get("comment.md")
    compare(f"evaluate/{case}", files, update)


def test_publish_report_surfaces_and_pages(evaluate_world, update):
    code, files = evaluate_world["publish-report"]
    assert code == 0, files.get("comment.md")
    compare("publish-report/v1-v2", files, update)


def _answers(version: str) -> tuple[list[str], list[str], list[float]]:
    """(truth, predictions, confidences) of a version, from the rules the Bento answers by."""
    answers = [MODELS[version](i) for i in range(ROWS)]
    return ([r["label"] for r in golden_set()], [label for label, _ in answers],
            [score for _, score in answers])


def _ece(truth, predicted, confidence) -> float:
    """ECE over 10 equal-width confidence bins; the confidence is the predicted label's score."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    for label, score, t in zip(predicted, confidence, truth, strict=True):
        bins.setdefault(min(int(score * 10), 9), []).append((score, label == t))
    return sum(abs(sum(c for c, _ in b) - sum(ok for _, ok in b)) for b in bins.values()) / len(truth)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval in closed form."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return centre - half, centre + half


def _shown(comment: str, metric: str) -> list[tuple[float, float, float]]:
    """Each ``value [low, high]`` in the comment's row of ``metric``."""
    import re

    (line,) = [ln for ln in comment.splitlines() if ln.startswith(f"| {metric} |")]
    number = r"([−-]?\d+\.\d+)"
    return [tuple(float(x.replace("−", "-")) for x in m)
            for m in re.findall(rf"{number} \[{number}, {number}\]", line)]


def test_the_numbers_in_the_goldens_are_the_models(evaluate_world):
    """The golden files are only worth their numbers: accuracy, macro F1 and ECE of each version
    and their 95 % intervals, and the paired test against the baseline, recomputed here from the
    rules the Bento answers by — Wilson's closed form, a bootstrap over the rows with
    scikit-learn, McNemar's exact binomial sum — must be what the comments show."""
    import math

    import numpy as np
    from sklearn.metrics import f1_score

    expected = {}
    for version in ("v1", "v2", "v3"):
        truth, predicted, confidence = _answers(version)
        accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / ROWS
        macro = f1_score(truth, predicted, labels=list(CLASSES), average="macro")
        expected[version] = (accuracy, macro, _ece(truth, predicted, confidence))
    first = evaluate_world["no-baseline"][1]["comment.md"]
    [(accuracy, low, high)] = _shown(first, "accuracy")
    assert accuracy == round(expected["v1"][0], 3)
    w_low, w_high = _wilson(round(expected["v1"][0] * ROWS), ROWS)
    assert (low, high) == (round(w_low, 3), round(w_high, 3))
    # macro F1 and ECE: percentile bootstrap over the rows (2,000 resamples here, scikit-learn's
    # F1), against the cell bootstrap of the action — the same to Monte-Carlo precision
    truth, predicted, confidence = map(np.array, _answers("v1"))
    rng = np.random.default_rng(16)
    macro_reps, ece_reps = [], []
    for _ in range(2000):
        i = rng.integers(0, ROWS, ROWS)
        macro_reps.append(f1_score(truth[i], predicted[i], labels=list(CLASSES), average="macro",
                                   zero_division=0))
        ece_reps.append(_ece(truth[i], predicted[i], confidence[i]))
    for metric, value, reps in (("macro_f1", expected["v1"][1], macro_reps),
                                ("ece", expected["v1"][2], ece_reps)):
        [(shown, low, high)] = _shown(first, metric)
        assert shown == round(value, 3), metric
        b_low, b_high = np.quantile(reps, [0.025, 0.975])
        assert (low, high) == (pytest.approx(b_low, abs=0.02), pytest.approx(b_high, abs=0.02)), metric
    failed = evaluate_world["gate-failed"][1]["comment.md"]
    change = expected["v3"][0] - expected["v1"][0]
    assert f"accuracy {expected['v3'][0]:.3f} ({change:+.3f} vs v1)".replace("-", "−") in failed
    # the paired accuracy delta: McNemar's exact two-sided test on the discordant pairs
    truth, now, _ = _answers("v3")
    _, before, _ = _answers("v1")
    gains = sum(n == t != b for n, b, t in zip(now, before, truth, strict=True))
    losses = sum(b == t != n for n, b, t in zip(now, before, truth, strict=True))
    m = gains + losses
    p_two = min(1.0, 2 * sum(math.comb(m, k) for k in range(min(gains, losses) + 1)) / 2 ** m)
    assert (gains - losses) / ROWS == pytest.approx(change)
    assert f"p={float(f'{p_two:.2g}'):g} (McNemar, paired)" in failed
    # a slice's accuracy delta: unpaired, the pooled two-proportion z test (erfc, no scipy)
    german = [i for i, r in enumerate(golden_set()) if r["language"] == "de"]
    k3 = sum(now[i] == truth[i] for i in german)
    k1 = sum(before[i] == truth[i] for i in german)
    pooled = (k3 + k1) / (2 * len(german))
    z = (k3 - k1) / len(german) / math.sqrt(pooled * (1 - pooled) * 2 / len(german))
    p_slice = math.erfc(abs(z) / math.sqrt(2))
    (row,) = [ln for ln in failed.splitlines() if ln.startswith("| language = de |")]
    assert f"{(k3 - k1) / len(german):+.3f}".replace("-", "−") in row
    assert f"p={float(f'{p_slice:.2g}'):g} (Newcombe/z, unpaired) |" in row
    held = evaluate_world["gates-hold"][1]["comment.md"]
    [(v2, *_), (v1, *_)] = _shown(held, "macro_f1")
    assert (v2, v1) == (round(expected["v2"][1], 3), round(expected["v1"][1], 3))
    refused = evaluate_world["refused"][1]["comment.md"]
    assert f"{ROWS // 4 + 1} of {ROWS} samples failed" in refused  # rows 0, 4, …, 88
    # the report pages show the same intervals as the comment
    page = evaluate_world["publish-report"][1]["site/v1/index.html"]
    [(_, low, high)] = _shown(first, "accuracy")
    assert f"<td>[{low:.3f}, {high:.3f}]</td>" in page


def test_a_difference_fails_with_a_unified_diff_naming_the_refresh_command(tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "comment.md").write_text("| accuracy | 0.889 |\n| ece | 0.170 |\n")
    (tmp_path / "case" / "gone.md").write_text("old\n")
    rendered = {"comment.md": "| accuracy | 0.900 |\n| ece | 0.170 |\n", "new.json": "{}\n"}
    with pytest.raises(pytest.fail.Exception) as failed:
        compare("case", rendered, update=False, root=tmp_path)
    message = str(failed.value)
    assert REFRESH in message
    assert "--- golden/case/comment.md\n+++ rendered/case/comment.md\n" in message
    assert "\n-| accuracy | 0.889 |\n+| accuracy | 0.900 |\n" in message
    assert "case/gone.md: a golden file that nothing renders any more" in message
    assert "case/new.json: rendered, but there is no golden file" in message
    compare("case", rendered, update=True, root=tmp_path)  # the refresh writes what was rendered
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["comment.md", "new.json"]
    compare("case", rendered, update=False, root=tmp_path)
