"""Pin a recipe's checkpoints and list their files; fetch the small metadata files, never weights.

A Hub source becomes `repo_id@<40-hex sha>`, with its file listing (sizes, LFS sha256, git blob ids) from one
`model_info` call; its metadata files (config, tokenizer, index, card) are downloaded into the HF cache at that
sha, and its safetensors headers are read with HTTP range requests. A `path:` source is read in place.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import CONFIG_FILE, METADATA_PATTERNS, SMALL_FILE_BYTES
from chatvector.errors import FieldError
from chatvector.hub import hub_call, quiet_progress
from chatvector.recipe import Source

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
        with quiet_progress():
            folder = Path(api.snapshot_download(repo, revision=info.sha, allow_patterns=wanted or [CONFIG_FILE]))
    return ResolvedSource(role, source, info.sha, folder, files)


def hub_listing(info) -> dict[str, RepoFile]:
    """The files of a `model_info(..., files_metadata=True)` answer."""
    return {s.rfilename: RepoFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
            for s in info.siblings or []}


def _resolve_local(role: str, source: Source) -> ResolvedSource:
    folder = Path(source.path)
    if not folder.is_dir():
        raise FieldError(f"{role}.path", f"folder {folder} does not exist")
    return ResolvedSource(role, source, None, folder, list_local_files(folder))


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
    file's tensors in the order of their bytes (so a merge that follows it reads each file front to back)."""
    out: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    if resolved.is_local:
        from safetensors import safe_open

        for name in names:
            try:
                with safe_open(resolved.file_path(name), framework="numpy") as f:
                    keys = f.offset_keys() if hasattr(f, "offset_keys") else f.keys()  # safetensors >= 0.6
                    out[name] = {t: (_st_code(f.get_slice(t).get_dtype()), tuple(f.get_slice(t).get_shape()))
                                 for t in keys}
            except Exception as err:  # noqa: BLE001 - the library's errors name what is wrong
                raise FieldError(resolved.field, f"{resolved.file_path(name)} is not a readable safetensors "
                                 f"file: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        return out
    with hub_call(api, resolved.source.repo_id, field=resolved.role, revision=resolved.sha):
        for name in names:
            meta = api.parse_safetensors_file_metadata(resolved.source.repo_id, name, revision=resolved.sha)
            ordered = sorted(meta.tensors.items(), key=lambda item: item[1].data_offsets[0])
            out[name] = {t: (info.dtype, tuple(info.shape)) for t, info in ordered}
    return out


def _st_code(dtype: str) -> str:
    """safe_open's dtype text ("BF16", or "bfloat16" in some versions) as the header's code."""
    from chatvector.conventions import DTYPE_BY_CODE, DTYPE_BY_NAME

    if dtype in DTYPE_BY_CODE:
        return dtype
    return DTYPE_BY_NAME[dtype].code if dtype in DTYPE_BY_NAME else dtype
