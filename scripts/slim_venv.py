"""Slim the image's Python environment after `pip install`, then prove every mode still imports.

Run by the Dockerfile's build stage with the environment's own Python: ``python slim_venv.py VENV``.
Each step says what it removed; bench/image_size.py measures the result (bench/RESULTS.md).

- the test suites wheels ship (never run in the image);
- botocore's service models but S3, STS/SSO (credentials) and Glue/DynamoDB (pyiceberg catalogs);
- pip, setuptools and wheel: nothing is installed into the image at run time;
- pyarrow's Flight RPC library and bindings, its C++ headers and Cython sources (pyiceberg reads
  and writes Parquet through pyarrow's dataset, compute and file-system modules, never Flight);
  zstandard's CFFI backend (the C backend is the one it loads);
- what only building extensions reads: type stubs, Cython, C and C++ sources and headers;
- scipy's subpackages that neither scipy.stats, scipy.spatial nor scikit-learn's metrics import
  (io, signal, fftpack, odr, cluster, misc, datasets, differentiate — checked in their sources:
  nothing outside their own folders imports them, lazily or not); the Thrift client pyiceberg
  ships for Hive catalogs, which need the ``thrift`` package (pyiceberg's hive extra) that the
  image does not have anyway (numpy's f2py stays: ``from numpy import *``, which scipy runs,
  loads it);
- identical copies of one shared library (a wheel cannot hold symlinks; numpy and scipy each
  bundle the same libgfortran) become symlinks;
- symbols no dynamic linker needs, from every shared library (``strip --strip-unneeded``);
- bytecode: compiled for the package and for every module its modes import (an import list
  below, then every module those imports loaded), not for the whole environment — the rest of
  scipy, botocore… is never imported by the action, and a module missed here is compiled in
  memory when first imported, as without any bytecode.

Then every mode's modules and libraries are imported once more, from the slimmed environment: a
trimming that broke an import fails the build, not a user's run.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# What the modes import, lazily included (imports inside functions are invisible to a walk of the
# package's top-level imports). A module missing here still works; it is compiled when imported.
MODE_IMPORTS = [
    "mlobs.cli", "mlobs.config", "mlobs.slo.mode", "mlobs.slo.runner", "mlobs.slo.steps",
    "mlobs.slo.checks", "mlobs.slo.render", "mlobs.slo.source", "mlobs.slo.plan", "mlobs.stats",
    "mlobs.loki.client", "mlobs.github.reporter", "mlobs.github.api", "mlobs.redact",
    "mlobs.evaluate.mode", "mlobs.evaluate.client", "mlobs.evaluate.dataset",
    "mlobs.evaluate.metrics", "mlobs.evaluate.render", "mlobs.evaluate.progress",
    "mlobs.evaluate.runner", "mlobs.evaluate.contract", "mlobs.evaluate.schema",
    "mlobs.evaluate.labels", "mlobs.evaluate.registry", "mlobs.evaluate.trust", "orjson",
    "mlobs.report.mode", "mlobs.report.data", "mlobs.report.publish", "mlobs.report.site",
    "mlobs.report.render", "mlobs.report.stores.local", "mlobs.report.stores.git",
    "mlobs.report.stores.s3", "mlobs.lake.pyiceberg_engine", "mlobs.lake.aggregate",
    "github", "github.Auth", "behave.runner", "behave.configuration", "behave.parser",
    "behave.formatter.base", "scipy.stats", "scipy.spatial.distance", "sklearn.metrics",
    "pyarrow.parquet", "pyarrow.dataset", "pyarrow.compute", "pyarrow.csv", "pyarrow.json",
    "pyarrow.fs", "pyiceberg.catalog.sql", "pyiceberg.io.pyarrow", "pyiceberg.table",
    "pyiceberg.table.update.snapshot", "pyiceberg.partitioning", "pyiceberg.transforms",
    "pyiceberg.expressions", "pyiceberg.avro.file", "sqlalchemy.dialects.sqlite",
    "boto3", "botocore.client", "tenacity", "rich.progress",
]
# Called once after the imports, so what they import lazily is compiled and proven present too.
CALLS = """
from mlobs import stats
stats.wilson_interval(3, 10)
stats.distribution_drift({"a": 30.0, "b": 10.0}, {"a": 10.0, "b": 30.0})
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
accuracy_score([0, 1], [0, 0]); confusion_matrix([0, 1], [0, 0])
precision_recall_fscore_support([0, 1], [0, 0], zero_division=0)
"""
BOTOCORE_MODELS = {"s3", "sts", "sso", "sso-oidc", "glue", "dynamodb"}
PYARROW_UNUSED = ["libarrow_flight.so*", "libarrow_python_flight.so*", "_flight.*.so", "flight.py",
                  "_pyarrow_cpp_tests.*.so", "include", "src", "*.pyx", "*.pxd", "*.pxi",
                  "includes"]
ZSTANDARD_UNUSED = ["_cffi.*.so", "backend_cffi.py"]
BUILD_ONLY = ("*.pyi", "*.pyx", "*.pxd", "*.pxi", "*.h", "*.hpp", "*.c", "*.cpp", "*.f", "*.f90")
SCIPY_UNUSED = ["io", "signal", "fftpack", "odr", "cluster", "misc", "datasets", "differentiate"]


def say(what: str, freed: int) -> None:
    print(f"slim_venv: {what}: {freed / 1e6:.1f} MB", flush=True)


def size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def remove(paths) -> int:
    freed = 0
    for path in paths:
        if not (path.exists() or path.is_symlink()):
            continue
        freed += size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return freed


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def loads(path: Path) -> str:
    """"" when the dynamic linker loads ``path``, else its error (in a child: a library's
    constructors must not run in this process)."""
    proc = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                           str(path)], capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


def strip(libraries: list[Path]) -> int:
    """``strip --strip-unneeded`` each library, keeping the original where stripping breaks it:
    libraries that auditwheel patched with patchelf (OpenBLAS, gfortran in numpy.libs/scipy.libs)
    no longer load once stripped ("ELF load command address/offset not page-aligned"). Every
    library is loaded before and after (none is being rewritten while another loads it)."""
    from concurrent.futures import ThreadPoolExecutor

    originals = {path: path.read_bytes() for path in libraries}
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        before = dict(zip(libraries, pool.map(loads, libraries), strict=True))
        for start in range(0, len(libraries), 200):
            subprocess.run(["strip", "--strip-unneeded", *map(str, libraries[start:start + 200])],
                           check=True)
        after = dict(zip(libraries, pool.map(loads, libraries), strict=True))
    # A library that no longer loads is restored; so is every library that links it, whose load
    # failed because of it. Each restored one is then stripped alone and kept stripped if it loads.
    broken = [path for path in libraries if after[path] != before[path]]
    for path in broken:
        path.write_bytes(originals[path])
    for path in broken:
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        if loads(path) != before[path]:
            path.write_bytes(originals[path])
            print(f"slim_venv: kept the symbols of {path.name}: stripped, it does not load",
                  flush=True)
    return sum(len(originals[p]) - p.stat().st_size for p in libraries)


def importable(names: list[str]) -> list[str]:
    """Which of ``names`` import in a fresh interpreter (an image without the evaluate extra
    cannot import the modes that need it: those are not asked of it after the trim either)."""
    code = ("import importlib, json, sys\nok = []\nfor name in sys.argv[1:]:\n"
            "    try:\n        importlib.import_module(name)\n        ok.append(name)\n"
            "    except Exception:\n        pass\nprint(json.dumps(ok))\n")
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(venv: Path) -> int:
    site = next((venv / "lib").glob("python3*/site-packages"))
    wanted = importable([*MODE_IMPORTS, "boto3", "sklearn.metrics"])
    say("test suites", remove([p for p in site.rglob("tests") if p.is_dir()]))
    models = site / "botocore" / "data"
    if models.is_dir():
        say("botocore service models", remove(
            [p for p in models.iterdir() if p.is_dir() and p.name not in BOTOCORE_MODELS]))
    say("pyarrow Flight, headers, Cython sources", remove(
        p for pattern in PYARROW_UNUSED for p in (site / "pyarrow").glob(pattern)))
    say("zstandard CFFI backend", remove(
        p for pattern in ZSTANDARD_UNUSED for p in (site / "zstandard").glob(pattern)))

    say("stubs, Cython and C sources, headers", remove(
        p for pattern in BUILD_ONLY for p in site.rglob(pattern) if p.is_file()))
    say("scipy subpackages no mode imports", remove(site / "scipy" / name for name in SCIPY_UNUSED))
    say("pyiceberg's Hive client", remove([site / "hive_metastore"]))

    libraries = [p for p in site.rglob("*.so*") if p.is_file() and not p.is_symlink() and is_elf(p)]
    by_digest: dict[str, Path] = {}
    freed = 0
    for path in sorted(libraries, key=lambda p: (len(p.name), str(p))):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        first = by_digest.setdefault(digest, path)
        if first is not path:  # also across folders: numpy.libs and scipy.libs share libgfortran
            freed += path.stat().st_size
            path.unlink()
            path.symlink_to(os.path.relpath(first, path.parent))
    say("duplicate shared libraries made symlinks", freed)
    if shutil.which("strip"):
        say("unneeded symbols stripped", strip([p for p in libraries if not p.is_symlink()]))
    else:
        print("slim_venv: no strip command: shared libraries keep their symbols", flush=True)

    # Nothing is installed at run time: pip goes, after everything that could still need it.
    say("pip, setuptools, wheel", remove(
        p for name in ("pip", "setuptools", "wheel", "_distutils_hack", "distutils-precedence.pth",
                       "pkg_resources")
        for p in [site / name, *site.glob(f"{name}-*.dist-info")]))
    for script in ("pip", "pip3", f"pip3.{sys.version_info.minor}"):
        (venv / "bin" / script).unlink(missing_ok=True)

    # Bytecode for the package and what its modes import; the import doubles as the check.
    sys.dont_write_bytecode = False
    for name in wanted:  # whatever imported before the trim must import after it
        importlib.import_module(name)
    if "boto3" in wanted:
        import boto3

        boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    if {"mlobs.stats", "sklearn.metrics"} <= set(wanted):
        exec(CALLS, {})
    print(f"slim_venv: {len(wanted)} of {len(MODE_IMPORTS) + 2} mode imports present, all still "
          "import", flush=True)
    loaded = {Path(m.__file__) for m in list(sys.modules.values())
              if getattr(m, "__file__", None) and m.__file__.endswith(".py")}
    for path in sorted(loaded):
        if path.is_relative_to(site):
            compileall.compile_file(str(path), quiet=2)
    compileall.compile_dir(str(site / "mlobs"), quiet=2)
    pycache = sum(size(p) for p in site.rglob("__pycache__"))
    print(f"slim_venv: bytecode for {len(loaded)} imported modules: {pycache / 1e6:.1f} MB",
          flush=True)
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.exit(main(Path(sys.argv[1])))
