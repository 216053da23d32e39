"""Write the inputs and outputs tables of README.md from action.yml (between the markers).

Usage: python scripts/readme_inputs.py [--check]   (--check: exit 1 if README.md is out of date)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- inputs:begin (generated from action.yml by scripts/readme_inputs.py) -->", "<!-- inputs:end -->"


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


def render(readme: str, action: dict) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables(action)}\n{END}{tail}"


def main() -> int:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    updated = render(readme, action)
    if "--check" in sys.argv:
        return 0 if updated == readme else 1
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
