"""slo-validate's result → Markdown report, annotations, results JSON and JUnit XML."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

from mlobs import modes
from mlobs.github import markdown as md
from mlobs.redact import Redactor, write_text
from mlobs.result import Annotation, Report, Verdict
from mlobs.slo.model import CheckResult, RunResult, ScenarioResult

ANNOTATION_LEVEL = {Verdict.FAIL: "failure", Verdict.ERROR: "failure", Verdict.INCONCLUSIVE: "warning"}


def headline(run: RunResult) -> str:
    total = len(run.scenarios)
    parts = [f"{run.count(v)} {v.value}" for v in (Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE,
                                                   Verdict.PASS) if run.count(v)]
    return f"{', '.join(parts) or 'no scenarios'} of {total} scenario{'s' if total != 1 else ''}"


def render(run: RunResult, key: str = "") -> Report:
    title = f"{modes.TITLES[modes.SLO_VALIDATE]}: {headline(run)}"
    context = (f"Source: {md.text(run.source)} · window: last {md.code(run.window)} ending "
               f"{md.text(run.end)}")
    if run.model_version:
        context += f" · model version {md.code(run.model_version)}"
    if run.baseline_version:
        context += f" · baseline {md.code(run.baseline_version)}"
    rows = []
    for scenario in run.scenarios:
        for check in scenario.checks or [None]:
            rows.append(_row(scenario, check))
    summary = f"**{run.verdict.icon}** — {headline(run)}.\n\n{context}\n"
    body = "\n\n".join([
        summary.strip(),
        md.table(["Verdict", "Scenario", "Measured", "Threshold", "n", "Where"], rows),
        md.details("Why each verdict, and the exact queries", _explanations(run)),
        f"<sub>{_footer(run)}</sub>",
    ]) + "\n"
    return Report(mode=modes.SLO_VALIDATE, verdict=run.verdict, title=title, summary=summary,
                  body=body, annotations=annotations(run), key=key)


def _footer(run: RunResult) -> str:
    if run.source.startswith("Loki"):
        return f"{run.queries_issued} Loki quer{'y' if run.queries_issued == 1 else 'ies'} answered every measurement."
    return f"{run.queries_issued} measurements computed."


def _row(scenario: ScenarioResult, check: CheckResult | None) -> list[str]:
    name = md.text(scenario.name)
    if check is None:
        verdict = scenario.verdict
        return [verdict.icon, name, "—", "—", "—", md.code(f"{scenario.path}:{scenario.error_line or scenario.line}")]
    if len(scenario.checks) > 1:
        name += f" — {md.text(check.name)}"
    verdict = Verdict.ERROR if scenario.error else check.verdict
    n = "—" if check.n is None else str(check.n)
    return [verdict.icon, name, md.text(check.measured), md.text(check.threshold), n,
            md.code(f"{scenario.path}:{check.line}")]


def _explanations(run: RunResult) -> str:
    parts = []
    for scenario in run.scenarios:
        head = f"#### {scenario.verdict.icon} {md.text(scenario.name)} — {md.code(scenario.path + ':' + str(scenario.line))}"
        lines = [head]
        if scenario.error:
            lines.append(f"Could not evaluate: {md.text(scenario.error)}")
        if not scenario.checks and not scenario.error:
            lines.append("No checks ran: a scenario needs a `Then` step to pass.")
        for check in scenario.checks:
            lines.append(f"**{md.text(check.name)}** ({check.verdict.value}): {md.text(check.reason)}")
            for query in check.queries:
                lines.append(md.code_block(query, "logql" if "{" in query else ""))
            for url in check.explore_urls:
                lines.append(f"[Open in Grafana Explore]({md.url(url)})")
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts) or "No scenarios ran."


def annotations(run: RunResult) -> list[Annotation]:
    out = []
    for scenario in run.scenarios:
        path = None if scenario.path.startswith("/") else scenario.path  # outside the workspace
        if scenario.error:
            out.append(Annotation(path=path, start_line=scenario.error_line or scenario.line,
                                  level="failure", title=f"Could not evaluate: {scenario.name}",
                                  message=scenario.error))
            continue
        for check in scenario.checks:
            if check.verdict in ANNOTATION_LEVEL:
                word = "SLO violated" if check.verdict is Verdict.FAIL else "Inconclusive"
                n = "" if check.n is None else f", n={check.n}"
                out.append(Annotation(
                    path=path, start_line=check.line or scenario.line,
                    level=ANNOTATION_LEVEL[check.verdict], title=f"{word}: {scenario.name}",
                    message=f"{check.name}: {check.measured} (threshold {check.threshold}{n}). {check.reason}",
                    raw_details="\n".join(check.queries)))
    return out


def write_json(run: RunResult, path: Path, redactor: Redactor | None = None) -> Path:
    return write_text(path, json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n", redactor)


def write_junit(run: RunResult, path: Path, redactor: Redactor | None = None) -> Path:
    """JUnit XML: one testcase per scenario; fail ⇒ failure, error ⇒ error, inconclusive ⇒ skipped."""
    suite = ET.Element("testsuite", name="slo-validate", tests=str(len(run.scenarios)),
                       failures=str(run.count(Verdict.FAIL)), errors=str(run.count(Verdict.ERROR)),
                       skipped=str(run.count(Verdict.INCONCLUSIVE)))
    for scenario in run.scenarios:
        case = ET.SubElement(suite, "testcase", classname=scenario.feature, name=scenario.name,
                             file=scenario.path, line=str(scenario.line))
        detail = "\n".join(f"{c.verdict.value}: {c.name}: {c.measured} (threshold {c.threshold}, "
                           f"n={c.n}). {c.reason}" for c in scenario.checks)
        if scenario.verdict is Verdict.FAIL:
            ET.SubElement(case, "failure", message="SLO violated").text = detail
        elif scenario.verdict is Verdict.ERROR:
            ET.SubElement(case, "error", message=scenario.error or "error").text = scenario.error
        elif scenario.verdict is Verdict.INCONCLUSIVE:
            ET.SubElement(case, "skipped", message="inconclusive").text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    xml = ET.tostring(suite, encoding="unicode", xml_declaration=True)  # declares utf-8
    return write_text(path, xml + "\n", redactor)
