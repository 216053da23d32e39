"""``mlobs slo-validate``: settings → source → behave run → results files → Report."""

from __future__ import annotations

from datetime import UTC, datetime

from mlobs import modes
from mlobs.config import SloSettings, window_end
from mlobs.errors import ConfigError
from mlobs.result import Report

RESULTS_JSON = modes.RESULTS_FILES[modes.SLO_VALIDATE]
JUNIT_XML = "slo-junit.xml"


def make_sources(settings: SloSettings):
    """The inputs' source (loki-url or logs-file) — or, when neither is set, Loki at the URL a
    feature file names, reached without the credential inputs."""
    from mlobs.slo.session import Sources
    from mlobs.slo.source import FileSource, LokiSource

    if settings.logs_file is not None:
        if not settings.logs_file.is_file():
            raise ConfigError(f"logs-file {str(settings.logs_file)!r} does not exist")
        return Sources(FileSource(settings.logs_file))
    from mlobs.loki.client import LokiClient

    def loki(url: str, *, credentials: bool) -> LokiSource:
        auth = dict(token=settings.loki_token, username=settings.loki_username,
                    password=settings.loki_password) if credentials else {}
        client = LokiClient(url, tenant=settings.loki_tenant,
                            ca_bundle=str(settings.loki_ca_cert) if settings.loki_ca_cert else None,
                            deadline=settings.loki_timeout, **auth)
        return LokiSource(client, url, concurrency=settings.loki_concurrency)

    if settings.loki_url is not None:
        return Sources(loki(settings.loki_url, credentials=True))
    return Sources(None, lambda url: loki(url, credentials=False))


def run(settings: SloSettings) -> Report:
    from mlobs.result import Verdict
    from mlobs.slo import render
    from mlobs.slo.runner import collect_feature_files, run_features
    from mlobs.slo.session import Defaults

    common = settings.common
    end = window_end(settings)
    files = collect_feature_files(list(settings.features))
    sources = make_sources(settings)
    defaults = Defaults(selector=settings.selector, window=settings.window, end=end,
                        model_version=common.model_version, grafana_url=settings.grafana_url,
                        significance=settings.significance)
    end_text = datetime.fromtimestamp(end, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    result = run_features(files, sources, dict(settings.variables), defaults,
                          common.working_directory, baseline_version=common.baseline_version,
                          end_text=end_text)
    summary_path = render.write_json(result, common.output_dir / RESULTS_JSON, common.redactor)
    render.write_junit(result, common.output_dir / JUNIT_XML, common.redactor)
    report = render.render(result, key=common.comment_key)
    report.outputs = {"summary-json": str(summary_path), "violations": str(result.count(Verdict.FAIL))}
    return report
