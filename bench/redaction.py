"""What the redaction step costs on the largest surface (a 1 MiB job summary).

Baseline, in the same process: stripping URL userinfo with one regex that also matches the scheme
(``\\b[A-Za-z][A-Za-z0-9+.-]*://…``), the obvious way — it tries at every word. The shipped
``strip_userinfo`` scans for ``://`` and matches only there. Also timed: the whole step
(secrets in all their escaped forms + userinfo) per MiB.

Usage: python bench/redaction.py [--repeat N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from mlobs.redact import Redactor, strip_userinfo

ONE_REGEX = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?:[^\s/?#<>\"'`|\[\]{}]*(?:@\u200b?|&#64;))+"
)


def one_regex(text: str) -> str:
    return ONE_REGEX.sub(lambda m: m["scheme"], text)


def best(fn, text: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = [f"| ✅ pass | scenario {i} @\u200bteam | [Explore](https://grafana.example/explore?x={i}) "
            f"| source https://ops:pw-{i % 7}x@loki.example/ | `sum(count_over_time(...))` |"
            for i in range(7000)]
    text = "\n".join(rows)[: 1024 * 1024]
    mib = len(text.encode()) / 2**20
    redactor = Redactor.from_inputs(
        {"github_token": "ghs_" + "a" * 36, "loki_password": "hunter2hunter2",
         "loki_url": "https://ops:pw-123456@loki.example",
         "catalog": "uri=sqlite:///x,s3.secret-access-key=AKIA1234567890,token=tok-abcdef"}, {})
    assert one_regex(text) == strip_userinfo(text)
    base, base_med = best(one_regex, text, args.repeat)
    ours, ours_med = best(strip_userinfo, text, args.repeat)
    full, full_med = best(redactor.text, text, args.repeat)
    print(f"text: {mib:.2f} MiB, {len(redactor.secrets)} secrets")
    print(f"userinfo, one regex (baseline): best {base * 1000:7.1f} ms  median {base_med * 1000:7.1f} ms")
    print(f"userinfo, scan for '://':       best {ours * 1000:7.1f} ms  median {ours_med * 1000:7.1f} ms"
          f"  ({base / ours:.1f}x faster)")
    print(f"whole redaction step:           best {full * 1000:7.1f} ms  median {full_med * 1000:7.1f} ms"
          f"  ({full / base:.2f}x the baseline's userinfo pass alone)")


if __name__ == "__main__":
    main()
