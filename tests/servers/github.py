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

Deployments, issues and labels (issue 12), as GitHub's REST reference documents them:
- ``GET /repos/{o}/{r}/deployments`` (``sha``, ``ref``, ``task``, ``environment``), newest first,
  and ``GET …/deployments/{id}/statuses``, newest first (404 for an unknown deployment);
- ``GET /repos/{o}/{r}/commits/{sha}/pulls``: the open and merged pull requests of the commit,
  with the fields of a pull-request-simple (``merged_at``, ``merge_commit_sha``, ``head.sha``);
- ``GET /repos/{o}/{r}/issues`` (``state`` open|closed|all, ``labels`` all of them, ``creator``,
  ``sort`` created|updated|comments, ``direction``), pull requests included as GitHub does,
  marked by ``pull_request``; ``POST …/issues`` (``title`` required, at most 256 characters;
  ``body`` at most 65,536); ``PATCH …/issues/{n}`` (``state`` open|closed, ``state_reason``
  completed|not_planned|duplicate|reopened); a missing label is created, as GitHub does;
- ``POST …/labels``: ``name`` required, at most 50 characters, unique ignoring case (422
  ``already_exists``); ``color`` six hexadecimal digits without ``#``; ``description`` at most 100.
Pagination links keep the request's query (``labels=…&state=…``), as GitHub's do. Stricter than
GitHub, on purpose: a query parameter an endpoint does not document, a ``per_page`` above 100 and
a body field a write does not document are refused (GitHub ignores them silently, which hides a
misspelt filter — ``env=`` instead of ``environment=`` would list every environment).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit


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
    deployments: list[dict] = field(default_factory=list)
    deployment_statuses: dict[int, list[dict]] = field(default_factory=dict)
    issues: dict[int, dict] = field(default_factory=dict)  # issues (not pull requests) by number
    labels: dict[str, dict] = field(default_factory=dict)  # by lower-cased name


MEDIA_TYPE = "application/vnd.github+json"
API_VERSION = "2022-11-28"
TITLE_LIMIT = 255
ANNOTATION_TEXT_LIMIT_BYTES = 64 * 1024
CHECK_TEXT_LIMIT_BYTES = 65_535
COMMENT_LIMIT = 65_536
ISSUE_TITLE_LIMIT = 256
LABEL_NAME_LIMIT = 50
LABEL_DESCRIPTION_LIMIT = 100
PER_PAGE_LIMIT = 100
# Documented query parameters of the list endpoints (path after /repos/{o}/{r}).
LIST_QUERIES = [
    (re.compile(r"/deployments"), {"sha", "ref", "task", "environment", "per_page", "page"}),
    (re.compile(r"/deployments/\d+/statuses"), {"per_page", "page"}),
    (re.compile(r"/commits/[0-9a-f]+/pulls"), {"per_page", "page"}),
    (re.compile(r"/commits/[0-9a-f]+/comments"), {"per_page", "page"}),
    (re.compile(r"/issues"), {"milestone", "state", "assignee", "type", "creator", "mentioned",
                              "labels", "sort", "direction", "since", "per_page", "page"}),
    (re.compile(r"/issues/\d+/comments"), {"since", "per_page", "page"}),
]
ISSUE_CREATE_FIELDS = {"title", "body", "assignee", "milestone", "labels", "assignees", "type"}
ISSUE_UPDATE_FIELDS = ISSUE_CREATE_FIELDS | {"state", "state_reason"}
STATE_REASONS = {"completed", "not_planned", "duplicate", "reopened", None}
DEPLOYMENT_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}


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
        self._seconds = 0
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
        self, sha: str, number: int, state: str = "open", head_sha: str | None = None,
        merged_at: str | None = None, merge_commit_sha: str | None = None, title: str = "A change",
        author: str = "octocat",
    ) -> dict:
        pull = {
            "number": number,
            "state": state,
            "head": {"sha": head_sha or sha, "ref": "feature"},
            "url": f"{self.url}/repos/{self.repo}/pulls/{number}",
            "html_url": f"https://github.example/{self.repo}/pull/{number}",
            "title": title,
            "user": _user(author),
            "merged_at": merged_at,
            "merge_commit_sha": merge_commit_sha,
            "base": {"ref": "main", "sha": "0" * 40},
            "draft": False,
        }
        self.state.pulls_for_commit.setdefault(sha, []).append(pull)
        return pull

    def add_deployment(self, sha: str, environment: str, created_at: str,
                       statuses: list[tuple[str, str]] = (), ref: str = "main",
                       description: str | None = None) -> dict:
        """A deployment and its statuses, each ``(state, created_at)`` in the order they happened."""
        did = next(self._ids)
        deployment = {
            "url": f"{self.url}/repos/{self.repo}/deployments/{did}",
            "id": did,
            "node_id": f"DE_{did}",
            "sha": sha,
            "ref": ref,
            "task": "deploy",
            "payload": {},
            "original_environment": environment,
            "environment": environment,
            "description": description,
            "creator": _user("deployer"),
            "created_at": created_at,
            "updated_at": created_at,
            "statuses_url": f"{self.url}/repos/{self.repo}/deployments/{did}/statuses",
            "repository_url": f"{self.url}/repos/{self.repo}",
            "transient_environment": False,
            "production_environment": environment == "production",
        }
        self.state.deployments.append(deployment)
        self.state.deployment_statuses[did] = []
        for state, when in statuses:
            self.add_deployment_status(did, state, when)
        return deployment

    def add_deployment_status(self, deployment_id: int, state: str, created_at: str,
                              environment_url: str = "") -> dict:
        assert state in DEPLOYMENT_STATES, state
        deployment = next(d for d in self.state.deployments if d["id"] == deployment_id)
        sid = next(self._ids)
        status = {
            "url": f"{deployment['url']}/statuses/{sid}",
            "id": sid,
            "node_id": f"DES_{sid}",
            "state": state,
            "creator": _user("deployer"),
            "description": "",
            "environment": deployment["environment"],
            "target_url": "",
            "created_at": created_at,
            "updated_at": created_at,
            "deployment_url": deployment["url"],
            "repository_url": f"{self.url}/repos/{self.repo}",
            "environment_url": environment_url,
            "log_url": "",
        }
        self.state.deployment_statuses[deployment_id].append(status)
        return status

    def seed_issue(self, title: str, body: str, user: str = "someone", labels: tuple[str, ...] = (),
                   state: str = "open", pull_request: bool = False) -> dict:
        """An issue (or, with ``pull_request``, a pull request as the issues list shows it)."""
        return self._new_issue(title, body, user, list(labels), state=state, pull_request=pull_request)

    def seed_issue_comment(self, number: int, body: str, user: str = "someone") -> dict:
        return self._new_issue_comment(number, body, user)

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # ---- model -----------------------------------------------------------------------------
    def _label(self, name: str) -> dict:
        label = self.state.labels.get(name.lower())
        if label is None:  # GitHub creates a missing label named on an issue
            lid = next(self._ids)
            label = {"id": lid, "node_id": f"LA_{lid}", "url": f"{self.url}/repos/{self.repo}/labels/{name}",
                     "name": name, "color": "ededed", "description": None, "default": False}
            self.state.labels[name.lower()] = label
        return label

    def _new_issue(self, title: str, body: str | None, user: str | None, labels: list,
                   state: str = "open", pull_request: bool = False) -> dict:
        taken = set(self.state.issues) | {p["number"] for ps in self.state.pulls_for_commit.values()
                                          for p in ps}
        number = max(taken, default=0) + 1
        stamp = self._tick()
        issue = {
            "id": next(self._ids),
            "node_id": f"I_{number}",
            "url": f"{self.url}/repos/{self.repo}/issues/{number}",
            "repository_url": f"{self.url}/repos/{self.repo}",
            "comments_url": f"{self.url}/repos/{self.repo}/issues/{number}/comments",
            "html_url": f"https://github.example/{self.repo}/{'pull' if pull_request else 'issues'}/{number}",
            "number": number,
            "state": state,
            "state_reason": None,
            "title": title,
            "body": body,
            "user": _user(user or self.viewer),
            "labels": [self._label(n if isinstance(n, str) else n["name"]) for n in labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "comments": 0,
            "created_at": stamp,
            "updated_at": stamp,
            "closed_at": None if state == "open" else stamp,
            "author_association": "NONE",
        }
        if pull_request:
            issue["pull_request"] = {"url": f"{self.url}/repos/{self.repo}/pulls/{number}",
                                     "html_url": issue["html_url"], "merged_at": None}
        self.state.issues[number] = issue
        return issue

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

        if method == "GET":
            for rx, allowed in LIST_QUERIES:
                if rx.fullmatch(rest) and (error := _query_error(query, allowed)):
                    return error
        if rest == "/deployments" and method == "GET":
            return self._page(self._deployments(query), query, path)
        if (m := re.fullmatch(r"/deployments/(\d+)/statuses", rest)) and method == "GET":
            statuses = self.state.deployment_statuses.get(int(m[1]))
            if statuses is None:
                return 404, {"message": "Not Found"}, {}
            newest_first = sorted(statuses, key=lambda s: (s["created_at"], s["id"]), reverse=True)
            return self._page(newest_first, query, path)
        if rest == "/issues":
            return self._issues(method, query, body, path)
        if (m := re.fullmatch(r"/issues/(\d+)", rest)) and int(m[1]) in self.state.issues:
            return self._issue(method, self.state.issues[int(m[1])], body)
        if rest == "/labels" and method == "POST":
            return self._create_label(body)
        if (m := re.fullmatch(r"/labels/([^/]+)", rest)) and method == "GET":
            label = self.state.labels.get(unquote(m[1]).lower())
            return (200, label, {}) if label else (404, {"message": "Not Found"}, {})

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
                if error := _fields_error(body, {"body"}, "IssueComment"):
                    return error
                if error := _too_long(body.get("body", ""), COMMENT_LIMIT):
                    return error
                return 201, self._new_issue_comment(number, body["body"]), {}
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            comment = self._find(itertools.chain(*self.state.issue_comments.values()), int(m[1]))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            if error := _fields_error(body, {"body"}, "IssueComment"):
                return error
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
            if error := _fields_error(body, {"body", "path", "position", "line"}, "CommitComment"):
                return error
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
            if error := _fields_error(body, {"body"}, "CommitComment"):
                return error
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

    def _deployments(self, query: dict) -> list[dict]:
        found = self.state.deployments
        for key in ("sha", "ref", "task", "environment"):
            if key in query:
                found = [d for d in found if d[key] == query[key][0]]
        return sorted(found, key=lambda d: (d["created_at"], d["id"]), reverse=True)  # newest first

    def _issues(self, method: str, query: dict, body, path: str):
        if method == "POST":
            if error := _fields_error(body, ISSUE_CREATE_FIELDS, "Issue"):
                return error
            title = body.get("title")
            if not isinstance(title, str | int) or not str(title).strip():
                return _validation_failed("Issue", "title", "title wasn't supplied", "missing_field")
            if error := _issue_text_error(body):
                return error
            return 201, self._new_issue(str(title), body.get("body"), None, body.get("labels") or []), {}
        if method != "GET":
            return 404, {"message": "Not Found"}, {}
        state = query.get("state", ["open"])[0]
        sort = query.get("sort", ["created"])[0]
        direction = query.get("direction", ["desc"])[0]
        if state not in ("open", "closed", "all") or sort not in ("created", "updated", "comments") \
                or direction not in ("asc", "desc"):
            return _validation_failed("Issue", "state", f"invalid state/sort/direction {query!r}", "invalid")
        wanted = {n.strip().lower() for n in query.get("labels", [""])[0].split(",") if n.strip()}
        creator = query.get("creator", [None])[0]
        found = [i for i in self.state.issues.values()
                 if (state == "all" or i["state"] == state)
                 and wanted <= {label["name"].lower() for label in i["labels"]}
                 and (creator is None or i["user"]["login"] == creator)]
        key = {"created": "created_at", "updated": "updated_at", "comments": "comments"}[sort]
        found.sort(key=lambda i: (i[key], i["number"]), reverse=direction == "desc")
        return self._page(found, query, path)

    def _issue(self, method: str, issue: dict, body):
        if method == "GET":
            return 200, issue, {}
        if method != "PATCH":
            return 404, {"message": "Not Found"}, {}
        if error := _fields_error(body, ISSUE_UPDATE_FIELDS, "Issue"):
            return error
        if error := _issue_text_error(body):
            return error
        if "state" in body and body["state"] not in ("open", "closed"):
            return _validation_failed("Issue", "state", f"state is not included in the list: {body['state']!r}", "invalid")
        if "state_reason" in body and body["state_reason"] not in STATE_REASONS:
            return _validation_failed("Issue", "state_reason", f"invalid state_reason {body['state_reason']!r}", "invalid")
        for key in ("title", "body", "state", "state_reason"):
            if key in body:
                issue[key] = body[key]
        if "labels" in body:
            issue["labels"] = [self._label(n if isinstance(n, str) else n["name"]) for n in body["labels"]]
        if body.get("state") == "closed":
            issue["closed_at"] = issue["updated_at"]
        elif body.get("state") == "open":
            issue["closed_at"] = None
        self._touch(issue)
        return 200, issue, {}

    def _touch(self, issue: dict) -> None:
        issue["updated_at"] = self._tick()

    def _tick(self) -> str:
        """A clock that moves one second per write, so sort=updated follows the order of writes."""
        self._seconds += 1
        return (datetime(2025, 6, 1, tzinfo=UTC) + timedelta(seconds=self._seconds)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")

    def _create_label(self, body):
        if error := _fields_error(body, {"name", "color", "description"}, "Label"):
            return error
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return _validation_failed("Label", "name", "name wasn't supplied", "missing_field")
        if len(name) > LABEL_NAME_LIMIT:
            return _validation_failed("Label", "name", f"name is too long (maximum is {LABEL_NAME_LIMIT} characters)")
        color = body.get("color")
        if color is not None and not re.fullmatch(r"[0-9a-fA-F]{6}", str(color)):
            return _validation_failed("Label", "color", "color is invalid", "invalid")
        if len(body.get("description") or "") > LABEL_DESCRIPTION_LIMIT:
            return _validation_failed("Label", "description",
                                      f"description is too long (maximum is {LABEL_DESCRIPTION_LIMIT} characters)")
        if name.lower() in self.state.labels:
            return _validation_failed("Label", "name", "name already exists", "already_exists")
        label = self._label(name)
        label.update(color=(color or "ededed").lower(), description=body.get("description"))
        return 201, label, {}

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
            # GitHub's links keep the request's query (labels=…&state=…); only page changes.
            kept = "".join(f"&{k}={quote(v[0], safe='')}" for k, v in query.items()
                           if k not in ("per_page", "page"))
            last = -(-len(items) // per_page)
            headers["Link"] = (
                f'<{self.url}{path}?per_page={per_page}&page={page + 1}{kept}>; rel="next", '
                f'<{self.url}{path}?per_page={per_page}&page={last}{kept}>; rel="last"'
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


def _query_error(query: dict, allowed: set[str]):
    unknown = sorted(set(query) - allowed)
    if unknown:
        return 400, {"message": f"the double refuses undocumented query parameters {unknown} "
                                f"(GitHub ignores them silently); documented: {sorted(allowed)}"}, {}
    per_page = query.get("per_page", ["30"])[0]
    if not per_page.isdigit() or not 1 <= int(per_page) <= PER_PAGE_LIMIT:
        return 400, {"message": f"per_page must be 1..{PER_PAGE_LIMIT}, got {per_page!r}"}, {}
    return None


def _fields_error(body, allowed: set[str], resource: str):
    if not isinstance(body, dict):
        return 400, {"message": "Problems parsing JSON"}, {}
    unknown = sorted(set(body) - allowed)
    if unknown:
        return _validation_failed(resource, unknown[0], f"the double refuses undocumented fields {unknown}",
                                  "invalid")
    return None


def _issue_text_error(body: dict):
    if "title" in body and len(str(body["title"])) > ISSUE_TITLE_LIMIT:
        return _validation_failed("Issue", "title",
                                  f"title is too long (maximum is {ISSUE_TITLE_LIMIT} characters)")
    if len(body.get("body") or "") > COMMENT_LIMIT:
        return _validation_failed("Issue", "body", f"body is too long (maximum is {COMMENT_LIMIT} characters)")
    labels = body.get("labels")
    if labels is not None and (not isinstance(labels, list)
                               or not all(isinstance(n, str | dict) for n in labels)):
        return _validation_failed("Issue", "labels", "labels must be a list of names", "invalid")
    return None


def _user(login: str) -> dict:
    return {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"}


def _validation_failed(resource: str, field: str, message: str, code: str = "custom"):
    return (
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": code, "field": field, "message": message}],
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
