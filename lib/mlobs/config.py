"""The run's settings: one frozen, typed object per mode, built once by the CLI and passed down.

This module is the single place where the inputs' defaults live: the CLI's options (and through
the contract test, ``action.yml`` and the README's inputs table) take their defaults from the
fields below (:func:`input_default`), and :func:`build_settings` turns click's parsed values into
settings, validating each value once, with one clear line for a bad one.

Nothing below the CLI reads ``os.environ``. The CLI reads the environment once: the GitHub
context (``GITHUB_*`` and the event payload), the redactor's secrets, the ``SLO_*`` variables a
feature file may use, and a snapshot (:attr:`CommonSettings.env`) that child processes (Hugo, git,
``bentoml serve``, Spark's JVM) inherit and the AWS SDK's conventions (``AWS_ENDPOINT_URL`` …) are
read from.

Kept light: ``mlobs --help`` imports this module (for the defaults) and nothing heavy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import Enum, StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mlobs import modes
from mlobs.errors import ConfigError
from mlobs.lake.schema import TABLE_DEFAULT
from mlobs.logschema import DEFAULT_SELECTOR
from mlobs.result import FailOn

if TYPE_CHECKING:
    from mlobs.github.context import GithubContext
    from mlobs.github.reporter import ReportSettings
    from mlobs.lake.catalog import CatalogConfig
    from mlobs.redact import Redactor
    from mlobs.report.stores import Target

# Environment variables a feature file may read as ${NAME}: only these, never the rest of the
# environment (tokens and passwords live there, and a pull request can add a feature file).
SLO_VARIABLE_PREFIX = "SLO_"


class CommentMode(StrEnum):
    STICKY = "sticky"
    NEW = "new"
    OFF = "off"


def _secret(default: Any = None) -> Any:
    return field(default=default, repr=False)


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """The inputs every mode has, and what the CLI read from the environment for the run."""

    mode: str
    github_token: str | None = _secret()
    comment_mode: CommentMode = CommentMode.STICKY
    comment_key: str = ""
    check_run: bool = True
    fail_on: FailOn = FailOn.VIOLATION
    dry_run: bool = False
    working_directory: Path = Path(".")
    output_dir: Path = Path(".mlobs")  # relative to working_directory
    model_version: str | None = None
    baseline_version: str | None = None
    commit_sha: str | None = None
    deployment_environment: str | None = None
    alert_issue: bool = False
    # PyGithub's pacing between write requests (GitHub asks for ~1 s to avoid secondary limits).
    github_write_interval: float = 1
    debug: bool = False
    # Built by the CLI from the environment, once: the run's one redaction step (every surface and
    # results file passes it), where it runs on GitHub, and the environment child processes get.
    redactor: Redactor | None = field(default=None, repr=False, compare=False)
    github: GithubContext | None = field(default=None, repr=False, compare=False)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False,
                                   compare=False)

    @property
    def in_ci(self) -> bool:
        """Whether the run's output goes to a CI log (no progress bar redrawn there)."""
        return bool(self.env.get("CI") or self.env.get("GITHUB_ACTIONS"))

    def report_settings(self) -> ReportSettings:
        from mlobs.github.reporter import ReportSettings

        return ReportSettings(
            token=self.github_token,
            comment_mode=self.comment_mode,
            check_run=self.check_run,
            dry_run=self.dry_run,
            dry_run_dir=self.output_dir / "dry-run" / self.mode,
            write_interval=self.github_write_interval,
            commit_sha=self.commit_sha,
            deployment_environment=self.deployment_environment,
            alert_issue=self.alert_issue,
        )


@dataclass(frozen=True, kw_only=True)
class LakeSettings:
    """Where the predictions table is and which engine reads and writes it."""

    catalog: str | None = None  # 'uri=…,warehouse=…', a .pyiceberg.yaml name; None: SQLite under output-dir
    table: str = TABLE_DEFAULT
    engine: str = "pyiceberg"
    spark_master: str = "local[*]"
    spark_jars: Path | None = None  # None: .tools/spark-jars in the checkout (scripts/setup-spark)
    spark_staging: Path | None = None  # None: the system's temporary folder
    # The parsed catalog (validated when the settings are built).
    catalog_config: CatalogConfig | None = field(default=None, compare=False)

    def open_engine(self):
        from mlobs.lake.engine import open_engine

        assert self.catalog_config is not None
        return open_engine(self.engine, self.catalog_config, self.spark_master,
                           spark_jars=self.spark_jars, spark_staging=self.spark_staging)


@dataclass(frozen=True, kw_only=True)
class SloSettings:
    common: CommonSettings
    features: tuple[Path, ...] = ()  # files or folders; none given: the bundled contracts
    loki_url: str | None = None
    loki_token: str | None = _secret()
    loki_username: str | None = None
    loki_password: str | None = _secret()
    loki_tenant: str | None = None
    loki_ca_cert: Path | None = None
    loki_timeout: float = 60
    logs_file: Path | None = None
    selector: str = DEFAULT_SELECTOR
    window: str = "1h"
    window_end: float | None = None  # Unix seconds; None: now
    grafana_url: str | None = None
    # ${NAME} values: SLO_* variables, then the vars input, then the inputs' own names.
    variables: Mapping[str, str] = field(default_factory=dict, repr=False)
    loki_concurrency: int = 4
    # latency regressions: order-statistic intervals at 1 − significance; None ('off'): point quantiles
    significance: float | None = 0.05


@dataclass(frozen=True, kw_only=True)
class PublishSettings:
    common: CommonSettings
    lake: LakeSettings
    versions: tuple[str, ...] = ()  # none given: model-version
    baseline: str | None = None  # baseline-version, validated as a folder name
    report_dir: Path = Path("public")  # relative to working_directory
    report_url: str | None = None
    slo_results: Path | None = None
    force: bool = False
    publish_to: Target | None = None  # None: report-dir only
    s3_endpoint_url: str | None = None
    hugo_dir: Path | None = None  # None: the bundled site


@dataclass(frozen=True, kw_only=True)
class EvaluateSettings:
    common: CommonSettings
    lake: LakeSettings
    dataset: Path | None = None  # required: validated when built
    bento: str | None = None  # a Bento to serve (BentoML's server side: the serve extra)
    bento_url: str | None = None  # or a running one to attach to
    bento_api: str = "predict"
    input_columns: tuple[str, ...] = ()  # none: every column but the label, id and slices
    label_column: str = "label"
    slice_columns: tuple[str, ...] = ()
    id_column: str | None = None
    batch_size: int | None = field(default=None, metadata={"input": "auto"})  # None: measured
    concurrency: int = 4
    gates: tuple = ()  # max-regression, parsed (mlobs.evaluate.compare.Gate)
    run_id: str | None = None  # None: from GITHUB_RUN_ID, model version and dataset hash
    max_error_rate: float = 0.05
    class_names: Any = None  # mlobs.evaluate.labels.ClassNames | None
    prediction_path: tuple[str, ...] | None = None
    input_format: tuple[str, str | None] | None = field(default=None, metadata={"input": "auto"})
    bento_timeout: float = 60  # seconds for one answer
    deadline: float | None = None  # seconds for the whole evaluation
    commit_sha: str | None = None  # GITHUB_SHA: recorded with the run
    significance: float | None = 0.05  # the gates' test level; None ('off'): point-estimate gates


# The settings class (and the nested field) of each mode's inputs, for defaults and the tests.
MODE_SETTINGS: dict[str, tuple[type, ...]] = {
    modes.SLO_VALIDATE: (CommonSettings, SloSettings),
    modes.EVALUATE: (CommonSettings, LakeSettings, EvaluateSettings),
    modes.PUBLISH_REPORT: (CommonSettings, LakeSettings, PublishSettings),
}
# Inputs whose field has another name (the input's name is the action's public contract).
FIELD_NAMES = {"vars": "variables", "max-regression": "gates"}


def input_default(option: str, *classes: type) -> Any:
    """The default of input ``option`` as the CLI offers it, from the settings field that holds it:
    enums as their value, paths as text, an empty tuple for several values, None for none."""
    name = FIELD_NAMES.get(option, option.replace("-", "_"))
    for cls in classes or _ALL_CLASSES:
        for f in fields(cls):
            if f.name != name:
                continue
            if "input" in f.metadata:  # typed None, written as a word (batch-size: auto)
                return f.metadata["input"]
            value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, Mapping):
                return None
            return value
    raise KeyError(f"no settings field holds input {option!r}")


# --- building ----------------------------------------------------------------------------------


def build_settings(mode: str, params: Mapping[str, object], env: Mapping[str, str], *,
                   redactor: Redactor | None = None, github: GithubContext | None = None):
    """The mode's settings from click's parsed ``params`` and the environment, validated once.

    ``params`` may omit inputs (tests, benchmarks): a missing or blank value is the field's default.
    """
    common = build_common(mode, params, env, redactor=redactor, github=github)
    return build_mode(common, params)


def build_common(mode: str, params: Mapping[str, object], env: Mapping[str, str], *,
                 redactor: Redactor | None = None,
                 github: GithubContext | None = None) -> CommonSettings:
    """The settings every mode shares: built first, so an error in a mode's own inputs is reported
    on the run's surfaces (comment, check run, summary) like any other."""
    from mlobs.github.context import GithubContext
    from mlobs.redact import Redactor

    env = MappingProxyType(dict(env))
    if redactor is None:
        redactor = Redactor.from_inputs(params, env)
    if github is None:
        github = GithubContext.from_env(env)
    return _common(mode, _Inputs(params), env, redactor, github)


def build_mode(common: CommonSettings, params: Mapping[str, object]):
    """The mode's own settings (its CommonSettings inside)."""
    if common.mode == modes.SLO_VALIDATE:
        return _slo(common, _Inputs(params), common.env)
    if common.mode == modes.PUBLISH_REPORT:
        return _publish(common, _Inputs(params))
    if common.mode == modes.EVALUATE:
        return _evaluate(common, _Inputs(params))
    raise ConfigError(f"unknown mode {common.mode!r}")


class _Inputs:
    """click's parsed values; a missing or blank one reads as None."""

    def __init__(self, params: Mapping[str, object]) -> None:
        self._params = params

    def text(self, name: str) -> str | None:
        return text(self._params.get(name))

    def raw(self, name: str) -> object:
        value = self._params.get(name)
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    def many(self, name: str) -> list[str]:
        value = self._params.get(name) or ()
        items = value if isinstance(value, list | tuple) else (value,)
        return [str(v).strip() for v in items if str(v).strip()]

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        return default if value is None else bool(value)


def text(value: object) -> str | None:
    """An input's text, stripped; None when it is missing or blank."""
    if value is None:
        return None
    stripped = str(value).strip()
    return stripped or None


def _default(cls: type, name: str) -> Any:
    for f in fields(cls):
        if f.name == name:
            return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    raise KeyError(name)


def _number(inputs: _Inputs, name: str, cls: type, kind: type, minimum: float) -> Any:
    value = inputs.raw(name)
    if value is None:
        return _default(cls, name)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number >= minimum:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name.replace('_', '-')} must be {what} ≥ {minimum:g}, got {value!r}")
    return number


def _significance(inputs: _Inputs, cls: type) -> float | None:
    from mlobs.stats.gates import parse_significance

    value = inputs.text("significance")
    return _default(cls, "significance") if value is None else parse_significance(value)


def _common(mode: str, inputs: _Inputs, env: Mapping[str, str], redactor: Redactor,
            github: GithubContext) -> CommonSettings:
    workdir = Path(inputs.text("working_directory") or _default(CommonSettings, "working_directory"))
    workdir = workdir.expanduser()
    if not workdir.is_dir():
        raise ConfigError(f"working-directory {str(workdir)!r} is not a directory")
    workdir = workdir.resolve()
    d = {name: _default(CommonSettings, name) for name in ("comment_mode", "fail_on", "output_dir")}
    return CommonSettings(
        mode=mode,
        github_token=inputs.text("github_token"),
        comment_mode=CommentMode(inputs.text("comment_mode") or d["comment_mode"]),
        comment_key=inputs.text("comment_key") or "",
        check_run=inputs.flag("check_run", _default(CommonSettings, "check_run")),
        fail_on=FailOn(inputs.text("fail_on") or d["fail_on"]),
        dry_run=inputs.flag("dry_run", _default(CommonSettings, "dry_run")),
        working_directory=workdir,
        output_dir=resolve(workdir, inputs.text("output_dir") or str(d["output_dir"])),
        model_version=inputs.text("model_version"),
        baseline_version=inputs.text("baseline_version"),
        commit_sha=_commit_sha(inputs.text("commit_sha")),
        deployment_environment=_environment(inputs.text("deployment_environment")),
        alert_issue=inputs.flag("alert_issue", _default(CommonSettings, "alert_issue")),
        github_write_interval=_number(inputs, "github_write_interval", CommonSettings, float, 0),
        debug=inputs.flag("debug", _default(CommonSettings, "debug")),
        redactor=redactor,
        github=github,
        env=env,
    )


def _lake(common: CommonSettings, inputs: _Inputs) -> LakeSettings:
    from mlobs.lake.catalog import CatalogConfig

    table = inputs.text("table") or _default(LakeSettings, "table")
    catalog = inputs.text("catalog")
    jars, staging = inputs.text("spark_jars"), inputs.text("spark_staging")
    return LakeSettings(
        catalog=catalog,
        table=table,
        engine=(inputs.text("engine") or _default(LakeSettings, "engine")).lower(),
        spark_master=inputs.text("spark_master") or _default(LakeSettings, "spark_master"),
        spark_jars=resolve(common.working_directory, jars) if jars else None,
        spark_staging=resolve(common.working_directory, staging) if staging else None,
        catalog_config=CatalogConfig.parse(catalog, table, common.output_dir / "lake",
                                           env=common.env),
    )


def _slo(common: CommonSettings, inputs: _Inputs, env: Mapping[str, str]) -> SloSettings:
    workdir = common.working_directory
    loki_url, logs_file = inputs.text("loki_url"), inputs.text("logs_file")
    if loki_url and logs_file:
        raise ConfigError("set either loki-url or logs-file, not both")
    # Neither is fine here: a feature file may name its Loki (the runner says so if none does).
    if loki_url and not loki_url.startswith(("http://", "https://")):
        raise ConfigError(f"loki-url must start with http:// or https://, got {loki_url!r}")
    if inputs.text("loki_token") and inputs.text("loki_password"):
        raise ConfigError("set loki-token (bearer) or loki-username/loki-password (basic), not both")
    features = tuple(resolve(workdir, p) for p in inputs.many("features"))
    window = inputs.text("window") or _default(SloSettings, "window")
    selector = inputs.text("selector") or _default(SloSettings, "selector")
    variables = {k: v for k, v in env.items() if k.startswith(SLO_VARIABLE_PREFIX)}
    variables.update(parse_vars(inputs.text("vars") or ""))
    variables.update({"WINDOW": window, "SELECTOR": selector})
    variables["MODEL_VERSION"] = common.model_version or variables.get("MODEL_VERSION", "")
    if common.baseline_version:
        variables["BASELINE_VERSION"] = common.baseline_version
    ca = inputs.text("loki_ca_cert")
    return SloSettings(
        common=common,
        features=features or (bundled("features"),),
        loki_url=loki_url,
        loki_token=inputs.text("loki_token"),
        loki_username=inputs.text("loki_username"),
        loki_password=inputs.text("loki_password"),
        loki_tenant=inputs.text("loki_tenant"),
        loki_ca_cert=resolve(workdir, ca) if ca else None,
        loki_timeout=_number(inputs, "loki_timeout", SloSettings, float, 1),
        logs_file=resolve(workdir, logs_file) if logs_file else None,
        selector=selector,
        window=window,
        window_end=parse_end(inputs.text("window_end")),
        grafana_url=inputs.text("grafana_url"),
        variables=MappingProxyType(variables),
        loki_concurrency=_number(inputs, "loki_concurrency", SloSettings, int, 1),
        significance=_significance(inputs, SloSettings),
    )


def _publish(common: CommonSettings, inputs: _Inputs) -> PublishSettings:
    from mlobs.report.site import validate_version
    from mlobs.report.stores import parse_target

    workdir = common.working_directory
    versions = _items(inputs.text("versions"))
    versions = versions or ([common.model_version] if common.model_version else [])
    if not versions:
        raise ConfigError("publish-report needs versions (or model-version): which model versions "
                          "to publish")
    versions = [validate_version(v) for v in dict.fromkeys(versions)]
    baseline = validate_version(common.baseline_version) if common.baseline_version else None
    report_dir = resolve(workdir, inputs.text("report_dir") or str(_default(PublishSettings, "report_dir")))
    target = parse_target(inputs.text("publish_to"), report_dir, common.env)
    if target.kind == "gh-pages" and not common.github_token:
        raise ConfigError("publish-to: gh-pages pushes with github-token: pass the job's token "
                          "(the default) and grant the job `permissions: contents: write`")
    slo, hugo = inputs.text("slo_results"), inputs.text("hugo_dir")
    return PublishSettings(
        common=common,
        lake=_lake(common, inputs),
        versions=tuple(versions),
        baseline=baseline,
        report_dir=report_dir,
        report_url=inputs.text("report_url"),
        slo_results=resolve(workdir, slo) if slo else None,
        force=inputs.flag("force", _default(PublishSettings, "force")),
        publish_to=target,
        s3_endpoint_url=inputs.text("s3_endpoint_url"),
        hugo_dir=resolve(workdir, hugo) if hugo else bundled("hugo"),
    )


def _evaluate(common: CommonSettings, inputs: _Inputs) -> EvaluateSettings:
    from mlobs.evaluate.compare import parse_gates
    from mlobs.evaluate.contract import parse_path
    from mlobs.evaluate.labels import ClassNames
    from mlobs.evaluate.runner import parse_batch_size, parse_duration
    from mlobs.evaluate.schema import parse_input_format
    from mlobs.evaluate.trust import parse_max_error_rate

    if not common.model_version:
        raise ConfigError("evaluate needs model-version: it names the run in the Iceberg table")
    dataset = inputs.text("dataset")
    if not dataset:
        raise ConfigError("evaluate needs dataset: a Parquet, CSV or JSON-lines golden set")
    bento, bento_url = inputs.text("bento"), inputs.text("bento_url")
    if bool(bento) == bool(bento_url):
        raise ConfigError("set exactly one of bento (a Bento to serve) or bento-url (a running one)")
    if bento_url and not bento_url.startswith(("http://", "https://")):
        raise ConfigError(f"bento-url must start with http:// or https://, got {bento_url!r}")
    d = {name: _default(EvaluateSettings, name)
         for name in ("bento_api", "label_column", "max_error_rate", "bento_timeout")}
    max_error_rate = inputs.text("max_error_rate")
    return EvaluateSettings(
        common=common,
        lake=_lake(common, inputs),
        dataset=resolve(common.working_directory, dataset),
        bento=bento,
        bento_url=bento_url,
        bento_api=inputs.text("bento_api") or d["bento_api"],
        input_columns=tuple(_items(inputs.text("input_columns"))),
        label_column=inputs.text("label_column") or d["label_column"],
        slice_columns=tuple(_items(inputs.text("slice_columns"))),
        id_column=inputs.text("id_column"),
        batch_size=parse_batch_size(inputs.text("batch_size")),
        concurrency=_number(inputs, "concurrency", EvaluateSettings, int, 1),
        gates=tuple(parse_gates(inputs.text("max_regression"))),
        run_id=inputs.text("run_id"),
        max_error_rate=parse_max_error_rate(max_error_rate) if max_error_rate else d["max_error_rate"],
        class_names=ClassNames.parse(inputs.text("class_names"), common.working_directory),
        prediction_path=parse_path(inputs.text("prediction_path")),
        input_format=parse_input_format(inputs.text("input_format")),
        bento_timeout=parse_duration(inputs.text("bento_timeout"), "bento-timeout")
        or d["bento_timeout"],
        deadline=parse_duration(inputs.text("deadline"), "deadline"),
        commit_sha=text(common.env.get("GITHUB_SHA")),
        significance=_significance(inputs, EvaluateSettings),
    )


def _items(value: str | None) -> list[str]:
    """A comma-separated input's items, stripped, blanks dropped."""
    return [c.strip() for c in (value or "").split(",") if c.strip()]


# --- values ------------------------------------------------------------------------------------


def resolve(workdir: Path, value: str) -> Path:
    """A user path relative to the working directory (absolute paths are kept as given)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else workdir / path


def bundled(name: str) -> Path:
    """The package's own ``features/`` or ``hugo/``: the checkout's folder when the package runs
    from a checkout (an editable install), else the copy the wheel installs under
    ``<prefix>/share/mlobs/`` (the image's case)."""
    import mlobs

    checkout = Path(mlobs.__file__).resolve().parents[2] / name
    marker = {"features": "*.feature", "hugo": "hugo.toml"}[name]
    if checkout.is_dir() and any(checkout.glob(marker)):
        return checkout
    from importlib import metadata

    try:
        dist = metadata.distribution("ml-observability-action")
    except metadata.PackageNotFoundError:
        dist = None
    prefix = ("share", "mlobs", name)
    for file in (dist.files or []) if dist is not None else []:
        parts = file.parts
        for i in range(len(parts) - len(prefix)):
            if parts[i:i + len(prefix)] == prefix:
                folder = Path(str(dist.locate_file(Path(*parts[:i + len(prefix)]))))
                if folder.is_dir():
                    return folder.resolve()
    what = {"features": "the bundled SLO contracts (features/)", "hugo": "the report site (hugo/)"}
    hint = {"features": "pass features (files or folders)",
            "hugo": "reinstall the package, or pass hugo-dir"}
    raise ConfigError(f"{what[name]} were not found next to the package", hint=hint[name])


def parse_vars(value: str) -> dict[str, str]:
    out = {}
    for item in value.replace(",", "\n").splitlines():
        if not item.strip():
            continue
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigError(f"vars: expected NAME=VALUE, got {item.strip()!r}")
        out[name] = val.strip()
    return out


def parse_end(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"window-end must be RFC 3339 or Unix seconds, got {value!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"window-end needs a time zone (e.g. 'Z'), got {value!r}")
    return moment.timestamp()


def window_end(settings: SloSettings) -> float:
    """The end of the window: the input's, else now."""
    return settings.window_end if settings.window_end is not None else time.time()


def _commit_sha(value: str | None) -> str | None:
    """A full commit SHA (40 hex digits; 64 in SHA-256 repositories): check runs need one."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", value):
        raise ConfigError(f"commit-sha must be a full commit SHA (40 hexadecimal digits), got {value!r}",
                          hint="e.g. ${{ github.event.workflow_run.head_sha }}")
    return value.lower()


def _environment(value: str | None) -> str | None:
    """A GitHub environment name: one line (it is sent as a query parameter and shown)."""
    if value is not None and ("\n" in value or "\r" in value or len(value) > 255):
        raise ConfigError(f"deployment-environment must be one environment name, got {value!r}")
    return value


_ALL_CLASSES = (CommonSettings, LakeSettings, SloSettings, PublishSettings, EvaluateSettings)
