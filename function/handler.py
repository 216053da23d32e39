"""OpenFaaS python3-http entry point: ``handle(event, context)`` → ``mlobs_function``.

The template's index.py imports this module once per container, so the model loads here, once.
A missing or broken model ends the process with one structured JSON line on stdout and exit
code 1 — no traceback per restart. Settings come from the environment that stack.yml sets.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the template imports this file as function.handler: its package sits beside it
    sys.path.insert(0, _HERE)

from mlobs_function.handler import handler_from_env  # noqa: E402

_handler = handler_from_env()


def handle(event, context):
    return _handler.handle(event, context)
