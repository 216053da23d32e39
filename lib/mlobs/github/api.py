"""The one place that builds a PyGithub client, so every request the action sends is alike.

GitHub documents ``Accept: application/vnd.github+json`` and ``X-GitHub-Api-Version: 2022-11-28``
for every REST request, and has retired the preview media types. PyGithub 2.x sends the version
header when asked (``api_version``) but no ``Accept`` by default, and some of its calls still send
a preview type (``Commit.get_pulls`` sends ``groot-preview``): the token auth below fixes both,
because PyGithub calls ``Auth.authentication(headers)`` for every request (REST and GraphQL, first
pages and follow-ups). Anything new that talks to GitHub should take its client from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PyGithub is imported lazily: --help must not pay for it
    from github import Github
    from github.Requester import Requester

MEDIA_TYPE = "application/vnd.github+json"
API_VERSION = "2022-11-28"
PER_PAGE = 100  # GitHub's maximum page size: fewest requests for long lists
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


def github_client(token: str, api_url: str, *, write_interval: float = 1.0) -> Github:
    """A PyGithub client for ``api_url`` (GHES: ``https://HOST/api/v3``) sending the documented
    headers; ``write_interval`` paces writes (GitHub asks for ~1 s against secondary limits)."""
    from github import Github, GithubRetry

    return Github(
        auth=_api_auth(token),
        base_url=api_url,
        timeout=20,
        retry=GithubRetry(total=3),
        seconds_between_requests=None,
        seconds_between_writes=write_interval or None,
        user_agent="ml-observability-action",
        lazy=True,
        api_version=API_VERSION,
        per_page=PER_PAGE,
    )


def json_pages(requester: Requester, url: str, params: Mapping[str, Any] | None = None,
               limit: int | None = None) -> Iterator[dict]:
    """The items of a paginated REST list as plain dicts, following ``Link: rel="next"``.

    Plain dicts rather than PyGithub objects: those are lazy, and reading a field GitHub leaves
    out of a list item (an issue's ``pull_request``) silently fetches the whole object again.
    """
    query = {"per_page": PER_PAGE, **(params or {})}
    seen = 0
    while url:
        headers, data = requester.requestJsonAndCheck("GET", url, parameters=query)
        for item in data or []:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield item
        match = _NEXT.search(str(headers.get("link") or ""))
        url, query = (match[1], None) if match else ("", None)


def request_json(requester: Requester, verb: str, url: str, body: Mapping | None = None) -> dict:
    """One write (POST / PATCH) with a JSON body; the answer as a dict."""
    _, data = requester.requestJsonAndCheck(verb, url, input=dict(body) if body else None)
    return data or {}


def api_reason(exc) -> str:
    """GitHub's own words for a refusal: the message and each validation error's message."""
    message = ""
    if isinstance(exc.data, dict):
        message = str(exc.data.get("message", "")).strip()
        details = [str(e.get("message") or e.get("code") or "") if isinstance(e, dict) else str(e)
                   for e in exc.data.get("errors") or []]
        details = [d for d in details if d]
        if details:
            message = f"{message}: {'; '.join(details)}" if message else "; ".join(details)
    elif exc.data:
        message = str(exc.data).strip()
    message = " ".join(message.split())
    return f"HTTP {exc.status}{': ' + message if message else ''}"


def _api_auth(token: str):
    """Token auth that also puts the documented media type on every request (a retired preview
    media type is replaced); see the module docstring."""
    from github import Auth

    class _Token(Auth.Token):
        def authentication(self, headers: dict) -> None:
            super().authentication(headers)
            accept = headers.get("Accept", "")
            if not accept or "preview" in accept or accept == "*/*":
                headers["Accept"] = MEDIA_TYPE

    return _Token(token)
