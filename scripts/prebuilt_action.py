"""Write prebuilt/action.yml: the same action as action.yml, running the image the release workflow
pushes (`docker://ghcr.io/org/ml-observability-action:v<version>`) instead of building the
Dockerfile on every run. Usage: python scripts/prebuilt_action.py [--check]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "docker://ghcr.io/org/ml-observability-action:v{version}"
HEADER = ("# Generated from ../action.yml by scripts/prebuilt_action.py: edit action.yml, then rerun it.\n"
          "# Use as `uses: org/ml-observability-action/prebuilt@v1` to skip the image build.\n")


def render() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    text = (ROOT / "action.yml").read_text()
    assert "  image: Dockerfile\n" in text, "action.yml must build from the Dockerfile"
    return HEADER + text.replace("  image: Dockerfile\n", f'  image: "{IMAGE.format(version=version)}"\n')


def main() -> int:
    target = ROOT / "prebuilt" / "action.yml"
    wanted = render()
    if "--check" in sys.argv:
        return 0 if target.is_file() and target.read_text() == wanted else 1
    target.parent.mkdir(exist_ok=True)
    target.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
