"""The demo's loop on embedded defaults: SLOs from request logs, golden-set evaluation into
Iceberg, and the static report — for two model versions, every GitHub surface rendered to files.

Until the OpenFaaS function drives real traffic here (function/), the request logs are simulated
in the function's log schema: v1 is healthy; v2 is slower and predicts a shifted class mix, as a
bad model update would. The verdicts are real: computed by `mlobs slo-validate` from these lines.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mlobs import logschema as f

OUT = Path(".mlobs/demo")
CLASSES_V1 = {"golden retriever": 0.10, "labrador retriever": 0.25, "tabby cat": 0.35, "beagle": 0.30}
CLASSES_V2 = {"golden retriever": 0.30, "labrador retriever": 0.15, "tabby cat": 0.35, "beagle": 0.20}


def simulate(version: str, n: int, end: float, median_ms: float, classes: dict, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        ts = end - 3500 + 3400 * i / n
        latency = rng.lognormvariate(0, 0.35) * median_ms
        line = {f.TIMESTAMP: datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                f.LEVEL: "info", f.EVENT: "inference", f.REQUEST_ID: f"{version}-{i}",
                f.MODEL_VERSION: version, f.CONTENT_TYPE: "image/jpeg", f.LATENCY_MS: round(latency, 2)}
        roll = rng.random()
        if roll < 0.02:  # clients sending broken images: 400s, not the service's fault
            line.update({f.STATUS_CODE: 400, f.LEVEL: "warning", f.ERROR_TYPE: "UndecodableImage"})
        elif roll < 0.021:
            line.update({f.STATUS_CODE: 500, f.LEVEL: "error", f.ERROR_TYPE: "RuntimeError"})
        else:
            label = rng.choices(list(classes), list(classes.values()))[0]
            line.update({f.STATUS_CODE: 200, f.TOP1_CLASS: label, f.TOP1_PROB: round(rng.uniform(0.5, 0.99), 3)})
        lines.append(json.dumps(line))
    return lines


def slo_validate(version: str, logs: Path, baseline: str | None) -> int:
    args = [f"--logs-file={logs}", f"--model-version={version}", "--dry-run"]
    if baseline:  # v1 is the first version: nothing to compare with, so its drift checks say so
        args.append(f"--baseline-version={baseline}")
    print(f"\n$ mlobs slo-validate {' '.join(args)}")
    cmd = [str(Path(sys.executable).parent / "mlobs"), "slo-validate", *args,
           f"--output-dir={OUT / version}", "--github-token="]
    code = subprocess.run(cmd).returncode
    print(f"  exit code {code}  ({ {0: 'all SLOs met', 1: 'SLO violated', 2: 'could not evaluate'}[code] })")
    return code


def mlobs(*args: str, env: dict | None = None) -> int:
    print(f"\n$ mlobs {' '.join(args)}")
    cmd = [str(Path(sys.executable).parent / "mlobs"), *args, "--github-token="]
    code = subprocess.run(cmd, env={**os.environ, **(env or {})}).returncode
    print(f"  exit code {code}  ({ {0: 'pass', 1: 'violated / regressed', 2: 'could not evaluate'}[code] })")
    return code


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
        f"--output-dir={OUT / 'lakehouse'}", "--dry-run",
        f"--slo-results={OUT / 'v2' / 'slo-results.json'}")
    return codes


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)  # every demo run starts from an empty table and site
    OUT.mkdir(parents=True, exist_ok=True)
    end = time.time()
    logs = OUT / "function.log.jsonl"
    lines = simulate("v1", 3000, end, 45, CLASSES_V1, 1) + simulate("v2", 3000, end, 95, CLASSES_V2, 2)
    logs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Wrote {len(lines)} request log lines (v1 healthy, v2 slower with a shifted class mix) to {logs}")
    codes = {"slo-validate v1": slo_validate("v1", logs, None),
             "slo-validate v2": slo_validate("v2", logs, "v1")}
    codes.update(evaluate_and_publish())
    print("\nWhat the action would post (dry-run), and the report:")
    for version in ("v1", "v2"):
        print(f"  slo-validate {version}: PR comment {OUT / version / 'dry-run/slo-validate/comment.md'}")
    for mode in ("evaluate", "publish-report"):
        print(f"  {mode}: PR comment {OUT / 'lakehouse/dry-run' / mode / 'comment.md'}")
    print(f"  Iceberg warehouse: {OUT / 'lakehouse/lake'}")
    print(f"  Report: {(OUT / 'site/index.html').resolve()}")
    expected = {"slo-validate v1": 0, "slo-validate v2": 1, "evaluate v1": 0, "evaluate v2": 1,
                "publish-report": 0}
    if codes != expected:
        print(f"\nUnexpected verdicts: {codes}, expected {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
