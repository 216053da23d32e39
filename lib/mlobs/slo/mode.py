"""``mlobs slo-validate``: settings → source → behave run → results files → Report."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlobs
from mlobs import modes
from mlobs.config import CommonSettings, resolve
from mlobs.errors import ConfigError
from mlobs.logschema import DEFAULT_SELECTOR
from mlobs.result import Report

RESULTS_JSON = modes.RESULTS_FILES[modes.SLO_VALIDATE]
JUNIT_XML = "slo-junit.xml"

# Environment variables a feature file may read as ${NAME}: only these, never the rest of the
# environment (tokens and passwords live there, and a pull request can add a feature file).
ENV_VARIABLE_PREFIX = "SLO_"


@dataclass(frozen=True)
class SloSettings:
    features: tuple[Path, ...]
    loki_url: str | None
    logs_file: Path | None
    window: str
    end: float
    selector: str
    grafana_url: str | None
    variables: dict[str, str] = field(repr=False)
    loki_token: str | None = field(default=None, repr=False)
    loki_username: str | None = None
    loki_password: str | None = field(default=None, repr=False)
    loki_tenant: str | None = None
    loki_ca_cert: Path | None = None
    loki_timeout: float = 60.0
    loki_concurrency: int = 4
    significance: float | None = 0.05  # latency-regression intervals at 1 − significance; None: off

    @classmethod
    def build(cls, common: CommonSettings, params: Mapping[str, object],
              env: Mapping[str, str]) -> SloSettings:
        from mlobs.stats.gates import parse_significance

        workdir = common.working_directory
        loki_url = _text(params.get("loki_url"))
        logs_file = _text(params.get("logs_file"))
        if loki_url and logs_file:
            raise ConfigError("set either loki-url or logs-file, not both")
        # Neither is fine here: a feature file may name its Loki (the runner says so if none does).
        if loki_url and not loki_url.startswith(("http://", "https://")):
            raise ConfigError(f"loki-url must start with http:// or https://, got {loki_url!r}")
        if _text(params.get("loki_token")) and _text(params.get("loki_password")):
            raise ConfigError("set loki-token (bearer) or loki-username/loki-password (basic), not both")

        features = tuple(resolve(workdir, str(p)) for p in (params.get("features") or ()) if str(p).strip())
        window = _text(params.get("window")) or "1h"
        selector = _text(params.get("selector")) or env.get("SELECTOR") or DEFAULT_SELECTOR
        variables = {k: v for k, v in env.items() if k.startswith(ENV_VARIABLE_PREFIX)}
        variables.update(parse_vars(_text(params.get("vars")) or ""))
        variables.update({"WINDOW": window, "SELECTOR": selector})
        variables["MODEL_VERSION"] = common.model_version or variables.get("MODEL_VERSION", "")
        if common.baseline_version:
            variables["BASELINE_VERSION"] = common.baseline_version
        ca = _text(params.get("loki_ca_cert"))
        try:
            timeout = float(params.get("loki_timeout") or 60)
        except (TypeError, ValueError):
            raise ConfigError(f"loki-timeout must be seconds, got {params.get('loki_timeout')!r}") from None
        try:
            concurrency = int(params.get("loki_concurrency") or 4)
        except (TypeError, ValueError):
            concurrency = 0
        if concurrency < 1:
            raise ConfigError("loki-concurrency must be a whole number ≥ 1, got "
                              f"{params.get('loki_concurrency')!r}")
        return cls(
            features=features or (bundled_features(env),),
            loki_url=loki_url,
            logs_file=resolve(workdir, logs_file) if logs_file else None,
            window=window,
            end=parse_end(_text(params.get("window_end"))),
            selector=selector,
            grafana_url=_text(params.get("grafana_url")),
            variables=variables,
            loki_token=_text(params.get("loki_token")),
            loki_username=_text(params.get("loki_username")),
            loki_password=_text(params.get("loki_password")),
            loki_tenant=_text(params.get("loki_tenant")),
            loki_ca_cert=resolve(workdir, ca) if ca else None,
            loki_timeout=timeout,
            loki_concurrency=concurrency,
            significance=parse_significance(_text(params.get("significance"))),
        )


def bundled_features(env: Mapping[str, str]) -> Path:
    """The default contracts: $MLOBS_FEATURES_DIR (the image sets it) or the checkout's features/."""
    candidates = [env.get("MLOBS_FEATURES_DIR"), Path(mlobs.__file__).resolve().parents[2] / "features"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise ConfigError("no bundled features found: pass features (files or folders)")


def parse_vars(text: str) -> dict[str, str]:
    out = {}
    for item in text.replace(",", "\n").splitlines():
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigError(f"vars: expected NAME=VALUE, got {item.strip()!r}")
        out[name] = value.strip()
    return out


def parse_end(text: str | None) -> float:
    if not text:
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"window-end must be RFC 3339 or Unix seconds, got {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"window-end needs a time zone (e.g. 'Z'), got {text!r}")
    return moment.timestamp()


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


def run(common: CommonSettings, params: Mapping[str, object], env: Mapping[str, str] | None = None) -> Report:
    from mlobs.slo import render
    from mlobs.slo.runner import collect_feature_files, run_features
    from mlobs.slo.session import Defaults

    env = os.environ if env is None else env
    settings = SloSettings.build(common, params, env)
    files = collect_feature_files(list(settings.features))
    sources = make_sources(settings)
    defaults = Defaults(selector=settings.selector, window=settings.window, end=settings.end,
                        model_version=common.model_version, grafana_url=settings.grafana_url,
                        significance=settings.significance)
    end_text = datetime.fromtimestamp(settings.end, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    result = run_features(files, sources, settings.variables, defaults, common.working_directory,
                          baseline_version=common.baseline_version, end_text=end_text)
    summary_path = render.write_json(result, common.output_dir / RESULTS_JSON, common.redactor)
    render.write_junit(result, common.output_dir / JUNIT_XML, common.redactor)
    report = render.render(result, key=common.comment_key)
    from mlobs.result import Verdict

    report.outputs = {"summary-json": str(summary_path), "violations": str(result.count(Verdict.FAIL))}
    return report


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
