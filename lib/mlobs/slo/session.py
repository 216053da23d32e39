"""One slo-validate run as behave sees it: the sources, the variables, and per-scenario state.

It lives on behave's root context (``context.mlobs_session``); hooks tell it which scenario and
step are running so every check lands on the right line of the right file. ``Then`` steps do not
query anything: they validate their contract and register a :class:`~mlobs.slo.checks.Check`; the
runner then fetches every measurement the run needs at once and computes the verdicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlobs.errors import ConfigError
from mlobs.logschema import LogFields
from mlobs.slo.checks import Check, CheckSettings
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
    significance: float | None = 0.05  # the significance input (see CheckSettings)


class Sources:
    """Where a scenario's numbers come from.

    The inputs always win: with ``loki-url`` or ``logs-file`` set, that source serves every
    scenario and a Loki URL written in a feature file is ignored. Only when neither is set is a
    feature file's URL used — through ``for_url`` (a client that never carries the credential
    inputs: they belong to the URL in the inputs, not to one a pull request can write).
    """

    def __init__(self, fixed: Source | None, for_url: Callable[[str], Source] | None = None) -> None:
        self.fixed = fixed
        self._for_url = for_url
        self._by_url: dict[str, Source] = {}

    def get(self, url: str | None) -> Source | None:
        if self.fixed is not None:
            return self.fixed
        if url is None or self._for_url is None:
            return None
        if url not in self._by_url:
            self._by_url[url] = self._for_url(url)
        return self._by_url[url]

    def used(self) -> list[Source]:
        return [self.fixed] if self.fixed is not None else list(self._by_url.values())


@dataclass
class ScenarioState:
    selector: str | None
    window: str
    window_s: float
    model_version: str | None
    fields: LogFields
    settings: CheckSettings = field(default_factory=CheckSettings)
    loki_url: str | None = None  # from "Given a Loki instance running at …"
    successful_only: bool = False  # "the successful prediction logs"

    @classmethod
    def from_defaults(cls, d: Defaults) -> ScenarioState:
        from mlobs.loki.logql import parse_duration

        return cls(d.selector, d.window, parse_duration(d.window), d.model_version, d.fields,
                   CheckSettings(significance=d.significance))

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


@dataclass
class Pending:
    """A check registered by a step, evaluated once every measurement is in."""

    scenario: ScenarioResult
    line: int
    check: Check
    scope: Scope
    source: Source | None


class Session:
    def __init__(self, sources: Sources, variables: dict[str, str], defaults: Defaults,
                 workdir: Path) -> None:
        self.sources = sources
        self.variables = variables
        self.defaults = defaults
        self.workdir = workdir
        self.scenarios: list[ScenarioResult] = []
        self.pending: list[Pending] = []
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

    def add(self, build: Callable[[Scope, CheckSettings], Check]) -> None:
        """Validate a contract and register its check (a step's whole job)."""
        scope = self.scope()
        check = build(scope, dataclasses.replace(self.state.settings))
        assert self.current is not None
        self.pending.append(Pending(self.current, self.current_line, check, scope,
                                    self.sources.get(self.state.loki_url)))

    def record(self, pending: Pending, result: CheckResult) -> None:
        result.line = pending.line
        if self.defaults.grafana_url and pending.source is not None:
            result.explore_urls = [u for q in result.queries
                                   if (u := pending.source.explore_url(self.defaults.grafana_url, q,
                                                                       pending.scope))]
        pending.scenario.checks.append(result)


def session(context) -> Session:
    return context.mlobs_session
