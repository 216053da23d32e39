"""The built package (the wheel the image installs, built from the image's build context) holds
what the action runs and nothing else:
its modules, the bundled SLO contracts and the report site — not the OpenFaaS function, the
example Bento or the test fixtures — and it finds its assets when installed outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = "share/mlobs/"
# What the action's package must never ship (it runs none of it).
NOT_SHIPPED = ("mlobs/function/", "mlobs_function/", "mlobs/evaluate/example.py",
               "mlobs/lake/synthetic.py", "tests/", "bench/", "evaluation/", "function/")


def build_context(target: Path) -> Path:
    """The image's build context: what .dockerignore lets in (an allow-list), copied fresh — a
    wheel built in the checkout could pick up a stale build/ folder."""
    allowed = [line[1:] for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in allowed:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    context = build_context(tmp_path_factory.mktemp("context"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(context)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("ml_observability_action-*.whl")
    return built


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_holds_the_package_and_none_of_the_examples(wheel):
    files = names(wheel)
    modules = {n for n in files if n.startswith("mlobs/") and n.endswith(".py")}
    expected = {p.relative_to(REPO / "lib").as_posix() for p in (REPO / "lib" / "mlobs").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert modules == expected
    assert "mlobs/cli.py" in modules and "mlobs/logschema.py" in modules
    for name in files:
        payload = name.split(".data/data/", 1)[-1]
        assert not any(payload.startswith(banned) or f"/{banned}" in payload
                       for banned in NOT_SHIPPED), name


def test_the_wheel_carries_the_bundled_contracts_and_the_report_site(wheel):
    data = {n.split(".data/data/", 1)[1] for n in names(wheel) if ".data/data/" in n}
    features = {f"{DATA}features/{p.name}" for p in (REPO / "features").glob("*.feature")}
    site = {f"{DATA}{p.relative_to(REPO).as_posix()}" for p in (REPO / "hugo").rglob("*")
            if p.is_file()}
    assert features and site
    assert features | site == data, "pyproject.toml's [tool.setuptools.data-files] misses a file"


def test_installed_outside_the_checkout_it_finds_its_assets(wheel, tmp_path):
    target = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                           "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    # mlobs.config needs only the standard library: the package's own modules are enough here.
    code = ("import mlobs, json; from mlobs.config import bundled; "
            "print(json.dumps([mlobs.__file__, str(bundled('features')), str(bundled('hugo'))]))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    module, features, hugo = (Path(p) for p in __import__("json").loads(proc.stdout))
    assert module.is_relative_to(target) and features.is_relative_to(target)
    assert features == target / "share" / "mlobs" / "features"
    assert (features / "production.feature").read_bytes() == \
        (REPO / "features" / "production.feature").read_bytes()
    assert (hugo / "hugo.toml").read_bytes() == (REPO / "hugo" / "hugo.toml").read_bytes()
