"""Train the tiny synthetic-shapes model into function/model/, where stack.yml's MODEL_PATH and
LABELS_PATH point inside the image. Deploy it with MODEL_ARCH=tiny_cnn MODEL_INPUT_SIZE=64.
Options are those of ``python -m mlobs_function.train`` (``--out`` defaults to function/model).
"""

import sys
from pathlib import Path

from mlobs_function.train import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(arg == "--out" or arg.startswith("--out=") for arg in argv):
        argv = ["--out", str(Path(__file__).resolve().parent / "model"), *argv]
    sys.exit(main(argv))
