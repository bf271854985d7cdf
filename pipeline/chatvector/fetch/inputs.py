"""The run's inputs, fetched the way `merge.fetch` / `--fetch` says (chatvector.fetch.mode):

    inputs = open_inputs(plan, api, "stream")        # or "snapshot"
    run_merge(jobs(inputs.source), out_dir, inputs=inputs.reader, ...)
    digests = inputs.finish()                        # sha256 of every input file, each checked against the Hub

snapshot: every file the plan reads is downloaded into the HF cache; the merge maps the weight files and a
  hasher thread hashes them beside it (chatvector.fetch.hashing).
stream: only the small files (config, tokenizer, template) are downloaded; the merge reads the weight files
  of Hub sources with range requests (chatvector.fetch.streaming), hashing each as it streams.
`path:` sources are read in place in both modes.

Either way `finish()` compares every input of a Hub source with the Hub's listing (an LFS file its sha256,
another its git blob id) and raises MergeError naming the source and the file on a mismatch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.errors import MergeError
from chatvector.fetch.hashing import InputHasher
from chatvector.plan.plan import Plan

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.fetch.streaming import StreamReader
    from chatvector.merge.safetensors_io import Header, InputFile

log = logging.getLogger(__name__)
REMOTE_PREFIX = "hub://"
STREAM_SAMPLE_BYTES = 1 << 20  # spot-check rows per tensor in stream mode: read again from the Hub, so fewer


@dataclass
class RunInputs:
    """Where each input file is read from, and its hashing (see the module docstring)."""

    mode: str  # "snapshot" or "stream"
    folders: dict[str, Path]  # role → local folder holding its small files (and, in snapshot mode, its weights)
    plan: Plan
    stream: "StreamReader | None" = None
    hasher: InputHasher | None = None
    keys: dict[str, str] = field(default_factory=dict)  # remote key → the absolute path it stands for
    resumed: dict[str, str] = field(default_factory=dict)  # remote key → sha256 an earlier run checked

    def source(self, role: str, file: str) -> Path | str:
        """What the merge engine reads `file` of `role` under: a local path, or a remote key."""
        source = self.plan.sources[role]
        if self.stream is not None and not source.is_local:
            return remote_key(source.repo_id, source.sha, file)
        return self.folders[role] / file

    @property
    def reader(self):
        """The engine's InputReader: None (local files) in snapshot mode."""
        return None if self.stream is None else _MixedReader(self.stream)

    def input_rows(self):
        """Rows of input tensors for the spot check (spotcheck.InputRows)."""
        from chatvector.build.spotcheck import local_rows

        local = local_rows(self.folders)
        if self.stream is None:
            return local

        fetched: dict[tuple, object] = {}  # two vectors sharing a base or chat: their rows are read once

        def read(role: str, t, rows: list[int]):
            if self.plan.sources[role].is_local:
                return local(role, t, rows)
            key = (str(self.source(role, t.files[role])), t.name, tuple(rows))
            if key not in fetched:
                fetched[key] = _remote_rows(self.stream, key[0], t.name, rows)
            return fetched[key].clone()

        return read

    @property
    def sample_bytes(self) -> int | None:
        return STREAM_SAMPLE_BYTES if self.stream is not None else None

    def verified(self) -> dict[str, str]:
        """{remote key: sha256} of the remote inputs streamed and checked so far (a resumed run skips them)."""
        return {} if self.stream is None else {**self.resumed, **dict(self.stream.stats.digests)}

    def finish(self) -> dict[str, str]:
        """Wait for every input's hash; check each against the Hub's listing. {absolute path: sha256}."""
        digests = self.hasher.digests() if self.hasher is not None else {}
        if self.stream is not None:
            streamed = {**self.resumed, **self.stream.finish()}  # what streams again is checked again
            digests.update({self.keys[k]: v for k, v in streamed.items()})
        check_input_hashes(self.plan, self.folders, digests)
        return digests

    def close(self) -> None:
        """Stop the hashers and fetchers (a failed run); never raises."""
        if self.hasher is not None:
            self.hasher.cancel()
        if self.stream is not None:
            self.stream.close()


def remote_key(repo_id: str, sha: str, file: str) -> str:
    return f"{REMOTE_PREFIX}{repo_id}@{sha}/{file}"


def open_inputs(plan: Plan, api: "HfApi", mode: str, *, skip: Mapping[str, str] | None = None,
                window_bytes: int | None = None, on_bytes=None) -> RunInputs:
    """Fetch what `mode` fetches up front and start hashing; `skip`: {remote key: sha256} of remote inputs
    a resumed run already streamed and checked (not streamed again when no tensor of theirs is needed)."""
    if mode == "snapshot":
        from chatvector.fetch.workspace import sweep_incomplete_downloads

        sweep_incomplete_downloads(s.repo_id for s in plan.sources.values() if not s.is_local)
        folders = fetch(plan, api)
        return RunInputs("snapshot", folders, plan, hasher=InputHasher(weight_paths(plan, folders)))
    from chatvector.fetch.streaming import RemoteFile, StreamReader

    folders = fetch(plan, api, weights=False)
    inputs = RunInputs("stream", folders, plan)
    remote: dict[str, RemoteFile] = {}
    local: set[str] = set()
    for t in plan.tensors:
        for role, name in t.files.items():
            source = plan.sources[role]
            if source.is_local:
                local.add(os.path.abspath(folders[role] / name))
                continue
            key = remote_key(source.repo_id, source.sha, name)
            if key in remote:
                continue
            kind, _, want = source.files[name].id.partition(":")
            remote[key] = RemoteFile(
                key=key, url=_resolve_url(api, source.repo_id, source.sha, name), size=source.files[name].size,
                label=f"{role} {source.repo_id}@{source.sha[:7]}: {name}",
                sha256=want if kind == "sha256" else None, git_id=want if kind == "git" else None,
                head_key=(source.repo_id, source.sha, name))
            inputs.keys[key] = os.path.abspath(folders[role] / name)
    done = {k for k in inputs.keys if (skip or {}).get(k)}
    inputs.hasher = InputHasher(sorted(local)) if local else None
    inputs.stream = StreamReader(remote, headers=api._build_hf_headers(), skip=frozenset(done),
                                 window_bytes=window_bytes or default_window(plan), on_bytes=on_bytes)
    inputs.resumed = {k: skip[k] for k in done} if skip else {}
    return inputs


def default_window(plan: Plan) -> int:
    """The prefetch window: about one output shard (so the next shard's inputs stream in while the last one
    uploads), between 256 MiB and a quarter of the memory."""
    from chatvector.fetch.streaming import WINDOW_BYTES

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 4 * WINDOW_BYTES
    return int(max(256 << 20, min(plan.largest_file_bytes, memory // 4)))


def _resolve_url(api: "HfApi", repo_id: str, sha: str, name: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, name, revision=sha, endpoint=api.endpoint)


class _MixedReader:
    """Remote keys through the stream, local paths mapped as usual."""

    def __init__(self, stream: "StreamReader"):
        from chatvector.merge.safetensors_io import LocalInputs

        self.stream, self.local = stream, LocalInputs()

    def header(self, key) -> "Header":
        return self.stream.header(key) if str(key).startswith(REMOTE_PREFIX) else self.local.header(key)

    def open(self, header: "Header", needed) -> "InputFile":
        if str(header.path).startswith(REMOTE_PREFIX):
            return self.stream.open(header, needed)
        return self.local.open(header, needed)


def _remote_rows(stream: "StreamReader", key: str, name: str, rows: list[int]):
    """The given rows (sorted) of a remote input tensor, one range request per run of consecutive rows."""
    import math

    import torch

    from chatvector.build.spotcheck import row_runs

    f = stream.opened.get(key)
    header = f.header if f is not None else stream.header(key)
    info = header.tensors[name]
    row_bytes = math.prod(info.shape[1:]) * info.itemsize
    remote = stream.files[key]
    data = bytearray(b"".join(stream.client.get(remote, info.start + a * row_bytes, info.start + b * row_bytes)
                              for a, b in row_runs(rows)))
    return torch.frombuffer(data, dtype=info.torch_dtype).reshape(len(rows), *info.shape[1:])


# -- snapshot mode's download, and the checks of both modes --------------------------------------------------
def fetch(plan: Plan, api: "HfApi", *, weights: bool = True) -> dict[str, Path]:
    """Every file the plan reads (without its weight files: weights=False), at the plan's commits: {role: local
    folder}. Hub sources are downloaded into the HF cache (a source two roles share, once), under one progress
    bar in bytes (chatvector.fetch.downloads); local ones are read in place."""
    from chatvector.fetch.downloads import download_all

    wanted: dict[str, set[str]] = {}
    roles: dict[str, str] = {}  # a role naming each Hub source, for errors
    for role, source in plan.sources.items():
        if not source.is_local:
            wanted.setdefault(source.key, set()).update(n for n in source.files if weights or not _is_weights(n))
            roles.setdefault(source.key, role)
    by_key = download_all(api, plan, {key: sorted(names) for key, names in wanted.items()}, roles)
    return {role: Path(source.path).resolve() if source.is_local else by_key[source.key]
            for role, source in plan.sources.items()}


def _is_weights(name: str) -> bool:
    return name.endswith(".safetensors")


def weight_paths(plan: Plan, folders: dict[str, Path]) -> list[str]:
    """Every weight file the merge reads, once each (absolute paths)."""
    return sorted({os.path.abspath(folders[role] / file) for t in plan.tensors for role, file in t.files.items()})


def check_input_hashes(plan: Plan, folders: dict[str, Path], computed: dict[str, str]) -> None:
    """Every input file a Hub source lists must have the listed bytes: an LFS file its sha256 (computed in
    the merge's pass), any other its git blob id (a small file: hashed here). A corrupt download, a
    damaged cache or a server serving other bytes stops the run before anything is written."""
    from chatvector.plan.sources import git_blob_id

    bad = []
    for role, source in plan.sources.items():
        if source.is_local:
            continue
        for name, file in source.files.items():
            path = folders[role] / name
            kind, _, want = file.id.partition(":")
            if kind == "sha256":
                got = computed.get(os.path.abspath(path))
            elif kind == "git" and path.is_file():
                got = git_blob_id(path)
            else:
                continue
            if got and got != want:
                bad.append(f"{role} {source.label}: {name} is {kind} {got[:12]}…, the Hub lists {want[:12]}…")
    if bad:
        raise MergeError("input files do not match the Hub's hashes (a corrupt download or cache): "
                         + "; ".join(bad) + "; remove them from the Hugging Face cache (`hf cache delete`) "
                         "and run again")
