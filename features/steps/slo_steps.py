"""The SLO step library for tools that read features/steps (behave --dry-run, IDE plugins).

`mlobs slo-validate` registers the same library itself, so contracts in any folder work; the
steps and their logic live in the mlobs package (mlobs.slo.steps, mlobs.slo.checks).
"""

from behave import step_registry

from mlobs.slo.steps import register

register(step_registry.registry)
