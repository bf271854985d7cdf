"""Benchmark of publishing over a slow link: snapshot mode, what users do today, and stream mode, in one run
(`make bench-stream`).

The local Hub runs in its own process (this file's `--hub-worker`), throttled with `throttle_total` to a fixed
bandwidth (MB/s = 10^6 bytes/s, all downloads together and, apart, all uploads together). The synthetic bf16
Llama triplet (bench/merge.py's generator; by default hidden 1024, 12 layers, intermediate 2816, vocab 16000:
373 MB an input, 4 input shards) is uploaded beforehand through an unthrottled server on the same root; the
measured runs go through the throttled one. Each run publishes λ·(chat − base) + cp three ways, each with an
empty HF cache and TMPDIR of its own and a new target repo (and its own λ, so every upload is new bytes: the
Hub's store keeps the blobs of earlier runs):

  snapshot   `chatvector publish RECIPE --fetch snapshot --format json`: download, then merge, then upload
  user       what a user does today: huggingface_hub.snapshot_download of the three inputs, mergekit-yaml
             task_arithmetic (its own venv, .bench/mergekit-venv, as bench/merge.py installs it), then
             HfApi.upload_folder to the target
  stream     `chatvector publish RECIPE --fetch stream --format json` (skipped, with a note, while
             `chatvector publish --help` lists no --fetch)

Each is measured for wall time, bytes downloaded and uploaded (body bytes through the server's bandwidth
buckets; also the downloads as the server's request log accounts them), disk high-water mark (allocated bytes,
st_blocks·512, of everything under the run's own folders: HF_HOME, TMPDIR, mergekit's output; sampled every
0.1 s), and peak memory (/proc, as bench/merge.py samples it). Stream mode is compared with the lower bound
max(input weight bytes / bandwidth, output weight bytes / bandwidth): target ≤ 1.2× the bound, and disk ≤ one
output shard (the largest) + 10 %. Results: .bench/stream-results.json.

    python bench/stream.py [--runs 1] [--bandwidth 30] [--skip-mergekit] [--device cpu]
    python bench/stream.py --smoke      # tiny model, fast link, one run: checks the benchmark itself (< 1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the seeding's uploads, in this process
sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge as mb  # noqa: E402  (bench/merge.py: the generator, the /proc sampler, mergekit's venv)

ROOT = mb.ROOT
BENCH = mb.BENCH
WORK = BENCH / "stream"
PY = sys.executable
TOKEN = mb.TOKEN
MB = 1_000_000
ROLES = ("base", "chat", "cp")

SPECS = {
    # input_shard: bytes per input shard (the generator's SHARD); out_shards: output shards wanted;
    # lfs_threshold: the server's (the Hub's 10 MiB; the smoke's shards are smaller, and go through LFS too)
    "stream": dict(hidden=1024, layers=12, inter=2816, vocab=16000, heads=16, kv=16, input_shard=100 * MB,
                   out_shards=8, lfs_threshold=10 << 20),
    "stream-smoke": dict(hidden=256, layers=2, inter=688, vocab=4000, heads=4, kv=4, input_shard=4 * MB,
                         out_shards=8, lfs_threshold=512 << 10),
}
_NOT_GENERATOR = ("out_shards", "lfs_threshold")
DEFAULT_BANDWIDTH = {"stream": 30.0, "stream-smoke": 50.0}  # MB/s
MIN_SECONDS = 30  # the issue: a stream-mode run takes at least this long at the chosen bandwidth
BOUND_TARGET = 1.2
DISK_TARGET = 1.1


# ------------------------------------------------------------------------------------------------
# The models and the recipe.


def generate(size: str) -> Path:
    """The triplet under .bench/models/<size> (bench/merge.py's generator with this size's input shards)."""
    spec = {k: v for k, v in SPECS[size].items() if k not in _NOT_GENERATOR}
    mb.SIZES[size] = spec  # the extra key input_shard keeps the generator's "already generated" marker honest
    saved = mb.SHARD
    mb.SHARD = spec["input_shard"]
    try:
        return mb.generate(size)
    finally:
        mb.SHARD = saved


def weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def write_recipe(path: Path, size: str, lam: float, target: str, shard: int) -> Path:
    path.write_text(
        f"name: bench-{size}\n"
        + "".join(f"{r}: {{repo_id: bench/{size}-{r}}}\n" for r in ROLES)
        + f"coefficients: {{default: {lam}}}\n"
        f"output: {{dtype: bfloat16, shard_size: {shard}}}\n"
        f"target: {{repo_id: {target}}}\n"
        "card: {license: mit}\n")
    return path


def publish_has_fetch() -> bool:
    """Whether `chatvector publish` takes --fetch (snapshot|stream)."""
    r = subprocess.run([PY, "-m", "chatvector", "publish", "--help"], capture_output=True, text=True, cwd=ROOT)
    return r.returncode == 0 and "--fetch" in r.stdout and "stream" in r.stdout


# ------------------------------------------------------------------------------------------------
# The local Hub in its own process.


def hub_worker(spec: dict) -> None:
    """Serve ROOT (throttled when spec["throttle"]); on stdin `stats`, print one JSON line: the body bytes
    through the download and upload buckets (None when unthrottled) and the requests logged, since the last."""
    from chatvector.localhub.protocol import Token
    from chatvector.localhub.server import LocalHub

    hub = LocalHub(spec["root"], tokens=[Token("bench", TOKEN, "write")], throttle_total=spec["throttle"] or None,
                   lfs_threshold=spec["lfs_threshold"])
    counts: dict[str, int | None] = {"down": None, "up": None}
    lock = threading.Lock()
    # Every paced body byte is booked on the direction's total bucket: count them there. (The server's
    # internals: when they change, the counts are None and the request log is all there is.)
    net = getattr(getattr(hub, "_server", None), "net", None)
    buckets = [(k, getattr(net, a, None)) for k, a in (("down", "download_total"), ("up", "upload_total"))]
    if all(b is not None and hasattr(b, "reserve") for _, b in buckets) and buckets[0][1] is not buckets[1][1]:
        for key, bucket in buckets:
            counts[key] = 0

            def reserve(n, _orig=bucket.reserve, _key=key):
                with lock:
                    counts[_key] += n
                return _orig(n)

            bucket.reserve = reserve
    hub.start()
    print(f"Serving on {hub.url}", flush=True)
    for line in sys.stdin:
        if line.strip() != "stats":
            break
        entries = []
        while hub.requests:
            e = hub.requests.popleft()
            entries.append([e.method, e.path, e.status, e.range])
        with lock:
            out = dict(counts, log=entries)
            for k in ("down", "up"):
                if counts[k] is not None:
                    counts[k] = 0
        print(json.dumps(out), flush=True)
    hub.stop()


class HubProc:
    def __init__(self, root: Path, throttle: float | None, lfs_threshold: int):
        root.mkdir(parents=True, exist_ok=True)
        self.errlog = open(root.parent / "hub-worker.log", "a")
        spec = {"root": str(root), "throttle": throttle, "lfs_threshold": lfs_threshold}
        self.proc = subprocess.Popen([PY, __file__, "--hub-worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog, text=True,
                                     cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line.startswith("Serving on "):
            raise SystemExit(f"the local Hub did not start: {line!r} (see {self.errlog.name})")
        self.url = line.split()[-1]

    def api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=TOKEN)

    def stats(self) -> dict:
        time.sleep(0.2)  # a request is logged just after its answer is sent
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def env(self, work: Path) -> dict:
        for d in ("home", "tmp"):
            (work / d).mkdir(parents=True, exist_ok=True)
        return dict(os.environ, HF_ENDPOINT=self.url, HF_TOKEN=TOKEN, HF_HOME=str(work / "home"),
                    TMPDIR=str(work / "tmp"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                    HF_HUB_DISABLE_TELEMETRY="1")

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.errlog.close()


def seed(hub: HubProc, models: Path, size: str) -> None:
    api = hub.api()
    t0 = time.perf_counter()
    for role in ROLES:
        repo = f"bench/{size}-{role}"
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(models / role), ignore_patterns=["*.yaml"])
    print(f"  seeded the local Hub (unthrottled) with the {size} triplet in {time.perf_counter() - t0:.0f} s",
          flush=True)


def downloads_from_log(log: list, sizes: dict[tuple[str, str], int]) -> tuple[int, int, int]:
    """(bytes, GETs of files, of which range requests) of the resolve GETs in LOG, sized from SIZES."""
    total = gets = ranged = 0
    for method, path, status, rng in log:
        if method != "GET" or "/resolve/" not in path or status not in (200, 206):
            continue
        name, _, rest = path.lstrip("/").partition("/resolve/")
        fname = rest.split("/", 1)[-1]
        size = sizes.get((name, fname))
        if size is None:
            continue
        gets += 1
        if status == 206 and rng:
            ranged += 1
            first, _, last = rng.strip().removeprefix("bytes=").partition("-")
            if first == "":
                total += min(size, int(last))
            else:
                total += min(int(last), size - 1) - int(first) + 1 if last else size - int(first)
        else:
            total += size
    return total, gets, ranged


# ------------------------------------------------------------------------------------------------
# Disk: allocated bytes under a run's folders, sampled.


def allocated(folder: Path) -> int:
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                    except OSError:  # gone meanwhile
                        pass
        except OSError:
            pass
    return total


class DiskSampler:
    """Samples allocated(folder) every 0.1 s in a thread; `peak` is the high-water mark."""

    def __init__(self, folder: Path, every: float = 0.1):
        self.folder, self.every, self.peak = folder, every, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, allocated(self.folder))
            self._done.wait(self.every)

    def __enter__(self) -> "DiskSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, allocated(self.folder))


# ------------------------------------------------------------------------------------------------
# The user's way: three commands.


def user_download(spec: dict) -> None:
    from huggingface_hub import snapshot_download

    print(json.dumps({role: snapshot_download(repo) for role, repo in spec["repos"].items()}))


def user_upload(spec: dict) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(spec["repo"], exist_ok=True)
    info = api.upload_folder(repo_id=spec["repo"], folder_path=spec["folder"])
    print(json.dumps({"commit": info.oid}))


def run_user(hub: HubProc, work: Path, size: str, lam: float, target: str, shard: int) -> dict:
    """snapshot_download ×3, mergekit-yaml, upload_folder: walls summed, memory the largest of the three."""
    env = hub.env(work)
    steps = {}
    inputs, out = work / "inputs", work / "merged"
    r = mb.measure([PY, __file__, "--user-download", json.dumps({"repos": {r: f"bench/{size}-{r}" for r in ROLES}})],
                   env=env)
    steps["download"] = r
    if r["rc"] == 0:
        inputs.mkdir()
        for role, path in json.loads(r["stdout"].strip().splitlines()[-1]).items():
            (inputs / role).symlink_to(path, target_is_directory=True)  # a link: counts as nothing on disk
        cmd = mb.mergekit_cmd(inputs, out, lam, "cpu")
        cmd[cmd.index("--out-shard-size") + 1] = str(shard)
        r = steps["mergekit"] = mb.measure(cmd, env=env)
    if r["rc"] == 0:
        for f in (inputs / "cp").iterdir():  # what a user adds so the model loads: cp's tokenizer files
            if not (out / f.name).exists() and f.suffix != ".safetensors" and f.name not in (
                    "model.safetensors.index.json", ".gitattributes", "README.md"):
                shutil.copy(f, out / f.name)
        r = steps["upload"] = mb.measure([PY, __file__, "--user-upload", json.dumps({"repo": target, "folder": str(out)})],
                                         env=env)
    rc = next((s["rc"] for s in steps.values() if s["rc"] != 0), 0)
    rec = {"wall": sum(s["wall"] for s in steps.values()), "rc": rc,
           "max_rss": max(s["max_rss"] for s in steps.values()), "peak_anon": max(s["peak_anon"] for s in steps.values()),
           "steps": {k: {"wall": s["wall"], "rc": s["rc"], "max_rss": s["max_rss"], "peak_anon": s["peak_anon"]}
                     for k, s in steps.items()}}
    if rc:
        rec["stderr"] = r["stderr"][-4000:]
    return rec


def run_publish(hub: HubProc, work: Path, recipe: Path, fetch: str | None, device: str) -> dict:
    cmd = [PY, "-m", "chatvector", "publish", str(recipe), "--device", device, "--format", "json"]
    if fetch:
        cmd[5:5] = ["--fetch", fetch]
    r = mb.measure(cmd, env=hub.env(work))
    doc = mb._json_output(r.pop("stdout")) if r["rc"] == 0 else None
    err = r.pop("stderr")
    rec = dict(r, json=doc, stages=(doc or {}).get("stages"), cmd=cmd[2:])
    if r["rc"]:
        rec["stderr"] = err[-4000:]
    return rec


def target_files(hub: HubProc, repo: str) -> dict[str, int]:
    """The target's safetensors files and sizes (empty when the repo is not there)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return {e.path: e.size for e in hub.api().list_repo_tree(repo, recursive=True)
                if e.path.endswith(".safetensors") and getattr(e, "size", None) is not None}
    except RepositoryNotFoundError:
        return {}


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark of publishing over a throttled local Hub: snapshot mode, "
                                             "download+mergekit+upload, stream mode (see the module docstring).")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bandwidth", type=float, help="MB/s (10^6 bytes/s), downloads and uploads each "
                                                    f"(default {DEFAULT_BANDWIDTH['stream']:g}; smoke "
                                                    f"{DEFAULT_BANDWIDTH['stream-smoke']:g})")
    ap.add_argument("--skip-mergekit", action="store_true", help="leave out download + mergekit + upload")
    ap.add_argument("--device", default="cpu", help="chatvector's merge device (default cpu)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, fast link, one run (checks the benchmark)")
    ap.add_argument("--results", type=Path, default=BENCH / "stream-results.json")
    ap.add_argument("--hub-worker", help=argparse.SUPPRESS)
    ap.add_argument("--user-download", help=argparse.SUPPRESS)
    ap.add_argument("--user-upload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for flag, fn in ((args.hub_worker, hub_worker), (args.user_download, user_download),
                     (args.user_upload, user_upload)):
        if flag:
            fn(json.loads(flag))
            return 0

    size = "stream-smoke" if args.smoke else "stream"
    runs = 1 if args.smoke else args.runs
    bw = args.bandwidth or DEFAULT_BANDWIDTH[size]
    notes: list[str] = []
    has_fetch = publish_has_fetch()
    if not has_fetch:
        notes.append("stream not run: `chatvector publish --help` lists no --fetch yet; snapshot ran without "
                     "--fetch (today's publish downloads everything first)")
    # The smoke never installs mergekit (a venv with torch: minutes), as bench/merge.py's smoke: it runs without it.
    mergekit = None if args.skip_mergekit else mb.ensure_mergekit(allow_install=not args.smoke)
    if not args.skip_mergekit and mergekit is None:
        notes.append("user (mergekit) not run: " + (
            f"mergekit is not installed in {mb.MERGEKIT_VENV} (a run without --smoke installs it)" if args.smoke
            else f"mergekit could not be installed (see {BENCH / 'mergekit-install.log'})"))
    contenders = ["snapshot"] + (["user"] if mergekit else []) + (["stream"] if has_fetch else [])

    models = generate(size)
    in_bytes = sum(weight_bytes(models / r) for r in ROLES)
    out_est = weight_bytes(models / "cp")
    shard = max(1, out_est // SPECS[size]["out_shards"])
    sizes = {(f"bench/{size}-{r}", f.name): f.stat().st_size for r in ROLES for f in (models / r).iterdir()}
    print(f"triplet: {in_bytes / 1e6:.0f} MB of input weights, output ≈ {out_est / 1e6:.0f} MB in shards of "
          f"{shard / 1e6:.1f} MB; link {bw:g} MB/s each way: download bound {in_bytes / MB / bw:.1f} s", flush=True)
    if args.smoke:
        notes.append("smoke: the PASS/FAIL targets mean nothing at this size (startup and small files dominate)")
    elif in_bytes / MB / bw < MIN_SECONDS:
        notes.append(f"at {bw:g} MB/s the inputs take {in_bytes / MB / bw:.1f} s (< {MIN_SECONDS} s): "
                     "lower --bandwidth for a meaningful run")

    shutil.rmtree(WORK, ignore_errors=True)
    hub_root = WORK / "hub"
    lfs_threshold = SPECS[size]["lfs_threshold"]
    hub = HubProc(hub_root, None, lfs_threshold)
    try:
        seed(hub, models, size)
    finally:
        hub.stop()
    hub = HubProc(hub_root, bw, lfs_threshold)  # the same root: the seeded repos are there
    hub.stats()  # clear the log
    rows: dict[str, list[dict]] = {c: [] for c in contenders}
    k = 0
    try:
        for run in range(runs):
            for name in contenders:
                k += 1
                lam = round(1 - k / 100, 2)
                target = f"bench/{size}-out-{name}-{run}"
                work = WORK / "runs" / f"{name}-{run}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                recipe = write_recipe(WORK / f"recipe-{name}-{run}.yaml", size, lam, target, shard)
                with DiskSampler(work) as disk:
                    if name == "user":
                        rec = run_user(hub, work, size, lam, target, shard)
                    else:
                        fetch = ("stream" if name == "stream" else "snapshot") if has_fetch else None
                        rec = run_publish(hub, work, recipe, fetch, args.device)
                st = hub.stats()
                down_log, gets, ranged = downloads_from_log(st["log"], sizes)
                outs = target_files(hub, target)
                hub.stats()  # the listing's own requests
                rec.update(lam=lam, target=target, disk_hwm=disk.peak, down_bytes=st["down"], up_bytes=st["up"],
                           down_bytes_log=down_log, file_gets=gets, range_gets=ranged, requests=len(st["log"]),
                           output_bytes=sum(outs.values()), output_shards=len(outs),
                           largest_output_shard=max(outs.values(), default=0))
                rows[name].append(rec)
                _report(name, run, runs, rec)
                shutil.rmtree(work, ignore_errors=True)
    finally:
        hub.stop()
        shutil.rmtree(hub_root, ignore_errors=True)

    summary = summarize(rows)
    out_bytes = next((summary[c]["output_bytes"] for c in ("stream", "snapshot") if summary.get(c, {}).get("output_bytes")),
                     out_est)
    bound = max(in_bytes / MB / bw, out_bytes / MB / bw)
    checks, ratios = evaluate(summary, bound)
    print_table(summary, bound, checks, ratios, notes, in_bytes, out_bytes, bw)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "size": size, "spec": SPECS[size], "bandwidth_mb_s": bw, "input_weight_bytes": in_bytes,
        "output_weight_bytes": out_bytes, "output_shard_size": shard, "lower_bound_s": bound, "summary": summary,
        "checks": checks, "ratios": ratios, "notes": notes, "runs": rows, "machine": {"cpus": os.cpu_count()},
    }, indent=2))
    print(f"results: {args.results}")
    failed = [c for c, rs in rows.items() if any(r["rc"] for r in rs)]
    return 1 if failed else 0


def _report(name: str, run: int, runs: int, r: dict) -> None:
    f = lambda v: "–" if v is None else f"{v / 1e6:.0f} MB"  # noqa: E731
    print(f"  {name:<9} run {run + 1}/{runs}: " + (f"FAILED (exit {r['rc']})" if r["rc"] else "")
          + f" wall {r['wall']:6.2f} s, down {f(r['down_bytes'])} (log {f(r['down_bytes_log'])}, {r['file_gets']} GETs,"
          f" {r['range_gets']} ranged), up {f(r['up_bytes'])}, disk peak {r['disk_hwm'] / 1e6:.0f} MB,"
          f" max RSS {r['max_rss'] / 2**20:.0f} MiB, peak anon {r['peak_anon'] / 2**20:.0f} MiB,"
          f" out {r['output_shards']} shards {f(r['output_bytes'])}", flush=True)
    if r.get("stages"):
        print("            stages: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()), flush=True)
    own = (r.get("json") or {}).get("io")
    if isinstance(own, dict):  # what the command reports of its own transfers, disk and memory
        print("            its own figures: " + ", ".join(f"{k} {v}" for k, v in own.items()), flush=True)
    if r.get("steps"):
        print("            steps: " + ", ".join(f"{k} {v['wall']:.2f} s" for k, v in r["steps"].items()), flush=True)
    if r["rc"]:
        print("            " + r.get("stderr", "").strip().replace("\n", "\n            ")[-2000:], flush=True)


FIELDS = ("wall", "down_bytes", "down_bytes_log", "up_bytes", "disk_hwm", "max_rss", "peak_anon", "output_bytes",
          "largest_output_shard")


def summarize(rows: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rs in rows.items():
        ok = [r for r in rs if r["rc"] == 0]
        if not ok:
            out[name] = {"runs": len(rs), "failed": len(rs)}
            continue
        s = {"runs": len(rs), "failed": len(rs) - len(ok)}
        for k in FIELDS:
            vals = [r[k] for r in ok if r.get(k) is not None]
            s[k] = statistics.median(vals) if vals else None
        stage_names = list(dict.fromkeys(k for r in ok for k in (r.get("stages") or {})))
        s["stages"] = {k: statistics.median((r.get("stages") or {}).get(k, 0.0) for r in ok) for k in stage_names}
        out[name] = s
    return out


def evaluate(summary: dict, bound: float) -> tuple[dict, dict]:
    checks, ratios = {}, {}
    st = summary.get("stream", {})
    if st.get("wall"):
        ratio = st["wall"] / bound
        checks["stream wall ≤ 1.2× lower bound"] = {"value": ratio, "pass": ratio <= BOUND_TARGET}
        if st.get("largest_output_shard"):
            d = st["disk_hwm"] / st["largest_output_shard"]
            checks["stream disk ≤ 1 output shard + 10 %"] = {"value": d, "pass": d <= DISK_TARGET}
        for other in ("snapshot", "user"):
            if summary.get(other, {}).get("wall"):
                ratios[f"stream / {other}, wall"] = st["wall"] / summary[other]["wall"]
    for name, s in summary.items():
        if s.get("wall"):
            ratios[f"{name} / lower bound, wall"] = s["wall"] / bound
    return checks, ratios


def print_table(summary, bound, checks, ratios, notes, in_bytes, out_bytes, bw) -> None:
    def mb_(v):
        return "–" if v is None else f"{v / 1e6:.0f} MB"

    print()
    print(f"link {bw:g} MB/s each way; input weights {in_bytes / 1e6:.0f} MB, output weights {out_bytes / 1e6:.0f} MB;"
          f" lower bound max(in/bw, out/bw) = {bound:.1f} s")
    print("| contender | runs | wall (median) | downloaded | uploaded | disk high-water | max RSS | peak anon |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        if not s.get("wall"):
            print(f"| {name} | {s['runs']} | failed | | | | | |")
            continue
        print(f"| {name} | {s['runs']} | {s['wall']:.2f} s | {mb_(s['down_bytes'] if s['down_bytes'] is not None else s['down_bytes_log'])}"
              f" | {mb_(s['up_bytes'])} | {mb_(s['disk_hwm'])} | {s['max_rss'] / 2**20:.0f} MiB |"
              f" {s['peak_anon'] / 2**20:.0f} MiB |")
    staged = {n: s for n, s in summary.items() if s.get("stages")}
    if staged:
        names = list(dict.fromkeys(k for s in staged.values() for k in s["stages"]))
        print()
        print("| stages (median s) | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for n, s in staged.items():
            print(f"| {n} | " + " | ".join(f"{s['stages'].get(k, 0):.2f}" for k in names) + " |")
    print()
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}" + ("  (ideal 0.75: 3 inputs per output, equal bandwidths)"
                                 if k == "stream / snapshot, wall" else ""))
    for k, v in checks.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'}: {k} ({v['value']:.2f}×)")
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    sys.exit(main())
