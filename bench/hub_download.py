"""Benchmark: download a large file from the local Hub with hf_hub_download vs a plain file copy.

    .venv/bin/python bench/hub_download.py [--size-mib 1024] [--runs 3]

The server runs as `chatvector hub serve` in its own process, as a user would run it. The file is seeded
straight into the server's store (seeding is not what is measured). Every contender reads the same bytes from
a warm page cache and writes a new file on the same disk:

  copy        shutil.copyfile (the kernel copies page to page: the plain-copy baseline)
  py-copy     a Python read/write loop in 10 MiB chunks (what any user-space copy costs)
  curl        curl through the server into a file (a C client), if curl exists
  curl-null   curl through the server into /dev/null: the server's own streaming rate, no disk write
  hf_hub      huggingface_hub.hf_hub_download through the server, as the pipeline runs it
              (chatvector.hub.client.tuned_downloads: pieces written as received)
  hf_hub-default  the same with huggingface_hub's default 10 MiB re-chunking

Medians over --runs; ratios are throughput relative to `copy`, and relative to `curl` (the fastest
user-space writer: the target is hf_hub ≥ 0.8× of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipeline"))


def seed(root: Path, size: int) -> Path:
    from chatvector.localhub.storage import FileOp, Store

    store = Store(root)
    repo = store.get_repo("model", "bench/big") or store.create_repo("model", "bench/big", False, "bench")
    block = os.urandom(1 << 20)
    sha = store.put_stream((block for _ in range(size >> 20)), expected_size=size)
    store.commit(repo, "main", [FileOp("add", "big.bin", sha, lfs=True)], "add big.bin", "", "bench")
    return store.blob_path(sha)


def _hf_download(dest: Path, tuned: bool) -> None:
    import contextlib

    from huggingface_hub import hf_hub_download

    from chatvector.hub.client import tuned_downloads

    with tuned_downloads() if tuned else contextlib.nullcontext():
        hf_hub_download("bench/big", "big.bin", cache_dir=dest, token="hf_bench_token")


def _py_copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(10 << 20):
            fout.write(chunk)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="hub-bench-", dir=ROOT / ".bench" if (ROOT / ".bench").exists() else None))
    try:
        blob = seed(work / "hub", size)
        server = subprocess.Popen(
            [sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(work / "hub"),
             "--token", "bench=hf_bench_token:write"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        url = server.stdout.readline().strip().removeprefix("Serving on ")
        os.environ.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                          HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(work / "hf_home"))
        shutil.copyfile(blob, work / "warm")  # warm the page cache for every contender
        (work / "warm").unlink()
        url = f"{os.environ['HF_ENDPOINT']}/bench/big/resolve/main/big.bin"
        contenders = {
            "copy": lambda dest: shutil.copyfile(blob, dest),
            "py-copy": lambda dest: _py_copy(blob, dest),
            "hf_hub": lambda dest: _hf_download(dest, tuned=True),
            "hf_hub-default": lambda dest: _hf_download(dest, tuned=False),
        }
        if shutil.which("curl"):
            contenders["curl"] = lambda dest: subprocess.run(
                ["curl", "-sf", "-H", "Authorization: Bearer hf_bench_token", "-o", str(dest), url], check=True)
            contenders["curl-null"] = lambda dest: subprocess.run(
                ["curl", "-sf", "-H", "Authorization: Bearer hf_bench_token", "-o", "/dev/null", url], check=True)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for run in range(args.runs):
            for name, fn in contenders.items():
                dest = work / f"{name}-{run}"
                t0 = time.perf_counter()
                fn(dest)
                times[name].append(time.perf_counter() - t0)
                _remove(dest)
        server.terminate()
        server.wait(timeout=10)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        result = {
            "size_mib": args.size_mib, "runs": args.runs,
            "seconds_median": {k: round(v, 3) for k, v in medians.items()},
            "mib_per_s": {k: round(args.size_mib / v, 1) for k, v in medians.items()},
            "throughput_vs_copy": {k: round(medians["copy"] / v, 3) for k, v in medians.items()},
        }
        if "curl" in medians:
            result["throughput_vs_curl"] = {k: round(medians["curl"] / v, 3) for k, v in medians.items()}
            result["hf_hub / curl (target >= 0.8)"] = round(medians["curl"] / medians["hf_hub"], 3)
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
