"""Snapshot mode's download: every file the plan reads from the Hub, all sources at once, under one progress
bar in bytes whose total is what the plan knows is missing from the HF cache.

huggingface_hub's `snapshot_download` draws three bars per repository ("Fetching N files", bytes transferred,
bytes written); a merge reads three repositories or more, so the output would be a stack of bars that each end
at their own total. Here each file goes through `hf_hub_download` (the HF cache, resume, Xet or LFS, its
retries) with a `tqdm_class` that feeds one shared bar, as `snapshot_download` does inside one repository.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.hub.client import hub_call, tuned_downloads

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.plan.plan import Plan, SourcePlan

log = logging.getLogger(__name__)
WORKERS = 8  # as snapshot_download's default


class _SharedBar:
    """A stand-in for each file's tqdm that counts into the one shared bar (its total is set up front)."""

    bar = None  # set per download by `download_all`
    # What huggingface_hub's Xet progress reporter reads of a bar. `update_transfer` makes it treat this class as
    # an aggregated bar: network bytes go there (and are not counted), written bytes go to `update`, once.
    n = 0
    total = None
    format_dict: dict = {}

    counted: list[int]  # bytes this file's downloads counted so far (one class per file, see `download_all`)

    def __init__(self, *args, **kwargs):
        if kwargs.get("initial"):  # resumed from an .incomplete file: those bytes are part of the total
            self.update(kwargs["initial"])

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int | float | None = 1) -> None:
        self.counted[0] += n or 0
        self.bar.update(n)

    def update_transfer(self, n: int | float | None = 1) -> None:
        pass

    def __getattr__(self, name: str):  # close, refresh, set_postfix_str, update_transfer, ...: nothing to do
        return lambda *args, **kwargs: None


def _missing(files: list[tuple["SourcePlan", str]]) -> set[tuple[str, str]]:
    """(source key, name) of the `files` the HF cache does not hold at their pinned commits."""
    from huggingface_hub import try_to_load_from_cache

    return {(source.key, name) for source, name in files
            if not isinstance(try_to_load_from_cache(source.repo_id, name, revision=source.sha), str)}


def missing_bytes(files: list[tuple["SourcePlan", str]]) -> int:
    """Bytes of `files` the HF cache does not hold at their pinned commits."""
    missing = _missing(files)
    return sum(source.files[name].size for source, name in files if (source.key, name) in missing)


def download_all(api: "HfApi", plan: "Plan", wanted: dict[str, list[str]], roles: dict[str, str]) -> dict[str, Path]:
    """Download `wanted` ({source key: file names}) into the HF cache: {source key: its snapshot folder}.
    `roles`: a role naming each source key, for the errors (`hub_call` names the recipe field)."""
    from huggingface_hub.utils import tqdm

    sources = {plan.sources[role].key: plan.sources[role] for role in roles.values()}
    files = [(sources[key], name) for key, names in wanted.items() for name in names]
    missing = _missing(files)
    total = sum(source.files[name].size for source, name in files if (source.key, name) in missing)
    weights = sum(name.endswith(".safetensors") for _, name in files)
    if total:
        log.info("downloading %d weight file(s) from %d repositories", weights, len(wanted))
    folders: dict[str, Path] = {}
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc="download",
               disable=not total, name="huggingface_hub.chatvector.download")

    def one(item: tuple["SourcePlan", str]) -> None:
        source, name = item
        role = roles[source.key]
        shared = type("FileBar", (_SharedBar,), {"bar": bar, "counted": [0]})
        with hub_call(api, source.repo_id, field=role, revision=source.sha):
            path = Path(api.hf_hub_download(source.repo_id, name, revision=source.sha, tqdm_class=shared))
        if (source.key, name) in missing:  # a Xet download's last progress report may come after it returns
            bar.update(max(0, source.files[name].size - shared.counted[0]))
        folders.setdefault(source.key, path.parents[len(Path(name).parts) - 1])

    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="download")
    try:
        with tuned_downloads():
            futures = [pool.submit(one, f) for f in sorted(files, key=lambda f: -f[0].files[f[1]].size)]  # large first
            for future in as_completed(futures):
                future.result()  # the first failure stops the run: the files not started are not fetched
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return folders
