"""Regenerate evaluation/golden.csv (deterministic: the same bytes on every machine).

Usage: python evaluation/make_golden.py [OUT.csv]
Columns: id,text,label,language,length_bucket — 480 templated sentences, English and German.
"""

from __future__ import annotations

import sys
from pathlib import Path

from example import write_golden_csv  # this folder's

DEFAULT = Path(__file__).resolve().parent / "golden.csv"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT
    print(f"wrote {write_golden_csv(out)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
