"""Write cli/action.yml: the same action as action.yml, run on the runner itself instead of in the
action's image — for Bentos that need libraries the image lacks (PyTorch, transformers): install
them in the job, then `uses: org/ml-observability-action/cli@v1` installs this package beside
them and runs the same entrypoint with the same inputs (as INPUT_* variables, hyphens kept).

Usage: python scripts/cli_action.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "cli" / "action.yml"
HEADER = (
    "# Generated from ../action.yml by scripts/cli_action.py: edit action.yml, then rerun it.\n"
    "# Use as `uses: org/ml-observability-action/cli@v1` to run mlobs on the runner, beside your\n"
    "# Bento's own dependencies (install them first, e.g. with actions/setup-python and pip).\n"
)
PYTHON_INPUT = {
    "description": "Python interpreter to install mlobs into and run it with (the one that has "
                   "your Bento's dependencies).",
    "required": False,
    "default": "python3",
}
INSTALL = """\
set -euo pipefail
want=$(sed -n 's/^version = "\\(.*\\)"$/\\1/p' "$MLOBS_ROOT/pyproject.toml" | head -n 1)
have=$("$MLOBS_PYTHON" -c 'import mlobs; print(mlobs.__version__)' 2>/dev/null || true)
if [ "$have" = "$want" ]; then
  echo "mlobs $have is installed for $MLOBS_PYTHON"
else
  "$MLOBS_PYTHON" -m pip install --disable-pip-version-check "$MLOBS_ROOT[evaluate,serve]"
fi
"""
RUN = 'exec "$MLOBS_PYTHON" "$MLOBS_ROOT/entrypoint.py"\n'


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the step scripts) as literal blocks."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def render() -> str:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    inputs = {**action["inputs"], "python": PYTHON_INPUT}
    env = {"MLOBS_ROOT": "${{ github.action_path }}/..", "MLOBS_PYTHON": "${{ inputs.python }}"}
    env.update({f"INPUT_{name.upper()}": f"${{{{ inputs.{name} }}}}" for name in action["inputs"]})
    outputs = {name: {"description": spec["description"], "value": f"${{{{ steps.mlobs.outputs.{name} }}}}"}
               for name, spec in action["outputs"].items()}
    doc = {
        "name": f"{action['name']} (CLI on the runner)",
        "description": action["description"].strip() + " Runs on the runner, beside your own "
                       "dependencies, instead of in the action's image.",
        "author": action["author"],
        "branding": action["branding"],
        "inputs": inputs,
        "outputs": outputs,
        "runs": {"using": "composite", "steps": [
            {"name": "Install mlobs beside your dependencies", "shell": "bash",
             "env": {k: env[k] for k in ("MLOBS_ROOT", "MLOBS_PYTHON")}, "run": INSTALL},
            {"name": "Run mlobs", "id": "mlobs", "shell": "bash", "env": env, "run": RUN},
        ]},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    wanted = render()
    if "--check" in sys.argv:
        return 0 if TARGET.is_file() and TARGET.read_text() == wanted else 1
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
