"""The page handlers: a repo's card, its files, one file, its commits; the list of repos.

They follow the API's access rules (hub.py) through the same calls: a private repo the request cannot see is
a 404 page, exactly like a repo that does not exist, and only the Authorization header identifies the
viewer (a `?token=` in the URL means nothing). A gated repo shows its card and file list to everyone, but its
files' contents and download links only to those who may download them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import islice

from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.pages import cardhtml
from chatvector.localhub.pages.render import PAGE_HEADERS, RepoLinks, error_page, page
from chatvector.localhub.protocol import HubHTTPError, Request, Response
from chatvector.localhub.storage import Commit, FileEntry, Repo, StoreError, list_repos

API_PREFIXES = ("api", "lfs-upload")  # paths under these are the API's: their errors stay JSON
TYPE_LABEL = {"model": "Model", "dataset": "Dataset", "space": "Space", "kernel": "Kernel"}
RECENT_COMMITS = 5  # on the repo's page
COMMITS_PER_PAGE = 50
MAX_TEXT_BYTES = 512 * 1024  # a file shown as text on its page at most
ANY_GATED_FILE = ""  # a path that is not one of the files a gated repo lets everyone download (its card)


def _is_api_path(req: Request) -> bool:
    return bool(req.segments) and req.segments[0] in API_PREFIXES


def html_errors(handler):
    """Errors as HTML pages (with the API's error headers), except on the API's paths, which keep JSON."""
    @functools.wraps(handler)
    def wrapper(hub: Hub, req: Request, **params) -> Response:
        try:
            return handler(hub, req, **params)
        except StoreError as err:
            error = HubHTTPError(err.status, err.message, err.code)
        except HubHTTPError as err:
            error = err
        if _is_api_path(req):
            raise error
        return error_page(error)
    return wrapper


@dataclass(frozen=True)
class Entry:
    """A row of a file list: a folder or a file."""

    name: str  # relative to the folder listed
    href: str
    folder: bool
    size: int = 0
    lfs: bool = False
    download: str | None = None  # None: a folder, or the viewer may not download it


# -- helpers ---------------------------------------------------------------------------------------------
def _may_download(hub: Hub, req: Request, repo: Repo, path: str) -> bool:
    try:
        hub.check_download(req, repo, path)
    except HubHTTPError:
        return False
    return True


def _entries(hub: Hub, req: Request, repo: Repo, revision: str, files: list[FileEntry], folder: str) -> list[Entry]:
    """The folders and files directly in FOLDER, folders first, as the Hub's file list shows them."""
    links = RepoLinks(repo.type, repo.name)
    prefix = f"{folder}/" if folder else ""
    folders: dict[str, Entry] = {}
    rows = []
    for f in files:
        if not f.path.startswith(prefix):
            continue
        first, _, rest = f.path[len(prefix):].partition("/")
        if rest:
            folders.setdefault(first, Entry(first, links.tree(revision, prefix + first), folder=True))
        else:
            download = links.resolve(revision, f.path) if _may_download(hub, req, repo, f.path) else None
            rows.append(Entry(first, links.blob(revision, f.path), False, f.size, f.lfs, download))
    return [*sorted(folders.values(), key=lambda e: e.name), *rows]


def _context(hub: Hub, req: Request, repo: Repo, tab: str) -> dict:
    """What every page of a repo shows at its top."""
    return {"repo": repo, "links": RepoLinks(repo.type, repo.name), "type_label": TYPE_LABEL[repo.type], "tab": tab,
            "gated_for_viewer": repo.gated and not _may_download(hub, req, repo, ANY_GATED_FILE)}


def _shown_revision(revision: str, sha: str) -> str:
    return sha[:7] if revision == sha or (len(revision) >= 7 and sha.startswith(revision)) else revision


# -- pages -----------------------------------------------------------------------------------------------
@html_errors
def repo_page(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    """`/{repo}`: the card (metadata chips, rendered body, chart), the file list and the last commits."""
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, "main")
    files = hub.store.files(sha)
    card = None
    readme = next((f for f in files if f.path == "README.md"), None)
    if readme is not None:
        text = _read(hub, readme, cardhtml.MAX_CARD_BYTES + 1).decode("utf-8", "replace")
        card = cardhtml.render(text, _repo_files(hub, req, repo, files))
    return page("repo.html", **_context(hub, req, repo, "card"), card=card, sha=sha,
                entries=_entries(hub, req, repo, "main", files, ""), file_count=len(files),
                total_size=sum(f.size for f in files), commits=list(islice(hub.store.history(sha), RECENT_COMMITS)))


@html_errors
def tree_page(hub: Hub, req: Request, repo_type: str, name: str, revision: str, path: str) -> Response:
    """`/{repo}/tree/{rev}[/{path}]`: the folders and files of a revision or one of its folders."""
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    folder = path.strip("/")
    files = hub.store.files(sha)
    links = RepoLinks(repo.type, repo.name)
    if folder and any(f.path == folder for f in files):  # a file: its own page
        return Response(302, headers={**PAGE_HEADERS, "Location": links.blob(revision, folder)})
    if folder and not any(f.path.startswith(folder + "/") for f in files):
        raise HubHTTPError(404, f"Path {folder} does not exist at revision {revision}", "EntryNotFound")
    crumbs, so_far = [], []
    for part in folder.split("/") if folder else []:
        so_far.append(part)
        crumbs.append((part, links.tree(revision, "/".join(so_far))))
    return page("tree.html", **_context(hub, req, repo, "files"), revision=revision, sha=sha,
                shown_revision=_shown_revision(revision, sha), crumbs=crumbs, commit=hub.store.get_commit(sha),
                entries=_entries(hub, req, repo, revision, files, folder),
                branches=hub.store.refs(repo, "branch"), tags=hub.store.refs(repo, "tag"))


@html_errors
def blob_page(hub: Hub, req: Request, repo_type: str, name: str, revision: str, path: str) -> Response:
    """`/{repo}/blob/{rev}/{path}`: a text file's content (escaped), or a binary or LFS file's size, sha256 and
    download link; for a gated repo's viewer without access, the size alone."""
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    entry = hub.store.file(sha, path)
    if entry is None:
        raise HubHTTPError(404, f"Entry not found: {path} at {revision}", "EntryNotFound")
    links = RepoLinks(repo.type, repo.name)
    allowed = _may_download(hub, req, repo, path)
    text = image = None
    if allowed and not entry.lfs and entry.size <= MAX_TEXT_BYTES:
        data = _read(hub, entry)
        text = _as_text(data)
        image = cardhtml.data_uri(path, data)
    parent = path.rpartition("/")[0]
    crumbs, so_far = [], []
    for part in parent.split("/") if parent else []:
        so_far.append(part)
        crumbs.append((part, links.tree(revision, "/".join(so_far))))
    return page("blob.html", **_context(hub, req, repo, "files"), revision=revision, sha=sha,
                shown_revision=_shown_revision(revision, sha), path=path, file_name=path.rpartition("/")[2],
                crumbs=crumbs, entry=entry, allowed=allowed, text=text, image=image,
                download=links.resolve(revision, path) if allowed else None)


@html_errors
def commit_page(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    """`/{repo}/commit/{sha}`: title, message, author, date, parent and the files it changed."""
    repo = hub.repo_for_read(req, repo_type, name)
    commit = hub.store.get_commit(hub.resolve(repo, revision))
    return page("commit.html", **_context(hub, req, repo, "commits"), commit=commit,
                changes=_changes(hub, commit))


@html_errors
def commits_page(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    """`/{repo}/commits/{rev}`: the history from a revision, newest first, COMMITS_PER_PAGE a page (`?p=N`)."""
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    number = req.int_param("p", 0)
    start = number * COMMITS_PER_PAGE
    shown = list(islice(hub.store.history(sha), start, start + COMMITS_PER_PAGE + 1))
    links = RepoLinks(repo.type, repo.name)
    older = f"{links.commits(revision)}?p={number + 1}" if len(shown) > COMMITS_PER_PAGE else None
    newer = None if number == 0 else links.commits(revision) + (f"?p={number - 1}" if number > 1 else "")
    return page("commits.html", **_context(hub, req, repo, "commits"), revision=revision,
                shown_revision=_shown_revision(revision, sha), commits=shown[:COMMITS_PER_PAGE], older=older,
                newer=newer)


@html_errors
def listing(hub: Hub, req: Request, repo_type: str | None = None, namespace: str | None = None) -> Response:
    """`/`, `/models`, `/datasets`..., `/{namespace}`: the repos the request may see, recently updated first."""
    if namespace is not None and namespace in API_PREFIXES:
        raise HubHTTPError(404, f"Not found: {req.method} /{'/'.join(req.segments)}")
    rows = []
    for repo in (r for t in PREFIX for r in list_repos(hub.store, t)):
        if (repo_type and repo.type != repo_type) or (namespace and repo.namespace != namespace):
            continue
        if hub.can_see(req.user, repo):
            head = hub.store.get_commit(hub.resolve(repo, "main"))
            rows.append((head.date, repo, RepoLinks(repo.type, repo.name)))
    if namespace is not None and not rows and namespace not in hub.orgs:
        raise HubHTTPError(404, f"{namespace} has no repos here")
    rows.sort(key=lambda row: row[0], reverse=True)
    heading = (f"{TYPE_LABEL[repo_type]}s" if repo_type else "Repositories") + (f" of {namespace}" if namespace else "")
    return page("listing.html", heading=heading, rows=rows, type_label=TYPE_LABEL)


@html_errors
def not_found(hub: Hub, req: Request, path: str) -> Response:
    """Any other GET: the API's 404 on its own paths (JSON), a 404 page elsewhere."""
    raise HubHTTPError(404, f"Not found: {req.method} /{'/'.join(req.segments)}")


# -- reading the store -----------------------------------------------------------------------------------
def _read(hub: Hub, entry: FileEntry, limit: int = -1) -> bytes:
    """The file's bytes (the first LIMIT of them)."""
    with hub.store.open_blob(entry.sha256) as fh:
        return fh.read(limit)


def _as_text(data: bytes) -> str | None:
    """DATA as text, or None when it looks binary (a NUL byte, or not UTF-8)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _repo_files(hub: Hub, req: Request, repo: Repo, files: list[FileEntry]) -> cardhtml.RepoFiles:
    by_path = {f.path: f for f in files}

    def read(path: str) -> bytes | None:
        entry = by_path.get(path)
        return _read(hub, entry) if entry and _may_download(hub, req, repo, path) else None

    return cardhtml.RepoFiles(RepoLinks(repo.type, repo.name), "main", {f.path: f.size for f in files}, read)


def _changes(hub: Hub, commit: Commit) -> list[tuple[str, str, FileEntry]]:
    """(path, "added" | "modified" | "deleted", the file) for each file COMMIT changed."""
    new = {f.path: f for f in hub.store.files(commit.sha)}
    old = {f.path: f for f in hub.store.files(commit.parent)} if commit.parent else {}
    changes = []
    for path in sorted(new.keys() | old.keys()):
        before, after = old.get(path), new.get(path)
        if before is None:
            changes.append((path, "added", after))
        elif after is None:
            changes.append((path, "deleted", before))
        elif before.sha256 != after.sha256:
            changes.append((path, "modified", after))
    return changes

