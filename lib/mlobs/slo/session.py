"""One slo-validate run as behave sees it: the source, the variables, and per-scenario state.

It lives on behave's root context (``context.mlobs_session``); hooks tell it which scenario and
step are running so every check lands on the right line of the right file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError
from mlobs.logschema import LogFields
from mlobs.slo.checks import CheckSettings
from mlobs.slo.model import CheckResult, ScenarioResult, Scope
from mlobs.slo.source import Source


class Unresolved(Exception):
    """A ``${NAME}`` placeholder without a value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Defaults:
    """What a feature starts from before its Background says otherwise (from the CLI inputs)."""

    selector: str | None
    window: str
    end: float
    model_version: str | None = None
    grafana_url: str | None = None
    fields: LogFields = LogFields()


@dataclass
class ScenarioState:
    selector: str | None
    window: str
    window_s: float
    model_version: str | None
    fields: LogFields
    settings: CheckSettings = field(default_factory=CheckSettings)

    @classmethod
    def from_defaults(cls, d: Defaults) -> ScenarioState:
        from mlobs.loki.logql import parse_duration

        return cls(d.selector, d.window, parse_duration(d.window), d.model_version, d.fields)

    def set_window(self, text: str) -> None:
        from mlobs.loki.logql import parse_duration

        self.window_s = parse_duration(text)
        self.window = text

    def set_field(self, role: str, name: str) -> None:
        from mlobs.loki.logql import validate_label_name

        if role not in {f.name for f in dataclasses.fields(LogFields)}:
            raise ConfigError(f"unknown field role {role!r}: use latency, status code, "
                              "predicted class, model version or timestamp")
        self.fields = dataclasses.replace(self.fields, **{role: validate_label_name(name)})


class Session:
    def __init__(self, source: Source, variables: dict[str, str], defaults: Defaults,
                 workdir: Path) -> None:
        self.source = source
        self.variables = variables
        self.defaults = defaults
        self.workdir = workdir
        self.scenarios: list[ScenarioResult] = []
        self.current: ScenarioResult | None = None
        self.current_line = 0
        self.state = ScenarioState.from_defaults(defaults)

    # hooks
    def before_scenario(self, context, scenario) -> None:
        self.current = ScenarioResult(feature=scenario.feature.name, name=scenario.name,
                                      path=self.relative(scenario.filename), line=scenario.line)
        self.scenarios.append(self.current)
        self.state = ScenarioState.from_defaults(self.defaults)

    def before_step(self, context, step) -> None:
        self.current_line = step.line

    def relative(self, filename: str) -> str:
        """Workspace-relative path (what annotations need); files outside keep their full path."""
        path = Path(filename).resolve()
        try:
            return path.relative_to(self.workdir).as_posix()
        except ValueError:
            return path.as_posix()

    # used by steps
    def scope(self) -> Scope:
        if not self.state.selector:
            raise ConfigError("no stream selector: set the selector input or add "
                              "'Given the logs of stream {…}' to the feature's Background")
        return Scope(self.state.selector, self.state.window, self.state.window_s, self.defaults.end,
                     self.state.model_version, self.state.fields)

    def record(self, check: CheckResult) -> None:
        check.line = self.current_line
        if self.defaults.grafana_url:
            scope = self.scope()
            check.explore_urls = [u for q in check.queries
                                  if (u := self.source.explore_url(self.defaults.grafana_url, q, scope))]
        assert self.current is not None
        self.current.checks.append(check)


def session(context) -> Session:
    return context.mlobs_session
