"""The demo's loop on embedded defaults, offline: the PyTorch function serves real traffic for two
model versions, slo-validate judges its logs, evaluate puts the example Bento's golden-set
predictions into Iceberg, publish-report builds the static site — and every GitHub surface
(PR comment, check run, job summary) is rendered to files with dry-run.

v1 is healthy. v2 is what a bad update looks like: a bigger, slower architecture, trained on data
where labradors were labelled golden retrievers (so the predicted class mix shifts); its text
model twin is trained on less data. The verdicts are real: computed from what the services did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(".mlobs/demo")
REQUESTS = 1200  # the p99 contract needs 1000 samples to be judged at all


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(*cmd: str, env: dict | None = None) -> None:
    subprocess.run(list(cmd), check=True, env={**os.environ, **(env or {})})


def function_traffic(logs: Path) -> None:
    """Train both function models and send each REQUESTS requests; the function's stdout is the log."""
    models = OUT / "models"
    step("train the function's models (v1 tiny CNN; v2 resnet18 on mislabelled data)")
    run(sys.executable, "-m", "mlobs_function.train", "--out", str(models / "v1"))
    run(sys.executable, "-m", "mlobs_function.train", "--out", str(models / "v2"), "--arch", "resnet18",
        "--input-size", "64", "--epochs", "8", "--mislabel", "labrador retriever=golden retriever:1.0")
    for version in ("v1", "v2"):
        step(f"serve the function as {version} and drive {REQUESTS} requests at it")
        run(sys.executable, "-m", "mlobs_function.traffic", "--model-dir", str(models / version),
            "--model-version", version, "--requests", str(REQUESTS), "--rate", "60",
            "--log-file", str(logs))


def mlobs(*args: str, env: dict | None = None) -> int:
    print(f"\n$ mlobs {' '.join(args)}")
    cmd = [str(Path(sys.executable).parent / "mlobs"), *args, "--github-token="]
    code = subprocess.run(cmd, env={**os.environ, **(env or {})}).returncode
    print(f"  exit code {code}  ({ {0: 'pass', 1: 'violated / regressed', 2: 'could not evaluate'}[code] })")
    return code


def slo_validate(version: str, logs: Path, baseline: str | None) -> int:
    args = [f"--logs-file={logs}", f"--model-version={version}", "--dry-run", f"--output-dir={OUT / version}"]
    if baseline:  # v1 is the first version: nothing to compare with, so its drift checks say so
        args.append(f"--baseline-version={baseline}")
    return mlobs("slo-validate", *args)


def evaluate_and_publish() -> dict[str, int]:
    """Train the example sentiment model v1 and v2, evaluate both, publish the reports."""
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / ".cache" / "mlobs-demo" / "bentoml")
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, "evaluation/train.py", "v1", "v2"], env={**os.environ, **env}, check=True)
    common = ["--dataset=evaluation/golden.csv", "--id-column=id", "--input-columns=text",
              "--label-column=label", "--slice-columns=language,length_bucket", "--dry-run",
              f"--output-dir={OUT / 'lakehouse'}"]
    codes = {}
    for version in ("v1", "v2"):
        extra = ["--baseline-version=v1", "--max-regression=accuracy=0.02,macro_f1=5%"] if version == "v2" else []
        codes[f"evaluate {version}"] = mlobs(
            "evaluate", "--bento=evaluation", f"--model-version={version}",
            f"--run-id=demo-{version}", *common, *extra,
            env={**env, "MLOBS_EXAMPLE_MODEL": f"mlobs-sentiment:{version}"})
    codes["publish-report"] = mlobs(
        "publish-report", "--versions=v1,v2", "--baseline-version=v1", f"--report-dir={OUT / 'site'}",
        f"--output-dir={OUT / 'lakehouse'}", "--dry-run")
    return codes


def show_evaluation(comment: Path) -> None:
    """v2 against v1 as the comment shows it: each metric with its 95 % interval, each delta with
    its interval and paired test, and the gates' tests."""
    if not comment.is_file():
        return
    lines = comment.read_text(encoding="utf-8").splitlines()
    tables = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    wanted = [ln for ln in tables if ln.startswith(("| Metric |", "| accuracy |", "| macro_f1 |",
                                                    "| ece |", "| Gate |"))
              or "worse by at most" in ln]
    print("\nevaluate v2 against v1 (95 % intervals; deltas paired by sample id):")
    for line in wanted:
        print("  " + line)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)  # every demo run starts from an empty table and site
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logs = OUT / "function.log.jsonl"
    function_traffic(logs)
    step("slo-validate the function's logs (the bundled contracts in features/)")
    codes = {"slo-validate v1": slo_validate("v1", logs, None),
             "slo-validate v2": slo_validate("v2", logs, "v1")}
    step("evaluate the example Bento (v1, then v2 against v1) into Iceberg, and publish the report")
    codes.update(evaluate_and_publish())
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s. What the action would post (dry-run), and the report:")
    for version in ("v1", "v2"):
        print(f"  slo-validate {version}: PR comment {OUT / version / 'dry-run/slo-validate/comment.md'}")
    for mode in ("evaluate", "publish-report"):
        print(f"  {mode}: PR comment {OUT / 'lakehouse/dry-run' / mode / 'comment.md'}")
    print(f"  Iceberg warehouse: {OUT / 'lakehouse/lake'}")
    print(f"  Report: {(OUT / 'site/index.html').resolve()}")
    show_evaluation(OUT / "lakehouse/dry-run/evaluate/comment.md")
    expected = {"slo-validate v1": 0, "slo-validate v2": 1, "evaluate v1": 0, "evaluate v2": 1,
                "publish-report": 0}
    if codes != expected:
        print(f"\nUnexpected verdicts: {codes}, expected {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
