"""A loopback GitHub REST server for the endpoints the reporter uses.

It records every request and answers like GitHub: same URLs and fields PyGithub reads, pagination
with ``Link`` headers, and GitHub's own validation (at most 50 annotations per check-run request,
65,536 characters per comment, 65,535 per check-run text), so a test fails where GitHub would.
Failures are injected per method and path (``refuse``) to play a read-only fork-PR token.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: object


@dataclass
class State:
    issue_comments: dict[int, list[dict]] = field(default_factory=dict)
    commit_comments: dict[str, list[dict]] = field(default_factory=dict)
    check_runs: dict[int, dict] = field(default_factory=dict)
    pulls_for_commit: dict[str, list[dict]] = field(default_factory=dict)


class GithubDouble:
    def __init__(self, repo: str = "acme/models", token: str = "t0ken", prefix: str = "") -> None:
        self.repo = repo
        self.token = token
        self.prefix = prefix.rstrip("/")  # "/api/v3" plays GitHub Enterprise
        self.state = State()
        self.requests: list[Recorded] = []
        self._refusals: list[tuple[str, re.Pattern, int, str]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> GithubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    # ---- test controls ---------------------------------------------------------------------
    def refuse(
        self,
        method: str,
        path_pattern: str,
        status: int = 403,
        message: str = "Resource not accessible by integration",
    ) -> None:
        self._refusals.append((method.upper(), re.compile(path_pattern), status, message))

    def add_pull(
        self, sha: str, number: int, state: str = "open", head_sha: str | None = None
    ) -> None:
        self.state.pulls_for_commit.setdefault(sha, []).append(
            {
                "number": number,
                "state": state,
                "head": {"sha": head_sha or sha, "ref": "feature"},
                "url": f"{self.url}/repos/{self.repo}/pulls/{number}",
            }
        )

    def seed_issue_comment(self, number: int, body: str, user: str = "someone") -> dict:
        return self._new_issue_comment(number, body, user)

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # ---- model -----------------------------------------------------------------------------
    def _new_issue_comment(self, number: int, body: str, user: str = "github-actions[bot]") -> dict:
        cid = next(self._ids)
        comment = {
            "id": cid,
            "body": body,
            "user": {"login": user, "type": "Bot"},
            "url": f"{self.url}/repos/{self.repo}/issues/comments/{cid}",
            "html_url": f"https://github.example/{self.repo}/pull/{number}#issuecomment-{cid}",
            "issue_url": f"{self.url}/repos/{self.repo}/issues/{number}",
        }
        self.state.issue_comments.setdefault(number, []).append(comment)
        return comment

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with double._lock:
                    double.requests.append(
                        Recorded(
                            method, parts.path, parse_qs(parts.query), dict(self.headers), body
                        )
                    )
                    status, payload, headers = double._route(
                        method, parts.path, parse_qs(parts.query), self.headers, body
                    )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

        return Handler

    def _route(self, method: str, path: str, query: dict, headers, body):  # noqa: C901
        auth = headers.get("Authorization", "")
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {"message": "Bad credentials"}, {}
        if self.prefix and not path.startswith(self.prefix):
            return 404, {"message": "Not Found"}, {}
        path = path[len(self.prefix) :]
        for m, rx, status, message in self._refusals:
            if m == method and rx.search(path):
                return (
                    status,
                    {"message": message, "documentation_url": "https://docs.github.com/rest"},
                    {},
                )
        base = f"/repos/{self.repo}"
        if not path.startswith(base):
            return 404, {"message": "Not Found"}, {}
        rest = path[len(base) :]

        if m := re.fullmatch(r"/issues/(\d+)", rest):
            number = int(m[1])
            return (
                200,
                {
                    "number": number,
                    "url": f"{self.url}{base}/issues/{number}",
                    "comments_url": f"{self.url}{base}/issues/{number}/comments",
                },
                {},
            )
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(m[1])
            if method == "GET":
                return self._page(self.state.issue_comments.get(number, []), query, path)
            if method == "POST":
                if error := _too_long(body.get("body", ""), 65_536):
                    return error
                return 201, self._new_issue_comment(number, body["body"]), {}
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            comment = self._find(itertools.chain(*self.state.issue_comments.values()), int(m[1]))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            if error := _too_long(body.get("body", ""), 65_536):
                return error
            comment["body"] = body["body"]
            return 200, comment, {}
        if m := re.fullmatch(r"/commits/([0-9a-f]+)", rest):
            sha = m[1]
            return (
                200,
                {
                    "sha": sha,
                    "url": f"{self.url}{base}/commits/{sha}",
                    "html_url": f"https://github.example/{self.repo}/commit/{sha}",
                },
                {},
            )
        if m := re.fullmatch(r"/commits/([0-9a-f]+)/pulls", rest):
            return self._page(self.state.pulls_for_commit.get(m[1], []), query, path)
        if m := re.fullmatch(r"/commits/([0-9a-f]+)/comments", rest):
            sha = m[1]
            comments = self.state.commit_comments.setdefault(sha, [])
            if method == "GET":
                return self._page(comments, query, path)
            if error := _too_long(body.get("body", ""), 65_536):
                return error
            cid = next(self._ids)
            comment = {
                "id": cid,
                "body": body["body"],
                "commit_id": sha,
                "url": f"{self.url}{base}/comments/{cid}",
                "html_url": f"https://github.example/{self.repo}/commit/{sha}#commitcomment-{cid}",
            }
            comments.append(comment)
            return 201, comment, {}
        if m := re.fullmatch(r"/comments/(\d+)", rest):
            comment = self._find(itertools.chain(*self.state.commit_comments.values()), int(m[1]))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            comment["body"] = body["body"]
            return 200, comment, {}
        if rest == "/check-runs" and method == "POST":
            if error := _check_output_error(body.get("output")):
                return error
            for required in ("name", "head_sha"):
                if not body.get(required):
                    return 422, {"message": f"Invalid request: {required} wasn't supplied."}, {}
            cid = next(self._ids)
            run = {
                "id": cid,
                "url": f"{self.url}{base}/check-runs/{cid}",
                "html_url": f"https://github.example/{self.repo}/runs/{cid}",
                **{k: v for k, v in body.items() if k != "output"},
                "output": dict(body.get("output") or {}),
            }
            run["output"]["annotations"] = list((body.get("output") or {}).get("annotations", []))
            self.state.check_runs[cid] = run
            return 201, run, {}
        if (m := re.fullmatch(r"/check-runs/(\d+)", rest)) and method == "PATCH":
            run = self.state.check_runs.get(int(m[1]))
            if run is None:
                return 404, {"message": "Not Found"}, {}
            output = body.get("output")
            if error := _check_output_error(output):
                return error
            for key, value in body.items():
                if key != "output":
                    run[key] = value
            if output:
                # GitHub appends annotations on update; title and summary are replaced.
                run["output"].update({k: v for k, v in output.items() if k != "annotations"})
                run["output"]["annotations"] += output.get("annotations", [])
            return 200, run, {}
        return 404, {"message": "Not Found"}, {}

    @staticmethod
    def _find(items, cid: int):
        return next((c for c in items if c["id"] == cid), None)

    def _page(self, items: list, query: dict, path: str):
        per_page = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            headers["Link"] = (
                f'<{self.url}{path}?per_page={per_page}&page={page + 1}>; rel="next", '
                f'<{self.url}{path}?per_page={per_page}&page={-(-len(items) // per_page)}>; rel="last"'
            )
        return 200, chunk, headers


def _too_long(body: str, limit: int):
    if len(body) > limit:
        return (
            422,
            {
                "message": "Validation Failed",
                "errors": [
                    {
                        "resource": "IssueComment",
                        "code": "custom",
                        "field": "body",
                        "message": f"body is too long (maximum is {limit} characters)",
                    }
                ],
            },
            {},
        )
    return None


def _check_output_error(output: dict | None):
    if not output:
        return None
    if len(output.get("annotations", [])) > 50:
        return 422, {"message": "Invalid request. Only 50 annotations are allowed per request."}, {}
    for key in ("title", "summary"):
        if key not in output:
            return 422, {"message": f"Invalid request: {key} wasn't supplied."}, {}
    for key in ("summary", "text"):
        if len(output.get(key) or "") > 65_535:
            return (
                422,
                {
                    "message": f"Invalid request: output.{key} is too long (maximum is 65535 characters)."
                },
                {},
            )
    for ann in output.get("annotations", []):
        for required in ("path", "start_line", "end_line", "annotation_level", "message"):
            if required not in ann:
                return (
                    422,
                    {"message": f"Invalid request: annotation {required} wasn't supplied."},
                    {},
                )
    return None
