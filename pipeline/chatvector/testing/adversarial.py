"""Merge inputs built to break a careless kernel, for comparing two devices (or two code paths) bit for bit.

Each tensor mixes ordinary values with the cases where a kernel that fuses, flushes or re-orders gives other
bits: subnormals (a flush-to-zero kernel loses them), rounding ties of the final cast (round-to-nearest-even),
±0 (−0 + +0 is +0, −0 + −0 is −0), sums that overflow to ±inf in fp32 and casts past fp16's largest value,
fp64 values that round differently through fp32 than directly, and random values where an FMA (addcmul, lerp,
add(alpha=)) rounds differently from a multiply then an add. Sources come in bf16, fp16, fp32 and fp64; tensor
sizes are primes and odd shapes, so that chunks end mid-row; the vocabulary tensor has rows only cp has and
special-token row copies. No input makes a NaN (NaN payloads differ by hardware and say nothing of the merge).

    folder = write_adversarial(tmp / "inputs")
    jobs = adversarial_jobs(folder, (0.7, -0.35), "bfloat16")          # two vectors
    run_merge(jobs, out, shard_size=SHARD_SIZE, device=..., chunk_bytes=4096)
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from chatvector.merge import RowCopy, TensorJob, TensorSource, VectorTerm

VECTORS = 3  # base{i}/chat{i} pairs written; a job uses the first len(lambdas)
LAMBDAS = (0.7, -0.35, 1 / 3, 1e-3)
# one, two and three vectors, every λ of LAMBDAS among them
LAMBDA_SETS = ((0.7,), (-0.35,), (1 / 3,), (1e-3,), (0.7, -0.35), (1 / 3, 1e-3, -0.35))
OUT_DTYPES = ("bfloat16", "float16", "float32")
SWEEP_FACTORS = (0.5, 0.7, 1.0, 1 / 3)  # a λ sweep: every output from one read of the inputs
SHARD_SIZE = 24_000  # several files: the file layout and the index are compared too
CP_ROWS, SHARED_ROWS, DELTA_ROWS = 301, 296, 290  # vocabulary: rows only cp has, rows past delta_rows
ROW_COPIES = ((295, 3), (300, 7), (0, 290))  # (output row, chat row): special tokens


# name → (shape, cp dtype, base/chat dtype); sizes are primes or odd products so chunks cut rows
TENSORS: dict[str, tuple[tuple[int, ...], torch.dtype, torch.dtype]] = {
    "embed": ((CP_ROWS, 67), torch.bfloat16, torch.bfloat16),
    "w_bf16": ((37, 111), torch.bfloat16, torch.bfloat16),
    "w_fp16": ((4099,), torch.float16, torch.float16),
    "w_fp32": ((61, 67), torch.float32, torch.float32),
    "w_fp64": ((2053,), torch.float64, torch.float64),
    "w_mixed": ((1031,), torch.float32, torch.bfloat16),  # cp fp32, the vector bf16
    "scalar": ((), torch.float32, torch.float32),
}


def largest(dtype: torch.dtype) -> float:
    """The largest finite input value that stays finite in fp32 (an fp64 beyond it is inf before any sum)."""
    return min(torch.finfo(dtype).max, torch.finfo(torch.float32).max)


def _special(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    """n values of `dtype` (as fp64) cycling through the hard cases, with random values between them."""
    g = torch.Generator().manual_seed(seed)
    info = torch.finfo(dtype)
    tiny = info.tiny  # the smallest normal; below it the subnormals
    fp32_tiny = torch.finfo(torch.float32).tiny
    top = largest(dtype)
    cases = [
        0.0, -0.0,
        tiny / 4, -tiny / 8, tiny * 3 / 16,  # subnormals of the dtype
        fp32_tiny / 2, fp32_tiny / 1024,  # fp32 subnormals (flushed to zero by an FTZ kernel)
        top * 0.75, -top * 0.75, top,  # near overflow
        65519.0, 65520.0, 70000.0,  # fp16's largest finite value rounds at 65520
        1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,  # bf16 ties: round to even, down then up
        1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,  # fp16 ties
        1.0 + 2.0 ** -8 + 2.0 ** -30, 1.0 + 2.0 ** -11 + 2.0 ** -30,  # fp64: a tie once rounded to fp32 only
    ]
    values = 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    special = torch.tensor(cases, dtype=torch.float64).clamp(-top, top)
    every_third = len(values[::3])
    values[::3] = special.repeat(every_third // len(special) + 1)[:every_third]
    return values


def _triplet_values(shape: tuple[int, ...], cp_dtype, vec_dtype, seed: int) -> dict[str, torch.Tensor]:
    """cp, and base{i}/chat{i} for each vector, of one tensor."""
    n = max(1, int(torch.tensor(shape).prod()) if shape else 1)
    cp = _special(cp_dtype, n, seed)
    out = {"cp": cp.to(cp_dtype).reshape(shape)}
    for v in range(VECTORS):
        base = _special(vec_dtype, n, seed + 10 + v).roll(v + 1)
        g = torch.Generator().manual_seed(seed + 20 + v)
        chat = base + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
        zero = torch.arange(n) % 5 == 0  # chat == base: the sum is cp itself, its ties and zeros reach the cast
        chat[zero] = base[zero]
        if v == 0:  # the first vector alone may overflow: one sign, so no inf − inf (NaN) with the others
            huge = torch.arange(n) % 7 == 1
            big = largest(vec_dtype) * 0.75
            base[huge], chat[huge] = -big, big
        else:
            calm = torch.arange(n) % 7 == 1
            chat[calm] = base[calm]
        out[f"base{v}"] = base.to(vec_dtype).reshape(shape)
        out[f"chat{v}"] = chat.to(vec_dtype).reshape(shape)
    return out


def write_adversarial(folder: Path, seed: int = 0) -> Path:
    """Write cp.safetensors and base{i}/chat{i}.safetensors (i < VECTORS) into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, torch.Tensor]] = {}
    for k, (name, (shape, cp_dt, vec_dt)) in enumerate(TENSORS.items()):
        values = _triplet_values(shape, cp_dt, vec_dt, seed + 100 * k)
        for model, t in values.items():
            if name == "embed" and model != "cp":
                t = t[:SHARED_ROWS]  # the vectors' vocabulary is smaller than cp's
            files.setdefault(model, {})[name] = t.contiguous()
    for model, tensors in files.items():
        save_file(tensors, folder / f"{model}.safetensors")
    return folder


def adversarial_jobs(folder: Path, lambdas: tuple[float, ...], out_dtype: str) -> list[TensorJob]:
    """One job per tensor: cp + Σ λᵢ·(chatᵢ − baseᵢ), the vocabulary with delta rows and row copies."""
    def src(model: str, name: str) -> TensorSource:
        return TensorSource(Path(folder) / f"{model}.safetensors", name)

    jobs = []
    for name, (shape, _, _) in TENSORS.items():
        terms = tuple(VectorTerm(src(f"base{v}", name), src(f"chat{v}", name), lam) for v, lam in enumerate(lambdas))
        if name == "embed":
            copies = tuple(RowCopy(out_row, src("chat0", name), chat_row) for out_row, chat_row in ROW_COPIES)
            jobs.append(TensorJob(name, shape, out_dtype, src("cp", name), terms, delta_rows=DELTA_ROWS,
                                  row_copies=copies))
        else:
            jobs.append(TensorJob(name, shape, out_dtype, src("cp", name), terms))
    return jobs


def cases() -> list[tuple[str, tuple[float, ...], str]]:
    """(case name, λ per vector, output dtype): every λ set in every output dtype."""
    return [(f"{dt}-" + ",".join(f"{lam:.6g}" for lam in lams), lams, dt) for dt in OUT_DTYPES for lams in LAMBDA_SETS]


def reference(folder: Path, job: TensorJob) -> torch.Tensor:
    """The job's output by plain torch on the CPU, whole tensors: float32(cp) + Σ λ·(float32(chat) − float32(base)),
    one rounding, then the row copies (the definition the engine must meet bit for bit)."""
    from safetensors.torch import load_file

    def load(src: TensorSource) -> torch.Tensor:
        return load_file(src.file)[src.name]

    acc = load(job.cp).to(torch.float32).clone()
    rows = job.delta_rows
    for term in job.active_terms:
        base, chat = load(term.base).to(torch.float32), load(term.chat).to(torch.float32)
        if rows is None:
            acc = acc + term.coefficient * (chat - base)
        else:
            acc[:rows] = acc[:rows] + term.coefficient * (chat[:rows] - base[:rows])
    out = acc.to(getattr(torch, job.dtype))
    for copy in job.row_copies:
        out[copy.out_row] = load(copy.chat)[copy.chat_row].to(torch.float32).to(out.dtype)
    return out
