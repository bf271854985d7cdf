"""Hub transfers through the local Hub, Xet against LFS against curl, and the bytes a `sweep --publish` uploads
with Xet (`make bench-hub`).

Uses bench/merge.py's synthetic bf16 Llama triplet (generated once under .bench/models/; 1x: 953 M parameters,
1.9 GB per model in 1 GB shards, 32 000-token tokenizers; `--size small`: its 2-layer smoke model). The local Hub
is `chatvector.localhub.LocalHub`, started by this script in its own process on a root under .bench/hub-transfer/
(a fresh root for each upload run and each sweep, so that nothing is deduplicated against an earlier run). Every
byte the server reads from or writes to a client socket is counted (request and answer, headers included), and
its request log is summarized per contender. Clients run as subprocesses with HF_ENDPOINT, HF_TOKEN and a fresh,
empty HF_HOME (so nothing is cached: neither the Hub cache nor hf_xet's chunk and shard caches under
HF_HOME/xet), with Xet on (the stock huggingface_hub + hf_xet; HF_HUB_DISABLE_XET unset) or off
(HF_HUB_DISABLE_XET=1: Git LFS).

Transfers, each run:
  upload-xet    `HfApi.upload_folder` of the three model folders, Xet on (fresh Hub root)
  upload-lfs    the same, Xet off (fresh Hub root)
  download-xet  `snapshot_download` of the three repos, Xet on (the repos as the last Xet upload stored them)
  download-lfs  the same, Xet off (`/resolve` → 302 → `/cdn-lfs/<sha256>`)
  curl          `curl -L -o FILE` of each weight file through its `/resolve` URL (one curl process, all files)
  cp            `cp` of the same weight files from the model folders (no server)
The sources each contender reads (model folders, the Hub's blobs, its xorbs) are read once just before it, so
every contender starts from a warm page cache. Reported: medians over --runs of the wall time of the whole
client process, MB/s of the bytes it moved (the files' sizes), its time / curl's, bytes the server
received/sent, peak memory of the client.

Sweep (`--skip-sweep` to leave it out): `chatvector sweep RECIPE --lambdas 0.5,0.7,0.85,1.0 --out DIR --publish
--format json` on the same triplet (`path:` sources, bench/sweep.py's recipe with a target and a minimal `eval:`
that every variant passes: one prompt, one new token, no thresholds), Xet on, two recipes: λ 1.0 × factor on every
tensor, and the same with the norms, embeddings and lm_head at λ 0 (cp's tensors: the same bytes in every
variant). Measured: the bytes of xorbs the CAS stored (the size of HUBROOT/xet/xorbs after the publish; the
root is new), the bytes the server received, against 4 × the output (the four variants' safetensors).
`--sweep-lfs` runs the same with Xet off as a check of the counting (LFS uploads each file whole).

    python bench/hub_transfer.py [--runs 3] [--size 1x|small] [--skip-sweep] [--sweep-lfs] [--skip-transfers]
    python bench/hub_transfer.py --size small --runs 1      # quick check (about a minute)

Results: .bench/hub-transfer-results.json (`--results`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
WORK = BENCH / "hub-transfer"
PY = sys.executable
ROLES = ("base", "chat", "cp")
TOKEN = "hf_bench_token"
LAMBDAS = "0.5,0.7,0.85,1.0"
# The clients' environment: this process's, without any HF_* setting (bench/merge.py, once imported, sets
# HF_HUB_DISABLE_XET in this process); each client gets its own below.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}


def bench_merge():
    """bench/merge.py as a module: the triplet's generator, the warm-up read and the subprocess measurement."""
    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module("merge")


def client_env(url: str, home: Path, xet: bool) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = dict(CLEAN_ENV, HF_ENDPOINT=url, HF_TOKEN=TOKEN, HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


# ------------------------------------------------------------------------------------------------
# The local Hub, with its socket bytes counted.


class Meter:
    def __init__(self):
        self.lock = threading.Lock()
        self.received = self.sent = 0

    def read(self) -> tuple[int, int]:
        with self.lock:
            return self.received, self.sent


class CountingSocket(socket.socket):
    """A server-side connection that counts what goes through it (socket.sendfile included)."""

    meter: Meter
    in_sendfile = False

    def recv_into(self, buffer, nbytes=0, flags=0):
        n = super().recv_into(buffer, nbytes, flags)
        with self.meter.lock:
            self.meter.received += n
        return n

    def recv(self, bufsize, flags=0):
        data = super().recv(bufsize, flags)
        with self.meter.lock:
            self.meter.received += len(data)
        return data

    def send(self, data, flags=0):
        n = super().send(data, flags)
        if not self.in_sendfile:  # socket.sendfile's fallback sends through here: counted there
            with self.meter.lock:
                self.meter.sent += n
        return n

    def sendall(self, data, flags=0):
        super().sendall(data, flags)
        with self.meter.lock:
            self.meter.sent += memoryview(data).nbytes

    def sendfile(self, file, offset=0, count=None):
        self.in_sendfile = True
        try:
            n = super().sendfile(file, offset, count)
        finally:
            self.in_sendfile = False
        with self.meter.lock:
            self.meter.sent += n
        return n


class Hub:
    """A LocalHub on ROOT (emptied first unless KEEP) in this process, its connections counted."""

    def __init__(self, root: Path, keep: bool = False):
        from chatvector.localhub import LocalHub
        from chatvector.localhub.protocol import Token

        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.hub = LocalHub(root, tokens=[Token("bench", TOKEN, "write")])
        self.meter: Meter | None = Meter()
        server = getattr(self.hub, "_server", None)
        if server is None or not hasattr(server, "get_request"):  # the server's internals changed: log only
            self.meter = None
        else:
            accept, meter = server.get_request, self.meter

            def get_request():
                sock, addr = accept()
                counted = CountingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
                counted.meter = meter
                return counted, addr

            server.get_request = get_request
        self.hub.start()
        self.url = self.hub.url

    def mark(self) -> tuple:
        return (len(self.hub.requests), *(self.meter.read() if self.meter else (None, None)))

    def since(self, mark: tuple) -> dict:
        time.sleep(0.1)  # a request is logged just before its answer goes out
        entries = list(self.hub.requests)[mark[0]:]
        received, sent = self.meter.read() if self.meter else (None, None)
        kinds = Counter(f"{e.method} {request_kind(e.path)} {e.status}" for e in entries)
        return {"received": None if received is None else received - mark[1],
                "sent": None if sent is None else sent - mark[2],
                "requests": len(entries), "kinds": dict(sorted(kinds.items())),
                "errors": [f"{e.method} {e.path} {e.status}" for e in entries if e.status >= 500 or e.status == 0][:20]}

    def stop(self, remove: bool = True) -> None:
        self.hub.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def request_kind(path: str) -> str:
    """A request's path without its repository, file or hash: what kind of request it is."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "/"
    if parts[0] == "xet-cas":
        return "/".join(parts[:3]) if len(parts) > 2 and parts[1] in ("v1", "v2") else "/".join(parts[:2])
    if parts[0] == "api":
        tail = parts[4] if len(parts) > 4 and parts[1] in ("models", "datasets", "spaces") else parts[1]
        return f"api/{tail}"
    if parts[0] == "cdn-lfs":
        return "cdn-lfs"
    if "resolve" in parts:
        return "resolve"
    if len(parts) > 2 and parts[2] == "info":
        return "lfs/" + "/".join(parts[3:5])
    if parts[-1].endswith(".git") or (len(parts) > 2 and parts[2].startswith("info")):
        return "git"
    return "/".join(parts[2:3]) or parts[0]


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def cas_stats(root: Path) -> dict:
    """What the CAS holds under a Hub ROOT: xorbs, their bytes on disk (compressed chunks), and the chunks they
    hold with their uncompressed bytes (all, and each distinct chunk once), from the Hub's table of xorbs."""
    import sqlite3
    import struct

    stats = {"xorbs": 0, "xorb_bytes": tree_bytes(root / "xet" / "xorbs"), "chunks": 0, "chunk_bytes": 0,
             "unique_chunk_bytes": 0}
    db = root / "hub.sqlite"
    if not db.exists():
        return stats
    record = struct.Struct("<32sQQI")  # the CAS's chunk record: hash, start, end, uncompressed size
    seen: set[bytes] = set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for (chunks,) in conn.execute("SELECT chunks FROM xet_xorbs"):
            stats["xorbs"] += 1
            for h, _, _, n in record.iter_unpack(chunks):
                stats["chunks"] += 1
                stats["chunk_bytes"] += n
                if h not in seen:
                    seen.add(h)
                    stats["unique_chunk_bytes"] += n
    except sqlite3.Error as err:  # the Hub's tables changed: the xorbs' size on disk is all there is
        stats["error"] = str(err)
    finally:
        conn.close()
    return stats


def read_all(files) -> None:
    """Read FILES once (into the page cache)."""
    buf = bytearray(64 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


# ------------------------------------------------------------------------------------------------
# The clients (run as subprocesses of this script: `--worker upload|download JSON`).


def worker(kind: str, spec: dict) -> None:
    from huggingface_hub import HfApi, snapshot_download

    t0 = time.perf_counter()
    if kind == "upload":
        api = HfApi()
        for repo, folder in spec["repos"].items():
            api.create_repo(repo, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=folder, ignore_patterns=["*.yaml"])
        print(json.dumps({"seconds": time.perf_counter() - t0}))
    else:
        folders = [snapshot_download(repo) for repo in spec["repos"]]
        print(json.dumps({"seconds": time.perf_counter() - t0, "folders": folders}))


# ------------------------------------------------------------------------------------------------
# Transfers.


def model_files(models: Path) -> dict[str, list[Path]]:
    return {role: sorted(p for p in (models / role).iterdir() if p.is_file() and p.suffix != ".yaml") for role in ROLES}


def run_client(bm, name: str, cmd: list[str], env: dict | None = None) -> dict:
    r = bm.measure(cmd, env=env)
    if r["rc"] != 0:
        raise SystemExit(f"{name} failed (exit {r['rc']}):\n{r['stderr'][-4000:]}")
    out = r.pop("stdout")
    r["stderr_tail"] = r.pop("stderr")[-2000:]
    r["inner"] = bm._json_output(out) if out.strip() else None
    return r


def xet_stored(url: str, repos: list[str]) -> tuple[int, int]:
    """(weight files listed with a xetHash, weight files) in REPOS."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=url, token=TOKEN)
    have = total = 0
    for repo in repos:
        for entry in api.list_repo_tree(repo, expand=True):
            if entry.path.endswith(".safetensors"):
                total += 1
                have += bool(getattr(entry, "xet_hash", None))
    return have, total


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def transfers(bm, models: Path, size: str, runs: int) -> tuple[dict, list[str], dict]:
    files = model_files(models)
    weights = {role: [p for p in fs if p.suffix == ".safetensors"] for role, fs in files.items()}
    all_bytes = sum(p.stat().st_size for fs in files.values() for p in fs)
    weight_bytes = sum(p.stat().st_size for fs in weights.values() for p in fs)
    repos = {f"bench/{size}-{role}": str(models / role) for role in ROLES}
    sums = {p.name + "@" + role: sha256_of(p) for role, fs in weights.items() for p in fs}
    rows: dict[str, list[dict]] = {}
    notes: list[str] = []
    extra: dict = {}
    print(f"{size} triplet: {len(repos)} folders, {all_bytes / 1e9:.3f} GB ({weight_bytes / 1e9:.3f} GB of weights in "
          f"{sum(map(len, weights.values()))} files)", flush=True)

    def report(name: str, run: int, r: dict, moved: int) -> None:
        r["bytes"] = moved
        rows.setdefault(name, []).append(r)
        srv = r.get("server") or {}
        print(f"  run {run + 1}/{runs} {name:<13} {r['wall']:7.2f} s  {moved / 1e6 / r['wall']:7.1f} MB/s  server "
              f"in {fmt_bytes(srv.get('received'))}, out {fmt_bytes(srv.get('sent'))}, {srv.get('requests', 0)} requests",
              flush=True)

    keep: Hub | None = None
    for run in range(runs):
        for mode in ("xet", "lfs"):
            if keep is not None and mode == "xet":
                keep.stop()  # the previous Xet upload's Hub: a new one replaces it
                keep = None
            hub = Hub(WORK / f"hub-upload-{mode}")
            read_all(p for fs in files.values() for p in fs)
            mark = hub.mark()
            r = run_client(bm, f"upload-{mode}", [PY, __file__, "--worker", "upload", json.dumps({"repos": repos})],
                           client_env(hub.url, WORK / "home", mode == "xet"))
            r["server"] = hub.since(mark)
            r["server"]["cas"] = cas_stats(hub.root)
            if run == 0:
                have, total = xet_stored(hub.url, list(repos))
                notes.append(f"upload-{mode}: {have} of {total} weight files listed with a xetHash")
            report(f"upload-{mode}", run, r, all_bytes)
            if mode == "xet":
                keep = hub  # the downloads read what this upload stored
            else:
                hub.stop()
        assert keep is not None
        hub = keep
        blobs = [hub.hub.store.blob_path(s) for s in sums.values()] if hasattr(hub.hub, "store") else []
        xorbs = sorted((hub.root / "xet" / "xorbs").rglob("*"))
        for mode in ("xet", "lfs"):
            read_all([x for x in xorbs if x.is_file()] if mode == "xet" else [b for b in blobs if b.exists()])
            home = WORK / "home"
            mark = hub.mark()
            r = run_client(bm, f"download-{mode}", [PY, __file__, "--worker", "download", json.dumps({"repos": list(repos)})],
                           client_env(hub.url, home, mode == "xet"))
            r["server"] = hub.since(mark)
            names = {p.name for fs in files.values() for p in fs}  # (create_repo adds a .gitattributes)
            got = [f for folder in r["inner"]["folders"] for f in Path(folder).iterdir() if f.name in names]
            moved = sum(f.stat().st_size for f in got)
            if moved != all_bytes:
                notes.append(f"download-{mode} run {run + 1}: {moved} bytes in the snapshots, expected {all_bytes}")
            if run == 0:
                bad = [f"{f.name}@{Path(folder).parts[-3]}" for folder in r["inner"]["folders"]
                       for f in Path(folder).iterdir() if f.suffix == ".safetensors"
                       and sha256_of(f) != sums.get(f"{f.name}@{Path(folder).parts[-3].rsplit('-', 1)[-1]}")]
                notes.append(f"download-{mode}: weight files " + ("identical to the sources" if not bad
                                                                  else f"DIFFER from the sources: {bad}"))
            report(f"download-{mode}", run, r, moved)
            shutil.rmtree(home, ignore_errors=True)
        if shutil.which("curl"):
            read_all(b for b in blobs if b.exists())
            dest = WORK / "curl"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            cmd = ["curl", "-sSfL", "-H", f"Authorization: Bearer {TOKEN}"]
            for repo, folder in repos.items():
                role = repo.rsplit("-", 1)[-1]
                for p in weights[role]:
                    cmd += ["-o", str(dest / f"{role}-{p.name}"), f"{hub.url}/{repo}/resolve/main/{p.name}"]
            mark = hub.mark()
            r = run_client(bm, "curl", cmd)
            r["server"] = hub.since(mark)
            moved = tree_bytes(dest)
            if run == 0:
                bad = [f.name for f in sorted(dest.iterdir())
                       if sha256_of(f) != sums.get(f.name.split("-", 1)[1] + "@" + f.name.split("-", 1)[0])]
                notes.append("curl: weight files " + ("identical to the sources" if not bad else f"DIFFER: {bad}"))
            report("curl", run, r, moved)
            shutil.rmtree(dest)
        read_all(p for fs in weights.values() for p in fs)
        dest = WORK / "cp"
        shutil.rmtree(dest, ignore_errors=True)
        for role in ROLES:
            (dest / role).mkdir(parents=True)
        r = run_client(bm, "cp", ["bash", "-c", " && ".join(
            f"cp {' '.join(str(p) for p in weights[role])} {dest / role}/" for role in ROLES)])
        report("cp", run, r, tree_bytes(dest))
        shutil.rmtree(dest)
    if keep is not None:
        extra["cas_after_xet_upload"] = cas_stats(keep.root)
        keep.stop()
    extra.update(all_bytes=all_bytes, weight_bytes=weight_bytes)
    return rows, notes, extra


# ------------------------------------------------------------------------------------------------
# sweep --publish.

SWEEP_RECIPES = {
    "all": ("every tensor at λ 1.0 × factor", ""),
    "lam0": ("norms, embed_tokens and lm_head at λ 0 (cp's: the same bytes in every variant)",
             "  modules:\n    - {match: \"norm\", value: 0.0}\n    - {match: \"embed_tokens|lm_head\", value: 0.0}\n"),
}


def sweep_recipe(models: Path, key: str, modules: str) -> Path:
    (models / "sweep-prompts.txt").write_text("오늘 날씨 어때요?\n", encoding="utf-8")
    path = models / f"recipe-sweep-publish-{key}.yaml"
    path.write_text(
        f"name: bench-sweep-publish-{key}\nbase: {{path: base}}\nchat: {{path: chat}}\ncp: {{path: cp}}\n"
        "coefficients:\n  default: 1.0\n" + modules
        + "output: {dtype: bfloat16, shard_size: 1000000000}\n"
        f"target: {{repo_id: bench/sweep-{key}}}\ncard: {{license: mit}}\n"
        "eval: {language: ko, prompts: sweep-prompts.txt, max_new_tokens: 1, perplexity: false}\n",
        encoding="utf-8")
    return path


def sweep_publish(bm, models: Path, lambdas: str, modes: list[str]) -> list[dict]:
    out = []
    for key, (what, modules) in SWEEP_RECIPES.items():
        recipe = sweep_recipe(models, key, modules)
        for mode in modes:
            hub = Hub(WORK / "hub-sweep")
            dest = WORK / "sweep-out"
            shutil.rmtree(dest, ignore_errors=True)
            bm.warm(models)
            mark = hub.mark()
            r = run_client(bm, f"sweep --publish ({key}, {mode})",
                           [PY, "-m", "chatvector", "sweep", str(recipe), "--lambdas", lambdas, "--out", str(dest),
                            "--publish", "--format", "json"], client_env(hub.url, WORK / "home", mode == "xet"))
            srv = hub.since(mark)
            variants = sorted(d for d in dest.iterdir() if d.is_dir() and d.name.startswith("lambda-"))
            weights = {d.name: sum(f.stat().st_size for f in d.glob("*.safetensors")) for d in variants}
            uploaded_files = {d.name: tree_bytes(d) for d in variants}
            cas = cas_stats(hub.root)
            stored = cas["xorb_bytes"]
            lfs_blobs = tree_bytes(hub.root / "blobs") if (hub.root / "blobs").exists() else None
            report = r["inner"] if r["inner"] else {}
            row = {"recipe": key, "what": what, "mode": mode, "wall": r["wall"], "max_rss": r["max_rss"],
                   "peak_anon": r["peak_anon"], "variants": weights, "output_weight_bytes": sum(weights.values()),
                   "variant_folder_bytes": uploaded_files, "xorb_bytes": stored, "cas": cas, "server": srv,
                   "stages": report.get("stages"), "store_blob_bytes": lfs_blobs}
            four = row["output_weight_bytes"]
            print(f"  sweep --publish [{key}, {mode}] {r['wall']:.1f} s: {len(variants)} variants, weights "
                  f"{fmt_bytes(four)}; CAS chunks {fmt_bytes(cas['chunk_bytes'])} ({cas['chunk_bytes'] / four:.3f}×), "
                  f"xorbs stored {fmt_bytes(stored)} ({stored / four:.3f}× the variants' weights); "
                  f"server received {fmt_bytes(srv['received'])} ({(srv['received'] or 0) / four:.3f}×)", flush=True)
            out.append(row)
            shutil.rmtree(dest, ignore_errors=True)
            hub.stop()
    return out


# ------------------------------------------------------------------------------------------------


def fmt_bytes(n) -> str:
    return "–" if n is None else f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def summarize(rows: dict) -> dict:
    out = {}
    for name, rs in rows.items():
        def med(get):
            values = [get(r) for r in rs]
            return statistics.median(values) if all(v is not None for v in values) else None

        out[name] = {"runs": len(rs), "wall": med(lambda r: r["wall"]), "bytes": med(lambda r: r["bytes"]),
                     "inner": med(lambda r: (r.get("inner") or {}).get("seconds")),
                     "received": med(lambda r: (r.get("server") or {}).get("received")),
                     "sent": med(lambda r: (r.get("server") or {}).get("sent")),
                     "requests": med(lambda r: (r.get("server") or {}).get("requests")),
                     "max_rss": med(lambda r: r["max_rss"]), "peak_anon": med(lambda r: r["peak_anon"]),
                     "walls": [round(r["wall"], 2) for r in rs],
                     "kinds": (rs[-1].get("server") or {}).get("kinds"),
                     "cas": (rs[-1].get("server") or {}).get("cas"),
                     "errors": sorted({e for r in rs for e in (r.get("server") or {}).get("errors", [])})}
    curl = out.get("curl", {}).get("wall")
    for v in out.values():
        v["mb_s"] = v["bytes"] / 1e6 / v["wall"]
        v["vs_curl"] = v["wall"] / curl if curl else None
    return out


def print_summary(summary: dict, size: str, runs: int) -> None:
    print(f"\n{size}, medians of {runs} run(s), {os.cpu_count()} CPUs")
    print("| contender | wall (median) | MB/s | time / curl | server received | server sent | requests | client max RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v in summary.items():
        ratio = f"{v['vs_curl']:.2f}×" if v["vs_curl"] else "–"
        print(f"| {name} | {v['wall']:.2f} s | {v['mb_s']:.0f} | {ratio} | {fmt_bytes(v['received'])} | "
              f"{fmt_bytes(v['sent'])} | {v['requests'] if v['requests'] is not None else '–'} | "
              f"{v['max_rss'] / 2**20:.0f} MiB |")
    for name, v in summary.items():
        if v["kinds"]:
            print(f"  {name} requests (last run): " + ", ".join(f"{k} ×{n}" for k, n in v["kinds"].items()))
        cas = v.get("cas")
        if cas and cas["chunks"]:
            print(f"  {name} CAS (last run): {cas['xorbs']} xorbs, {cas['chunks']} chunks of "
                  f"{fmt_bytes(cas['chunk_bytes'])} ({fmt_bytes(cas['unique_chunk_bytes'])} distinct), "
                  f"{fmt_bytes(cas['xorb_bytes'])} on disk (compressed)")
        if v["errors"]:
            print(f"  {name} ERRORS: {v['errors']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Hub transfers: Xet vs LFS vs curl, and sweep --publish bytes (see the "
                                             "module docstring)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each transfer; medians are reported (default 3)")
    ap.add_argument("--size", choices=["1x", "small"], default="1x",
                    help="1x: the 953 M-parameter triplet; small: bench/merge.py's smoke model (seconds)")
    ap.add_argument("--lambdas", default=LAMBDAS, help=f"the sweep's factors (default {LAMBDAS})")
    ap.add_argument("--skip-transfers", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-lfs", action="store_true", help="also run the sweep --publish with Xet off")
    ap.add_argument("--results", type=Path, default=BENCH / "hub-transfer-results.json")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]))
        return 0
    bm = bench_merge()
    size = "smoke" if args.size == "small" else "1x"
    models = bm.generate(size)
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict = {"size": args.size, "runs": args.runs, "machine": {"cpus": os.cpu_count()}}
    try:
        if not args.skip_transfers:
            rows, notes, extra = transfers(bm, models, size, args.runs)
            summary = summarize(rows)
            print_summary(summary, args.size, args.runs)
            for note in notes:
                print(f"  note: {note}")
            result.update(transfers=summary, notes=notes, runs_detail=rows, **extra)
        if not args.skip_sweep:
            print(f"\nsweep --publish, factors {args.lambdas}", flush=True)
            result["sweep"] = sweep_publish(bm, models, args.lambdas, ["xet"] + (["lfs"] if args.sweep_lfs else []))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
