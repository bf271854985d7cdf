"""The local Hub's web pages (localhub/pages): what a browser gets at the links the pipeline prints.

On the Hub, `/{repo}` is the repo's page: the model card with its metadata as chips, and (under "Files and
versions") `/{repo}/tree/{rev}`, `/{repo}/blob/{rev}/{path}`, `/{repo}/commit/{sha}`, `/{repo}/commits/{rev}`.
The pages follow the API's access rules: a private repo is a 404 to whoever may not see it, a gated repo shows its
card but not its files. Every page is parsed with html.parser and checked for its structure; one test renders the
demo model's page in a real headless chromium.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import select
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from chatvector.card.card import render_card
from chatvector.card.chart import BAR_COLOR, coefficient_chart_svg
from tests.card.test_card import RECIPE_TEXT, sample_provenance
from tests.conftest import OTHER_WRITER, READ_TOKEN, WRITE_TOKEN

CHROMIUM = Path("/usr/bin/chromium")
CHART = coefficient_chart_svg([0.5, 0.5, 1.0, 0.8], "Tiny-Llama-Chat: λ per layer")
WEIGHTS = bytes(range(256)) * 1200  # 307.2 kB: above the session hub's LFS threshold (256 KiB)


# -- a small DOM from html.parser ------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list = field(default_factory=list)  # Nodes and strings

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and (cls is None or cls in (n.attrs.get("class") or "").split())]

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert found, f"no <{tag or '*'} class={cls}>"
        return found[0]

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def dom(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass
class Page:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def dom(self) -> Node:
        return dom(self.body.decode("utf-8"))

    def json(self):
        return json.loads(self.body)


def fetch(hub, path: str, token=None, method: str = "GET") -> Page:
    """One request as a browser would send it (a token only when given: in the Authorization header)."""
    conn = http.client.HTTPConnection(urlsplit(hub.url).netloc, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token.secret}"} if token else {})
        reply = conn.getresponse()
        return Page(reply.status, reply.headers, reply.read())
    finally:
        conn.close()


def file_rows(doc: Node) -> dict[str, Node]:
    """The rows of the (first) file list by the name they show."""
    return {row.one("td", "name").one("a").text: row for row in doc.one("table", "file-list").one("tbody").all("tr")}


# -- repos -----------------------------------------------------------------------------------------------
def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def demo_model() -> tuple[str, str]:
    """The demo's published model, in small: the project's own card (render_card) with its λ chart, a config,
    LFS weights and a folder. (repo id, head sha)"""
    repo_id = f"alice/{_name('pages-demo')}"
    api = HfApi(token=WRITE_TOKEN.secret)
    api.create_repo(repo_id)
    info = api.create_commit(repo_id, [
        CommitOperationAdd("README.md", render_card(sample_provenance(), RECIPE_TEXT).encode()),
        CommitOperationAdd("coefficients.svg", CHART.encode()),
        CommitOperationAdd("config.json", b'{"model_type": "llama"}'),
        CommitOperationAdd("model.safetensors", WEIGHTS),
        CommitOperationAdd("notes/usage.txt", b"if a < b && c > d: print('<b>not bold</b>')\n"),
    ], commit_message="Tiny demo: cp + chat vector", commit_description="Published by the tests.")
    api.create_tag(repo_id, tag="v1.0")
    return repo_id, info.oid


# -- the model page ---------------------------------------------------------------------------------------
def test_model_page_shows_the_card_as_the_hub_does(hub, demo_model):
    """`/{repo}`: title, metadata chips, the card's Markdown rendered (tables, fenced code), its λ chart inline,
    the file list with human sizes and LFS marks, and the last commits (short sha, title, date)."""
    repo_id, sha = demo_model
    page = fetch(hub, f"/{repo_id}")
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    doc = page.dom
    assert doc.one("title").text == f"{repo_id} · Local Hub"
    assert doc.one("h1", "repo-title").one("a", "name").text == repo_id.split("/")[1]

    chips = {(c.one("span", "chip-kind").text, c.text.removeprefix(c.one("span", "chip-kind").text))
             for c in doc.one("ul", "chips").all("li")}
    assert {("task", "text-generation"), ("library", "transformers"), ("language", "ko"), ("language", "en"),
            ("license", "mit"), ("base model", "demo/tiny-cp"), ("tag", "korean")} <= chips
    base = [a for a in doc.one("ul", "chips").all("a") if a.text == "demo/tiny-chat"]
    assert base and base[0].attrs["href"] == "/demo/tiny-chat"  # a base model chip opens its page

    card = doc.one("article", "card")
    assert card.one("h1").text == "Tiny-Llama-Chat" and card.one("h1").attrs["id"] == "tiny-llama-chat"
    sources = next(t for t in card.all("table") if t.one("th").text == "role")
    assert [r.all("td")[0].text for r in sources.one("tbody").all("tr")] == ["cp", "chat", "base"]
    code = [c for c in card.all("code") if "language-python" in (c.attrs.get("class") or "")]
    assert code and "AutoModelForCausalLM.from_pretrained(model_id" in code[0].text
    assert any(a.attrs.get("href") == "#sources" for a in card.all("a"))  # in-card anchors: headings have ids
    chart = card.one("img")
    prefix = "data:image/svg+xml;base64,"
    assert chart.attrs["src"].startswith(prefix) and chart.attrs["alt"] == "per-layer λ"
    assert base64.b64decode(chart.attrs["src"][len(prefix):]).decode() == CHART  # the repo's own chart file

    rows = file_rows(doc)
    assert list(rows) == ["notes/", ".gitattributes", "README.md", "coefficients.svg", "config.json",
                          "model.safetensors"]  # folders first, as on the Hub
    weights = rows["model.safetensors"]
    assert weights.one("td", "size").text.strip() == "307.2 kB" and weights.one("span", "lfs").text == "LFS"
    assert rows["config.json"].one("td", "size").text.strip() == "23 B" and not rows["config.json"].all("span", "lfs")
    assert weights.one("td", "dl").one("a").attrs["href"] == f"/{repo_id}/resolve/main/model.safetensors?download=true"
    assert rows["notes/"].one("a").attrs["href"] == f"/{repo_id}/tree/main/notes"

    commits = doc.one("ol", "commit-list").all("li")
    assert len(commits) == 2  # the repo's creation, then the upload; newest first
    newest = commits[0]
    assert newest.one("a", "sha").text == sha[:7] and newest.one("a", "sha").attrs["href"] == f"/{repo_id}/commit/{sha}"
    assert newest.one("span", "commit-title").text == "Tiny demo: cp + chat vector"
    assert newest.one("time").text.endswith(" UTC") and newest.one("time").attrs["datetime"].endswith("Z")


def test_pages_send_a_strict_content_security_policy_and_answer_head(hub, demo_model):
    """No script may run on a page, nothing loads from elsewhere, and nothing is sniffed; HEAD answers as GET does
    without the body (a browser's or a link checker's probe)."""
    repo_id, _ = demo_model
    get, head = fetch(hub, f"/{repo_id}"), fetch(hub, f"/{repo_id}", method="HEAD")
    csp = get.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src 'self' data:" in csp and "script-src" not in csp
    assert get.headers["X-Content-Type-Options"] == "nosniff"
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == str(len(get.body))
    assert head.headers["Content-Security-Policy"] == csp


# -- file, folder and commit pages ------------------------------------------------------------------------
def test_tree_pages_list_a_revision_by_branch_tag_or_sha(hub, demo_model):
    """`/{repo}/tree/{rev}[/{path}]`: a revision given as a branch, a tag or a (short) sha lists the same files;
    a folder lists its own; a missing folder or revision is a 404 page."""
    repo_id, sha = demo_model
    listings = [file_rows(fetch(hub, f"/{repo_id}/tree/{rev}").dom) for rev in ("main", "v1.0", sha, sha[:10])]
    assert all(list(rows) == list(listings[0]) for rows in listings) and "model.safetensors" in listings[0]
    assert listings[2]["config.json"].one("a").attrs["href"] == f"/{repo_id}/blob/{sha}/config.json"
    folder = fetch(hub, f"/{repo_id}/tree/main/notes").dom
    assert list(file_rows(folder)) == ["usage.txt"]
    assert [a.text for a in folder.one("p", "crumbs").all("a")] == [repo_id.split("/")[1], "notes"]
    missing = fetch(hub, f"/{repo_id}/tree/main/nowhere")
    assert missing.status == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert fetch(hub, f"/{repo_id}/tree/no-such-branch").headers["X-Error-Code"] == "RevisionNotFound"


def test_blob_page_shows_text_escaped_and_binary_files_by_size_and_sha256(hub, demo_model):
    """`/{repo}/blob/{rev}/{path}`: a text file in <pre>, escaped (its `<b>` is text); an LFS file as its size,
    sha256 and a link to download it from /resolve."""
    repo_id, sha = demo_model
    text = fetch(hub, f"/{repo_id}/blob/v1.0/notes/usage.txt")
    assert text.status == 200 and b"&lt;b&gt;not bold&lt;/b&gt;" in text.body
    pre = text.dom.one("pre", "file-text")
    assert pre.text == "if a < b && c > d: print('<b>not bold</b>')\n" and not pre.all("b")
    weights = fetch(hub, f"/{repo_id}/blob/{sha}/model.safetensors").dom
    meta = {r.one("th").text: r.one("td").text for r in weights.one("table", "file-meta").all("tr")}
    assert meta["SHA256"] == __import__("hashlib").sha256(WEIGHTS).hexdigest()
    assert weights.one("span", "lfs").text == "LFS" and weights.one("span", "size").text == "307.2 kB"
    assert weights.one("a", "download").attrs["href"] == f"/{repo_id}/resolve/{sha}/model.safetensors?download=true"
    assert fetch(hub, f"/{repo_id}/blob/main/missing.bin").status == 404


def test_commit_and_commits_pages(hub, demo_model):
    """`/{repo}/commit/{sha}`: title, message, author, date and the files it changed; `/{repo}/commits/{rev}`:
    the history, newest first."""
    repo_id, sha = demo_model
    page = fetch(hub, f"/{repo_id}/commit/{sha}")
    doc = page.dom
    assert page.status == 200 and doc.one("h2", "commit-title").text == "Tiny demo: cp + chat vector"
    assert doc.one("pre", "commit-message").text == "Published by the tests."
    assert doc.one("strong", "author").text == "alice" and doc.one("time").text.endswith("UTC")
    changes = {r.all("td")[1].one("a").text: r.all("td")[0].text for r in doc.one("table", "changes").one("tbody").all("tr")}
    assert changes == {p: "added" for p in ("README.md", "coefficients.svg", "config.json", "model.safetensors",
                                            "notes/usage.txt")}
    history = fetch(hub, f"/{repo_id}/commits/main").dom.one("ol", "commit-list").all("li")
    assert [li.one("span", "commit-title").text for li in history] == ["Tiny demo: cp + chat vector", "initial commit"]


def test_other_repo_types_have_their_prefix(hub, api):
    """A dataset's pages live under `/datasets/...`; the same name as a model is another repo."""
    repo_id = f"alice/{_name('pages-ds')}"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"---\nlicense: cc-by-4.0\n---\n# Rows\n", path_in_repo="README.md",
                    repo_id=repo_id, repo_type="dataset")
    doc = fetch(hub, f"/datasets/{repo_id}").dom
    assert doc.one("article", "card").one("h1").text == "Rows" and "Dataset card" in doc.one("nav", "tabs").text
    assert fetch(hub, f"/{repo_id}").status == 404  # no model of that name
    assert "README.md" in file_rows(fetch(hub, f"/datasets/{repo_id}/tree/main").dom)


# -- access rules -----------------------------------------------------------------------------------------
def test_private_repo_page_needs_a_token_in_the_authorization_header(hub, api):
    """A private repo is a 404 page to anyone who may not see it, as on the Hub; its members see it with their
    token in the Authorization header. A token in the URL (`?token=`) is ignored: URLs end up in logs."""
    repo_id = f"alice/{_name('pages-private')}"
    api.create_repo(repo_id, private=True)
    paths = (f"/{repo_id}", f"/{repo_id}/tree/main", f"/{repo_id}/blob/main/.gitattributes",
             f"/{repo_id}/commits/main")
    for path in paths:
        anonymous = fetch(hub, path)
        assert anonymous.status == 404 and anonymous.headers["X-Error-Code"] == "RepoNotFound"
        assert anonymous.headers["Content-Type"].startswith("text/html") and anonymous.dom.one("h1").text == "Not found"
        assert fetch(hub, path, token=WRITE_TOKEN).status == 200
        assert fetch(hub, f"{path}?token={WRITE_TOKEN.secret}").status == 404
        assert fetch(hub, path, token=OTHER_WRITER).status == 404  # carol is no member of alice's namespace
    missing_id = f"alice/{_name('pages-none')}"
    hidden, missing = fetch(hub, f"/{repo_id}"), fetch(hub, f"/{missing_id}")  # one cannot tell them apart
    assert hidden.body.replace(repo_id.encode(), b"ID") == missing.body.replace(missing_id.encode(), b"ID")
    listed = {a.text for a in fetch(hub, "/", token=WRITE_TOKEN).dom.one("table", "repos").all("a")}
    assert repo_id in listed and repo_id not in {a.text for a in fetch(hub, "/").dom.all("a")}


def test_gated_repo_page_shows_the_card_but_offers_no_downloads(hub):
    """A gated repo's card is public (README.md is always downloadable) but its files are not: the file list has
    no download link but the card's, the card's chart is not inlined, and a file's page shows no content to a
    viewer without access; its owner has both."""
    owner = HfApi(token=OTHER_WRITER.secret)
    repo_id = f"carol/{_name('pages-gated')}"
    owner.create_repo(repo_id)
    owner.create_commit(repo_id, [CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# Gated model\n\n![chart](coefficients.svg)\n"),
                                  CommitOperationAdd("coefficients.svg", CHART.encode()),
                                  CommitOperationAdd("config.json", b'{"secret": 1}')], commit_message="add")
    owner.update_repo_settings(repo_id, gated="auto")
    for viewer in (None, READ_TOKEN):
        doc = fetch(hub, f"/{repo_id}", token=viewer).dom
        assert doc.one("article", "card").one("h1").text == "Gated model" and doc.one("p", "notice")
        downloads = [a.attrs["href"] for a in doc.one("table", "file-list").all("a") if "/resolve/" in a.attrs["href"]]
        assert downloads == [f"/{repo_id}/resolve/main/README.md?download=true"]  # the card only, as the API allows
        assert "base64" not in (doc.one("article", "card").one("img").attrs.get("src") or "")  # not inlined
        blob = fetch(hub, f"/{repo_id}/blob/main/config.json", token=viewer)
        assert blob.status == 200 and b"secret" not in blob.body and not blob.dom.all("a", "download")
    doc = fetch(hub, f"/{repo_id}", token=OTHER_WRITER).dom
    assert file_rows(doc)["config.json"].one("td", "dl").one("a")
    assert doc.one("article", "card").one("img").attrs["src"].startswith("data:image/svg+xml;base64,")


# -- a hostile card ---------------------------------------------------------------------------------------
HOSTILE_CARD = """---
license: mit
tags: ["<script>alert('tag')</script>", "ok-tag"]
---
# Hostile <script>alert(1)</script> card

<script>alert(2)</script>
<img src=x onerror="alert(3)">
<svg onload=alert(4)><circle r=5 /></svg>
<iframe src="https://evil.example/"></iframe>
<style>body { display: none }</style>
<a href="javascript:alert(5)">raw link</a>

[md link](javascript:alert(6)) [mixed case](JaVaScRiPt:alert(7)) [entity](javascript&#58;alert(8))
[spaced](  javascript:alert(9)) [data](data:text/html;base64,PHNjcmlwdD4=) <javascript:alert(10)>
![img](javascript:alert(11)) [app](ms-msdt:-id%20PCWDiagnostic) [fine](https://example.org/docs) [relative](config.json)

<details>
<summary>Kept: bare safe tags</summary>

Inside <b>bold</b> <!-- a comment -->

</details>

![evil svg](evil.svg)
"""
EVIL_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(12)"><script>alert(13)</script></svg>'


def test_a_hostile_card_renders_inert(hub, api):
    """Raw HTML in a card is escaped (a short list of bare tags aside), `on...=` handlers never reach the page,
    links keep only http(s), mailto or relative targets (no `javascript:`, `data:` or app schemes such as
    `ms-msdt:`), and a repo's SVG is shown only through <img> (where it cannot run)."""
    repo_id = f"alice/{_name('pages-hostile')}"
    api.create_repo(repo_id)
    api.create_commit(repo_id, [CommitOperationAdd("README.md", HOSTILE_CARD.encode()),
                                CommitOperationAdd("config.json", b"{}"), CommitOperationAdd("evil.svg", EVIL_SVG)],
                      commit_message="hostile")
    page = fetch(hub, f"/{repo_id}")
    assert page.status == 200
    doc = page.dom
    nodes = list(doc.walk())
    assert not [n.tag for n in nodes if n.tag in ("script", "iframe", "svg", "object", "embed", "form")]
    assert [n.tag for n in nodes if n.tag == "style"] == ["style"]  # the page's own, in <head>
    assert not [(n.tag, k) for n in nodes for k in n.attrs if k.startswith("on") or k in ("style", "srcdoc")]
    urls = [v for n in nodes for k, v in n.attrs.items() if k in ("href", "src") and v]
    assert not [u for u in urls if u.replace(" ", "").lower().startswith(("javascript:", "data:text", "vbscript:"))]
    card = doc.one("article", "card")
    assert "<script>alert(2)</script>" in card.text and '<img src=x onerror="alert(3)">' in card.text  # as text
    assert card.one("h1").text == "Hostile <script>alert(1)</script> card"
    links = {a.text: a.attrs.get("href") for a in card.all("a")}
    assert links == {"fine": "https://example.org/docs", "relative": f"/{repo_id}/blob/main/config.json"}
    assert card.one("details").one("summary").text == "Kept: bare safe tags" and card.one("b").text == "bold"
    assert "a comment" not in card.text
    evil = [i for i in card.all("img") if i.attrs.get("alt") == "evil svg"][0]
    assert base64.b64decode(evil.attrs["src"].split(",", 1)[1]) == EVIL_SVG  # an image: its script cannot run
    assert "<script>alert('tag')</script>" in doc.one("ul", "chips").text and not doc.one("ul", "chips").all("script")


# -- routing ----------------------------------------------------------------------------------------------
def test_pages_never_shadow_the_api_and_unknown_pages_are_html_404s(hub, demo_model, tmp_path):
    """The API, /resolve and LFS answer as before (the client downloads through them); an unknown page path is a
    404 page, while an unknown API path stays a JSON 404."""
    repo_id, sha = demo_model
    assert fetch(hub, f"/api/models/{repo_id}").json()["sha"] == sha
    assert fetch(hub, f"/{repo_id}/resolve/main/config.json").body == b'{"model_type": "llama"}'
    path = hf_hub_download(repo_id, "coefficients.svg", revision="v1.0", cache_dir=tmp_path)
    assert Path(path).read_text() == CHART
    page = fetch(hub, f"/{repo_id}/no-such-page/x")
    assert page.status == 404 and page.headers["Content-Type"].startswith("text/html")
    api_miss = fetch(hub, f"/api/models/{repo_id}/no-such-endpoint")
    assert api_miss.status == 404 and api_miss.json() == {"error": f"Not found: GET /api/models/{repo_id}/no-such-endpoint"}
    assert fetch(hub, "/api").json()["error"] == "Not found: GET /api"
    assert fetch(hub, "/alice").status == 200 and repo_id in fetch(hub, "/alice").body.decode()


# -- a real browser -----------------------------------------------------------------------------------------
class DevTools:
    """One headless chromium driven over its DevTools pipe (`--remote-debugging-pipe`: it reads commands on fd 3
    and writes answers on fd 4, each a JSON message ended by NUL): no driver, no websocket, nothing to install."""

    def __init__(self, profile: Path, width: int, height: int):
        commands_in, self._commands = os.pipe()
        self._answers, answers_out = os.pipe()
        # The child's ends go above fd 9, so that a tiny exec shim can put them at 3 and 4 without one clobbering
        # the other (a shell cannot: dash redirects single-digit fds only).
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_in, answers_out)]
        os.close(commands_in)
        os.close(answers_out)
        args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]
        shim = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        self.proc = subprocess.Popen([sys.executable, "-c", shim, *map(str, ends), *args], pass_fds=ends,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ends:
            os.close(fd)
        self._id, self._buffer, self.events = 0, b"", []

    def send(self, method: str, session: str | None = None, timeout: float = 20, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read(timeout)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 20) -> dict:
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read(timeout))

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if not select.select([self._answers], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._answers)


def png_pixels(data: bytes) -> np.ndarray:
    """The pixels (height × width × RGB[A]) of an 8-bit, non-interlaced PNG, as chromium writes screenshots."""
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[pos + 8:pos + 21])
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    bpp = 3 if color == 2 else 4
    lines = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * bpp + 1)
    pixels, previous = np.zeros((height, width * bpp), np.uint8), np.zeros(width * bpp, np.uint8)
    for y, (kind, line) in enumerate(zip(lines[:, 0], lines[:, 1:])):  # each line's filter undone
        if kind == 0:
            row = line
        elif kind == 1:  # + the pixel to the left: a running sum, modulo 256
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # + the pixel above
            row = line + previous
        else:  # average or Paeth: each byte depends on the one just undone
            row, up = bytearray(line.tobytes()), previous.tobytes()
            for i in range(len(row)):
                left, above, corner = (row[i - bpp], up[i], up[i - bpp]) if i >= bpp else (0, up[i], 0)
                if kind == 3:
                    row[i] = (row[i] + (left + above) // 2) & 255
                else:
                    p = left + above - corner
                    pa, pb, pc = abs(p - left), abs(p - above), abs(p - corner)
                    row[i] = (row[i] + (left if pa <= pb and pa <= pc else above if pb <= pc else corner)) & 255
            row = np.frombuffer(bytes(row), np.uint8)
        pixels[y] = previous = row
    return pixels.reshape(height, width, bpp)[:, :, :3]


def colour_counts(png: bytes) -> dict[tuple[int, int, int], int]:
    """How many pixels of each colour a screenshot has."""
    rgb = png_pixels(png).astype(np.uint32)
    colours, counts = np.unique(rgb[:, :, 0] << 16 | rgb[:, :, 1] << 8 | rgb[:, :, 2], return_counts=True)
    return {(int(c) >> 16, int(c) >> 8 & 255, int(c) & 255): int(n) for c, n in zip(colours, counts)}


# What the test looks at, and how it finds it: CSS selectors of the page's own markup.
REGIONS = {"title": "h1.repo-title", "card title": "article.card h1", "chart": "article.card img",
           "file list": "table.file-list"}
MEASURE = """(async () => {
  const found = {};
  for (const [key, selector] of Object.entries(%s)) {  // one at a time: each scrolls the page
    const el = document.querySelector(selector);
    if (!el) { found[key] = null; continue; }
    el.scrollIntoView({block: "center"});
    if (el.tagName === "IMG") await el.decode().catch(() => null);  // decoded, or known undecodable
    const text = document.createRange();  // a heading's box is as wide as the page: its text's box is what shows
    text.selectNodeContents(el);
    const r = el.tagName === "H1" ? text.getBoundingClientRect() : el.getBoundingClientRect();
    const style = getComputedStyle(el);
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    found[key] = {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
                  on_top: el === hit || el.contains(hit), shown: style.visibility === "visible" && style.opacity !== "0",
                  decoded: el.tagName !== "IMG" || (el.complete && el.naturalWidth > 0), text: el.innerText || ""};
  }
  return JSON.stringify(found);
})()"""


def test_a_browser_shows_the_demo_model_page_title_chart_and_files(hub, demo_model, tmp_path):
    """The demo model's page in a real browser: its title, the card's λ chart and the file list are on screen.

    How "visible" is decided, robustly and without a driver library: chromium is driven over its DevTools pipe.
    For each region (found by the page's own CSS selectors) the page reports where it is laid out, whether it is
    the topmost element at its centre (nothing covers it), whether CSS hides it, and for the chart whether the
    image decoded (a blocked or undecodable image has no natural width: an SVG served with the wrong type, or a
    Content-Security-Policy refusing it, fails here). Then a screenshot of exactly that region is decoded (a
    small PNG reader below) and must show what it should: the chart's bar colour (chart.BAR_COLOR) over a large
    part of its area, and for the title and the file list enough pixels unlike their background (text drawn,
    not a blank box). One browser launch; the region screenshots are left in tmp_path to look at.
    """
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    repo_id, _ = demo_model
    browser = DevTools(tmp_path / "profile", 1280, 900)
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Page.enable", session)
        browser.send("Page.navigate", session, url=f"{hub.url}/{repo_id}")
        browser.wait_for("Page.loadEventFired")
        found = json.loads(browser.send("Runtime.evaluate", session, expression=MEASURE % json.dumps(REGIONS),
                                        returnByValue=True, awaitPromise=True)["result"]["value"])
        shots = {}
        for key, box in found.items():
            assert box is not None, f"the page has no {key} ({REGIONS[key]})"
            assert box["width"] >= 40 and box["height"] >= 16 and box["on_top"] and box["shown"], (key, box)
            clip = {k: box[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
            shots[key] = base64.b64decode(browser.send("Page.captureScreenshot", session, format="png", clip=clip,
                                                       captureBeyondViewport=True, optimizeForSpeed=True)["data"])
            (tmp_path / f"{key.replace(' ', '-')}.png").write_bytes(shots[key])
    finally:
        browser.close()
    assert repo_id.split("/")[1] in found["title"]["text"]
    assert found["card title"]["text"] == "Tiny-Llama-Chat" and found["chart"]["decoded"]
    assert "model.safetensors" in found["file list"]["text"] and "LFS" in found["file list"]["text"]
    bar = tuple(int(BAR_COLOR[i:i + 2], 16) for i in (1, 3, 5))
    chart = colour_counts(shots["chart"])
    assert chart.get(bar, 0) > 0.2 * sum(chart.values())  # the bars are drawn
    for key in ("title", "card title", "file list"):
        counts = colour_counts(shots[key])
        background = max(counts, key=counts.get)
        ink = sum(n for c, n in counts.items() if max(abs(a - b) for a, b in zip(c, background)) > 96)
        assert ink > 0.02 * sum(counts.values()), f"the {key} looks blank"
