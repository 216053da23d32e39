"""How fast `mlobs --help` and `mlobs MODE --help` return, against a bare interpreter start.

Prints the median wall time of each command over N runs and its ratio to `python -c pass` run in
the same process (the floor no CLI can beat). Goal: every help under 0.5 s.
Usage: python bench/cli_startup.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "mlobs --help": [str(BIN / "mlobs"), "--help"],
    "mlobs slo-validate --help": [str(BIN / "mlobs"), "slo-validate", "--help"],
    "mlobs evaluate --help": [str(BIN / "mlobs"), "evaluate", "--help"],
    "mlobs publish-report --help": [str(BIN / "mlobs"), "publish-report", "--help"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    results = {name: median_seconds(argv, runs) for name, argv in COMMANDS.items()}
    base = results["python -c pass (baseline)"]
    print(f"| command | median of {runs} | × baseline |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| `{name}` | {seconds * 1000:.0f} ms | {seconds / base:.1f}× |")


if __name__ == "__main__":
    main()
