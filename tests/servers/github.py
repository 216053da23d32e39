"""A loopback GitHub REST server for the endpoints the reporter uses.

It records every request and answers like GitHub: same URLs and fields PyGithub reads, pagination
with ``Link`` headers, and GitHub's own validation, so a test fails where GitHub would:
- at most 50 annotations per check-run request; annotation ``title`` at most 255 characters,
  ``message`` and ``raw_details`` at most 64 KB (64 × 1024 bytes here);
- check-run ``output.summary`` / ``output.text`` at most 65,535 BYTES ("exceeds a maximum
  bytesize", as GitHub answers — its docs say characters);
- comment bodies at most 65,536 characters;
- comments are authored by the token's account (``viewer``, ``github-actions[bot]`` by default),
  which GraphQL's ``{ viewer { login } }`` returns (``POST /graphql``, ``/api/graphql`` on GHES).
- every request must carry ``Accept: application/vnd.github+json`` and
  ``X-GitHub-Api-Version: 2022-11-28``. GitHub itself falls back to the default version when the
  header is missing and still serves retired preview media types; the double refuses both, so a
  test proves the action sends what GitHub documents.
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


MEDIA_TYPE = "application/vnd.github+json"
API_VERSION = "2022-11-28"
TITLE_LIMIT = 255
ANNOTATION_TEXT_LIMIT_BYTES = 64 * 1024
CHECK_TEXT_LIMIT_BYTES = 65_535
COMMENT_LIMIT = 65_536


class GithubDouble:
    def __init__(self, repo: str = "acme/models", token: str = "t0ken", prefix: str = "",
                 viewer: str = "github-actions[bot]") -> None:
        self.repo = repo
        self.token = token
        self.viewer = viewer  # the login the token acts as: authors its comments
        self.prefix = prefix.rstrip("/")  # "/api/v3" plays GitHub Enterprise
        self.state = State()
        self.requests: list[Recorded] = []
        self._refusals: list[list] = []  # [method, pattern, status, message, skip]
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
        skip: int = 0,
    ) -> None:
        """Answer matching requests with ``status``; the first ``skip`` of them still succeed."""
        self._refusals.append([method.upper(), re.compile(path_pattern), status, message, skip])

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
    def _new_issue_comment(self, number: int, body: str, user: str | None = None) -> dict:
        cid = next(self._ids)
        user = user or self.viewer
        comment = {
            "id": cid,
            "body": body,
            "user": _user(user),
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

    @property
    def graphql_path(self) -> str:
        """``/graphql``; ``/api/graphql`` beside GitHub Enterprise Server's ``/api/v3``."""
        return (self.prefix.removesuffix("/v3") if self.prefix.endswith("/v3") else self.prefix) + "/graphql"

    def _route(self, method: str, path: str, query: dict, headers, body):  # noqa: C901
        auth = headers.get("Authorization", "")
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {"message": "Bad credentials"}, {}
        if error := _header_error(headers):
            return error
        for refusal in self._refusals:
            m, rx, status, message, skip = refusal
            if m == method and rx.search(path.removeprefix(self.prefix)):
                if skip > 0:
                    refusal[4] -= 1
                    continue
                return (
                    status,
                    {"message": message, "documentation_url": "https://docs.github.com/rest"},
                    {},
                )
        if path == self.graphql_path and method == "POST":
            return self._graphql(body or {})
        if self.prefix and not path.startswith(self.prefix):
            return 404, {"message": "Not Found"}, {}
        path = path[len(self.prefix) :]
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
                if error := _too_long(body.get("body", ""), COMMENT_LIMIT):
                    return error
                return 201, self._new_issue_comment(number, body["body"]), {}
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            comment = self._find(itertools.chain(*self.state.issue_comments.values()), int(m[1]))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            if error := _too_long(body.get("body", ""), COMMENT_LIMIT):
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
            if error := _too_long(body.get("body", ""), COMMENT_LIMIT):
                return error
            cid = next(self._ids)
            comment = {
                "id": cid,
                "body": body["body"],
                "user": _user(self.viewer),
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
            if error := _too_long(body.get("body", ""), COMMENT_LIMIT):
                return error
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

    def _graphql(self, body: dict):
        """The one query the action sends: ``{ viewer { login } }``."""
        query = " ".join(str(body.get("query", "")).split())
        if re.fullmatch(r"(query )?\{ ?viewer \{ ?login ?\} ?\}", query):
            return 200, {"data": {"viewer": {"login": self.viewer}}}, {}
        return 200, {"errors": [{"message": f"the double does not answer {query!r}"}]}, {}

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


def _user(login: str) -> dict:
    return {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"}


def _validation_failed(resource: str, field: str, message: str):
    return (
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "field": field, "message": message}],
            "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run",
            "status": "422",
        },
        {},
    )


def _header_error(headers):
    version = headers.get("X-GitHub-Api-Version")
    if version != API_VERSION:
        return (
            400,
            {"message": f"Unsupported or missing 'X-GitHub-Api-Version' header: {version!r}; "
                        f"this API needs {API_VERSION!r}"},
            {},
        )
    accept = headers.get("Accept", "")
    if MEDIA_TYPE not in [part.split(";")[0].strip() for part in accept.split(",")]:
        return 415, {"message": f"Unsupported 'Accept' header: {accept!r}. Must accept {MEDIA_TYPE!r}."}, {}
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
        if len((output.get(key) or "").encode("utf-8")) > CHECK_TEXT_LIMIT_BYTES:
            return _validation_failed(
                "CheckRun", key, f"{key} exceeds a maximum bytesize of {CHECK_TEXT_LIMIT_BYTES}"
            )
    for ann in output.get("annotations", []):
        for required in ("path", "start_line", "end_line", "annotation_level", "message"):
            if required not in ann:
                return (
                    422,
                    {"message": f"Invalid request: annotation {required} wasn't supplied."},
                    {},
                )
        if len(ann.get("title") or "") > TITLE_LIMIT:
            return _validation_failed(
                "CheckRun", "title", f"title is too long (maximum is {TITLE_LIMIT} characters)"
            )
        for key in ("message", "raw_details"):
            if len((ann.get(key) or "").encode("utf-8")) > ANNOTATION_TEXT_LIMIT_BYTES:
                return _validation_failed(
                    "CheckRun", key, f"{key} exceeds a maximum bytesize of {ANNOTATION_TEXT_LIMIT_BYTES}"
                )
    return None
