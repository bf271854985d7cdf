"""HTML out: the page templates, the links between pages, and the headers every page carries.

Every page is a Jinja template under `templates/`, autoescaped; a page never runs a script (it has none, and
`Content-Security-Policy` forbids them), never loads anything from another site, and cannot be framed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2

from chatvector.localhub.hub import PREFIX
from chatvector.localhub.protocol import HubHTTPError, Response
from chatvector.units import human_bytes

# No script at all, images only from this server or inlined (data:, the card's chart), the page's own <style>.
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class RepoLinks:
    """The web addresses of one repo's pages: models at `/{ns}/{name}`, other types under their prefix."""

    type: str
    name: str

    @property
    def home(self) -> str:
        return f"/{PREFIX[self.type]}{quote(self.name)}"

    def tree(self, revision: str, path: str = "") -> str:
        return f"{self.home}/tree/{rev(revision)}" + (f"/{quote(path)}" if path else "")

    def blob(self, revision: str, path: str) -> str:
        return f"{self.home}/blob/{rev(revision)}/{quote(path)}"

    def resolve(self, revision: str, path: str) -> str:
        return f"{self.home}/resolve/{rev(revision)}/{quote(path)}?download=true"

    def commit(self, sha: str) -> str:
        return f"{self.home}/commit/{sha}"

    def commits(self, revision: str) -> str:
        return f"{self.home}/commits/{rev(revision)}"


def rev(revision: str) -> str:
    """A revision as one path segment, as the Hub writes it: `refs/pr/1` → `refs%2Fpr%2F1`."""
    return quote(revision, safe="")


def when(date: str) -> str:
    """`2025-01-02T03:04:05.678Z` → `2025-01-02 03:04 UTC`."""
    day, _, clock = date.partition("T")
    return f"{day} {clock[:5]} UTC" if clock else date


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(size=human_bytes, when=when, short=lambda sha: sha[:7])
    return env


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context) -> Response:
    """The page TEMPLATE rendered with CONTEXT, with the page headers."""
    body = _environment().get_template(template).render(**context).encode("utf-8")
    return Response(status, body=body, headers={**PAGE_HEADERS, **(headers or {})})


def error_page(err: HubHTTPError) -> Response:
    """An error as a page, with the API's error headers too (X-Error-Code, X-Error-Message)."""
    headers = {"X-Error-Message": err.message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not found"}
    return page("error.html", err.status, headers, title=titles.get(err.status, f"Error {err.status}"),
                message=err.message)
