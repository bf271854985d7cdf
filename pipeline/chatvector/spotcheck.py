"""Spot check: a few written tensors read back and compared, bit for bit, with a plain-torch reference
computed from the inputs, both read with the safetensors library (not the engine's code).

Verification scans every value the engine computed; this check proves the engine computed and wrote the
right ones. It reads a bounded sample (`SAMPLE_BYTES` of rows per tensor, from a few tensors: a vocabulary
tensor with its row copies, the largest merged tensor, a tensor that keeps cp's values), so it costs a
fraction of a second whatever the model's size.
"""

from __future__ import annotations

from pathlib import Path

from chatvector.conventions import VOCAB_TENSOR
from chatvector.plan import Plan, TensorPlan
from chatvector.verify import Check

SAMPLE_BYTES = 8 << 20  # of each sampled tensor's output rows
NAME = "sampled tensors match a reference"


def spot_check(plan: Plan, folders: dict[str, Path], out_dir: Path) -> Check:
    import torch
    from safetensors import safe_open

    chosen = _choose(plan)
    if not chosen:
        return Check(NAME, True, "no tensor to sample")
    index = _output_index(out_dir)
    problems, checked_bytes = [], 0
    for t, rows in chosen:
        try:
            with safe_open(out_dir / index[t.name], framework="pt") as f:
                got = _rows(f, t.name, rows)
            want = reference(plan, folders, t, rows)
        except Exception as err:  # noqa: BLE001 - unreadable or missing is the finding
            problems.append(f"{t.name}: cannot be read back: {err}")
            continue
        checked_bytes += got.numel() * got.element_size()
        bits = {2: torch.int16, 4: torch.int32}[got.element_size()]
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got.view(bits), want.view(bits)):
            differ = int((got.view(bits) != want.view(bits)).sum()) if got.shape == want.shape else "all"
            problems.append(f"{t.name}: rows {rows[0]}..{rows[-1]}: {differ} values differ from the reference")
    if problems:
        return Check(NAME, False, "; ".join(problems))
    return Check(NAME, True, f"{len(chosen)} tensors ({checked_bytes / 1e6:.1f} MB) equal to a plain-torch "
                             "reference, bit for bit")


def _choose(plan: Plan) -> list[tuple[TensorPlan, list[int]]]:
    """Up to three tensors and the rows to compare (bounded by SAMPLE_BYTES): a vocabulary tensor (delta
    rows, row copies), a merged tensor from the middle of the model, one that keeps cp's values."""
    merged = [t for t in plan.tensors if not t.kept and t.shape]
    vocab = [t for t in merged if VOCAB_TENSOR.search(t.name)]
    others = [t for t in merged if t not in vocab]
    kept = [t for t in plan.tensors if t.kept and t.shape]
    picks = [group[len(group) // 2] for group in (vocab[:1], others, kept) if group]
    out = []
    for t in picks:
        row_bytes = max(1, t.out_bytes // t.shape[0])
        n = max(1, min(t.shape[0], SAMPLE_BYTES // row_bytes))
        rows = set(range(n))
        rows |= {r.cp_row for r in t.row_copies}  # rows copied from the chat model
        if t.delta_rows is not None:  # both sides of where the delta stops
            rows |= {r for r in (t.delta_rows - 1, t.delta_rows) if 0 <= r < t.shape[0]}
        out.append((t, sorted(rows)))
    return out


def _output_index(out_dir: Path) -> dict[str, str]:
    from safetensors import safe_open

    index = {}
    for path in sorted(Path(out_dir).glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            index.update({name: path.name for name in f.keys()})
    return index


def _rows(f, name: str, rows: list[int]):
    """The given rows (sorted) of a tensor, one slice per run of consecutive rows."""
    import torch

    sl = f.get_slice(name)
    if not len(sl.get_shape()):
        return sl[...]
    runs: list[list[int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1])
    return torch.cat([sl[a:b] for a, b in runs])


def reference(plan: Plan, folders: dict[str, Path], t: TensorPlan, rows: list[int]):
    """Output rows of `t` the plain way: fp32 cp, plus each term λ·(chat − base) in order, one rounding."""
    import torch
    from safetensors import safe_open

    def read(role: str, which: list[int]):
        with safe_open(folders[role] / t.files[role], framework="pt") as f:
            return _rows(f, t.name, which).float()

    acc = read("cp", rows)
    delta = [i for i, r in enumerate(rows) if t.delta_rows is None or r < t.delta_rows]
    if not t.kept and delta:
        for vector, lam in zip(plan.vectors, t.lambdas):
            if lam == 0:
                continue
            wanted = [rows[i] for i in delta]
            change = read(vector.chat, wanted) - read(vector.base, wanted)
            acc[delta] = acc[delta] + (change if lam == 1 else lam * change)
    out = acc.to(getattr(torch, t.out_dtype))
    chat_role = plan.vectors[0].chat
    for copy in t.row_copies:
        if copy.cp_row in rows:
            with safe_open(folders[chat_role] / t.files[chat_role], framework="pt") as f:
                row = f.get_slice(t.name)[copy.chat_row:copy.chat_row + 1]
            out[rows.index(copy.cp_row)] = row[0].float().to(out.dtype)
    return out

