"""The step library. Each step is a short call into :mod:`mlobs.slo.checks`; no logic lives here.

Steps resolve ``${NAME}`` placeholders from the run's variables (action inputs, --vars, the
environment). A placeholder without a value makes the scenario inconclusive, naming the variable.
"""

from __future__ import annotations

import re

from mlobs.slo import checks
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
    session(context).state.settings.min_samples = n


def given_drift_thresholds(context, alpha, js):
    state = session(context).state
    state.settings.drift_alpha, state.settings.drift_max_js = alpha, js


# ---- Then: the contracts --------------------------------------------------------------------

def then_latency(context, pct, ms):
    s = session(context)
    s.record(checks.latency_quantile(s.source, s.scope(), s.state.settings, pct, ms))


def then_latency_successful(context, pct, ms):
    s = session(context)
    s.record(checks.latency_quantile(s.source, s.scope(), s.state.settings, pct, ms, successful_only=True))


def then_error_rate(context, pct):
    s = session(context)
    s.record(checks.error_rate(s.source, s.scope(), s.state.settings, pct))


def then_class_share(context, label, low, high):
    s = session(context)
    s.record(checks.class_share(s.source, s.scope(), s.state.settings, resolve(context, label), low, high))


def then_min_requests(context, n):
    s = session(context)
    s.record(checks.minimum_requests(s.source, s.scope(), s.state.settings, n))


def then_no_drift(context, version):
    s = session(context)
    s.record(checks.distribution_drift_check(s.source, s.scope(), s.state.settings, resolve(context, version)))


def then_latency_regression(context, pct, increase, version):
    s = session(context)
    s.record(checks.latency_regression(s.source, s.scope(), s.state.settings, pct, increase,
                                       resolve(context, version)))


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
]


def register(registry) -> None:
    """Add the library to a behave StepRegistry (a private one per run, or behave's global)."""
    for keyword, pattern, func in STEPS:
        registry.add_step_definition(keyword, pattern, func)
