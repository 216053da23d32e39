"""The metric registry: a headline metric is one entry, and every surface follows from it.

The test registers a metric no file of the package knows — balanced accuracy (the mean recall of
the classes), shown as a percentage — computed by a function in its entry, and shows it in the
evaluate comment, its regression gate, publish-report's comment, the version, comparison and index
pages, ``mlobs evaluate --help``, and what ``scripts/readme_inputs.py`` writes into ``action.yml``
and the README. Every value is checked against scikit-learn's ``balanced_accuracy_score`` over the
answers the loopback Bento gave.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score

from mlobs.errors import ConfigError
from mlobs.evaluate import registry
from mlobs.evaluate.compare import parse_gates
from mlobs.evaluate.metrics import Metrics
from test_golden import CLASSES, MODELS, ROWS, RuleBento, golden_set, mlobs

REPO = Path(__file__).resolve().parents[1]


def balanced_accuracy(m: Metrics) -> float | None:
    recalls = [c.recall for c in m.per_class if c.support]
    return sum(recalls) / len(recalls) if recalls else None


BALANCED = registry.Metric("balanced_accuracy", "balanced accuracy", True, balanced_accuracy,
                           digits=1, percent=True, interval="bootstrap", index_column=True)
# The same entry, for a child process (the CLI's help is written when cli.py is imported).
REGISTER_IN_CHILD = """
from mlobs.evaluate import registry
def balanced_accuracy(m):
    recalls = [c.recall for c in m.per_class if c.support]
    return sum(recalls) / len(recalls) if recalls else None
registry.register(registry.Metric("balanced_accuracy", "balanced accuracy", True, balanced_accuracy,
                                  digits=1, percent=True, interval="bootstrap", index_column=True))
"""


@pytest.fixture
def registered():
    registry.register(BALANCED)
    try:
        yield BALANCED
    finally:
        registry.unregister(BALANCED.name)


def expected(version: str) -> float:
    truth = [r["label"] for r in golden_set()]
    return balanced_accuracy_score(truth, [MODELS[version](i)[0] for i in range(ROWS)])


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def signed_pp(value: float) -> str:
    return f"{value * 100:+.1f} pp".replace("-", "−")


def row_bootstrap(resamples: int = 2000) -> tuple[float, float, float, float]:
    """95 % percentile intervals of v3's balanced accuracy and of v3 − v1 (paired: the same
    resampled rows for both), by resampling the golden set's rows — independently of mlobs."""
    import numpy as np

    truth = np.array([r["label"] for r in golden_set()])
    v1 = np.array([MODELS["v1"](i)[0] for i in range(ROWS)])
    v3 = np.array([MODELS["v3"](i)[0] for i in range(ROWS)])
    rng = np.random.default_rng(7)
    own, diff = [], []
    for _ in range(resamples):
        i = rng.integers(0, ROWS, ROWS)
        b3 = balanced_accuracy_score(truth[i], v3[i])
        own.append(b3)
        diff.append(b3 - balanced_accuracy_score(truth[i], v1[i]))
    return (*np.quantile(own, [0.025, 0.975]), *np.quantile(diff, [0.025, 0.975]))


def write_golden_set(workspace: Path) -> None:
    import csv

    rows = golden_set()
    with (workspace / "golden.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def evaluate(workspace: Path, bento: RuleBento, version: str, *args: str) -> int:
    bento.model = MODELS[version]
    return mlobs(workspace, "evaluate", "--dataset=golden.csv", "--id-column=id",
                 "--input-columns=text", "--slice-columns=language", f"--bento-url={bento.url}",
                 f"--model-version={version}", f"--run-id=run-{version}", *args)


def dry_run(workspace: Path, mode: str, name: str) -> str:
    return (workspace / ".mlobs" / "dry-run" / mode / name).read_text(encoding="utf-8")


def test_a_registered_metric_reaches_the_comment_the_gates_and_every_report_page(tmp_path, registered):
    v1, v3 = expected("v1"), expected("v3")
    assert v1 - v3 > 0.05  # v3 misses German negatives: a clear regression to gate on
    write_golden_set(tmp_path)
    bento = RuleBento()
    try:
        assert evaluate(tmp_path, bento, "v1") == 0
        code = evaluate(tmp_path, bento, "v3", "--baseline-version=v1",
                        "--max-regression=balanced_accuracy=0.05")
    finally:
        bento.close()
    assert code == 1  # the new metric's gate failed the run

    comment = dry_run(tmp_path, "evaluate", "comment.md")
    change = (v3 - v1) * 100
    results = json.loads((tmp_path / ".mlobs" / "evaluate-results.json").read_text())
    # its interval and its paired delta, with no line of the statistics engine naming it; the
    # bounds agree with a bootstrap over the rows that recomputes scikit-learn's score
    stats = results["statistics"]
    mine = stats["intervals"]["headline"]["balanced_accuracy"]
    delta = stats["comparison"]["deltas"]["balanced_accuracy"]
    assert stats["comparison"]["paired"] and delta["method"] == "bootstrap, paired"
    low, high, d_low, d_high = row_bootstrap()
    assert (mine["low"], mine["high"]) == (pytest.approx(low, abs=0.02), pytest.approx(high, abs=0.02))
    assert (delta["low"], delta["high"]) == (pytest.approx(d_low, abs=0.02),
                                             pytest.approx(d_high, abs=0.02))
    shown = f"{pct(v3)} [{pct(mine['low'])}, {pct(mine['high'])}]"
    span = f"[{signed_pp(delta['low'])}, {signed_pp(delta['high'])}]"
    assert (f"| balanced_accuracy | {shown} | {pct(v1)} [{pct(stats['baseline_intervals']['headline']['balanced_accuracy']['low'])}, "
            f"{pct(stats['baseline_intervals']['headline']['balanced_accuracy']['high'])}] | "
            f"▼ {signed_pp(change / 100)} {span} (worse), p<0.001 (bootstrap, paired) |") in comment
    assert (f"| balanced\\_accuracy worse by at most 0.05 | {-change:.1f} pp worse | one-sided "
            "p<0.001 (bootstrap, paired), α = 0.05 | ❌ fail |") in comment
    (gate,) = results["gates"]
    assert gate["gate"]["metric"] == "balanced_accuracy" and gate["passed"] is False
    assert gate["current"] == pytest.approx(v3) and gate["baseline"] == pytest.approx(v1)
    assert results["headline"]["balanced_accuracy"] == pytest.approx(v3)
    assert results["baseline_headline"]["balanced_accuracy"] == pytest.approx(v1)
    check_run = json.loads(dry_run(tmp_path, "evaluate", "check-run.json"))
    assert f"| balanced_accuracy | {shown} |" in check_run[0]["payload"]["output"]["summary"]

    assert mlobs(tmp_path, "publish-report", "--versions=v3", "--baseline-version=v1") == 0
    published = dry_run(tmp_path, "publish-report", "comment.md")
    assert "| Version | n | accuracy | macro_f1 | weighted_f1 | ece | error_rate | balanced_accuracy |" in published
    site = tmp_path / "public"
    reports = {version: json.loads((site / version / "report.json").read_text())
               for version in ("v1", "v3")}
    bounds = {version: reports[version]["intervals"]["headline"]["balanced_accuracy"]
              for version in reports}
    assert (f"| {pct(v3)} [{pct(bounds['v3']['low'])}, {pct(bounds['v3']['high'])}] "
            f"({change:+.1f} pp) |") in published
    assert bounds["v3"] == {"low": pytest.approx(mine["low"], abs=1e-6),
                            "high": pytest.approx(mine["high"], abs=1e-6),
                            "method": "bootstrap percentile, 2000 resamples"}
    for version, value in (("v1", v1), ("v3", v3)):
        page = (site / version / "index.html").read_text()
        b = bounds[version]
        assert (f"<tr><td>balanced_accuracy</td><td>{pct(value)}</td>"
                f"<td>[{pct(b['low'])}, {pct(b['high'])}]</td></tr>") in page
        assert reports[version]["headline"]["balanced_accuracy"] == pytest.approx(value, abs=1e-6)
    compare = (site / "compare" / "v1...v3" / "index.html").read_text()
    assert (f"<tr><td>balanced_accuracy</td><td>{pct(v1)} <span class=\"ci\">[{pct(bounds['v1']['low'])}, "
            f"{pct(bounds['v1']['high'])}]</span></td><td>{pct(v3)} <span class=\"ci\">"
            f"[{pct(bounds['v3']['low'])}, {pct(bounds['v3']['high'])}]</span></td>"
            f'<td><span class="worse">▼ {change:+.1f} pp (worse)</span></td>'
            f"<td>{span}</td><td>p&lt;0.001 (bootstrap, paired)</td></tr>") in compare
    index = (site / "index.html").read_text()
    assert "<th>ECE</th><th>balanced accuracy</th><th>errors</th>" in index
    assert f"<td>{pct(v1)}</td><td>0</td>" in index and f"<td>{pct(v3)}</td><td>0</td>" in index


def test_the_help_action_yml_and_readme_follow_the_registry(registered):
    spec = importlib.util.spec_from_file_location("readme_inputs", REPO / "scripts" / "readme_inputs.py")
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    action = (REPO / "action.yml").read_text()
    described = docs.render_action(action)
    assert described != action  # action.yml as committed is now stale: --check fails until rerun
    inputs = yaml.safe_load(described)["inputs"]
    assert inputs["max-regression"]["description"].endswith(
        "`ece` (lower is better), `error_rate` (lower is better), `balanced_accuracy` or `f1[<class>]`.")
    changed = [ln for ln in difflib.ndiff(action.splitlines(), described.splitlines()) if ln[0] in "+-"]
    assert len(changed) == 2  # that one line, nothing else
    readme = docs.render((REPO / "README.md").read_text(), yaml.safe_load(described))
    assert "| `balanced_accuracy` | balanced accuracy | higher | 89.4% | `bootstrap` |" in readme
    assert "`balanced_accuracy`" in readme.split("| `max-regression` |", 1)[1].split("\n", 1)[0]

    env = {"PYTHONPATH": str(REPO / "lib")}
    help_with = subprocess.run(
        [sys.executable, "-c", REGISTER_IN_CHILD + "from mlobs.cli import main\nmain(['evaluate', '--help'])"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    help_without = subprocess.run(
        [sys.executable, "-c", "from mlobs.cli import main\nmain(['evaluate', '--help'])"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert help_with.returncode == help_without.returncode == 0, help_with.stderr
    flat = " ".join(help_with.stdout.split())
    assert "ece (lower is better), error_rate (lower is better), balanced_accuracy or f1[<class>]" in flat
    assert "balanced_accuracy" not in help_without.stdout


def test_a_version_published_before_a_metric_existed_is_kept_not_refused(tmp_path):
    write_golden_set(tmp_path)
    bento = RuleBento()
    try:
        assert evaluate(tmp_path, bento, "v1") == 0
    finally:
        bento.close()
    assert mlobs(tmp_path, "publish-report", "--versions=v1") == 0
    page = (tmp_path / "public" / "v1" / "index.html").read_bytes()
    registry.register(BALANCED)
    try:
        code = mlobs(tmp_path, "publish-report", "--versions=v1")
    finally:
        registry.unregister(BALANCED.name)
    # The table's run gives the same data plus the new metric: the published page stands as it was.
    assert code == 0, dry_run(tmp_path, "publish-report", "comment.md")
    assert "pages kept as first built: `v1`" in dry_run(tmp_path, "publish-report", "comment.md")
    assert (tmp_path / "public" / "v1" / "index.html").read_bytes() == page


def test_an_entry_is_checked_when_it_is_registered():
    value = BALANCED.value
    with pytest.raises(ValueError, match="interval must be one of"):
        registry.Metric("kappa", "Cohen's kappa", True, value, interval="jackknife")
    with pytest.raises(ValueError, match="lower-case"):
        registry.Metric("Kappa", "kappa", True, value)  # Hugo lower-cases map keys
    with pytest.raises(ValueError, match="not one of"):
        registry.Metric("errors", "errors", False, value)  # a report headline's own key
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.Metric("accuracy", "accuracy", True, value))
    with pytest.raises(ValueError, match="digits"):
        registry.Metric("kappa", "kappa", True, value, digits=9)


def test_the_built_in_metrics_and_their_intervals():
    assert registry.names() == ("accuracy", "macro_f1", "weighted_f1", "ece", "error_rate")
    assert {m.name: m.interval for m in registry.metrics()} == {
        "accuracy": "wilson", "error_rate": "wilson",  # proportions of samples
        "macro_f1": "bootstrap", "weighted_f1": "bootstrap", "ece": "bootstrap"}
    assert [m.name for m in registry.metrics() if not m.higher_is_better] == ["ece", "error_rate"]
    assert registry.primary().name == "accuracy"
    assert registry.higher_is_better("f1[golden retriever]") is True


def test_max_regression_names_the_registered_metrics_when_one_is_unknown(registered):
    (gate,) = parse_gates("balanced_accuracy=2%")
    assert (gate.metric, gate.limit, gate.relative) == ("balanced_accuracy", 0.02, True)
    with pytest.raises(ConfigError) as bad:
        parse_gates("recall=0.01")
    assert str(bad.value).endswith("use one of accuracy, macro_f1, weighted_f1, ece, error_rate, "
                                   "balanced_accuracy, f1[<class>]")


def test_the_registry_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        from mlobs.evaluate import registry, metrics
        print([m for m in ('numpy', 'sklearn', 'pyarrow', 'scipy', 'pandas') if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    assert len(CLASSES) == 3
