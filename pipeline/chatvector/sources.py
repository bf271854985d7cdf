"""Resolve a recipe's checkpoints to pinned commits and fetch their files, weights only when asked.

A Hub source becomes `repo_id@<40-hex sha>`; its small metadata files (config, tokenizer, index) are
downloaded into the HF cache at that sha, and its safetensors headers are read with HTTP range requests, so
planning never downloads a weight file. A `path:` source is used in place.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from chatvector.errors import HubError, RecipeError
from chatvector.recipe import Recipe, Source

log = logging.getLogger(__name__)

# Everything a merged model folder needs besides weights. Small files, fetched at plan time.
METADATA_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "*.tiktoken",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    "README.md",
)
WEIGHT_PATTERN = "*.safetensors"


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None = None  # known without downloading for LFS files on the Hub


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

    def file_path(self, name: str) -> Path:
        return self.folder / name


@contextlib.contextmanager
def hub_errors(recipe: Recipe, role: str, source: Source) -> Iterator[None]:
    """Turn the Hub client's typed errors into one clear line naming the recipe field."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = source.repo_id
    try:
        yield
    except GatedRepoError:
        raise recipe.error_at(f"{role}.repo_id", f"{repo} is gated: accept its terms on the Hub and use a token "
                              "(HF_TOKEN) of an account that has access") from None
    except RepositoryNotFoundError:
        raise recipe.error_at(f"{role}.repo_id", f"repository {repo} was not found on the Hub (or it is private "
                              "and the token, if any, has no access)") from None
    except RevisionNotFoundError:
        raise recipe.error_at(f"{role}.revision",
                              f"revision '{source.revision}' does not exist in {repo}") from None
    except EntryNotFoundError as err:
        raise HubError(f"{repo}@{source.revision}: a file is missing: {_first_line(err)}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError(f"the Hub refused the token while reading {repo} (401): check HF_TOKEN") from None
        raise HubError(f"the Hub answered {status} while reading {repo}: {_first_line(err)}") from None
    except LocalEntryNotFoundError as err:
        raise HubError(f"cannot reach the Hub for {repo}: {_first_line(err)}") from None
    except network_errors() as err:  # connection refused, DNS, timeouts
        raise HubError(f"cannot reach the Hub at {_endpoint()} for {repo}: {_first_line(err)}") from None


def network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the server cannot be reached (its HTTP library's transport errors)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def tune_downloads() -> None:
    """Let huggingface_hub write each piece as the socket delivers it.

    Its default re-chunks every download into 10 MiB pieces through a BytesIO, which costs more CPU than the
    transfer itself: a 1 GiB file downloads about 2x faster without it (bench/hub_download.py).
    """
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = None


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_source(recipe: Recipe, role: str, source: Source, api=None) -> ResolvedSource:
    """Pin a source and fetch its metadata files (never its weights)."""
    if source.path is not None:
        return _resolve_local(recipe, role, source)
    from huggingface_hub import HfApi, snapshot_download

    api = api or HfApi()
    with hub_errors(recipe, role, source):
        info = api.model_info(source.repo_id, revision=source.revision, files_metadata=True)
        files = {
            s.rfilename: RepoFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None) for s in info.siblings
        }
        wanted = [name for name in files if any(fnmatch.fnmatch(name, p) for p in METADATA_PATTERNS)]
        with quiet_progress():  # a bar per tiny metadata file is noise; weights get one below
            folder = Path(snapshot_download(source.repo_id, revision=info.sha,
                                            allow_patterns=wanted or ["config.json"], token=api.token))
    return ResolvedSource(role, source, info.sha, folder, files)


def _resolve_local(recipe: Recipe, role: str, source: Source) -> ResolvedSource:
    folder = Path(source.path)
    if not folder.is_dir():
        raise recipe.error_at(f"{role}.path", f"folder {folder} does not exist")
    files = {
        str(p.relative_to(folder)): RepoFile(str(p.relative_to(folder)), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }
    return ResolvedSource(role, source, None, folder, files)


def fetch_weights(recipe: Recipe, resolved: ResolvedSource, names: list[str], api=None) -> None:
    """Download the named weight files of a Hub source into the HF cache (a local source has them already)."""
    if resolved.is_local or not names:
        return
    from huggingface_hub import HfApi, snapshot_download

    api = api or HfApi()
    tune_downloads()
    with hub_errors(recipe, resolved.role, resolved.source):
        folder = snapshot_download(resolved.source.repo_id, revision=resolved.sha, allow_patterns=names,
                                   token=api.token)
    if Path(folder) != resolved.folder:  # same sha → same snapshot folder; anything else is a bug
        raise HubError(f"{resolved.label}: the snapshot moved while fetching weights ({folder})")


def read_safetensors_headers(recipe: Recipe, resolved: ResolvedSource, names: list[str], api=None) -> dict:
    """{file: {tensor: (dtype, shape)}} for the named safetensors files, without downloading them."""
    out: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    if resolved.is_local:
        from chatvector.merge.safetensors_io import read_header

        for name in names:
            try:
                header = read_header(resolved.file_path(name))
            except Exception as err:  # MergeError names the file already
                raise RecipeError(f"{resolved.role}.path: {err}") from None
            out[name] = {t: (info.dtype, info.shape) for t, info in header.tensors.items()}
        return out
    from huggingface_hub import HfApi

    api = api or HfApi()
    with hub_errors(recipe, resolved.role, resolved.source):
        for name in names:
            meta = api.parse_safetensors_file_metadata(resolved.source.repo_id, name, revision=resolved.sha)
            out[name] = {t: (info.dtype, tuple(info.shape)) for t, info in meta.tensors.items()}
    return out
