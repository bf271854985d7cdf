"""Run the merge engine on three local checkpoint folders, tensors matched by name.

A stand-in for the planner in benchmarks: every cp tensor gets λ · (chat − base) when base and chat
have a tensor of the same name and shape, else it is copied. Usage:

    python bench/engine_jobs.py --base B --chat C --cp P --out OUT [--lam 1.0] [--device auto]
        [--backend auto|cpu|staged] [--buffered] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from chatvector.conventions import DTYPE_BY_CODE, OUTPUT_DTYPE_NAMES  # noqa: E402
from chatvector.merge import TensorJob, TensorSource, VectorTerm, run_merge  # noqa: E402
from chatvector.merge.compute import BACKENDS  # noqa: E402
from chatvector.merge.safetensors_io import read_header  # noqa: E402


def tensor_index(folder: Path) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """name -> (file, safetensors dtype, shape), in file order then offset order."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        header = read_header(f)
        for name, info in sorted(header.tensors.items(), key=lambda kv: kv[1].start):
            out[name] = (f, info.dtype, info.shape)
    return out


def build_jobs(base: Path, chat: Path, cp: Path, lam: float = 1.0, dtype: str | None = None) -> list[TensorJob]:
    b, c, p = tensor_index(base), tensor_index(chat), tensor_index(cp)
    jobs = []
    for name, (file, code, shape) in p.items():
        terms = ()
        if name in b and name in c and b[name][2] == shape == c[name][2]:
            terms = (VectorTerm(TensorSource(b[name][0], name), TensorSource(c[name][0], name), lam),)
        out_dtype = dtype or DTYPE_BY_CODE[code].name
        if out_dtype not in OUTPUT_DTYPE_NAMES:
            raise SystemExit(f"{name}: cp stores it as {code}; pass --dtype (one of {', '.join(OUTPUT_DTYPE_NAMES)})")
        jobs.append(TensorJob(name, shape, out_dtype, TensorSource(file, name), terms))
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--chat", type=Path, required=True)
    ap.add_argument("--cp", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--dtype", default=None, help="output dtype (default: cp's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto", choices=BACKENDS, help="run_merge's backend (default: auto)")
    ap.add_argument("--buffered", action="store_true", help="ordinary writes instead of O_DIRECT")
    ap.add_argument("--shard-size", type=int, default=1_000_000_000)
    ap.add_argument("--chunk-bytes", type=int, default=64 << 20)
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args(argv)
    jobs = build_jobs(args.base, args.chat, args.cp, args.lam, args.dtype)
    res = run_merge(jobs, args.out, shard_size=args.shard_size, device=args.device, chunk_bytes=args.chunk_bytes,
                    progress=not args.json, backend=args.backend, direct_io=not args.buffered)
    if args.json:
        print(json.dumps({"seconds": res.seconds, "device": res.device, "backend": res.backend, "total_bytes": res.total_bytes,
                          "files": res.files, "direct_io_files": list(res.direct_io_files)}))
    else:
        print(f"{res.total_bytes / 1e9:.2f} GB in {res.seconds:.2f} s on {res.device} ({res.backend}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
