"""Write the generated parts of the docs:

1. in action.yml, the input descriptions that come from the code — `max-regression`'s, from the
   metric registry (lib/mlobs/evaluate/registry.py);
2. the inputs and outputs tables of README.md, from action.yml;
3. README.md's table of headline metrics, from the metric registry.

Usage: python scripts/readme_inputs.py [--check]   (--check: exit 1 if a file is out of date)
prebuilt/action.yml copies action.yml: run python scripts/prebuilt_action.py after this one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))  # this checkout's package, whatever is installed

from mlobs.evaluate import registry  # noqa: E402

BEGIN, END = "<!-- inputs:begin (generated from action.yml by scripts/readme_inputs.py) -->", "<!-- inputs:end -->"
METRICS_BEGIN = ("<!-- metrics:begin (generated from lib/mlobs/evaluate/registry.py by "
                 "scripts/readme_inputs.py) -->")
METRICS_END = "<!-- metrics:end -->"


def cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def tables(action: dict) -> str:
    rows = ["| input | default | description |", "|---|---|---|"]
    for name, spec in action["inputs"].items():
        default = spec.get("default", "")
        shown = f"`{default}`" if default != "" else ("**required**" if spec.get("required") else "")
        rows.append(f"| `{name}` | {cell(shown)} | {cell(spec['description'])} |")
    rows += ["", "| output | description |", "|---|---|"]
    for name, spec in action["outputs"].items():
        rows.append(f"| `{name}` | {cell(spec['description'])} |")
    return "\n".join(rows)


def generated_descriptions() -> dict[str, str]:
    """Inputs whose action.yml description is written from the code."""
    return {"max-regression": registry.gate_help(markdown=True)}


def render_action(text: str) -> str:
    """action.yml with the generated descriptions in place (one line each, YAML double-quoted);
    every other byte as it was."""
    for name, description in generated_descriptions().items():
        pattern = re.compile(rf"^(  {re.escape(name)}:\n    description: ).*$", re.MULTILINE)
        quoted = json.dumps(description, ensure_ascii=False)  # a YAML double-quoted scalar
        text, count = pattern.subn(lambda m, quoted=quoted: m.group(1) + quoted, text)
        if count != 1:
            raise SystemExit(f"action.yml: input {name!r} with a one-line description not found")
    return text


def _between(text: str, begin: str, end: str, body: str) -> str:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(readme: str, action: dict) -> str:
    readme = _between(readme, BEGIN, END, tables(action))
    return _between(readme, METRICS_BEGIN, METRICS_END, registry.markdown_table())


def main() -> int:
    action_path, readme_path = ROOT / "action.yml", ROOT / "README.md"
    action_text, readme = action_path.read_text(), readme_path.read_text()
    new_action = render_action(action_text)
    new_readme = render(readme, yaml.safe_load(new_action))
    if "--check" in sys.argv:
        stale = [p.name for p, old, new in ((action_path, action_text, new_action),
                                            (readme_path, readme, new_readme)) if old != new]
        if stale:
            print(f"stale: {', '.join(stale)} — run python scripts/readme_inputs.py", file=sys.stderr)
        return 1 if stale else 0
    action_path.write_text(new_action)
    readme_path.write_text(new_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
