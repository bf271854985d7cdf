"""Pin a recipe's checkpoints and list their files; fetch the small metadata files, never weights.

A Hub source becomes `repo_id@<40-hex sha>`, with its file listing (sizes, LFS sha256, git blob ids) from one
`model_info` call; its metadata files (config, tokenizer, index, card) are downloaded into the HF cache at that
sha, and its safetensors headers are read with HTTP range requests. A `path:` source is read in place.

Nothing a source says is trusted: a file name the run would read (from the listing or the index's weight_map)
must be a plain relative path, every safetensors header is checked as strictly as the safetensors library checks
it (`check_safetensors_header`, the one validator: the merge engine's parser uses it too), and the index must
agree with the shards' headers. Each problem is one line naming the source and the file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import (
    CONFIG_FILE,
    DTYPE_BY_CODE,
    METADATA_PATTERNS,
    SMALL_FILE_BYTES,
    WEIGHTS_INDEX_FILE,
    summarize,
)
from chatvector.errors import FieldError, FieldErrors
from chatvector.hub.client import hub_call, quiet_progress
from chatvector.recipe.recipe import Source

if TYPE_CHECKING:
    from huggingface_hub import HfApi

_SKIPPED_LOCAL_DIRS = (".cache", ".git")  # huggingface_hub's local_dir metadata, a git clone's objects


@dataclass(frozen=True)
class RepoFile:
    """One file of a checkpoint, as its listing describes it."""

    path: str
    size: int
    sha256: str | None = None  # LFS files on the Hub: from the listing, no download needed
    blob_id: str | None = None  # the git blob id (the Hub's listing; computed for small local files)
    mtime_ns: int | None = None  # local files

    @property
    def identity(self) -> str:
        """What tells that a file still has the same content: its LFS sha256, its git blob id, or, for a
        large local file, its size and modification time."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.blob_id:
            return f"git:{self.blob_id}"
        return f"local:{self.size}:{self.mtime_ns}"


@dataclass
class ResolvedSource:
    """A checkpoint pinned to one commit (Hub) or one folder (local), with its file listing."""

    role: str  # the recipe field path: "base", "vectors[1].chat", "cp"
    source: Source
    sha: str | None  # 40-hex commit for Hub sources, None for local folders
    folder: Path  # local folder holding the metadata files (and, once fetched, the weights)
    files: dict[str, RepoFile] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.source.path is not None

    @property
    def label(self) -> str:
        """`repo@sha` for Hub sources, the folder for local ones."""
        return str(self.source.path) if self.is_local else f"{self.source.repo_id}@{self.sha}"

    @property
    def field(self) -> str:
        """The recipe field that names this checkpoint: "cp.repo_id" or "cp.path"."""
        return f"{self.role}.{'path' if self.is_local else 'repo_id'}"

    def file_path(self, name: str) -> Path:
        return self.folder / name


def resolve_source(api: "HfApi", role: str, source: Source) -> ResolvedSource:
    """Pin a source and fetch its metadata files (never its weights). Raises FieldError / HubError."""
    if source.path is not None:
        return _resolve_local(role, source)
    repo = source.repo_id
    with hub_call(api, repo, field=role, revision=source.revision):
        info = api.model_info(repo, revision=source.revision, files_metadata=True)
        files = hub_listing(info)
        wanted = [name for name in files if any(fnmatch.fnmatch(name, p) for p in METADATA_PATTERNS)]
        # A name that is not a plain relative path is refused, never downloaded: `..` or an absolute name would
        # leave the cache folder (such a name is "read" wherever it points), a backslash or a control character
        # means something else on another system.
        read = set(wanted)
        refused = {name: why for name in files if (why := bad_file_name(name)) and (name in read or _escapes(name))}
        wanted = [name for name in wanted if name not in refused]
        with quiet_progress():
            folder = Path(api.snapshot_download(repo, revision=info.sha, allow_patterns=wanted or [CONFIG_FILE]))
    resolved = ResolvedSource(role, source, info.sha, folder, files)
    problems = [(resolved.field, f"{resolved.label}: refusing to read {_short(name)} from the repository's listing: "
                                 f"the name {why}") for name, why in refused.items()]
    _raise_all(problems + _weight_map_name_problems(resolved))
    return resolved


def hub_listing(info) -> dict[str, RepoFile]:
    """The files of a `model_info(..., files_metadata=True)` answer."""
    return {s.rfilename: RepoFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
            for s in info.siblings or []}


def _resolve_local(role: str, source: Source) -> ResolvedSource:
    folder = Path(source.path)
    if not folder.is_dir():
        raise FieldError(f"{role}.path", f"folder {folder} does not exist")
    resolved = ResolvedSource(role, source, None, folder, list_local_files(folder))
    _raise_all(_weight_map_name_problems(resolved))
    return resolved


# -- file names ------------------------------------------------------------------------------------------------
def bad_file_name(name: str) -> str | None:
    """Why `name` is not a plain relative file name of a repository ("is absolute", "has a '..' segment", ...), or
    None when it is one."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "has a NUL byte"
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return f"has a control character ({control!r})"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha()):
        return "is absolute"
    if "\\" in name:
        return "has a backslash (a path separator on Windows; the Hub separates folders with '/')"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' segment (it would point outside the repository)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' segment"
    return None


def _escapes(name: str) -> bool:
    """Whether `folder / name` may lie outside the folder."""
    return name.startswith("/") or ".." in name.replace("\\", "/").split("/")


def _read_weight_map(resolved: ResolvedSource) -> dict[str, str] | None:
    """The index's weight_map when it is a JSON object of file names; None without one (checkpoint.py reports a
    malformed index)."""
    path = resolved.file_path(WEIGHTS_INDEX_FILE)
    if WEIGHTS_INDEX_FILE not in resolved.files or not path.is_file():
        return None
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map")
    except (ValueError, UnicodeDecodeError, AttributeError, OSError):
        return None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return None
    return weight_map


def _weight_map_name_problems(resolved: ResolvedSource) -> list[tuple[str, str]]:
    """One (field, line) per file name of the index's weight_map that is not a plain relative name."""
    by_file: dict[str, list[str]] = {}
    for tensor, file in (_read_weight_map(resolved) or {}).items():
        if bad_file_name(file):
            by_file.setdefault(file, []).append(tensor)
    problems = []
    for file, tensors in by_file.items():
        more = f" (and {len(tensors) - 1} more tensor{'s' if len(tensors) > 2 else ''})" if len(tensors) > 1 else ""
        problems.append((resolved.field, f"{resolved.label}: {WEIGHTS_INDEX_FILE} maps {_short(tensors[0])}{more} to "
                                         f"{_short(file)}: the name {bad_file_name(file)}"))
    return problems


def _raise_all(problems: list[tuple[str, str]]) -> None:
    if len(problems) == 1:
        raise FieldError(*problems[0])
    if problems:
        raise FieldErrors(problems)


def list_local_files(folder: Path) -> dict[str, RepoFile]:
    """Every file under `folder` (not inside its own .cache or .git), with small files' git blob ids."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in _SKIPPED_LOCAL_DIRS or not path.is_file():
            continue
        stat = path.stat()
        name = relative.as_posix()
        blob = git_blob_id(path, stat.st_size) if stat.st_size < SMALL_FILE_BYTES else None
        files[name] = RepoFile(name, stat.st_size, None, blob, stat.st_mtime_ns)
    return files


def git_blob_id(path: Path, size: int | None = None) -> str:
    """The id git (and the Hub's listing) gives a file stored without LFS."""
    size = os.path.getsize(path) if size is None else size
    digest = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors_headers(api: "HfApi", resolved: ResolvedSource, names: list[str]) -> dict:
    """{file: {tensor: (dtype code, shape)}} for the named safetensors files, without downloading them; each
    file's tensors in the order of their bytes (so a merge that follows it reads each file front to back).

    Every header is checked (`check_safetensors_header`), and the index, when there is one, against them; raises
    FieldError (FieldErrors: one line per bad file) naming the source and the file."""
    out: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    problems: list[tuple[str, str]] = []

    def check(name: str, size: int, read) -> None:
        try:
            entries = check_safetensors_header(size, read)
        except HeaderProblem as err:
            problems.append((resolved.field, f"{resolved.label}: {name}: {err}"))
            return
        out[name] = {t: (e.dtype, e.shape) for t, e in entries.items()}

    if resolved.is_local:
        for name in names:
            path = resolved.file_path(name)
            try:
                with open(path, "rb") as f:
                    check(name, os.fstat(f.fileno()).st_size, lambda start, n, fd=f.fileno(): os.pread(fd, n, start))
            except OSError as err:
                problems.append((resolved.field, f"{resolved.label}: {name}: cannot read it: {err.strerror or err}"))
                continue
            if name in out:
                problem = _library_opinion(path)
                if problem:
                    del out[name]
                    problems.append((resolved.field, f"{resolved.label}: {name}: {problem}"))
    else:
        with hub_call(api, resolved.source.repo_id, field=resolved.role, revision=resolved.sha):
            for name in names:
                listed = resolved.files.get(name)
                check(name, listed.size if listed else 0, _hub_reader(api, resolved, name))
    if not problems:
        problems += _index_problems(resolved, out)
    _raise_all(problems)
    return out


def _library_opinion(path: Path) -> str | None:
    """What the safetensors library says is wrong with a local file that our checks passed (None: nothing)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            f.keys()
    except Exception as err:  # noqa: BLE001 - the library's errors name what is wrong
        text = str(err).strip()
        return f"the safetensors library cannot read it: {text.splitlines()[0] if text else type(err).__name__}"
    return None


HEADER_PROBE = 100_000  # the first range request for a header (as huggingface_hub's parser asks); most fit


def _hub_reader(api: "HfApi", resolved: ResolvedSource, name: str) -> Callable[[int, int], bytes]:
    """read(start, n) of a file of a Hub source, with range requests (the first one probes HEADER_PROBE bytes).
    The body is read only as far as asked, so not even a server that ignores Range sends more."""
    from huggingface_hub import hf_hub_url

    from chatvector.hub import probes
    from chatvector.hub.retry import with_retries

    url = hf_hub_url(resolved.source.repo_id, name, revision=resolved.sha, endpoint=api.endpoint)
    headers = api._build_hf_headers()
    size = resolved.files[name].size if name in resolved.files else 0
    probe: list[bytes] = []

    def get(start: int, end: int) -> bytes:
        # One policy for every try (chatvector.hub.retry): after a 429/5xx or a connection dropped mid-body the
        # range is read again from `start`, a bounded number of times.
        return with_retries(lambda: _read_range(url, headers, start, end), f"reading {name} bytes {start}-{end - 1}")

    def read(start: int, n: int) -> bytes:
        if not probe:
            probe.append(get(0, min(size, HEADER_PROBE)) if size else b"")
            probes.remember((resolved.source.repo_id, resolved.sha, name), probe[0])  # stream mode reuses it
        if start + n <= len(probe[0]):
            return probe[0][start:start + n]
        return get(start, min(size, start + n))

    return read


def _read_range(url: str, headers: dict[str, str], start: int, end: int) -> bytes:
    """Bytes [start, end) of `url` in one GET, no retries (a body cut short raises httpx's transport error).

    Not huggingface_hub's `http_stream_backoff`: it retries an error raised while the body is read by yielding a
    second response into the same `with` block, which fails as "generator didn't stop after throw()"."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    data = bytearray()
    with get_session().stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                              follow_redirects=True) as response:
        hf_raise_for_status(response)
        skip = start if response.status_code == 200 else 0  # Range ignored: the file from byte 0
        for block in response.iter_bytes():
            if skip:
                cut = min(skip, len(block))
                block, skip = block[cut:], skip - cut
            data += block
            if len(data) >= end - start:
                break
    return bytes(data[:end - start])  # shorter only when the file is: the header checks say what is wrong


# -- safetensors headers -----------------------------------------------------------------------------------------
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces


class HeaderProblem(ValueError):
    """What is wrong with a safetensors header: one line, without the file's name."""


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor of a checked header: `begin`, `end` are offsets into the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def header_length(size: int, head: bytes) -> int:
    """The header length N of a `size`-byte file whose first 8 bytes are `head`, checked: at most the library's
    limit and within the file. Raises HeaderProblem."""
    if size < 8 or len(head) < 8:
        raise HeaderProblem(f"not a safetensors file ({size} bytes, too short for a header)")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES:
        raise HeaderProblem(f"not a safetensors file (header length {n} is over the {MAX_HEADER_BYTES}-byte limit "
                            "of the safetensors format)")
    if 8 + n > size:
        raise HeaderProblem(f"not a safetensors file (header length {n} does not fit in the file's {size} bytes); "
                            "the file may be truncated or not safetensors at all")
    return n


def check_safetensors_header(size: int, read: Callable[[int, int], bytes]) -> dict[str, HeaderEntry]:
    """The tensors of a `size`-byte safetensors file whose bytes `read(start, n)` returns, in the order of their
    bytes, after every check the safetensors library makes: the header length (at most 100 MB, within the
    file), a UTF-8 JSON object, `__metadata__` an object of strings, every entry a known dtype, a shape of
    non-negative integers and two data offsets within the data section, dtype size × elements = the bytes the
    offsets span, and the tensors contiguous, not overlapping, covering the data section exactly. Raises
    HeaderProblem saying what is wrong."""
    n = header_length(size, read(0, 8) if size >= 8 else b"")
    raw = read(8, n) if n else b""
    if len(raw) < n:
        raise HeaderProblem(f"the header is cut short (got {len(raw)} of its {n} bytes)")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except HeaderProblem:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise HeaderProblem(f"header is not valid JSON ({_one_line(e)}); the file is corrupt") from None
    if not isinstance(doc, dict):
        raise HeaderProblem("header is not a JSON object; the file is corrupt")
    metadata = doc.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise HeaderProblem("header's __metadata__ is not an object of strings; the file is corrupt")
    data_len = size - 8 - n
    entries = {name: _entry(name, value, data_len) for name, value in doc.items()}
    ordered = sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end))
    position, previous = 0, None
    for name, e in ordered:
        if e.begin < position:
            raise HeaderProblem(f"tensors {_short(previous[0])} (bytes [{previous[1].begin}, {previous[1].end})) and "
                                f"{_short(name)} (bytes [{e.begin}, {e.end})) overlap; the file is corrupt")
        if e.begin > position:
            raise HeaderProblem(f"bytes [{position}, {e.begin}) of the data section, before tensor {_short(name)}, belong "
                                "to no tensor; the file is corrupt")
        position, previous = e.end, (name, e)
    if position != data_len:
        raise HeaderProblem(f"bytes [{position}, {data_len}) at the end of the data section belong to no tensor; "
                            "the file is corrupt")
    return dict(ordered)


def _entry(name: str, value, data_len: int) -> HeaderEntry:
    if not isinstance(value, dict) or not {"dtype", "shape", "data_offsets"} <= value.keys():
        raise HeaderProblem(f"tensor {_short(name)} has a malformed header entry (it needs dtype, shape and data_offsets): "
                            f"{_short(value)}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BY_CODE:
        raise HeaderProblem(f"tensor {_short(name)} has unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise HeaderProblem(f"tensor {_short(name)} has a malformed shape {_short(shape)} (a list of non-negative "
                            "integers is needed)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(x) for x in offsets):
        raise HeaderProblem(f"tensor {_short(name)} has malformed data_offsets {_short(offsets)} (two non-negative "
                            "integers are needed)")
    begin, end = offsets
    if not begin <= end <= data_len:
        raise HeaderProblem(f"tensor {_short(name)} lies at bytes [{begin}, {end}) but the data section has {data_len} "
                            "bytes; the file is truncated or corrupt")
    nbytes = math.prod(shape) * DTYPE_BY_CODE[dtype].itemsize
    if end - begin != nbytes:
        raise HeaderProblem(f"tensor {_short(name)} ({dtype} {shape}) should take {nbytes} bytes but its offsets span "
                            f"{end - begin}")
    return HeaderEntry(dtype, tuple(shape), begin, end)


def _natural(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise HeaderProblem(f"header names {_short(key)} twice; the file is corrupt")
        doc[key] = value
    return doc


def _short(value, limit: int = 120) -> str:
    """repr(value), cut to `limit` characters (a name or an entry in a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.split()) if text else type(err).__name__


def _index_problems(resolved: ResolvedSource, headers: dict[str, dict]) -> list[tuple[str, str]]:
    """The index's weight_map against the shards' headers: each tensor in exactly the shard it is mapped to."""
    weight_map = _read_weight_map(resolved)
    if weight_map is None:
        return []
    where: dict[str, list[str]] = {}
    for file, tensors in headers.items():
        for tensor in tensors:
            where.setdefault(tensor, []).append(file)
    wrong = []
    for tensor in dict.fromkeys([*weight_map, *where]):
        mapped, found = weight_map.get(tensor), where.get(tensor, [])
        if mapped is None:
            wrong.append(f"{_short(tensor)} is in {found[0]} but not in the index")
        elif not found:
            wrong.append(f"{_short(tensor)} is mapped to {mapped}, which does not have it")
        elif mapped not in found:
            wrong.append(f"{_short(tensor)} is mapped to {mapped} but is in {', '.join(found)}")
        elif len(found) > 1:
            wrong.append(f"{_short(tensor)} is mapped to {mapped} but {', '.join(f for f in found if f != mapped)} "
                         "has it too")
    if not wrong:
        return []
    return [(resolved.field, f"{resolved.label}: {WEIGHTS_INDEX_FILE} does not match the shards' headers: "
                             + summarize(wrong))]
