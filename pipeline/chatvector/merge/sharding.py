"""How output tensors are split into files, and the names and index those files get
(the layout transformers' `save_pretrained` writes)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from chatvector.conventions import OWNED_WEIGHT_FILE
from chatvector.errors import MergeError
from chatvector.merge.jobs import TensorJob


def plan_shards(jobs: Sequence[TensorJob], shard_size: int) -> list[list[TensorJob]]:
    """Greedy, in the given order: a shard takes tensors until the next would push it past
    `shard_size` bytes. A tensor is never split; one larger than `shard_size` gets a shard of its own."""
    if shard_size <= 0:
        raise MergeError(f"shard size must be a positive number of bytes, got {shard_size}")
    shards: list[list[TensorJob]] = []
    current: list[TensorJob] = []
    size = 0
    for job in jobs:
        n = job.nbytes
        if current and size + n > shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(job)
        size += n
        if size > shard_size:  # an oversized tensor alone
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    return shards


def file_layout(shard: Sequence[TensorJob]) -> list[TensorJob]:
    """Order of tensors inside one file: wider dtypes first (each tensor stays aligned to its element
    size, as the safetensors library lays them out), otherwise the planner's order."""
    return sorted(shard, key=lambda j: -j.out_dtype.itemsize)


def index_json(shards: Sequence[Sequence[TensorJob]], names: Sequence[str]) -> bytes:
    """model.safetensors.index.json as transformers writes it (indent 2, sorted keys, final newline)."""
    weight_map = {job.name: fname for shard, fname in zip(shards, names) for job in shard}
    total = sum(job.nbytes for shard in shards for job in shard)
    doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def is_owned_output(filename: str) -> bool:
    """Names this engine writes into an output folder (and so may replace)."""
    return bool(OWNED_WEIGHT_FILE.match(filename))
