"""A loopback stand-in for a Bento, for the failure modes a real one rarely shows on demand
(overload, hangs, deaths, odd answers). It speaks the parts of BentoML's HTTP surface the runner
uses: ``GET /readyz``, ``GET /docs.json`` (the OpenAPI document, shaped like BentoML 1.4's for
``def predict(self, text: list[str])``) and ``POST /predict`` with ``{"text": [...]}``.

``respond(texts, call_no)`` answers each POST with ``(status, json body)``, or
``(seconds, status, body)`` to answer after sleeping that long.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The shape of BentoML 1.4's /docs.json for one batchable API taking ``text: list[str]``.
OPENAPI = {
    "openapi": "3.0.2",
    "info": {"title": "double", "version": "None"},
    "paths": {
        "/readyz": {"get": {"tags": ["Infrastructure"], "responses": {"200": {"description": "ok"}}}},
        "/predict": {"post": {
            "tags": ["Service APIs"], "x-bentoml-name": "predict", "operationId": "double__predict",
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "title": "Input", "required": ["text"],
                "properties": {"text": {"items": {"type": "string"}, "title": "Text", "type": "array"}}}}}},
            "responses": {"200": {"description": "Successful Response"}},
        }},
    },
    "components": {"schemas": {"predict__Input": {
        "type": "object", "title": "predict__Input", "required": ["text"],
        "properties": {"text": {"items": {"type": "string"}, "title": "Text", "type": "array"}}}}},
}


class Double:
    """``with Double(respond) as bento: ... bento.url``; ``bento.calls`` holds each POST's texts."""

    def __init__(self, respond: Callable[[list[str], int], tuple], *, docs: dict | None = OPENAPI) -> None:
        self.respond = respond
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/readyz":
                    self._send(200, {})
                elif self.path == "/docs.json" and docs is not None:
                    self._send(200, docs)
                else:
                    self._send(404, {"error": "Not Found"})

            def do_POST(self):
                texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
                with outer._lock:
                    outer.calls.append(texts)
                    call_no = len(outer.calls)
                answer = outer.respond(texts, call_no)
                if len(answer) == 3:
                    time.sleep(answer[0])
                    answer = answer[1:]
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(*answer)  # unless the client gave up waiting

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Double:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
