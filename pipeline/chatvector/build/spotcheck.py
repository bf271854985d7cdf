"""Spot check: a few written tensors read back and compared, bit for bit, with a plain-torch reference
computed from the inputs, both read with the safetensors library (not the engine's code).

Verification scans every value the engine computed; this check proves the engine computed and wrote the
right ones. It reads a bounded sample (`SAMPLE_BYTES` of rows per tensor, from a few tensors: a vocabulary
tensor with its row copies, the largest merged tensor, a tensor that keeps cp's values), so it costs a
fraction of a second whatever the model's size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.build.verify import Check
from chatvector.conventions import is_vocab_axis
from chatvector.plan.plan import Plan, TensorPlan

if TYPE_CHECKING:
    import torch

SAMPLE_BYTES = 8 << 20  # of each sampled tensor's output rows
NAME = "sampled tensors match a reference"


InputRows = Callable[[str, TensorPlan, list[int]], "torch.Tensor"]  # (role, tensor, sorted rows) → those rows


def spot_check(plan: Plan, folders: dict[str, Path], out_dir: Path) -> Check:
    """The check on a finished folder, its inputs read from local `folders`."""
    check = SpotCheck(plan, local_rows(folders))
    for path in sorted(Path(out_dir).glob("*.safetensors")):
        check.check_file(path)
    return check.result()


class SpotCheck:
    """The check, one output file at a time (a streaming publish checks each shard before it leaves the disk).

    input_rows(role, tensor, rows): the given rows of an input tensor as stored (local_rows reads them with
    the safetensors library; stream mode with range requests)."""

    def __init__(self, plan: Plan, input_rows: InputRows, sample_bytes: int | None = None):
        self.plan, self.input_rows = plan, input_rows
        self.chosen = _choose(plan, sample_bytes or SAMPLE_BYTES)
        self.problems: list[str] = []
        self.checked: list[str] = []
        self.checked_bytes = 0

    def check_file(self, path: Path) -> None:
        """Compare the chosen tensors stored in this output file."""
        import torch
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                stored = set(f.keys())
                for t, rows in self.chosen:
                    if t.name not in stored:
                        continue
                    self.checked.append(t.name)
                    try:
                        got = _rows(f, t.name, rows)
                        want = reference(self.plan, self.input_rows, t, rows)
                    except Exception as err:  # noqa: BLE001 - unreadable is the finding
                        self.problems.append(f"{t.name}: cannot be read back: {err}")
                        continue
                    self.checked_bytes += got.numel() * got.element_size()
                    bits = {2: torch.int16, 4: torch.int32}[got.element_size()]
                    if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got.view(bits),
                                                                                                 want.view(bits)):
                        differ = int((got.view(bits) != want.view(bits)).sum()) if got.shape == want.shape else "all"
                        self.problems.append(f"{t.name}: rows {rows[0]}..{rows[-1]}: {differ} values differ from "
                                             "the reference")
        except Exception as err:  # noqa: BLE001 - a file the library refuses; the layout check names it too
            self.problems.append(f"{Path(path).name}: cannot be read back: {err}")

    def result(self) -> Check:
        if not self.chosen:
            return Check(NAME, True, "no tensor to sample")
        missing = [t.name for t, _ in self.chosen if t.name not in self.checked]
        problems = self.problems + [f"{name}: not found in the written files" for name in missing]
        if problems:
            return Check(NAME, False, "; ".join(problems))
        return Check(NAME, True, f"{len(self.chosen)} tensors ({self.checked_bytes / 1e6:.1f} MB) equal to a "
                                 "plain-torch reference, bit for bit")


def local_rows(folders: dict[str, Path]) -> InputRows:
    def read(role: str, t: TensorPlan, rows: list[int]):
        from safetensors import safe_open

        with safe_open(folders[role] / t.files[role], framework="pt") as f:
            return _rows(f, t.name, rows)

    return read


def _choose(plan: Plan, sample_bytes: int) -> list[tuple[TensorPlan, list[int]]]:
    """Up to three tensors and the rows to compare (bounded by sample_bytes): a vocabulary tensor (delta
    rows, row copies), a merged tensor from the middle of the model, one that keeps cp's values."""
    merged = [t for t in plan.tensors if not t.kept and t.shape]
    vocab = [t for t in merged if is_vocab_axis(t.name, t.shape)]
    others = [t for t in merged if t not in vocab]
    kept = [t for t in plan.tensors if t.kept and t.shape]
    picks = [group[len(group) // 2] for group in (vocab[:1], others, kept) if group]
    out = []
    for t in picks:
        row_bytes = max(1, t.out_bytes // t.shape[0])
        n = max(1, min(t.shape[0], sample_bytes // row_bytes))
        rows = set(range(n))
        rows |= {r.cp_row for r in t.row_copies}  # rows copied from the chat model
        if t.delta_rows is not None:  # both sides of where the delta stops
            rows |= {r for r in (t.delta_rows - 1, t.delta_rows) if 0 <= r < t.shape[0]}
        out.append((t, sorted(rows)))
    return out


def _rows(f, name: str, rows: list[int]):
    """The given rows (sorted) of a tensor, one slice per run of consecutive rows."""
    import torch

    sl = f.get_slice(name)
    if not len(sl.get_shape()):
        return sl[...]
    return torch.cat([sl[a:b] for a, b in row_runs(rows)])


def row_runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted rows as [a, b) runs of consecutive rows: one read each."""
    runs: list[list[int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1])
    return [(a, b) for a, b in runs]


def reference(plan: Plan, input_rows: InputRows, t: TensorPlan, rows: list[int]):
    """Output rows of `t` the plain way: fp32 cp, plus each term λ·(chat − base) in order, one rounding."""
    import torch

    acc = input_rows("cp", t, rows).float()
    delta = [i for i, r in enumerate(rows) if t.delta_rows is None or r < t.delta_rows]
    if not t.kept and delta:
        for vector, lam in zip(plan.vectors, t.lambdas):
            if lam == 0:
                continue
            wanted = [rows[i] for i in delta]
            change = input_rows(vector.chat, t, wanted).float() - input_rows(vector.base, t, wanted).float()
            acc[delta] = acc[delta] + (change if lam == 1 else lam * change)
    out = acc.to(getattr(torch, t.out_dtype))
    chat_role = plan.vectors[0].chat
    for copy in t.row_copies:
        if copy.cp_row in rows:
            row = input_rows(chat_role, t, [copy.chat_row])
            out[rows.index(copy.cp_row)] = row[0].float().to(out.dtype)
    return out
