"""A repo card (README.md) as the Hub shows it: its YAML metadata as chips, its Markdown body as safe HTML.

Safety, since a card is anyone's text: the Markdown is rendered by markdown-it-py (CommonMark + tables), and
raw HTML in it is escaped, except a short list of bare tags (`<details>`, `<summary>`, `<br>`, `<b>`...)
written without any attribute, which are re-emitted from the list itself; comments are dropped. So no
`<script>`, no `on...=` handler and no `style` reach the page. Links are kept only with no scheme (relative:
they open the repo's file pages) or http, https or mailto; `javascript:`, `data:` and the rest make the link
plain text. Relative images that are repo files (the card's λ chart, `coefficients.svg`) are inlined as
`data:` URIs: an SVG shown through `<img>` cannot run script, and the page needs no request the
Content-Security-Policy would have to allow.
"""

from __future__ import annotations

import base64
import functools
import html
import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote

import yaml

from chatvector.localhub.pages.render import RepoLinks

MAX_CARD_BYTES = 1 << 20  # a bigger README is shown as text
MAX_INLINE_IMAGE = 2 << 20  # a bigger image is linked, not inlined
IMAGE_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp"}
_SAFE_TAGS = frozenset("details summary br hr b strong i em u s del code kbd sub sup small p blockquote ul ol li "
                       "pre".split())
# Raw HTML, piece by piece: a comment, a tag (with or without attributes), or the text between them.
_HTML_PIECE = re.compile(r"<!--.*?-->|<[^>]*>?|[^<]+", re.S)
_BARE_TAG = re.compile(r"<(/?)([a-z][a-z0-9]*)\s*/?>", re.I)
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):", re.I)
_LINK_SCHEMES = ("http", "https", "mailto")
_CHIP_KEYS = (("pipeline_tag", "task"), ("library_name", "library"), ("language", "language"),
              ("license", "license"), ("base_model", "base model"), ("datasets", "dataset"), ("tags", "tag"))


@dataclass(frozen=True)
class Chip:
    kind: str  # "license", "language", "tag", ...
    value: str
    href: str | None = None  # base models and datasets link to their pages


@dataclass
class RepoFiles:
    """What the card may refer to: the repo's pages at a revision, and its files' bytes when they may be read."""

    links: RepoLinks
    revision: str
    sizes: dict[str, int]  # every file at the revision: path → size
    read: Callable[[str], bytes | None]  # the file's bytes, None when the viewer may not download it


@dataclass
class Card:
    chips: list[Chip]
    body_html: str  # the rendered Markdown (safe to insert as is)
    title: str | None  # the text of the first heading
    metadata: dict = field(default_factory=dict)


def split(text: str) -> tuple[dict, str]:
    """(the YAML metadata, the Markdown body) of a card; ({}, TEXT) when it has no front matter."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "---":
            try:
                data = yaml.safe_load("".join(lines[1:i]))
            except yaml.YAMLError:
                data = None
            return (data if isinstance(data, dict) else {}), "".join(lines[i + 1:])
    return {}, text


def chips(metadata: dict) -> list[Chip]:
    """The metadata the Hub shows above a card: task, library, languages, license, base models, datasets, tags."""
    out = []
    for key, kind in _CHIP_KEYS:
        value = metadata.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, int, float)) and not isinstance(item, bool) and str(item).strip():
                text = str(item).strip()
                href = None
                if key in ("base_model", "datasets") and re.fullmatch(r"[\w.-]+/[\w.-]+", text):
                    href = RepoLinks("dataset" if key == "datasets" else "model", text).home
                out.append(Chip(kind, text, href))
    return out


def render(text: str, files: RepoFiles) -> Card:
    metadata, body = split(text)
    if len(text.encode("utf-8")) > MAX_CARD_BYTES:  # (the caller reads at most one byte more)
        return Card(chips(metadata), f"<pre>{html.escape(body)}</pre>", None, metadata)
    env: dict = {"files": files, "ids": {}, "title": None}
    body_html = _markdown().render(body, env)
    return Card(chips(metadata), body_html, env["title"], metadata)


# -- markdown-it, made safe --------------------------------------------------------------------------------
@functools.cache
def _markdown():
    from markdown_it import MarkdownIt  # imported on the first card: the server starts without it

    md = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
    md.validateLink = _allowed_link
    for rule, fn in (("html_block", _raw_html), ("html_inline", _raw_html), ("link_open", _link_open),
                     ("image", _image), ("heading_open", _heading_open)):
        md.add_render_rule(rule, fn)
    return md


def _allowed_link(url: str) -> bool:
    """markdown-it's link check, stricter: no scheme (a relative link), or http, https, mailto."""
    bare = re.sub(r"[\x00-\x20]", "", unquote(url))  # as browsers read a scheme: controls and spaces ignored
    scheme = _SCHEME.match(bare)
    return scheme is None or scheme.group(1).lower() in _LINK_SCHEMES


def sanitize_html(raw: str) -> str:
    """Raw HTML from a card: the bare safe tags re-emitted, comments dropped, everything else escaped text."""
    out = []
    for piece in _HTML_PIECE.findall(raw):
        if piece.startswith("<!--"):
            continue
        tag = _BARE_TAG.fullmatch(piece)
        if tag and tag.group(2).lower() in _SAFE_TAGS:
            out.append(f"<{tag.group(1)}{tag.group(2).lower()}>")
        else:
            out.append(html.escape(piece))
    return "".join(out)


def _raw_html(self, tokens, idx, options, env) -> str:
    return sanitize_html(tokens[idx].content)


def _repo_path(target: str) -> str | None:
    """The repo file a relative link or image points at (None: it leaves the repo)."""
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    path = posixpath.normpath(path) if path else "."
    return None if path.startswith(("..", "/")) or path == "." else path


def _is_relative(target: str) -> bool:
    return not _SCHEME.match(target) and not target.startswith(("/", "#"))


def _link_open(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    href = token.attrGet("href") or ""
    files: RepoFiles = env["files"]
    if _is_relative(href):  # a repo file or folder, as on the Hub: its page at this revision
        path = _repo_path(href)
        if path is None:
            token.attrs.pop("href", None)
        elif path in files.sizes:
            token.attrSet("href", files.links.blob(files.revision, path))
        else:
            token.attrSet("href", files.links.tree(files.revision, path))
    elif _SCHEME.match(href) or href.startswith("//"):
        token.attrSet("rel", "nofollow noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def _image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    files: RepoFiles = env["files"]
    if _is_relative(src):
        path = _repo_path(src)
        if path is None or path not in files.sizes:
            token.attrs.pop("src", None)
        else:
            token.attrSet("src", _inline(path, files) or files.links.resolve(files.revision, path))
    token.attrSet("alt", self.renderInlineAsText(token.children or [], options, env))
    if not (token.attrGet("src") or "").startswith("data:"):  # (an inlined image is loaded already)
        token.attrSet("loading", "lazy")
    return self.renderToken(tokens, idx, options, env)


def _inline(path: str, files: RepoFiles) -> str | None:
    """A repo image as a data: URI, or None (not an image, too big, or not downloadable by the viewer)."""
    if _image_type(path) is None or files.sizes[path] > MAX_INLINE_IMAGE:
        return None
    data = files.read(path)
    return None if data is None else data_uri(path, data)


def _image_type(path: str) -> str | None:
    return IMAGE_TYPES.get(posixpath.splitext(path)[1].lower())


def data_uri(path: str, data: bytes) -> str | None:
    """The image file PATH holding DATA as a data: URI (for an <img>, where an SVG cannot run script); None for a
    file that is not an image."""
    mime = _image_type(path)
    return None if mime is None else f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _heading_open(self, tokens, idx, options, env) -> str:
    """Headings get the ids GitHub and the Hub give them, so `[Sources](#sources)` jumps to `## Sources`."""
    text = self.renderInlineAsText(tokens[idx + 1].children or [], options, env)
    if env["title"] is None:
        env["title"] = text
    slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-") or "section"
    seen = env["ids"]
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    tokens[idx].attrSet("id", slug if n == 0 else f"{slug}-{n}")
    return self.renderToken(tokens, idx, options, env)
