"""The one place that builds a PyGithub client, so every request the action sends is alike.

GitHub documents ``Accept: application/vnd.github+json`` and ``X-GitHub-Api-Version: 2022-11-28``
for every REST request, and has retired the preview media types. PyGithub 2.x sends the version
header when asked (``api_version``) but no ``Accept`` by default, and some of its calls still send
a preview type (``Commit.get_pulls`` sends ``groot-preview``): the token auth below fixes both,
because PyGithub calls ``Auth.authentication(headers)`` for every request (REST and GraphQL, first
pages and follow-ups). Anything new that talks to GitHub should take its client from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyGithub is imported lazily: --help must not pay for it
    from github import Github

MEDIA_TYPE = "application/vnd.github+json"
API_VERSION = "2022-11-28"


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
    )


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
