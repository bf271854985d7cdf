"""Durable state of the local Hub: content-addressed blobs on disk, metadata in SQLite.

Blobs are written to a temp file, fsynced and renamed into `blobs/<aa>/<sha256>`, so a blob either exists
whole or not at all. Every commit is one SQLite transaction (`BEGIN IMMEDIATE`), so a crash leaves the old
or the new state of a branch, never a half commit, and two commits racing on one branch are serialized.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

# The .gitattributes the Hub commits into a new model repo: its LFS rules, which localhub/gitrules.py applies.
INITIAL_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz",
    "*.zip", "*.zst", "*tfevents*",
))
STALE_PARENT = "The branch was updated since you opened this page. Please refresh and try again."  # the Hub's 412
_REF_PREFIX = {"branch": "refs/heads/", "tag": "refs/tags/", "pr": "refs/pr/"}  # the store's ref kinds, as git names
_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL, private INTEGER NOT NULL,
    gated INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, creator TEXT NOT NULL DEFAULT '',
    UNIQUE(type, name));
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, sha1 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (
    sha TEXT PRIMARY KEY, repo_id INTEGER NOT NULL, parent TEXT, title TEXT NOT NULL, message TEXT NOT NULL,
    author TEXT NOT NULL, date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commit_files (
    commit_sha TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, lfs INTEGER NOT NULL,
    PRIMARY KEY (commit_sha, path));
CREATE TABLE IF NOT EXISTS refs (
    repo_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, sha TEXT NOT NULL,
    PRIMARY KEY (repo_id, kind, name));
CREATE TABLE IF NOT EXISTS discussions (
    repo_id INTEGER NOT NULL, num INTEGER NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
    is_pr INTEGER NOT NULL, status TEXT NOT NULL, author TEXT NOT NULL, created_at TEXT NOT NULL,
    base TEXT NOT NULL, PRIMARY KEY (repo_id, num));
"""


def now_iso() -> str:
    """Timestamp in the one format huggingface_hub parses: %Y-%m-%dT%H:%M:%S.fffZ."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    return git_sha1_of(len(data), [data])


def git_sha1_of(size: int, chunks: Iterable[bytes]) -> str:
    h = hashlib.sha1(b"blob %d\0" % size)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class StoreError(Exception):
    """A request the store refuses; `code` is the Hub's X-Error-Code (or None) and `status` the HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Repo:
    id: int
    type: str
    name: str
    private: bool
    gated: bool | str  # False, or the gate's mode: "auto" or "manual" (the column holds 0, 1 or 2)
    created_at: str
    creator: str = ""  # the user who created it ('' for repos of a store older than the column)

    @property
    def namespace(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    sha1: str  # git blob sha1 of the content
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The oid git stores: the content's blob sha1, or the LFS pointer's for LFS files."""
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.sha1

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.sha1


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str


@dataclass(frozen=True)
class FileOp:
    """One operation of a commit: add (sha256 of a stored blob) or delete a file or a folder."""

    kind: str  # "add" | "delete_file" | "delete_folder"
    path: str
    sha256: str | None = None
    lfs: bool = False


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "hub.sqlite"
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # executescript manages its own transaction
        self._migrate()

    # -- connections -------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes the write lock up front, serializing writers."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _read(self) -> sqlite3.Connection:
        return self._conn()

    def _migrate(self) -> None:
        """Bring a store made by an older version up to the current schema (columns added with defaults)."""
        self._conn().executescript(_ADDED_SCHEMA)  # tables added since: created when missing
        if "creator" in {r["name"] for r in self._read().execute("PRAGMA table_info(repos)")}:
            return
        with self._tx() as db:
            if "creator" not in {r["name"] for r in db.execute("PRAGMA table_info(repos)")}:
                db.execute("ALTER TABLE repos ADD COLUMN creator TEXT NOT NULL DEFAULT ''")

    # -- blobs ---------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        row = self._read().execute("SELECT size FROM blobs WHERE sha256=?", (sha256,)).fetchone()
        return row is not None and (size is None or row["size"] == size) and self.blob_path(sha256).exists()

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream(iter([data]), expected_size=len(data))

    def put_stream(
        self, chunks: Iterable[bytes], expected_size: int | None = None, expected_sha256: str | None = None
    ) -> str:
        """Store a blob from chunks; verify size and sha256 when given. Returns its sha256."""
        h256 = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h256.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            sha256 = h256.hexdigest()
            if expected_size is not None and size != expected_size:
                raise StoreError(400, f"size mismatch: expected {expected_size} bytes, received {size}")
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise StoreError(400, f"sha256 mismatch: expected {expected_sha256}, received {sha256}")
            # The git sha1 needs the size first, so it is computed in a second (page-cached) pass.
            with open(tmp, "rb") as f:
                sha1 = git_sha1_of(size, iter(lambda: f.read(1 << 20), b""))
            final = self.blob_path(sha256)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            tmp = None
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO blobs VALUES (?,?,?)", (sha256, size, sha1))
            return sha256
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def open_blob(self, sha256: str) -> BinaryIO:
        return open(self.blob_path(sha256), "rb")

    # -- repos ---------------------------------------------------------------------------------------------
    def get_repo(self, repo_type: str, name: str) -> Repo | None:
        """The repo NAME, found as the Hub finds it: ignoring case (the exact spelling first, for a store made
        before that, which may hold two names differing only in case)."""
        row = self._read().execute(
            "SELECT * FROM repos WHERE type=? AND name=? COLLATE NOCASE ORDER BY name = ? DESC LIMIT 1",
            (repo_type, name, name)).fetchone()
        return None if row is None else _repo(row)

    def create_repo(self, repo_type: str, name: str, private: bool, author: str) -> Repo:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM repos WHERE type=? AND name=? COLLATE NOCASE", (repo_type, name)).fetchone():
                raise StoreError(409, f"You already created this {repo_type} repo")
            cur = db.execute(
                "INSERT INTO repos (type, name, private, created_at, creator) VALUES (?,?,?,?,?)",
                (repo_type, name, int(private), now_iso(), author),
            )
            repo_id = cur.lastrowid
        blob = self.put_bytes(INITIAL_GITATTRIBUTES.encode())
        repo = self.get_repo(repo_type, name)
        assert repo is not None and repo.id == repo_id
        self.commit(repo, "main", [FileOp("add", ".gitattributes", blob)], "initial commit", "", author)
        return repo

    def delete_repo(self, repo: Repo) -> None:
        with self._tx() as db:
            shas = [r["sha"] for r in db.execute("SELECT sha FROM commits WHERE repo_id=?", (repo.id,))]
            db.executemany("DELETE FROM commit_files WHERE commit_sha=?", [(s,) for s in shas])
            for table in ("commits", "refs", "discussions"):
                db.execute(f"DELETE FROM {table} WHERE repo_id=?", (repo.id,))
            db.execute("DELETE FROM repos WHERE id=?", (repo.id,))

    def update_repo(self, repo: Repo, private: bool | None = None, gated: bool | str | None = None) -> None:
        """Set the repo's visibility and gate (GATED: False, "auto" or "manual"; True means "auto")."""
        with self._tx() as db:
            if private is not None:
                db.execute("UPDATE repos SET private=? WHERE id=?", (int(private), repo.id))
            if gated is not None:
                mode = "auto" if gated is True else gated or False
                db.execute("UPDATE repos SET gated=? WHERE id=?", (_GATED_MODES.index(mode), repo.id))

    # -- refs and revisions --------------------------------------------------------------------------------
    def refs(self, repo: Repo, kind: str) -> dict[str, str]:
        rows = self._read().execute(
            "SELECT name, sha FROM refs WHERE repo_id=? AND kind=? ORDER BY name", (repo.id, kind)
        )
        return {r["name"]: r["sha"] for r in rows}

    def resolve(self, repo: Repo, revision: str) -> str:
        """A branch, tag, `refs/heads|tags|pr/...` name or (a prefix of) a commit sha → commit sha."""
        db = self._read()
        for kind, name in _ref_candidates(revision):
            row = db.execute(
                "SELECT sha FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name)
            ).fetchone()
            if row:
                return row["sha"]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            rows = db.execute(
                "SELECT sha FROM commits WHERE repo_id=? AND sha LIKE ?", (repo.id, revision + "%")
            ).fetchall()
            if len(rows) == 1:
                return rows[0]["sha"]
        raise StoreError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def writable_ref(self, repo: Repo, revision: str) -> tuple[str, str]:
        """The (kind, name) of a branch or PR ref that a commit may move."""
        db = self._read()
        for kind, name in _ref_candidates(revision):
            if kind in ("branch", "pr") and db.execute(
                "SELECT 1 FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name)
            ).fetchone():
                return kind, name
        raise StoreError(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")

    def set_ref(self, repo: Repo, kind: str, name: str, sha: str, must_not_exist: bool = False) -> None:
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name)
            ).fetchone()
            if exists and must_not_exist:  # the Hub's text, with the full git ref name
                raise StoreError(409, f"Reference {_REF_PREFIX.get(kind, 'refs/')}{name} already exists")
            db.execute("INSERT OR REPLACE INTO refs VALUES (?,?,?,?)", (repo.id, kind, name, sha))

    def delete_ref(self, repo: Repo, kind: str, name: str) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name))
            if cur.rowcount == 0:
                raise StoreError(404, f"Invalid rev id: {name}", "RevisionNotFound")

    # -- commits and files ---------------------------------------------------------------------------------
    def get_commit(self, sha: str) -> Commit:
        row = self._read().execute("SELECT * FROM commits WHERE sha=?", (sha,)).fetchone()
        return Commit(row["sha"], row["parent"], row["title"], row["message"], row["author"], row["date"])

    def history(self, sha: str) -> Iterator[Commit]:
        current: str | None = sha
        while current:
            commit = self.get_commit(current)
            yield commit
            current = commit.parent

    def files(self, commit_sha: str) -> list[FileEntry]:
        rows = self._read().execute(
            "SELECT f.path, f.sha256, f.lfs, b.size, b.sha1 FROM commit_files f JOIN blobs b "
            "ON f.sha256 = b.sha256 WHERE f.commit_sha=? ORDER BY f.path",
            (commit_sha,),
        )
        return [FileEntry(r["path"], r["sha256"], r["size"], r["sha1"], bool(r["lfs"])) for r in rows]

    def file(self, commit_sha: str, path: str) -> FileEntry | None:
        r = self._read().execute(
            "SELECT f.path, f.sha256, f.lfs, b.size, b.sha1 FROM commit_files f JOIN blobs b "
            "ON f.sha256 = b.sha256 WHERE f.commit_sha=? AND f.path=?",
            (commit_sha, path),
        ).fetchone()
        return None if r is None else FileEntry(r["path"], r["sha256"], r["size"], r["sha1"], bool(r["lfs"]))

    def commit(
        self,
        repo: Repo,
        revision: str,
        ops: list[FileOp],
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
    ) -> str:
        """Apply ops on top of the head of a branch or PR ref in one transaction; returns the new commit sha.

        A new repo's first commit (revision "main" with no refs yet) creates the branch.
        """
        for op in ops:
            if op.kind == "add" and not self.has_blob(op.sha256 or ""):
                raise StoreError(400, f"File {op.path}: content {op.sha256} was not uploaded")
        with self._tx() as db:
            has_refs = db.execute("SELECT 1 FROM refs WHERE repo_id=?", (repo.id,)).fetchone()
            if has_refs:
                kind, name = self.writable_ref(repo, revision)
                head = db.execute(
                    "SELECT sha FROM refs WHERE repo_id=? AND kind=? AND name=?", (repo.id, kind, name)
                ).fetchone()["sha"]
            else:
                kind, name, head = "branch", "main", None
            if parent_commit and not (head or "").startswith(parent_commit.lower()):
                raise StoreError(412, STALE_PARENT)
            files: dict[str, tuple[str, int]] = {}
            if head:
                for r in db.execute("SELECT path, sha256, lfs FROM commit_files WHERE commit_sha=?", (head,)):
                    files[r["path"]] = (r["sha256"], r["lfs"])
            for op in ops:
                _apply(files, op)
            date = now_iso()
            seed = json.dumps([repo.id, head, sorted(files.items()), title, message, date, uuid.uuid4().hex])
            sha = hashlib.sha1(seed.encode()).hexdigest()
            db.execute("INSERT INTO commits VALUES (?,?,?,?,?,?,?)", (sha, repo.id, head, title, message, author, date))
            db.executemany(
                "INSERT INTO commit_files VALUES (?,?,?,?)",
                [(sha, path, s256, lfs) for path, (s256, lfs) in files.items()],
            )
            db.execute("INSERT OR REPLACE INTO refs VALUES (?,?,?,?)", (repo.id, kind, name, sha))
        return sha

    # -- discussions and pull requests ---------------------------------------------------------------------
    def create_discussion(
        self, repo: Repo, title: str, description: str, is_pr: bool, author: str, from_sha: str | None = None
    ) -> int:
        with self._tx() as db:
            row = db.execute("SELECT MAX(num) AS n FROM discussions WHERE repo_id=?", (repo.id,)).fetchone()
            num = (row["n"] or 0) + 1
            db.execute(
                "INSERT INTO discussions VALUES (?,?,?,?,?,?,?,?,?)",
                (repo.id, num, title, description, int(is_pr), "open", author, now_iso(), "refs/heads/main"),
            )
            if is_pr:
                start = from_sha or db.execute(
                    "SELECT sha FROM refs WHERE repo_id=? AND kind='branch' AND name='main'", (repo.id,)
                ).fetchone()["sha"]
                db.execute("INSERT INTO refs VALUES (?,?,?,?)", (repo.id, "pr", str(num), start))
        return num

    def discussion(self, repo: Repo, num: int) -> sqlite3.Row | None:
        return self._read().execute(
            "SELECT * FROM discussions WHERE repo_id=? AND num=?", (repo.id, num)
        ).fetchone()

    def discussions(self, repo: Repo) -> list[sqlite3.Row]:
        return self._read().execute(
            "SELECT * FROM discussions WHERE repo_id=? ORDER BY num DESC", (repo.id,)
        ).fetchall()


_GATED_MODES: tuple[bool | str, ...] = (False, "auto", "manual")  # by the `gated` column's value


def _repo(row: sqlite3.Row) -> Repo:
    gated = _GATED_MODES[row["gated"]] if row["gated"] in (0, 1, 2) else "auto"
    return Repo(row["id"], row["type"], row["name"], bool(row["private"]), gated, row["created_at"], row["creator"])


def _ref_candidates(revision: str) -> list[tuple[str, str]]:
    if revision.startswith("refs/heads/"):
        return [("branch", revision[len("refs/heads/") :])]
    if revision.startswith("refs/tags/"):
        return [("tag", revision[len("refs/tags/") :])]
    if revision.startswith("refs/pr/"):
        return [("pr", revision[len("refs/pr/") :])]
    return [("branch", revision), ("tag", revision)]


def _apply(files: dict[str, tuple[str, int]], op: FileOp) -> None:
    if op.kind == "add":
        files[op.path] = (op.sha256 or "", int(op.lfs))
    elif op.kind == "delete_file":
        doomed = [op.path] if op.path in files else [p for p in files if p.startswith(op.path + "/")]
        if not doomed:  # (a folder's path, without its trailing '/', deletes the folder: the Hub does)
            raise StoreError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
        for p in doomed:
            del files[p]
    elif op.kind == "delete_folder":
        prefix = op.path.rstrip("/") + "/"
        doomed = [p for p in files if p.startswith(prefix)]
        if not doomed:
            raise StoreError(404, f"A folder with this name doesn't exist: {op.path}", "EntryNotFound")
        for p in doomed:
            del files[p]
    else:  # pragma: no cover - the parser only produces the kinds above
        raise ValueError(op.kind)


# -- added endpoints' state: repo listing and moves, discussion events, squashes, LFS objects ---------------
# Tables added after the first release (`Store._migrate` creates them in an older store). The trigger drops a
# deleted repo's events: SQLite may give a new repo the deleted one's id, and it must start with none.
_ADDED_SCHEMA = """
CREATE TABLE IF NOT EXISTS discussion_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, repo_id INTEGER NOT NULL, num INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, author TEXT NOT NULL, created_at TEXT NOT NULL, data TEXT NOT NULL, oid TEXT);
CREATE INDEX IF NOT EXISTS discussion_events_by_discussion ON discussion_events (repo_id, num);
CREATE TRIGGER IF NOT EXISTS discussion_events_of_deleted_repo AFTER DELETE ON repos
BEGIN DELETE FROM discussion_events WHERE repo_id = OLD.id; END;
CREATE TABLE IF NOT EXISTS repo_redirects (
    type TEXT NOT NULL, old_name TEXT NOT NULL COLLATE NOCASE, repo_id INTEGER NOT NULL, PRIMARY KEY (type, old_name));
CREATE TRIGGER IF NOT EXISTS repo_redirects_of_deleted_repo AFTER DELETE ON repos
BEGIN DELETE FROM repo_redirects WHERE repo_id = OLD.id; END;
"""


@dataclass(frozen=True)
class Event:
    """A stored event of a discussion (a comment, a status or title change); DATA is the Hub's event `data`."""

    id: str
    type: str
    author: str
    created_at: str
    data: dict
    oid: str | None = None  # the merge commit, for a "merged" status change


@dataclass(frozen=True)
class LfsObject:
    """An LFS object some commit of a repo holds."""

    sha256: str
    size: int
    path: str  # the path of its first commit's file
    pushed_at: str  # the date of the first commit holding it


def list_repos(store: Store, repo_type: str) -> list[Repo]:
    return [_repo(r) for r in store._read().execute("SELECT * FROM repos WHERE type=? ORDER BY name", (repo_type,))]


def rename_repo(store: Store, repo: Repo, new_name: str) -> Repo:
    """REPO under NEW_NAME; its refs, commits and discussions follow (they are keyed by its id), and its old name
    leads to it (`renamed_repo`) until a repo takes that name. 409 when NEW_NAME is taken."""
    with store._tx() as db:
        if db.execute("SELECT 1 FROM repos WHERE type=? AND name=? COLLATE NOCASE AND id != ?",
                      (repo.type, new_name, repo.id)).fetchone():  # (ids ignore case; a repo may change its own)
            raise StoreError(409, f"A {repo.type} repository called {new_name} already exists")  # the Hub's text
        db.execute("UPDATE repos SET name=? WHERE id=?", (new_name, repo.id))
        db.execute("DELETE FROM repo_redirects WHERE type=? AND old_name=? COLLATE NOCASE", (repo.type, new_name))
        if repo.name.casefold() != new_name.casefold():
            db.execute("INSERT OR REPLACE INTO repo_redirects VALUES (?,?,?)", (repo.type, repo.name, repo.id))
    moved = store.get_repo(repo.type, new_name)
    assert moved is not None
    return moved


def renamed_repo(store: Store, repo_type: str, old_name: str) -> Repo | None:
    """The repo once called OLD_NAME (moved since), when no repo has that name now."""
    row = store._read().execute(
        "SELECT r.* FROM repo_redirects d JOIN repos r ON r.id = d.repo_id WHERE d.type=? AND d.old_name=? "
        "COLLATE NOCASE", (repo_type, old_name)).fetchone()
    return None if row is None or store.get_repo(repo_type, old_name) else _repo(row)


def discussion_events(store: Store, repo: Repo, num: int) -> list[Event]:
    rows = store._read().execute(
        "SELECT * FROM discussion_events WHERE repo_id=? AND num=? ORDER BY seq", (repo.id, num))
    return [Event(r["id"], r["type"], r["author"], r["created_at"], json.loads(r["data"]), r["oid"]) for r in rows]


def record_discussion_events(
    store: Store, repo: Repo, num: int, new: Iterable[Event] = (), updated: Iterable[Event] = (), *,
    title: str | None = None, status: str | None = None, from_statuses: Iterable[str] | None = None,
) -> None:
    """In one transaction: add the NEW events (one already stored, by id, is skipped), replace the data of the
    UPDATED ones, set the discussion's TITLE and STATUS. 409 when its status is not one of FROM_STATUSES (it
    changed since the caller looked)."""
    with store._tx() as db:
        row = db.execute("SELECT status FROM discussions WHERE repo_id=? AND num=?", (repo.id, num)).fetchone()
        if row is None:
            raise StoreError(404, f"Discussion {num} not found")
        if from_statuses is not None and row["status"] not in set(from_statuses):
            raise StoreError(409, f"Discussion {num} is {row['status']} now; refresh and try again")
        for e in new:
            db.execute(
                "INSERT OR IGNORE INTO discussion_events (repo_id, num, id, type, author, created_at, data, oid) "
                "VALUES (?,?,?,?,?,?,?,?)", (repo.id, num, e.id, e.type, e.author, e.created_at, json.dumps(e.data), e.oid))
        for e in updated:
            db.execute("UPDATE discussion_events SET data=? WHERE repo_id=? AND num=? AND id=?",
                       (json.dumps(e.data), repo.id, num, e.id))
        for column, value in (("title", title), ("status", status)):
            if value is not None:
                db.execute(f"UPDATE discussions SET {column}=? WHERE repo_id=? AND num=?", (value, repo.id, num))


def move_ref(store: Store, repo: Repo, kind: str, name: str, expected: str, new: str) -> None:
    """Point the ref at NEW if it still points at EXPECTED; 412 when it moved meanwhile."""
    with store._tx() as db:
        cur = db.execute("UPDATE refs SET sha=? WHERE repo_id=? AND kind=? AND name=? AND sha=?",
                         (new, repo.id, kind, name, expected))
        if cur.rowcount == 0:
            raise StoreError(412, f"A commit has happened on {name} since. Please refresh and try again.")


def squash_branch(store: Store, repo: Repo, branch: str, title: str, message: str, author: str,
                  kind: str = "branch") -> str:
    """Replace the history of BRANCH (a ref of KIND: "branch" or "pr") by one commit without parent holding its
    head's files; returns its sha."""
    with store._tx() as db:
        head = db.execute("SELECT sha FROM refs WHERE repo_id=? AND kind=? AND name=?",
                          (repo.id, kind, branch)).fetchone()
        if head is None:
            raise StoreError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files = db.execute("SELECT path, sha256, lfs FROM commit_files WHERE commit_sha=?", (head["sha"],))
        sha = _insert_commit(db, repo, None, [tuple(f) for f in files], title, message, author, now_iso())
        db.execute("UPDATE refs SET sha=? WHERE repo_id=? AND kind=? AND name=?", (sha, repo.id, kind, branch))
    return sha


def lfs_objects(store: Store, repo: Repo) -> list[LfsObject]:
    """The LFS objects REPO's commits hold, each with the path and date of the first commit holding it."""
    rows = store._read().execute(
        "SELECT f.sha256, b.size, f.path, c.date FROM commit_files f JOIN commits c ON c.sha = f.commit_sha "
        "JOIN blobs b ON b.sha256 = f.sha256 WHERE c.repo_id=? AND f.lfs=1 ORDER BY c.date, f.path", (repo.id,))
    first: dict[str, LfsObject] = {}
    for r in rows:
        first.setdefault(r["sha256"], LfsObject(r["sha256"], r["size"], r["path"], r["date"]))
    return list(first.values())


def delete_lfs_objects(store: Store, repo: Repo, sha256s: Iterable[str], rewrite_history: bool) -> list[str]:
    """Remove the LFS objects SHA256S from REPO: its commits drop the files holding one. REWRITE_HISTORY: those
    commits and their descendants get new ids (refs follow; the old ids are gone), as a history rewrite gives;
    else the commits keep their ids. An object's bytes are deleted once no commit of any repo holds them (blobs
    are shared between repos here). Returns the objects REPO held (others are ignored)."""
    with store._tx() as db:
        held = sorted(s for s in set(sha256s) if db.execute(
            "SELECT 1 FROM commit_files f JOIN commits c ON c.sha = f.commit_sha WHERE c.repo_id=? AND f.lfs=1 "
            "AND f.sha256=? LIMIT 1", (repo.id, s)).fetchone())
        if rewrite_history:
            _rewrite_without(db, repo, set(held))
        else:
            for s in held:
                db.execute("DELETE FROM commit_files WHERE lfs=1 AND sha256=? AND commit_sha IN "
                           "(SELECT sha FROM commits WHERE repo_id=?)", (s, repo.id))
        unused = [s for s in held if not db.execute("SELECT 1 FROM commit_files WHERE sha256=? LIMIT 1", (s,)).fetchone()]
        for s in unused:
            db.execute("DELETE FROM blobs WHERE sha256=?", (s,))
    for s in unused:  # after the commit: a crash in between leaves a file no row names, never a row without file
        with contextlib.suppress(FileNotFoundError):
            store.blob_path(s).unlink()
    return held


def _rewrite_without(db: sqlite3.Connection, repo: Repo, doomed: set[str]) -> None:
    """Rewrite REPO's history without the LFS files holding a DOOMED object: each commit holding one, and each
    descendant of one, is replaced by a commit with a new id (same message, author and date); refs and merge
    records follow; the replaced commits are deleted."""
    commits = {r["sha"]: r for r in db.execute("SELECT * FROM commits WHERE repo_id=?", (repo.id,))}
    holding = {r["commit_sha"] for s in doomed for r in db.execute(
        "SELECT f.commit_sha FROM commit_files f JOIN commits c ON c.sha = f.commit_sha WHERE c.repo_id=? "
        "AND f.lfs=1 AND f.sha256=?", (repo.id, s))}
    children: dict[str | None, list[str]] = {}
    for sha, c in commits.items():
        children.setdefault(c["parent"] if c["parent"] in commits else None, []).append(sha)
    renamed: dict[str, str] = {}
    todo = list(children.get(None, []))  # parents before children: a child needs its parent's new id
    while todo:
        sha = todo.pop()
        c = commits[sha]
        parent = renamed.get(c["parent"], c["parent"])
        if sha in holding or parent != c["parent"]:
            kept = [(f["path"], f["sha256"], f["lfs"])
                    for f in db.execute("SELECT path, sha256, lfs FROM commit_files WHERE commit_sha=?", (sha,))
                    if not (f["lfs"] and f["sha256"] in doomed)]
            renamed[sha] = _insert_commit(db, repo, parent, kept, c["title"], c["message"], c["author"], c["date"])
        todo.extend(children.get(sha, []))
    for old, new in renamed.items():
        db.execute("UPDATE refs SET sha=? WHERE repo_id=? AND sha=?", (new, repo.id, old))
        db.execute("UPDATE discussion_events SET oid=? WHERE repo_id=? AND oid=?", (new, repo.id, old))
        db.execute("DELETE FROM commit_files WHERE commit_sha=?", (old,))
        db.execute("DELETE FROM commits WHERE sha=?", (old,))


def _insert_commit(db: sqlite3.Connection, repo: Repo, parent: str | None, files: list[tuple], title: str,
                   message: str, author: str, date: str) -> str:
    """Insert a commit of FILES ((path, sha256, lfs) tuples); its sha is random, as `Store.commit`'s are."""
    files = sorted(files)
    seed = json.dumps([repo.id, parent, files, title, message, date, uuid.uuid4().hex])
    sha = hashlib.sha1(seed.encode()).hexdigest()
    db.execute("INSERT INTO commits VALUES (?,?,?,?,?,?,?)", (sha, repo.id, parent, title, message, author, date))
    db.executemany("INSERT INTO commit_files VALUES (?,?,?,?)", [(sha, *f) for f in files])
    return sha
