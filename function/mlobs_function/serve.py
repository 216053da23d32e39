"""Serve ``handle(event, context)`` over HTTP the way OpenFaaS's python3-http template does.

The template's ``index.py`` wraps the handler in a Flask app (every path and method goes to
``handle``, with an ``Event`` of body/headers/method/query/path and a ``Context``) served by
waitress; this module keeps that shape so local runs, tests and the demo exercise the same
request path as the image. Two additions, both outside ``handle``: ``/_/health`` answers here,
as of-watchdog answers it in front of the real function (probes must not become request log
lines), and ``LocalServer`` runs the app on a free loopback port inside a test's process.

``python -m mlobs_function.serve`` loads the model from the function's environment (an error is
one JSON line on stdout and exit 1), then prints ``LISTENING_PREFIX + URL`` on stderr. Stdout
carries the function's log lines and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from waitress.server import create_server

HEALTH_PATH = "/_/health"
LISTENING_PREFIX = "mlobs-function listening on "
# waitress refuses larger bodies before the handler sees them (no log line): far above the
# handler's own limit, it only protects memory; the handler's limit gives clients their 400.
HARD_BODY_LIMIT = 256 * 1024 * 1024

Handle = Callable[[Any, Any], Any]


class Event:
    def __init__(self) -> None:
        self.body = request.get_data()
        self.headers = request.headers
        self.method = request.method
        self.query = request.args
        self.path = request.path


class Context:
    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")


def format_response(resp: Any) -> Any:
    """The template's response mapping: a dict of statusCode/body/headers, or anything Flask takes."""
    if resp is None:
        return "", 200
    if not isinstance(resp, dict):
        return resp
    body = resp.get("body", "")
    body = jsonify(body) if isinstance(body, dict) else str(body)
    headers = resp.get("headers", [])
    if isinstance(headers, dict):
        headers = list(headers.items())
    return body, resp.get("statusCode", 200), headers


def create_app(handle: Handle) -> Flask:
    app = Flask("mlobs_function")

    @app.route(HEALTH_PATH, methods=["GET"])
    def health() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    def call_handler(path: str) -> Any:
        return format_response(handle(Event(), Context()))

    return app


class LocalServer:
    """The app on ``host`` (loopback) and a free port, in a background thread: ``with … as s: s.url``."""

    def __init__(self, handle: Handle, host: str = "127.0.0.1", port: int = 0, threads: int = 4) -> None:
        self._server = create_server(create_app(handle), host=host, port=port, threads=threads,
                                     max_request_body_size=HARD_BODY_LIMIT)  # fmt: skip
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._server.effective_host}:{self._server.effective_port}"

    def start(self) -> LocalServer:
        self._thread = threading.Thread(target=self._server.run, name="mlobs-function", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish requests in flight, then close every socket, which ends waitress's loop."""
        if self._thread is None:
            return
        # Workers first: a finishing request still wakes the loop through the trigger pipe.
        self._server.task_dispatcher.shutdown(timeout=5)
        # waitress has no stop(); closing its channels (listener and trigger included) empties
        # the socket map and run() returns. It must happen on the loop's own thread — closing a
        # socket under a running poll() from here would race it — so it goes through the trigger.
        self._server.trigger.pull_trigger(self._close_channels)
        self._thread.join(timeout=5)
        self._thread = None

    def _close_channels(self) -> None:
        for channel in list(self._server._map.values()):
            channel.close()

    def serve_forever(self) -> None:
        """Serve on the calling thread until SIGTERM or Ctrl-C (``python -m …serve``)."""
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as Ctrl-C does
        try:
            self._server.run()  # returns on SystemExit/KeyboardInterrupt, workers stopped
        finally:
            self._server.close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlobs_function.serve",
        description="Serve the classifier like OpenFaaS's python3-http template (Flask + waitress). "
        "Model settings come from the environment: MODEL_PATH, LABELS_PATH, MODEL_ARCH, "
        "MODEL_VERSION, MODEL_INPUT_SIZE, MODEL_DEVICE, MAX_BODY_BYTES, TORCH_NUM_THREADS.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (default 5000, "
                        "the template's upstream port)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    args = parser.parse_args(argv)
    # Human-readable diagnostics go to stderr; stdout is the JSON request log only.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    # waitress warns on every request that waits for a free thread; under the load the traffic
    # generator applies on purpose that is one line per request, drowning everything else.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    from mlobs_function.handler import handler_from_env

    handler = handler_from_env()  # one JSON line and SystemExit(1) when the model cannot load
    server = LocalServer(handler.handle, args.host, args.port, args.threads)
    print(LISTENING_PREFIX + server.url, file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
