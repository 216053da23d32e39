"""publish-report end to end: Iceberg runs → Hugo site, checked by parsing the HTML it wrote."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

import lakegen
from mlobs.cli import cli
from mlobs.evaluate.metrics import from_aggregate
from mlobs.lake.catalog import CatalogConfig
from mlobs.lake.engine import open_engine


class Tables(HTMLParser):
    """Collects every table as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(path: Path) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


@pytest.fixture
def workspace(tmp_path):
    return tmp_path


@pytest.fixture
def engine(workspace):
    catalog = CatalogConfig.parse(None, "mlobs.predictions", workspace / ".mlobs" / "lake")
    eng = open_engine("pyiceberg", catalog)
    yield eng
    eng.close()


def publish(workspace, *args):
    env = {"GITHUB_ACTIONS": "", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""}
    return CliRunner().invoke(cli, ["publish-report", f"--working-directory={workspace}",
                                    "--github-token=", *args], env=env, catch_exceptions=False)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_versions_to_html_with_numbers_from_the_table(workspace, engine):
    v1 = lakegen.write(engine, "v1", accuracy=0.9, seed=1, errors=3)
    v2 = lakegen.write(engine, "v2", accuracy=0.7, seed=2, when=datetime(2026, 11, 25, tzinfo=UTC))
    assert publish(workspace, "--versions=v1").exit_code == 0
    result = publish(workspace, "--versions=v2", "--baseline-version=v1",
                     "--report-url=https://reports.example/models")
    assert result.exit_code == 0, result.output
    site = workspace / "public"
    assert {p.relative_to(site).as_posix() for p in site.rglob("index.html")} == {
        "index.html", "v1/index.html", "v2/index.html", "compare/v1...v2/index.html"}

    expected = from_aggregate(engine.aggregate(v2).to_pylist()).overall
    headline = {row[0]: row[1:] for row in tables(site / "v2" / "index.html")[0][1:]}
    assert headline["samples"][0] == str(expected.n)
    assert headline["accuracy"][0] == f"{expected.accuracy:.3f}"
    assert headline["macro_f1"][0] == f"{expected.macro_f1:.3f}"
    # each with its 95 % interval: Wilson's closed form for accuracy
    k, n, z = round(expected.accuracy * expected.n), expected.n, 1.959963984540054
    centre = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * ((k / n) * (1 - k / n) / n + z * z / (4 * n * n)) ** 0.5
    assert headline["accuracy"][1] == f"[{centre - half:.3f}, {centre + half:.3f}]"
    low, high = (float(x) for x in headline["macro_f1"][1].strip("[]").split(", "))
    assert low < expected.macro_f1 < high
    confusion = next(t for t in tables(site / "v2" / "index.html") if t[0][0].startswith("true"))
    assert [[int(c) for c in row[1:]] for row in confusion[1:]] == expected.confusion

    v1_expected = from_aggregate(engine.aggregate(v1).to_pylist()).overall
    compare = tables(site / "compare" / "v1...v2" / "index.html")[0]
    accuracy_row = next(r for r in compare if r[0] == "accuracy")
    assert [cell.split(" [")[0] for cell in accuracy_row[1:3]] == [
        f"{v1_expected.accuracy:.3f}", f"{expected.accuracy:.3f}"]
    assert "(worse)" in accuracy_row[3]
    # the runs share their sample ids and dataset hash (lakegen): a paired McNemar test
    assert accuracy_row[5].endswith("(McNemar, paired)")
    index = tables(site / "index.html")[0]
    assert [r[0] for r in index[1:]] == ["v1", "v2"]
    assert "<svg" in (site / "v2" / "index.html").read_text()  # charts inline, no scripts
    manifest = json.loads((site / "versions.json").read_text())
    assert [v["version"] for v in manifest["versions"]] == ["v1", "v2"]


def test_comment_links_and_outputs(workspace, engine, tmp_path):
    lakegen.write(engine, "v1", accuracy=0.9)
    lakegen.write(engine, "v2", accuracy=0.8, seed=3, when=datetime(2026, 11, 25, tzinfo=UTC))
    out = tmp_path / "gh_out"
    out.touch()
    env = {"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": "", "GITHUB_ACTIONS": ""}
    result = CliRunner().invoke(cli, ["publish-report", f"--working-directory={workspace}",
                                      "--github-token=", "--versions=v1,v2", "--baseline-version=v1",
                                      "--report-url=https://r.example/", "--dry-run"],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    comment = (workspace / ".mlobs" / "dry-run" / "publish-report" / "comment.md").read_text()
    assert "[v2](https://r.example/v2/index.html)" in comment
    assert "(https://r.example/compare/v1...v2/index.html)" in comment
    assert f"report-path={workspace / 'public'}" in out.read_text()


def test_hostile_labels_render_as_text(workspace, engine):
    evil = ["<script>alert(1)</script>", "ok", '"><img src=x onerror=alert(2)>']
    lakegen.write(engine, "v1", accuracy=0.6, classes=evil, languages=("<b>en</b>",))
    assert publish(workspace, "--versions=v1").exit_code == 0
    for page in (workspace / "public").rglob("*.html"):
        html = page.read_text()
        assert "<script" not in html and "<img" not in html and "<b>en" not in html, page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (workspace / "public" / "v1" / "index.html").read_text()


@pytest.mark.parametrize("version", ["../x", "/etc", "a/b", "v 1", "compare", "..", ".hidden", ""])
def test_unsafe_versions_are_refused_before_anything_is_written(workspace, version):
    result = publish(workspace, f"--versions={version}" if version else "--versions=,")
    assert result.exit_code == 2
    assert result.stderr.startswith("mlobs: error:") and len(result.stderr.strip().splitlines()) == 1
    assert not (workspace / "public").exists()


def test_builds_are_reproducible(workspace, engine):
    lakegen.write(engine, "v1", accuracy=0.85)
    lakegen.write(engine, "v2", accuracy=0.75, seed=2, when=datetime(2026, 11, 25, tzinfo=UTC))
    for folder in ("one", "two"):
        result = publish(workspace, "--versions=v1,v2", "--baseline-version=v1", f"--report-dir={folder}")
        assert result.exit_code == 0, result.output
    one, two = digest(workspace / "one"), digest(workspace / "two")
    # 3 pages, the data of the 2 version pages, the index and the manifest
    assert one == two and len(one) == 7


def test_published_versions_are_immutable(workspace, engine):
    lakegen.write(engine, "v1", accuracy=0.9)
    assert publish(workspace, "--versions=v1").exit_code == 0
    page = workspace / "public" / "v1" / "index.html"
    before = (page.read_bytes(), page.stat().st_mtime_ns)

    again = publish(workspace, "--versions=v1")  # same data: verified byte-identical
    assert again.exit_code == 0
    lakegen.write(engine, "v2", accuracy=0.8, seed=5, when=datetime(2026, 11, 25, tzinfo=UTC))
    assert publish(workspace, "--versions=v2").exit_code == 0  # adding a version
    assert (page.read_bytes(), page.stat().st_mtime_ns) == before

    lakegen.write(engine, "v1", accuracy=0.5, seed=9, run_id="rerun-v1",
                  when=datetime(2026, 11, 26, tzinfo=UTC))
    refused = publish(workspace, "--versions=v1")
    assert refused.exit_code == 2 and "immutable" in refused.stderr
    assert (page.read_bytes(), page.stat().st_mtime_ns) == before
    forced = publish(workspace, "--versions=v1", "--force")
    assert forced.exit_code == 0 and page.read_bytes() != before[0]


def test_unknown_version_is_a_clear_error(workspace, engine):
    lakegen.write(engine, "v1", accuracy=0.9)
    result = publish(workspace, "--versions=v9")
    assert result.exit_code == 2
    assert "no evaluation run of version 'v9'" in result.stderr


def test_hugo_errors_surface_as_one_line(workspace, engine, tmp_path, monkeypatch):
    import shutil

    broken = tmp_path / "hugo"
    shutil.copytree(Path(__file__).resolve().parents[1] / "hugo", broken)
    (broken / "layouts" / "_default" / "version.html").write_text("{{ define \"main\" }}{{ .Nope.Broken }")
    monkeypatch.setenv("MLOBS_HUGO_DIR", str(broken))
    lakegen.write(engine, "v1", accuracy=0.9)
    result = publish(workspace, "--versions=v1")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error: hugo failed")


def test_slo_results_appear_on_the_version_page(workspace, engine):
    lakegen.write(engine, "v1", accuracy=0.9)
    slo = {"schema": "mlobs.slo-results/1", "verdict": "fail", "window": "1h", "source": "Loki",
           "model_version": "v1", "scenarios": [{"name": "p99 <latency>", "verdict": "fail", "checks": [
               {"measured": "212.0 ms", "threshold": "< 150 ms", "n": 1200}]}]}
    (workspace / "slo.json").write_text(json.dumps(slo))
    assert publish(workspace, "--versions=v1", "--slo-results=slo.json").exit_code == 0
    slo_table = tables(workspace / "public" / "v1" / "index.html")[-1]
    assert slo_table[1] == ["p99 <latency>", "fail", "212.0 ms", "< 150 ms", "1200"]


def test_worst_samples_are_the_most_confident_mistakes_then_errors(engine):
    from mlobs.report import data

    info = lakegen.write(engine, "v1", n=3000, accuracy=0.7, errors=5)
    rows = engine.read_run(info, columns=["sample_id", "label", "prediction", "confidence", "error"]).to_pylist()
    wrong = [r for r in rows if r["error"] is not None or r["prediction"] != r["label"]]
    wrong.sort(key=lambda r: (-(-1.0 if r["error"] is not None else r["confidence"]), r["sample_id"]))
    got = data.worst_samples(engine, info, k=len(wrong) - 3)
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in wrong[: len(wrong) - 3]]
    assert got[-1]["error"] is not None  # the errors rank after every confident mistake


def test_a_site_published_before_pages_kept_their_data(workspace, engine):
    """Sites from earlier releases have no <version>/report.json: a published version is verified
    by its pages, and a published baseline is compared through its pinned run in the table."""
    v1 = lakegen.write(engine, "v1", accuracy=0.9, seed=1)
    assert publish(workspace, "--versions=v1").exit_code == 0
    site = workspace / "public"
    (site / "v1" / "report.json").unlink()
    before = digest(site)
    assert publish(workspace, "--versions=v1").exit_code == 0  # same run, same pages: verified
    assert digest(site) == before

    lakegen.write(engine, "v1", accuracy=0.5, seed=9, run_id="rerun-v1", when=datetime(2026, 11, 26, tzinfo=UTC))
    v2 = lakegen.write(engine, "v2", accuracy=0.7, seed=2, when=datetime(2026, 11, 27, tzinfo=UTC))
    result = publish(workspace, "--versions=v2", "--baseline-version=v1")
    assert result.exit_code == 0, result.output
    pinned = from_aggregate(engine.aggregate(v1).to_pylist()).overall.accuracy
    mine = from_aggregate(engine.aggregate(v2).to_pylist()).overall.accuracy
    accuracy_row = next(r for r in tables(site / "compare" / "v1...v2" / "index.html")[0] if r[0] == "accuracy")
    assert [cell.split(" [")[0] for cell in accuracy_row[1:3]] == [f"{pinned:.3f}", f"{mine:.3f}"]
    refused = publish(workspace, "--versions=v1")  # its newest run gives other pages: refused
    assert refused.exit_code == 2 and "immutable" in refused.stderr


def test_a_page_built_by_an_older_layout_is_kept_as_published(workspace, engine, tmp_path, monkeypatch):
    import shutil

    lakegen.write(engine, "v1", accuracy=0.9)
    assert publish(workspace, "--versions=v1").exit_code == 0
    before = digest(workspace / "public")
    newer = tmp_path / "hugo"
    shutil.copytree(Path(__file__).resolve().parents[1] / "hugo", newer)
    base = newer / "layouts" / "_default" / "baseof.html"
    base.write_text(base.read_text().replace("this page never changes once published",
                                             "a newer layout of this footer"))
    monkeypatch.setenv("MLOBS_HUGO_DIR", str(newer))
    again = publish(workspace, "--versions=v1")  # same data, other bytes: the published page stands
    assert again.exit_code == 0, again.output
    results = json.loads((workspace / ".mlobs" / "publish-results.json").read_text())
    assert results["kept"] == ["v1"] and results["verified"] == [] and results["written"] == []
    after = digest(workspace / "public")
    assert {k: v for k, v in after.items() if k.startswith("v1/")} == \
        {k: v for k, v in before.items() if k.startswith("v1/")}
    lakegen.write(engine, "v2", accuracy=0.8, seed=2, when=datetime(2026, 11, 25, tzinfo=UTC))
    assert publish(workspace, "--versions=v2").exit_code == 0
    assert "a newer layout" in (workspace / "public" / "v2" / "index.html").read_text()
    assert "a newer layout" not in (workspace / "public" / "v1" / "index.html").read_text()


PUBLISHED_BY_REPORT_1 = Path(__file__).resolve().parent / "data" / "site-published-by-report-1"


def test_a_site_published_before_intervals_still_verifies_and_grows(workspace, engine):
    """A site published by the action before report documents carried intervals (its files
    byte for byte, tests/data/site-published-by-report-1): re-publishing its versions from the
    same runs verifies them — never refused, nothing rewritten — and a new version publishes next
    to them, with its intervals, a comparison that shows the old version without intervals, and a
    history whose bands start where the intervals do."""
    import shutil

    site = workspace / "public"
    shutil.copytree(PUBLISHED_BY_REPORT_1, site, ignore=shutil.ignore_patterns("README.md"))
    before = digest(site)
    assert json.loads((site / "v1" / "report.json").read_text())["schema"] == "mlobs.report/1"
    lakegen.write(engine, "v1", accuracy=0.9, seed=1, errors=3)  # the runs the site came from
    lakegen.write(engine, "v2", accuracy=0.8, seed=2, when=datetime(2026, 11, 25, tzinfo=UTC))

    again = publish(workspace, "--versions=v1,v2", "--baseline-version=v1", "--dry-run")
    assert again.exit_code == 0, again.output
    comment = (workspace / ".mlobs" / "dry-run" / "publish-report" / "comment.md").read_text()
    assert "pages kept as first built: `v1`, `v2`" in comment  # same data; the old layout stands
    changed = {k for k in digest(site) if digest(site)[k] != before.get(k)}
    assert changed <= {"index.html"}  # only the index is regenerated from everything published
    for version in ("v1", "v2"):
        for name in ("index.html", "report.json"):
            assert (site / version / name).read_bytes() == (PUBLISHED_BY_REPORT_1 / version / name).read_bytes()

    v3 = lakegen.write(engine, "v3", accuracy=0.7, seed=3, when=datetime(2026, 11, 26, tzinfo=UTC))
    result = publish(workspace, "--versions=v3", "--baseline-version=v1")
    assert result.exit_code == 0, result.output
    doc = json.loads((site / "v3" / "report.json").read_text())
    assert doc["schema"] == "mlobs.report/2" and doc["intervals"]["headline"]["accuracy"]["low"] < \
        doc["headline"]["accuracy"]
    rows = {r[0]: r for r in tables(site / "compare" / "v1...v3" / "index.html")[0]}
    pinned = json.loads((site / "v1" / "report.json").read_text())["headline"]["accuracy"]
    expected = from_aggregate(engine.aggregate(v3).to_pylist()).overall.accuracy
    assert rows["accuracy"][1] == f"{pinned:.3f}"  # the published v1: no interval to show
    assert rows["accuracy"][2].startswith(f"{expected:.3f} [")
    assert rows["accuracy"][5].endswith("(McNemar, paired)")  # both runs are in the table
    manifest = {v["version"]: v for v in json.loads((site / "versions.json").read_text())["versions"]}
    assert "intervals" not in manifest["v1"] and manifest["v3"]["intervals"]["accuracy"]["high"] > expected
    history = (site / "index.html").read_text()
    assert history.count("<polygon") == 0 and "95 % interval" in history  # one point: error bars
    for version in ("v1", "v2"):  # still the bytes published before
        assert (site / version / "report.json").read_bytes() == (PUBLISHED_BY_REPORT_1 / version / "report.json").read_bytes()
