"""How a run reads its Hub inputs, `merge.fetch` / `--fetch`:

- `snapshot`: download the weight files it reads into the Hugging Face cache, then merge from disk. Best when
  the inputs are cached already, or for repeated local experiments on the same inputs.
- `stream`: read every input tensor with HTTP range requests straight into the merge (chatvector.fetch.streaming);
  no input byte is written to disk. A publish then also uploads each output shard as soon as it is written and
  deletes it (chatvector.build.shardupload), so the disk holds one shard at a time.
- `auto` (default): `snapshot` when nothing needs downloading, or when the download and the output fit on the
  free disk; `stream` otherwise. The choice and its reason are logged.

`path:` sources are always read in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.units import human_bytes

if TYPE_CHECKING:
    from chatvector.plan.plan import Plan



@dataclass(frozen=True)
class FetchChoice:
    mode: str  # "snapshot" or "stream"
    why: str

    def __str__(self) -> str:
        return f"fetch: {self.mode} ({self.why})"


def choose_fetch(plan: "Plan", asked: str, write_dir: Path, writes: int | None = None) -> FetchChoice:
    """The mode for this run: `asked` ("auto", "snapshot" or "stream"); `writes`: bytes the snapshot mode's
    output puts in `write_dir` (default: the whole output)."""
    from chatvector.build import preflight

    if not plan.download_files:
        return FetchChoice("snapshot", "every input is a local folder, read in place")
    if asked in ("snapshot", "stream"):
        return FetchChoice(asked, "as asked")
    download = preflight.bytes_to_download(plan)
    if download == 0:
        return FetchChoice("snapshot", "the inputs are in the Hugging Face cache")
    groups = preflight.disk_needs(plan, write_dir, downloads=download, writes=writes)
    short = [(sum(n.nbytes for n in group), free) for group, free in groups if free < sum(n.nbytes for n in group)]
    if not short:
        total = sum(n.nbytes for group, _ in groups for n in group)
        return FetchChoice("snapshot", f"{human_bytes(download)} to download and the output fit on the free disk "
                                       f"({human_bytes(total)} needed)")
    need, free = short[0]
    return FetchChoice("stream", f"the inputs are not cached: downloading {human_bytes(download)} and writing the "
                                 f"output needs {human_bytes(need)} but {human_bytes(free)} is free")
