"""Run feature files through behave, in-process, with a private step registry; collect verdicts."""

from __future__ import annotations

from pathlib import Path

from mlobs.errors import ConfigError, MlobsError, SourceUnavailable
from mlobs.result import Verdict
from mlobs.slo.model import CheckResult, RunResult
from mlobs.slo.session import Defaults, Session, Unresolved
from mlobs.slo.source import Source


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


def run_features(files: list[Path], source: Source, variables: dict[str, str], defaults: Defaults,
                 workdir: Path, *, source_label: str, baseline_version: str | None,
                 end_text: str) -> RunResult:
    from behave.configuration import Configuration
    from behave.runner import ModelRunner
    from behave.step_registry import StepRegistry

    from mlobs.slo import steps

    features = parse_features(files, workdir)
    session = Session(source, variables, defaults, workdir)
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

    unavailable = _collect_step_outcomes(features, session)
    if unavailable is not None:
        raise unavailable  # the source went away: nothing could be evaluated honestly
    return RunResult(source=source_label, window=defaults.window, end=end_text,
                     model_version=defaults.model_version, baseline_version=baseline_version,
                     scenarios=session.scenarios, queries_issued=source.queries_issued)


def _collect_step_outcomes(features, session: Session) -> SourceUnavailable | None:
    """Turn behave's step statuses into verdicts: undefined steps and crashes are errors."""
    by_location = {(s.path, s.line): s for s in session.scenarios}
    unavailable = None
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
                if isinstance(exc, Unresolved):
                    result.checks.append(CheckResult(
                        name=step.name, verdict=Verdict.INCONCLUSIVE, line=step.line,
                        reason=f"${{{exc.name}}} is not set: pass it as an input, in vars, or in the environment."))
                elif isinstance(exc, MlobsError):
                    result.error, result.error_line = f"{where}: {exc.one_line()}", step.line
                    if isinstance(exc, SourceUnavailable) and unavailable is None:
                        unavailable = exc
                else:
                    result.error = f"{where}: step crashed: {type(exc).__name__}: {exc}"
                    result.error_line = step.line
                break
    return unavailable


def _relative(path: Path, workdir: Path) -> str:
    try:
        return path.resolve().relative_to(workdir).as_posix()
    except ValueError:
        return path.as_posix()
