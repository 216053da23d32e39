"""The ``mlobs`` command line: one click group, one command per mode.

Imports stay lazy: this module pulls in click and the standard library only, so ``mlobs --help``
and ``mlobs MODE --help`` are instant; a mode imports its heavy libraries when it runs.
Every option is also an action input of the same name (see ``action.yml``) and an environment
variable ``MLOBS_<NAME>``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable

import click

from mlobs import __version__, modes
from mlobs.config import (
    CommonSettings,
    EvaluateSettings,
    LakeSettings,
    PublishSettings,
    SloSettings,
    input_default,
)
from mlobs.evaluate import registry  # the headline metrics: light, for the max-regression help

# Options whose values are secrets: masked in Actions, passed by env (never argv) by entrypoint.py,
# replaced by *** on every surface (mlobs.redact keeps the same list).
SECRET_OPTIONS = ("github-token", "loki-token", "loki-password")


def env_name(option: str) -> str:
    return "MLOBS_" + option.upper().replace("-", "_")


def opt(name: str, help: str, **kwargs) -> Callable:
    """An option named like its action input, with its env var documented in --help."""
    envvars = [env_name(name), *kwargs.pop("extra_envvars", [])]
    # Text unless said otherwise: click would infer a number from a default like 0.05 and refuse
    # the inputs' other forms ("5%", "15m").
    kwargs.setdefault("type", click.STRING)
    return click.option(
        f"--{name}", name.replace("-", "_"), envvar=envvars, show_envvar=True, help=help, **kwargs
    )


def flag(name: str, help: str, default: bool) -> Callable:
    """A boolean that takes an optional value: ``--dry-run``, ``--dry-run=false``, ``true``."""
    return opt(
        name, help, type=click.BOOL, default=default, is_flag=False, flag_value=True,
        show_default=True, metavar="[true|false]",
    )


def defaults(*settings: type) -> Callable[[str], object]:
    """The default of an input, from the settings field that holds it (mlobs.config: the one place
    defaults live)."""
    return lambda name: input_default(name, *settings)


common = defaults(CommonSettings)
slo = defaults(SloSettings)
lake = defaults(LakeSettings)
report = defaults(PublishSettings)
evaluation = defaults(EvaluateSettings)


COMMON_OPTIONS = [
    opt("github-token", "Token for comments and check runs; leave empty to skip the API.",
        extra_envvars=["GITHUB_TOKEN"]),
    opt("comment-mode", "Pull-request comment: update one sticky comment, add a new one, or none.",
        type=click.Choice(["sticky", "new", "off"]), default=common("comment-mode"),
        show_default=True),
    opt("comment-key", "Extra key for the sticky comment, for several runs of one mode per PR.",
        default=common("comment-key")),
    flag("check-run", "Create a check run with annotations.", common("check-run")),
    opt("fail-on", "Exit non-zero on: a violation (1), also inconclusive results (2), or never.",
        type=click.Choice(["violation", "inconclusive", "never"]), default=common("fail-on"),
        show_default=True),
    flag("dry-run", "Render comment, check run and summary to files under output-dir; send nothing.",
         common("dry-run")),
    opt("working-directory", "Where relative paths resolve.", default=common("working-directory"),
        show_default=True),
    opt("output-dir", "Results, JUnit and dry-run files, relative to working-directory.",
        default=common("output-dir"), show_default=True),
    opt("model-version", "The model version under test."),
    opt("baseline-version", "The model version to compare with."),
    opt("commit-sha", "Report on this commit (full SHA): its check run, and the comment on its "
        "open or merged pull request (else on the commit)."),
    opt("deployment-environment", "Report on the commit of the latest successful GitHub "
        "deployment to this environment; on pull requests, quote its latest verdict instead."),
    flag("alert-issue", "Keep one labelled issue open per environment while the verdict is fail; "
         "close it on recovery.", common("alert-issue")),
    opt("github-write-interval", "Seconds between write requests to GitHub (GitHub asks for about "
        "1 s to stay clear of its secondary rate limits).", type=click.FloatRange(min=0),
        default=common("github-write-interval"), show_default=True),
    flag("debug", "On an internal error, print its traceback (redacted) after the error line.",
         common("debug")),
]

SLO_OPTIONS = [
    opt("features", "Feature files or folders with SLO contracts (default: the bundled ones).",
        multiple=True),
    opt("loki-url", "Grafana Loki base URL, e.g. https://loki.example.com."),
    opt("loki-token", "Bearer token for Loki."),
    opt("loki-username", "Basic-auth user for Loki."),
    opt("loki-password", "Basic-auth password for Loki."),
    opt("loki-tenant", "Tenant sent as X-Scope-OrgID."),
    opt("loki-ca-cert", "CA bundle (PEM path) for Loki's TLS certificate."),
    opt("loki-timeout", "Seconds to keep retrying a Loki query (429, 5xx, connection errors).",
        type=click.FloatRange(min=1), default=slo("loki-timeout"), show_default=True),
    opt("logs-file", "JSON-lines log file to evaluate instead of Loki (embedded source)."),
    opt("selector", "LogQL stream selector (default: the example function's stream).",
        default=slo("selector"), show_default=True),
    opt("window", "Time window, e.g. 30m, 1h, 1d.", default=slo("window"), show_default=True),
    opt("window-end", "End of the window (RFC 3339 or Unix seconds); default now."),
    opt("grafana-url", "Grafana base URL: each verdict links to Explore with its query."),
    opt("vars", "Extra ${NAME} values for feature files, one NAME=VALUE per line or comma."),
    opt("loki-concurrency", "Loki queries in flight at once (each with its own retries and deadline).",
        type=click.IntRange(min=1), default=slo("loki-concurrency"), show_default=True),
    opt("significance", "Latency regressions between versions fail only when the versions' "
        "order-statistic intervals (at confidence 1 − significance) show an increase beyond the "
        "allowance, so a version that did not regress fails at most this often; 'off' compares "
        "the point quantiles.", default=slo("significance"), show_default=True),
]

LAKE_OPTIONS = [
    opt("catalog", "pyiceberg catalog: 'uri=…,warehouse=…' or a name from .pyiceberg.yaml "
        "(default: SQLite catalog under output-dir)."),
    opt("table", "Iceberg table.", default=lake("table"), show_default=True),
    opt("engine", "Table engine.", type=click.Choice(["pyiceberg", "spark"]),
        default=lake("engine"), show_default=True),
    opt("spark-master", "Spark master URL or Spark Connect sc://….", default=lake("spark-master"),
        show_default=True),
    opt("spark-jars", "Folder with the jars the spark engine loads (Iceberg's Spark runtime, a "
        "relocated Jackson, SQLite JDBC), as scripts/setup-spark prepares them (default: "
        ".tools/spark-jars in the checkout)."),
    opt("spark-staging", "Folder where the spark engine stages a run's rows before its commit "
        "(default: the temporary folder); with a cluster master, one every executor sees at the "
        "same path."),
]

EVALUATE_OPTIONS = [
    opt("bento", "A Bento tag or path to serve (needs BentoML where mlobs runs: the serve extra, "
        "or the cli action beside the Bento's libraries; the image attaches only)."),
    opt("bento-url", "URL of a running Bento to attach to instead."),
    opt("bento-api", "The Bento API to call (its OpenAPI schema says how the input columns are "
        "sent).", default=evaluation("bento-api"), show_default=True),
    opt("dataset", "Golden dataset: Parquet, CSV or JSON lines."),
    opt("input-columns", "Dataset columns sent to the model (comma-separated)."),
    opt("label-column", "Dataset column holding the true label.",
        default=evaluation("label-column"), show_default=True),
    opt("slice-columns", "Dataset columns to slice metrics by (comma-separated)."),
    opt("id-column", "Dataset column with a unique sample id (default: the row number)."),
    opt("batch-size", "Samples per request to the Bento: auto (grown while throughput grows, "
        "shrunk on 413 or timeouts) or a fixed number.", default=evaluation("batch-size"),
        show_default=True),
    opt("concurrency", "Requests in flight at once.", type=click.IntRange(1),
        default=evaluation("concurrency"), show_default=True),
    opt("max-regression", registry.gate_help()),
    opt("run-id", "Run id in the table; a retried run with the same id writes nothing "
        "(default: from GITHUB_RUN_ID, model version and dataset hash)."),
    opt("max-error-rate", "Largest share of failed samples a run may have and still be recorded "
        "(0.05 or 5%); above it, or when every sample failed, the run is not committed and the "
        "step exits 2.", default=evaluation("max-error-rate"), show_default=True),
    opt("class-names", "Class names in index order (comma-separated, or a file with one per "
        "line): map class indices and probability columns to names."),
    opt("prediction-path", "Where the predictions are in an answer of another shape: a dotted "
        "path, '*' for each item of a list (e.g. output.labels, results.*.top)."),
    opt("input-format", "How input columns are sent when the API's schema is ambiguous: auto, "
        "columns, row, records, dataframe or array, optionally FORMAT:PARAMETER.",
        default=evaluation("input-format"), show_default=True),
    opt("bento-timeout", "Seconds to wait for one answer from the Bento.",
        default=evaluation("bento-timeout"), show_default=True),
    opt("deadline", "Overall time limit of the evaluation, e.g. 900, 15m, 2h (default: none)."),
    opt("significance", "A gate fails only when the point estimate breaches max-regression AND "
        "the regression is significant at this level (one-sided test); a breach within the "
        "noise is inconclusive and says how many samples would settle it. 'off': point-estimate "
        "gates.", default=evaluation("significance"), show_default=True),
]

REPORT_OPTIONS = [
    opt("report-dir", "Where the static site is written.", default=report("report-dir"),
        show_default=True),
    opt("report-url", "Public base URL of the site, for links in comments."),
    opt("versions", "Versions to publish (comma-separated; default: model-version)."),
    opt("slo-results", "slo-validate's results JSON for the same version, shown on its page."),
    flag("force", "Replace a published version whose pages would differ (they are immutable "
         "otherwise).", report("force")),
    opt("publish-to", "Where the site lives for good: gh-pages (this repository's branch, pushed "
        "with github-token), git+<url>#<branch>, or s3://bucket/prefix; empty: report-dir only."),
    opt("s3-endpoint-url", "S3-compatible endpoint for publish-to s3://… (MinIO, R2); default "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS."),
    opt("hugo-dir", "A Hugo site to build the pages with instead of the bundled one (a copy of "
        "hugo/ with your own layouts); published pages never change, so a new layout shows on "
        "versions published from then on."),
]


def with_options(options: list[Callable]) -> Callable:
    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlobs")
def cli() -> None:
    """Feed the real behaviour of ML services back into code review.

    Exit codes: 0 pass, 1 SLO violated or metrics regressed, 2 could not evaluate.
    """


@cli.command(modes.SLO_VALIDATE)
@with_options(COMMON_OPTIONS + SLO_OPTIONS)
def slo_validate(**params: object) -> None:
    """Verify SLO contracts (.feature files) with LogQL against Loki or a log file."""
    run_mode(modes.SLO_VALIDATE, params)


@cli.command(modes.EVALUATE)
@with_options(COMMON_OPTIONS + LAKE_OPTIONS + EVALUATE_OPTIONS)
def evaluate(**params: object) -> None:
    """Evaluate a BentoML service on a golden dataset; one Iceberg snapshot per run."""
    run_mode(modes.EVALUATE, params)


@cli.command(modes.PUBLISH_REPORT)
@with_options(COMMON_OPTIONS + LAKE_OPTIONS + REPORT_OPTIONS)
def publish_report(**params: object) -> None:
    """Build immutable static Hugo reports per model version, and comparison pages."""
    run_mode(modes.PUBLISH_REPORT, params)


# The module that computes each mode's Report: ``run(settings) -> Report``.
MODE_IMPLEMENTATIONS = {
    modes.SLO_VALIDATE: "mlobs.slo.mode",
    modes.EVALUATE: "mlobs.evaluate.mode",
    modes.PUBLISH_REPORT: "mlobs.report.mode",
}


def run_mode(mode: str, params: dict) -> None:
    """Compute the mode's result, report it everywhere, and exit with the policy's code.

    The environment is read here, once: the mode's settings (mlobs.config) carry what it needs.
    """
    from mlobs.config import build_common, build_mode
    from mlobs.errors import MlobsError, environment_error
    from mlobs.github.actions import GithubActions
    from mlobs.redact import Redactor
    from mlobs.result import exit_code

    env = dict(os.environ)
    # Built first: every surface below (stderr, log records, workflow commands, outputs, the
    # summary, comment, check run, results files) passes it.
    redactor = Redactor.from_inputs(params, env)
    actions = GithubActions(env=env, redactor=redactor)
    if actions.in_actions:
        for name in SECRET_OPTIONS:
            actions.add_mask(params.get(name.replace("-", "_")))  # type: ignore[arg-type]

    common = None
    with _redacted_logs(redactor):
        try:
            _refuse_line_breaks(params)
            from mlobs.github.context import GithubContext

            common = build_common(mode, params, env, redactor=redactor,
                                  github=GithubContext.from_env(env))
            settings = build_mode(common, params)
            implementation = importlib.import_module(MODE_IMPLEMENTATIONS[mode])
            report = implementation.run(settings)
            _reporter(common, actions).publish(report)
        except MlobsError as exc:
            fail(actions, exc, common)
            return  # unreachable: fail() exits
        except Exception as exc:
            # A full disk, a read-only folder: the environment, not a bug — one line naming it.
            problem = environment_error(exc)
            if problem is not None:
                fail(actions, problem, common)
                return
            # A bug: still one line and exit 2, never the "violated" code 1.
            debug = common.debug if common is not None else bool(params.get("debug"))
            hint = "set debug: true (MLOBS_DEBUG=1) for the traceback, and please report it"
            fail(actions, MlobsError(f"internal error: {type(exc).__name__}: {exc}", hint=hint),
                 common, traceback=debug)
            return
    sys.exit(exit_code(report.verdict, common.fail_on))


def fail(actions, exc, common, *, traceback: bool = False) -> None:
    """One clear line on stderr (and as an annotation in Actions), result=error, exit code.
    ``traceback``: the current exception's traceback follows the line (the debug input)."""
    from mlobs.errors import MlobsError, environment_error
    from mlobs.result import Report, Verdict

    message = actions.redactor.text(exc.one_line())
    click.echo(f"mlobs: error: {message}", err=True)
    if traceback:
        import traceback as tb

        click.echo(actions.redactor.text(tb.format_exc()), err=True)
    if actions.in_actions:
        actions.error(message, title=f"mlobs {common.mode if common else ''}".strip())
    if common is not None:
        from mlobs.github import markdown as md

        report = Report(
            mode=common.mode,
            verdict=Verdict.ERROR,
            title=f"{modes.TITLES[common.mode]}: could not evaluate",
            summary=md.text(message),
            body=f"⛔ **Could not evaluate.** {md.text(message)}\n",
            key=common.comment_key,
        )
        with contextlib.suppress(OSError):  # an unwritable output-dir: said by the publish below
            report.outputs["summary-json"] = str(_write_error_record(common, message, actions.redactor))
        try:
            _reporter(common, actions).publish(report)
        except Exception as publish_exc:  # e.g. the dry-run folder is the unwritable one
            problem = (publish_exc if isinstance(publish_exc, MlobsError)
                       else environment_error(publish_exc))
            if problem is None:
                raise
            if problem.one_line() != exc.one_line():
                click.echo(f"mlobs: error: {actions.redactor.text(problem.one_line())}", err=True)
    else:
        actions.set_output("result", "error")
    sys.exit(exc.exit_code)


def _write_error_record(common, message: str, redactor):
    """The mode's results file says the run could not evaluate (never an earlier run's numbers)."""
    import json

    from mlobs.redact import write_text

    record = {"schema": modes.ERROR_SCHEMA, "mode": common.mode, "verdict": "error", "error": message}
    return write_text(common.output_dir / modes.RESULTS_FILES[common.mode],
                      json.dumps(record, indent=2, sort_keys=True) + "\n", redactor)


def _refuse_line_breaks(params: dict) -> None:
    """A secret with a CR or LF inside cannot go into a header; HTTP libraries would refuse it
    with a message quoting the whole value. Refused up front, without showing it."""
    from mlobs.errors import ConfigError
    from mlobs.redact import line_break_secret

    name = line_break_secret(params)
    if name:
        raise ConfigError(
            f"{name} contains a line break (CR or LF), which no HTTP header can carry; the value "
            "is not shown",
            hint="store the secret again without the line break",
        )


@contextlib.contextmanager
def _redacted_logs(redactor):
    """Log records pass the redaction step too, whoever configured the handlers."""
    from mlobs.redact import RedactingFilter

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handlers = list(logging.getLogger().handlers)
    redacting = RedactingFilter(redactor)
    for handler in handlers:
        handler.addFilter(redacting)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redacting)


def _reporter(common, actions):
    from mlobs.github.reporter import Reporter

    return Reporter(common.report_settings(), common.github, actions)


def main(args: list[str] | None = None) -> None:
    """Run the CLI. A usage error (unknown option, bad choice) is one line and exit 2, like every
    other bad input, and the action's `result` output says `error`."""
    try:
        code = cli.main(args=args, prog_name="mlobs", standalone_mode=False)
    except click.UsageError as exc:
        from mlobs.errors import EXIT_CANNOT_EVALUATE
        from mlobs.github.actions import GithubActions
        from mlobs.redact import Redactor, environment_secrets

        env = dict(os.environ)
        redactor = Redactor(environment_secrets(env))
        message = redactor.text(" ".join(exc.format_message().split()))
        click.echo(f"mlobs: error: {message} (see mlobs --help)", err=True)
        actions = GithubActions(env=env, redactor=redactor)
        if actions.in_actions:
            actions.error(message, title="mlobs")
        actions.set_output("result", "error")
        sys.exit(EXIT_CANNOT_EVALUATE)
    except click.Abort:
        click.echo("mlobs: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
