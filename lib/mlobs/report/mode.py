"""``mlobs publish-report``: Iceberg runs → report documents → Hugo site → Report."""

from __future__ import annotations

import json
from collections.abc import Mapping

from mlobs.config import CommonSettings, resolve
from mlobs.errors import ConfigError
from mlobs.result import Report

RESULTS_JSON = "publish-results.json"


def run(common: CommonSettings, params: Mapping[str, object], env: Mapping[str, str] | None = None) -> Report:
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.lake.engine import open_engine
    from mlobs.report import data, render
    from mlobs.report.site import Site, validate_version

    versions = [v.strip() for v in str(params.get("versions") or "").split(",") if v.strip()]
    versions = versions or ([common.model_version] if common.model_version else [])
    if not versions:
        raise ConfigError("publish-report needs versions (or model-version): which model versions to publish")
    versions = [validate_version(v) for v in dict.fromkeys(versions)]
    baseline = validate_version(common.baseline_version) if common.baseline_version else None
    out_dir = resolve(common.working_directory, str(params.get("report_dir") or "public"))
    slo_path = str(params.get("slo_results") or "").strip()
    slo = data.load_slo_results(resolve(common.working_directory, slo_path) if slo_path else None)
    site = Site(out_dir)
    published_before = {e["version"] for e in site.manifest()}

    catalog = CatalogConfig.parse(_text(params.get("catalog")), _text(params.get("table")) or "mlobs.predictions",
                                  common.output_dir / "lake")
    engine = open_engine(_text(params.get("engine")) or "pyiceberg", catalog,
                         _text(params.get("spark_master")) or "local[*]")
    try:
        docs = {v: data.version_document(engine, _latest(engine, v), slo=_slo_for(slo, v, versions))
                for v in versions}
        # Compare with the baseline, or else with the version published just before.
        pairs = []
        for v in versions:
            other = baseline or _previous(site.manifest(), v, docs)
            if other and other != v:
                pairs.append((other, v))
        for other, _ in pairs:
            if other not in docs:
                docs[other] = data.version_document(engine, _latest(engine, other))
    finally:
        engine.close()
    # A baseline that is not published yet gets its page too, so the comparison's links work.
    to_publish = [docs[v] for v in docs if v in versions or v not in published_before]
    comparisons = [data.compare_documents(docs[a], docs[b]) for a, b in pairs]
    result = site.publish(to_publish, comparisons, force=bool(params.get("force")))

    report_url = _text(params.get("report_url"))
    summary = {"schema": "mlobs.publish-results/1", "report_dir": str(out_dir),
               "written": result.written, "verified": result.verified,
               "comparisons": result.comparisons, "report_url": report_url,
               "headline": {v: docs[v]["headline"] for v in versions}}
    from mlobs.redact import write_text

    path = write_text(common.output_dir / RESULTS_JSON,
                      json.dumps(summary, indent=2, sort_keys=True) + "\n", common.redactor)
    report = render.render(versions, docs, pairs, result, report_url, common.comment_key)
    report.outputs = {"report-path": str(out_dir), "summary-json": str(path), "violations": "0"}
    return report


def _latest(engine, version: str):
    from mlobs.lake.runs import resolve_run  # the one resolver evaluate's baseline uses too

    info = resolve_run(engine, version, required=False)
    if info is None:
        raise ConfigError(f"no evaluation run of version {version!r} in the table: run evaluate first")
    return info


def _previous(manifest: list[dict], version: str, docs: dict) -> str | None:
    committed = docs[version]["run"]["committed_at"]
    earlier = [e for e in manifest if e["version"] != version and e["committed_at"] <= committed]
    return earlier[-1]["version"] if earlier else None


def _slo_for(slo: dict | None, version: str, versions: list[str]) -> dict | None:
    if slo is None:
        return None
    if slo.get("model_version"):
        return slo if slo["model_version"] == version else None
    return slo if len(versions) == 1 else None


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


