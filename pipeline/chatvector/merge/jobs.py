"""What the merge engine is asked to do: one `TensorJob` per output tensor, built by the planner.

The arithmetic each job stands for (one rounding, at the end)::

    acc = float32(cp)
    for term in terms:                       # in order; terms with coefficient 0 are dropped
        acc = acc + λ · (float32(chat) − float32(base))
    out = acc.to(dtype)                      # round to nearest even

With `delta_rows` set, only rows [0, delta_rows) get the terms; later rows are float32(cp) cast.
Row copies are applied last: output row `out_row` := chat row `chat_row`, cast to `dtype`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import DTYPE_BY_NAME, OUTPUT_DTYPE_NAMES, DType

if TYPE_CHECKING:
    from chatvector.merge.writer import DiskBudget


@dataclass(frozen=True)
class TensorSource:
    """One tensor inside one .safetensors file: a local path, or a remote file's key ("hub://...", read
    through the `inputs` given to run_merge)."""

    file: Path | str
    name: str


@dataclass(frozen=True)
class VectorTerm:
    """λ · (chat − base) for one tensor; `coefficient` is λ already resolved (weight × schedule)."""

    base: TensorSource
    chat: TensorSource
    coefficient: float


@dataclass(frozen=True)
class RowCopy:
    """Special tokens: output row `out_row` := chat row `chat_row`, cast to the output dtype."""

    out_row: int
    chat: TensorSource
    chat_row: int


@dataclass(frozen=True)
class TensorJob:
    """One output tensor.

    `shape` is cp's shape. `delta_rows` (vocabulary tensors): the terms apply to rows
    [0, delta_rows) only, rows >= delta_rows keep cp's values; base and chat may then have more or
    fewer rows than cp, only their first `delta_rows` rows are read. None = the whole tensor, and
    base/chat must have cp's shape.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    cp: TensorSource
    terms: tuple[VectorTerm, ...]
    delta_rows: int | None = None
    row_copies: tuple[RowCopy, ...] = ()

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def out_dtype(self) -> DType:
        """The output dtype (code, item size); only for a job whose `dtype` validation accepted."""
        return DTYPE_BY_NAME[self.dtype]

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor in the output file (0 for an unknown dtype; validation rejects it)."""
        return self.numel * self.out_dtype.itemsize if self.dtype in OUTPUT_DTYPE_NAMES else 0

    @property
    def active_terms(self) -> tuple[VectorTerm, ...]:
        """The terms that change the result: coefficient != 0, in order."""
        return tuple(t for t in self.terms if t.coefficient != 0)


@dataclass(frozen=True)
class MergeOutput:
    """One output of `run_merges`, which writes several outputs from one read of the inputs (a λ sweep).

    Every output's `jobs` name the same tensors, in the same order, with the same shapes, output dtypes and cp
    sources (so that every output has the same file layout); only their terms (coefficients, and which terms
    there are) and row copies may differ. `metadata`: each file's `__metadata__` (values of equal length in
    every output, so that the headers are too). `on_file`, `disk_budget`: as for `run_merge`.
    """

    jobs: Sequence[TensorJob]
    out_dir: Path
    metadata: dict[str, str] | None = None
    on_file: Callable | None = None
    disk_budget: "DiskBudget | None" = None


@dataclass(frozen=True)
class MergeResult:
    """What `run_merge` wrote.

    files: every file written (shards, then the index if any) -> its sha256 hex digest.
    total_bytes: bytes of tensor data written (the index's `total_size`).
    device: the device the arithmetic ran on ("cpu", "cuda", "cuda:1", ...).
    seconds: wall time of the whole merge, validation and fsync included.
    backend: the code path the arithmetic took: "cpu" (worker threads) or "staged" (accelerator pipeline).
    device_name: the device and its name ("cuda:0 (NVIDIA H100 80GB HBM3)"; "cpu").
    pinned_bytes: host memory page-locked for the accelerator's staging and output buffers.
    direct_io_files: the files written with O_DIRECT to the end (the others took ordinary writes:
        `direct_io=False`, or a filesystem that refuses O_DIRECT, such as tmpfs).
    """

    files: dict[str, str]
    total_bytes: int
    device: str
    seconds: float
    backend: str = ""
    direct_io_files: tuple[str, ...] = ()
    nonfinite: dict = field(default_factory=dict)  # tensor → NonFinite(count, first_index, first_value)
    scanned_values: int = 0  # output values scanned for NaN and ±inf as they were computed
    scanned_tensors: int = 0
    device_name: str = ""  # the device with its name, for the record: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
    pinned_bytes: int = 0  # host memory the run page-locked (the pinned allocator's footprint; 0 on the CPU)
