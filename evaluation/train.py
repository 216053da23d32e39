"""Train the example sentiment model VERSION (v1 or v2) and save it to the BentoML model store.

Usage: python evaluation/train.py v1 [v2 ...]   (seconds on a CPU; deterministic)
The store is $BENTOML_HOME (default ~/bentoml): keep it outside the repository.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from example import VERSIONS, save_model, train  # noqa: E402  (this folder's)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", choices=sorted(VERSIONS), metavar="VERSION",
                        help=f"model version(s) to train: {', '.join(VERSIONS)}")
    args = parser.parse_args(argv)
    for version in args.versions:
        tag = save_model(train(version), version)
        print(f"saved {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
