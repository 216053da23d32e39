"""``mlobs publish-report``: Iceberg runs → report documents → Hugo site → Report."""

from __future__ import annotations

import json
from collections.abc import Mapping

from mlobs import modes
from mlobs.config import PublishSettings
from mlobs.errors import ConfigError
from mlobs.report.site import Site
from mlobs.result import Report

RESULTS_JSON = modes.RESULTS_FILES[modes.PUBLISH_REPORT]


def run(settings: PublishSettings) -> Report:
    from mlobs.report import data, publish, render
    from mlobs.report.stores import open_store

    common, lake = settings.common, settings.lake
    versions = list(settings.versions)
    out_dir, target = settings.report_dir, settings.publish_to
    assert target is not None and settings.hugo_dir is not None
    slo = data.load_slo_results(settings.slo_results)
    report_url = settings.report_url or (pages_url(common.env) if target.kind == "gh-pages" else None)
    site = Site(settings.hugo_dir, common.env)

    engine = lake.open_engine()
    store = None
    try:
        def newest(version: str) -> dict:
            doc_slo = _slo_for(slo, version, versions) if version in versions else None
            return data.version_document(engine, _latest(engine, version), slo=doc_slo)

        def pinned(version: str, run_id: str) -> dict | None:
            info = engine.find_run(run_id)
            return data.version_document(engine, info) if info is not None else None

        store = open_store(target, token=common.github_token, endpoint=settings.s3_endpoint_url,
                           env=common.env)
        def statistics(a: dict, b: dict) -> dict | None:
            return data.comparison_statistics(engine, a, b)

        result = publish.publish(store, versions, settings.baseline,
                                 publish.Sources(newest, pinned, statistics), site,
                                 force=settings.force)
    finally:
        engine.close()
        if store is not None:
            store.close()
    if target.kind != "local":  # a local copy of what this run published, for artifacts and links
        _write_copy(out_dir, result.files)

    base = (report_url or "").rstrip("/")
    page_url = f"{base}/{versions[0]}/index.html" if base else ""
    summary = {"schema": "mlobs.publish-results/1", "report_dir": str(out_dir), "store": result.store,
               "written": result.written, "verified": result.verified, "kept": result.kept,
               "forced": result.forced, "comparisons": result.comparisons, "attempts": result.attempts,
               "pinned_runs": {v: result.pinned[v] for v in result.docs if v in result.pinned},
               "report_url": page_url or None, "site_url": f"{base}/index.html" if base else None,
               "headline": {v: result.docs[v]["headline"] for v in versions}}
    from mlobs.redact import write_text

    path = write_text(common.output_dir / RESULTS_JSON,
                      json.dumps(summary, indent=2, sort_keys=True) + "\n", common.redactor)
    report = render.render(versions, result.docs, result.pairs, result, report_url, common.comment_key)
    report.outputs = {"report-path": str(out_dir), "summary-json": str(path), "violations": "0",
                      "report-url": page_url}
    return report


def pages_url(env: Mapping[str, str]) -> str | None:
    """GitHub Pages' address of this repository's site: https://<owner>.github.io/<repo>/, the
    user/organisation site https://<owner>.github.io/ for a repository named <owner>.github.io,
    and https://pages.<host>/<owner>/<repo>/ on GitHub Enterprise Server (subdomain isolation).
    A custom domain cannot be known from here: pass report-url."""
    from urllib.parse import urlsplit

    repository = env.get("GITHUB_REPOSITORY", "")
    if "/" not in repository:
        return None
    owner, repo = repository.split("/", 1)
    server = urlsplit(env.get("GITHUB_SERVER_URL") or "https://github.com")
    if server.hostname in (None, "github.com", "www.github.com"):
        site = f"{owner.lower()}.github.io"
        return f"https://{site}/" if repo.lower() == site else f"https://{site}/{repo}/"
    return f"{server.scheme or 'https'}://pages.{server.hostname}/{owner}/{repo}/"


def _write_copy(out_dir, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def _latest(engine, version: str):
    """The run a version's page is built from when it is first published (published versions are
    pinned to that run: see mlobs.report.publish). The one resolver evaluate's baseline uses too."""
    from mlobs.lake.runs import resolve_run

    info = resolve_run(engine, version, required=False)
    if info is None:
        raise ConfigError(f"no evaluation run of version {version!r} in the table: run evaluate first")
    return info


def _slo_for(slo: dict | None, version: str, versions: list[str]) -> dict | None:
    if slo is None:
        return None
    if slo.get("model_version"):
        return slo if slo["model_version"] == version else None
    return slo if len(versions) == 1 else None
