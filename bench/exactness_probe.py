"""Exactness probe: does the merge write the same bits on two devices (or two code paths of one)?

Merges inputs built to break a careless kernel (chatvector.testing.adversarial: subnormals, rounding ties, ±0,
sums that overflow, bf16/fp16/fp32/fp64 sources, odd sizes, the rows only cp has and special-token row copies)
for every λ of {0.7, −0.35, 1/3, 1e-3}, one, two and three vectors, into bf16, fp16 and fp32, plus a λ sweep
(several outputs from one read), on device A at two odd block sizes and on device B at another, and compares
every output file by sha256. Where B is the CPU, its outputs are also compared tensor by tensor with plain
torch's whole-tensor arithmetic (the definition). Ends with one line, `exactness: PASS ...` or
`exactness: FAIL: ...`; exit code 0 or 1.

    python bench/exactness_probe.py                       # --devices cuda,cpu (what bench/gpu_check.sh runs)
    python bench/exactness_probe.py --devices cpu,cpu     # the CPU worker threads against the staged pipeline
                                                          # on the CPU: a test of the probe itself (seconds)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipeline"))

A_CHUNKS = (4096, 3 * 4096 + 100)  # odd block sizes on device A (rounded to 4 KiB, on CUDA to a power of two)
B_CHUNK = 1 << 20


@dataclass(frozen=True)
class Side:
    device: str
    backend: str  # "auto": the device's own; "staged" on the CPU, for a second code path there


@dataclass
class Report:
    comparisons: int = 0
    files: int = 0
    failures: list[str] = field(default_factory=list)
    cases: list[dict] = field(default_factory=list)

    def verdict(self, a: str, b: str) -> str:
        if self.failures:
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"exactness: FAIL: {self.failures[0]}{more}"
        return f"exactness: PASS ({self.comparisons} comparisons, {self.files} files by sha256, {a} vs {b})"


def sides(devices: str) -> tuple[Side, Side]:
    """'cuda,cpu' → the CUDA pipeline against the CPU; 'cpu,cpu' → the staged pipeline on the CPU against the
    CPU's worker threads (the two code paths one CPU has)."""
    names = [d.strip() for d in devices.split(",")]
    if len(names) != 2 or not all(names):
        raise SystemExit(f"error: --devices takes two devices, like cuda,cpu or cpu,cpu; got {devices!r}")
    a, b = names
    if a == b == "cpu":
        return Side("cpu", "staged"), Side("cpu", "cpu")
    return Side(a, "auto"), Side(b, "auto")


def first_difference(a_dir: Path, b_dir: Path, name: str) -> str:
    """Where two output files differ first: the tensor, its flat index and both values' bits."""
    from safetensors.torch import load_file

    a_path, b_path = a_dir / name, b_dir / name
    if not name.endswith(".safetensors") or not a_path.exists() or not b_path.exists():
        return "its bytes differ"
    a, b = load_file(a_path), load_file(b_path)
    for tensor in sorted(a):
        x, y = a[tensor].reshape(-1), b.get(tensor, a[tensor]).reshape(-1)
        bits_x, bits_y = x.view(_int_of(x)), y.view(_int_of(y))
        diff = (bits_x != bits_y).nonzero()
        if len(diff):
            i = int(diff[0])
            return (f"tensor {tensor} index {i}: {float(x[i])!r} (0x{int(bits_x[i]) & 0xFFFFFFFF:x}) vs "
                    f"{float(y[i])!r} (0x{int(bits_y[i]) & 0xFFFFFFFF:x}), {len(diff)} values differ")
    return "the headers differ"


def _int_of(t):
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


def compare(report: Report, case: str, what: str, a, b, a_dir: Path, b_dir: Path) -> None:
    """Two MergeResults' files (sha256 of each, headers included), one comparison."""
    report.comparisons += 1
    report.files += len(a.files)
    if a.files.keys() != b.files.keys():
        report.failures.append(f"{case} {what}: other files ({sorted(a.files)} vs {sorted(b.files)})")
        return
    for name in sorted(a.files):
        if a.files[name] != b.files[name]:
            report.failures.append(f"{case} {what}: {name} differs: {first_difference(a_dir, b_dir, name)}")
            return


def check_reference(report: Report, case: str, inputs: Path, jobs, out_dir: Path) -> None:
    """The CPU's output against plain torch's whole-tensor arithmetic, bit for bit."""
    import torch
    from safetensors.torch import load_file

    from chatvector.testing.adversarial import reference

    got = {}
    for path in out_dir.glob("*.safetensors"):
        got.update(load_file(path))
    for job in jobs:
        want = reference(inputs, job).reshape(-1)
        have = got[job.name].reshape(-1)
        if torch.isnan(have).any():
            report.failures.append(f"{case}: {job.name} holds a NaN (the inputs must make none)")
        if not torch.equal(have.view(_int_of(have)), want.view(_int_of(want))):
            report.failures.append(f"{case}: {job.name} on the CPU is not plain torch's result")


def run_case(report: Report, work: Path, inputs: Path, case: str, lams, dtype: str, a: Side, b: Side) -> dict:
    from chatvector.merge import run_merge
    from chatvector.testing.adversarial import SHARD_SIZE, adversarial_jobs

    jobs = adversarial_jobs(inputs, lams, dtype)
    t0 = time.perf_counter()
    ref = run_merge(jobs, work / "b", shard_size=SHARD_SIZE, chunk_bytes=B_CHUNK, device=b.device,
                    backend=b.backend, progress=False)
    if b.device == "cpu":
        check_reference(report, case, inputs, jobs, work / "b")
    for chunk in A_CHUNKS:
        got = run_merge(jobs, work / "a", shard_size=SHARD_SIZE, chunk_bytes=chunk, device=a.device,
                        backend=a.backend, progress=False)
        compare(report, case, f"{got.device_name} ({got.backend}, {chunk} B blocks) vs {ref.device_name} "
                f"({ref.backend})", got, ref, work / "a", work / "b")
    return {"case": case, "seconds": round(time.perf_counter() - t0, 3), "files": ref.files}


def run_sweep(report: Report, work: Path, inputs: Path, dtype: str, a: Side, b: Side) -> dict:
    """A λ sweep on A (every output from one read) against each variant merged alone on B."""
    from chatvector.merge import MergeOutput, run_merge, run_merges
    from chatvector.testing.adversarial import SHARD_SIZE, SWEEP_FACTORS, adversarial_jobs

    case = f"sweep-{dtype}"
    base = (0.7, -0.35, 1 / 3)
    variants = [adversarial_jobs(inputs, tuple(f * lam for lam in base), dtype) for f in SWEEP_FACTORS]
    outputs = [MergeOutput(jobs, work / "sweep" / f"v{i}") for i, jobs in enumerate(variants)]
    together = run_merges(outputs, shard_size=SHARD_SIZE, chunk_bytes=A_CHUNKS[1] * len(outputs), device=a.device,
                          backend=a.backend, progress=False)
    for i, (jobs, got) in enumerate(zip(variants, together)):
        alone = run_merge(jobs, work / "alone", shard_size=SHARD_SIZE, chunk_bytes=B_CHUNK, device=b.device,
                          backend=b.backend, progress=False)
        compare(report, case, f"variant {i} (factor {SWEEP_FACTORS[i]:.6g}) of the sweep vs alone", got, alone,
                outputs[i].out_dir, work / "alone")
    return {"case": case, "outputs": len(outputs)}


def probe(devices: str, work: Path | None = None, json_out: Path | None = None, quick: bool = False) -> Report:
    """Run every case; `quick`: the first λ set of each dtype and one sweep (the fast test of the probe)."""
    from chatvector.testing.adversarial import LAMBDA_SETS, OUT_DTYPES, cases, write_adversarial

    a, b = sides(devices)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="exactness-")) if own else work
    report = Report()
    try:
        inputs = write_adversarial(work / "inputs")
        chosen = cases()
        if quick:
            chosen = [c for c in chosen if c[1] in (LAMBDA_SETS[0], LAMBDA_SETS[-1])]
        for case, lams, dtype in chosen:
            report.cases.append(run_case(report, work, inputs, case, lams, dtype, a, b))
            print(f"{'ok  ' if not report.failures else 'FAIL'} {case}", flush=True)
        for dtype in OUT_DTYPES[:1] if quick else OUT_DTYPES:
            report.cases.append(run_sweep(report, work, inputs, dtype, a, b))
            print(f"{'ok  ' if not report.failures else 'FAIL'} sweep-{dtype}", flush=True)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    if json_out is not None:
        json_out.write_text(json.dumps({"devices": devices, "comparisons": report.comparisons, "files": report.files,
                                        "failures": report.failures, "cases": report.cases}, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="cuda,cpu", help="A,B: cuda,cpu (default) or cpu,cpu")
    ap.add_argument("--json", type=Path, default=None, help="write the cases and their sha256 here")
    ap.add_argument("--quick", action="store_true", help="a few cases only")
    args = ap.parse_args(argv)
    a, b = sides(args.devices)
    if "cuda" in (a.device + b.device):
        import torch

        if not torch.cuda.is_available():
            print("exactness: FAIL: CUDA is not available (use --devices cpu,cpu to probe the CPU's two paths)")
            return 1
    report = probe(args.devices, json_out=args.json, quick=args.quick)
    print(report.verdict(f"{a.device} ({a.backend})", f"{b.device} ({b.backend})"))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
