"""OpenFaaS python3-http entry point: ``handle(event, context)`` → ``mlobs.function``.

The template's index.py imports this module once per container, so the model loads here, once.
A missing or broken model ends the process with one structured JSON line on stdout and exit
code 1 — no traceback per restart. Settings come from the environment that stack.yml sets.
"""

import sys
from pathlib import Path

_VENDOR = Path(__file__).resolve().parent / "vendor"
if _VENDOR.is_dir():  # the image build installs the mlobs package here (see stack.yml)
    sys.path.insert(0, str(_VENDOR))

from mlobs.function.handler import handler_from_env  # noqa: E402

_handler = handler_from_env()


def handle(event, context):
    return _handler.handle(event, context)
