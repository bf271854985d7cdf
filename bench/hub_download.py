"""Benchmark: download a large file from the local Hub with hf_hub_download vs a plain file copy.

    .venv/bin/python bench/hub_download.py [--size-mib 1024] [--runs 3]

The server runs as `chatvector hub serve` in its own process, as a user would run it. The file is seeded
straight into the server's store (seeding is not what is measured). Both contenders read the same bytes from a
warm page cache and write a new file on the same disk; the figure of merit is download/copy throughput.
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
sys.path.insert(0, str(ROOT))


def seed(root: Path, size: int) -> Path:
    from pipeline.localhub.storage import FileOp, Store

    store = Store(root)
    repo = store.get_repo("model", "bench/big") or store.create_repo("model", "bench/big", False, "bench")
    block = os.urandom(1 << 20)
    sha = store.put_stream((block for _ in range(size >> 20)), expected_size=size)
    store.commit(repo, "main", [FileOp("add", "big.bin", sha, lfs=True)], "add big.bin", "", "bench")
    return store.blob_path(sha)


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
            [sys.executable, "-m", "pipeline", "hub", "serve", "--root", str(work / "hub"),
             "--token", "bench=hf_bench_token:write"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        url = server.stdout.readline().strip().removeprefix("Serving on ")
        os.environ.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                          HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(work / "hf_home"))
        from huggingface_hub import hf_hub_download

        shutil.copyfile(blob, work / "warm")  # warm the page cache for both contenders
        (work / "warm").unlink()
        copy_s, download_s = [], []
        for run in range(args.runs):
            target = work / f"copy-{run}"
            t0 = time.perf_counter()
            shutil.copyfile(blob, target)
            copy_s.append(time.perf_counter() - t0)
            target.unlink()
            cache = work / f"cache-{run}"
            t0 = time.perf_counter()
            path = hf_hub_download("bench/big", "big.bin", cache_dir=cache, token="hf_bench_token")
            download_s.append(time.perf_counter() - t0)
            assert os.path.getsize(path) == size
            shutil.rmtree(cache)
        server.terminate()
        server.wait(timeout=10)
        copy, download = statistics.median(copy_s), statistics.median(download_s)
        result = {
            "size_mib": args.size_mib, "runs": args.runs,
            "copy_s_median": round(copy, 3), "download_s_median": round(download, 3),
            "copy_mib_s": round(args.size_mib / copy, 1), "download_mib_s": round(args.size_mib / download, 1),
            "throughput_ratio_download_over_copy": round(copy / download, 3),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
