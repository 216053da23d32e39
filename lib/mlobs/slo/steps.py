"""The step library. Each step is a short call into :mod:`mlobs.slo.checks`; no logic lives here.

Steps resolve ``${NAME}`` placeholders from the run's variables (the action's inputs, ``vars``,
and environment variables named ``SLO_*`` — nothing else from the environment). A placeholder
without a value makes the scenario inconclusive, naming the variable.

Two phrasings are understood: this library's own (``Then the p99 latency is below 150 ms``) and
the original design's, which teams copied (``Given a Loki instance running at "…"``, ``When we
query the performance logs for model version "…"``, ``Then the p99 latency should be below 150
ms``, …).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mlobs.slo import checks
from mlobs.slo.checks import ContractError
from mlobs.slo.session import Unresolved, session

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve(context, text: str) -> str:
    variables = session(context).variables

    def value(match: re.Match) -> str:
        name = match[1]
        if name not in variables:
            raise Unresolved(name)
        return variables[name]

    return _PLACEHOLDER.sub(value, text)


# ---- Given: what to look at -----------------------------------------------------------------

def given_stream(context, selector):
    session(context).state.selector = resolve(context, selector).strip()


def given_window(context, window):
    session(context).state.set_window(resolve(context, window))


def given_model_version(context, version):
    session(context).state.model_version = resolve(context, version) or None


FIELD_ROLES = {"latency": "latency", "status code": "status", "predicted class": "predicted_class",
               "model version": "model_version", "timestamp": "timestamp"}


def given_field(context, role, name):
    session(context).state.set_field(FIELD_ROLES.get(role.strip(), role), resolve(context, name))


def given_min_samples(context, n):
    if n < 1:
        raise ContractError(f"at least 1 sample must be required, got {n}")
    session(context).state.settings.min_samples = n


def given_drift_thresholds(context, alpha, js):
    checks.finite(alpha, "the drift p-value threshold", high=1)
    checks.finite(js, "the Jensen-Shannon distance threshold", high=1)
    state = session(context).state
    state.settings.drift_alpha, state.settings.drift_max_js = alpha, js


# ---- Given/When: the original design's phrasing ---------------------------------------------

def given_loki_at(context, url):
    """The Loki a feature file names: used only when the inputs name no source (see Sources)."""
    url = resolve(context, url).strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContractError(f"the Loki URL {url!r} must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ContractError("a Loki URL in a feature file must not carry credentials: set the "
                            "loki-url input with loki-token or loki-username/loki-password")
    session(context).state.loki_url = url


def given_function(context, function, namespace):
    from mlobs.loki.logql import Selector

    selector = Selector.of({"namespace": resolve(context, namespace),
                            "function_name": resolve(context, function)})
    session(context).state.selector = str(selector)


_UNITS = {"ms": 0.001, "millisecond": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60,
          "minute": 60, "h": 3600, "hr": 3600, "hour": 3600, "d": 86400, "day": 86400,
          "w": 604800, "week": 604800}  # fmt: skip


def human_window(text: str) -> str:
    """"1 hour", "30 minutes", "1.5 days", "90 seconds" (or a Loki duration like "1h") → "1h"."""
    from mlobs.loki.logql import format_duration, parse_duration

    cleaned = " ".join(text.split()).lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?) ?([a-z]+)", cleaned)
    unit = match[2] if match else ""
    if unit not in _UNITS and unit.endswith("s"):
        unit = unit[:-1]  # plural
    if match is None or unit not in _UNITS:
        try:
            parse_duration(text.strip())
            return text.strip()
        except Exception:
            raise ContractError(f"unknown time range {text!r}: write e.g. \"1 hour\", \"30 minutes\", "
                                "\"1 day\" or \"1h\"") from None
    seconds = float(match[1]) * _UNITS[unit]
    if seconds <= 0:
        raise ContractError(f"the time range {text!r} is empty")
    if seconds != int(seconds):
        raise ContractError(f"the time range {text!r} is not a whole number of seconds")
    return format_duration(int(seconds))


def given_time_range(context, window):
    session(context).state.set_window(human_window(resolve(context, window)))


LOG_KINDS = ("performance", "request", "successful prediction")


def when_logs(context, kind, version=None):
    kind = " ".join(kind.split())
    if kind not in LOG_KINDS:
        raise ContractError(f"unknown logs {kind!r}: query the performance, request or "
                            "successful prediction logs")
    state = session(context).state
    state.successful_only = kind == "successful prediction"
    if version is not None:
        state.model_version = resolve(context, version) or None


def when_logs_of_version(context, kind, version):
    when_logs(context, kind, version)


# ---- Then: the contracts --------------------------------------------------------------------

def then_latency(context, pct, ms):
    successful = session(context).state.successful_only
    session(context).add(lambda scope, settings: checks.latency_quantile(
        scope, settings, pct, ms, successful_only=successful))


def then_latency_successful(context, pct, ms):
    session(context).add(lambda scope, settings: checks.latency_quantile(
        scope, settings, pct, ms, successful_only=True))


def then_error_rate(context, pct):
    if session(context).state.successful_only:
        raise ContractError("an error rate over the successful prediction logs is always 0: "
                            "query the request logs")
    session(context).add(lambda scope, settings: checks.error_rate(scope, settings, pct))


def then_class_share(context, label, low, high):
    checks.band(low, high)  # a bad band is refused even where the label is still unresolved
    label = resolve(context, label)
    session(context).add(lambda scope, settings: checks.class_share(scope, settings, label, low, high))


def then_min_requests(context, n):
    session(context).add(lambda scope, settings: checks.minimum_requests(scope, settings, n))


def then_no_drift(context, version):
    version = resolve(context, version)
    session(context).add(lambda scope, settings: checks.distribution_drift_check(scope, settings, version))


def then_latency_regression(context, pct, increase, version):
    checks.percentile_value(pct)  # refused even where the version is still unresolved
    checks.finite(increase, "the allowed increase (percent)")
    version = resolve(context, version)
    session(context).add(lambda scope, settings: checks.latency_regression(
        scope, settings, pct, increase, version))


STEPS = [
    ("given", "the logs of stream {selector}", given_stream),
    ("given", 'the window is the last "{window}"', given_window),
    ("given", 'the model version is "{version}"', given_model_version),
    ("given", 'the {role} field is "{name}"', given_field),
    ("given", "at least {n:d} samples are required", given_min_samples),
    ("given", "drift means p below {alpha:g} and a Jensen-Shannon distance above {js:g}",
     given_drift_thresholds),
    ("then", "the p{pct:g} latency is below {ms:g} ms", then_latency),
    ("then", "the p{pct:g} latency of successful requests is below {ms:g} ms", then_latency_successful),
    ("then", "the 5xx error rate is below {pct:g} percent", then_error_rate),
    ("then", 'the share of class "{label}" is between {low:g} and {high:g} percent', then_class_share),
    ("then", "there are at least {n:d} requests", then_min_requests),
    ("then", 'the prediction distribution does not drift from version "{version}"', then_no_drift),
    ("then", 'the p{pct:g} latency is at most {increase:g} percent above version "{version}"',
     then_latency_regression),
    # the original design's phrasing (docs/… and the feature files teams copied from it)
    ("given", 'a Loki instance running at "{url}"', given_loki_at),
    ("given", 'we are validating the function "{function}" in namespace "{namespace}"', given_function),
    ("given", 'the time range for validation is the last "{window}"', given_time_range),
    ("when", 'we query the {kind} logs for model version "{version}"', when_logs_of_version),
    ("when", "we query the {kind} logs", when_logs),
    ("then", "the p{pct:g} latency should be below {ms:g} ms", then_latency),
    ("then", "the error rate for status code 5xx should be less than {pct:g} percent", then_error_rate),
    ("then", 'the prediction proportion for class "{label}" should be between {low:g} and {high:g} percent',
     then_class_share),
]


def register(registry) -> None:
    """Add the library to a behave StepRegistry (a private one per run, or behave's global)."""
    for keyword, pattern, func in STEPS:
        registry.add_step_definition(keyword, pattern, func)
