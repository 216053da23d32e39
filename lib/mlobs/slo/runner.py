"""Run feature files through behave, in-process, with a private step registry; collect verdicts."""

from __future__ import annotations

from pathlib import Path

from mlobs.errors import ConfigError, MlobsError, SourceUnavailable
from mlobs.result import Verdict
from mlobs.slo.checks import ContractError
from mlobs.slo.model import CheckResult, RunResult, ScenarioResult
from mlobs.slo.session import Defaults, Session, Sources, Unresolved


def collect_feature_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.feature"))
            if not found:
                raise ConfigError(f"no .feature files under {str(path)!r}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"features path {str(path)!r} does not exist")
    return list(dict.fromkeys(p.resolve() for p in files))


def parse_features(files: list[Path], workdir: Path):
    from behave.parser import ParserError, parse_file

    features = []
    for path in files:
        try:
            feature = parse_file(str(path))
        except ParserError as exc:
            where = _relative(path, workdir)
            line = f":{exc.line}" if getattr(exc, "line", None) else ""
            reason = " ".join(str(getattr(exc, "message", None) or exc).split())
            raise ConfigError(f"malformed feature file {where}{line}: {reason}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"feature file {_relative(path, workdir)} is not UTF-8: {exc}") from None
        if feature is None:
            raise ConfigError(f"feature file {_relative(path, workdir)} has no Feature")
        features.append(feature)
    return features


def run_features(files: list[Path], sources: Sources, variables: dict[str, str], defaults: Defaults,
                 workdir: Path, *, baseline_version: str | None, end_text: str) -> RunResult:
    """Run the features: steps validate their contracts and register checks; then every
    measurement the run needs is fetched at once (per source: the fewest queries, concurrently);
    then each check computes its verdict.

    A contract that cannot mean anything stops the run before any query (ConfigError naming its
    file:line); so does a run that names no log source, a log file with nothing to evaluate, and
    a source that went away.
    """
    from behave.configuration import Configuration
    from behave.runner import ModelRunner
    from behave.step_registry import StepRegistry

    from mlobs.slo import steps

    features = parse_features(files, workdir)
    session = Session(sources, variables, defaults, workdir)
    registry = StepRegistry()
    steps.register(registry)
    config = Configuration(
        command_args=["--no-capture", "--no-capture-stderr", "--no-logcapture", "--format=null",
                      "--no-summary", "--no-snippets", "--no-color"],
        load_config=False,
    )
    runner = ModelRunner(config, features, registry)
    runner.hooks = {
        "before_all": lambda context: setattr(context, "mlobs_session", session),
        "before_scenario": session.before_scenario,
        "before_step": session.before_step,
    }
    runner.run()

    unresolved = _collect_step_outcomes(features, session)
    if any(p.source is None for p in session.pending):
        raise ConfigError("no log source: set loki-url (Grafana Loki) or logs-file (JSON lines), or "
                          "name a Loki in the feature file (Given a Loki instance running at \"…\")")
    for source in sources.used():
        source.prefetch(r for p in session.pending if p.source is source for r in p.check.requests)
    _second_round(session.pending, sources)
    failed: set[int] = set()
    for pending in session.pending:
        scenario = pending.scenario
        if id(scenario) in failed:
            continue
        try:
            result = pending.check.evaluate(pending.source)
        except SourceUnavailable:
            raise  # the source went away: nothing can be evaluated honestly
        except MlobsError as exc:
            scenario.error = f"{scenario.path}:{pending.line}: {exc.one_line()}"
            scenario.error_line = pending.line
            failed.add(id(scenario))
            continue
        session.record(pending, result)
    for scenario, check in unresolved:
        scenario.checks.append(check)

    used = sources.used()
    label = ", ".join(dict.fromkeys(s.description for s in used)) or "no source"
    return RunResult(source=label, window=defaults.window, end=end_text,
                     model_version=defaults.model_version, baseline_version=baseline_version,
                     scenarios=session.scenarios, queries_issued=sum(s.queries_issued for s in used))


def _second_round(pending, sources: Sources) -> None:
    """The measurements that depend on the first round's answers (the order-statistic bounds of
    a latency regression: their levels follow from n), all fetched in one planned round per
    source. A check whose first-round answer was an error asks nothing: its evaluation reports
    the error."""
    for source in sources.used():
        wanted = []
        for p in pending:
            if p.source is not source or p.check.follow_up is None:
                continue
            try:
                wanted += p.check.follow_up(source)
            except SourceUnavailable:
                raise
            except MlobsError:
                continue
        if wanted:
            source.prefetch(wanted)


def _collect_step_outcomes(features, session: Session) -> list[tuple[ScenarioResult, CheckResult]]:
    """Turn behave's step statuses into verdicts: undefined steps and crashes are errors; a
    placeholder without a value is an inconclusive check (returned, to follow the scenario's
    evaluated checks); a contract that cannot mean anything stops the run."""
    by_location = {(s.path, s.line): s for s in session.scenarios}
    unresolved: list[tuple[ScenarioResult, CheckResult]] = []
    contract_errors: list[str] = []
    for feature in features:
        for scenario in feature.walk_scenarios():
            result = by_location.get((session.relative(scenario.filename), scenario.line))
            if result is None:
                continue
            for step in scenario.all_steps:
                status = getattr(step.status, "name", str(step.status))
                where = f"{result.path}:{step.line}"
                if status == "undefined":
                    result.error = (f"undefined step '{step.keyword} {step.name}' at {where}: "
                                    "see the step library in the README")
                    result.error_line = step.line
                    break
                if status not in ("failed", "error"):
                    continue
                exc = step.exception
                if isinstance(exc, ContractError):
                    contract_errors.append(f"{where}: {exc.one_line()}")
                elif isinstance(exc, Unresolved):
                    unresolved.append((result, CheckResult(
                        name=step.name, verdict=Verdict.INCONCLUSIVE, line=step.line,
                        reason=f"${{{exc.name}}} is not set: pass it as an input, in vars, or as an "
                               "environment variable named SLO_*.")))
                elif isinstance(exc, MlobsError):
                    result.error, result.error_line = f"{where}: {exc.one_line()}", step.line
                else:
                    result.error = f"{where}: step crashed: {type(exc).__name__}: {exc}"
                    result.error_line = step.line
                break
    if contract_errors:
        more = f" (and {len(contract_errors) - 1} more)" if len(contract_errors) > 1 else ""
        raise ConfigError(f"bad contract at {contract_errors[0]}{more}")
    return unresolved


def _relative(path: Path, workdir: Path) -> str:
    try:
        return path.resolve().relative_to(workdir).as_posix()
    except ValueError:
        return path.as_posix()
