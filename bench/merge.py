"""Benchmark of the command users run, `chatvector merge` (and `publish`), against mergekit and the I/O
floor, in one run (`make bench`).

Generates (once, under .bench/models/) a synthetic bf16 Llama triplet with 32 000-token tokenizers: base,
chat = base + small noise (with a Llama-3 chat template and end-of-turn token), cp = base + small noise,
1 GB input shards:
  1x: hidden 2048, 16 layers, intermediate 5632, vocab 32000, 16 heads (953 M parameters, 1.9 GB)
  2x: the same with 32 layers (1.78 B parameters): time and memory must scale, memory stay flat.
Then runs each contender as a subprocess, N times after one warm-up read of every input (the page cache
cannot be dropped here), sampling /proc/<pid>/status for peak anonymous memory:
  merge     `chatvector merge RECIPE --out DIR --format json` (λ = 1, 1 GB shards): the whole command,
            with the per-stage breakdown it prints itself
  engine    bench/engine_jobs.py: the merge engine alone on the same tensors (a secondary row)
  mergekit  task_arithmetic, base_model = base, cp weight 1, chat weight λ (own venv, .bench/mergekit-venv),
            --out-shard-size 1B (bytes, whatever its help says: the same 1 GB output shards)
  io-floor  read the three inputs, write + fsync an output of the merge's size, nothing else
  plan      `chatvector plan` of the same recipe with the sources on a local Hub (metadata only)
  publish   `chatvector publish` from that local Hub with an empty HF cache: download, merge, upload
and prints medians, ratios and stage breakdowns, and writes .bench/merge-results.json.

    python bench/merge.py [--runs 3] [--size 1x|2x|both] [--device cpu|cuda|cpu,cuda] [--skip-mergekit]
                          [--skip-publish]
    python bench/merge.py --smoke        # tiny model, one run, a minute at most
"""

from __future__ import annotations

import argparse
import json
import os

# Git LFS, as when the figures in docs/benchmarks.md were first measured (comparable run to run); the Hub's
# Xet path against LFS and curl is bench/hub_transfer.py's. Read when huggingface_hub loads.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
MERGEKIT_VENV = BENCH / "mergekit-venv"
PY = sys.executable
SHARD = 1_000_000_000

TOKEN = "hf_bench_token"
SIZES = {
    "smoke": dict(hidden=256, layers=2, inter=688, vocab=4000, heads=4, kv=4),
    "1x": dict(hidden=2048, layers=16, inter=5632, vocab=32000, heads=16, kv=16),
    "2x": dict(hidden=2048, layers=32, inter=5632, vocab=32000, heads=16, kv=16),
}


# ------------------------------------------------------------------------------------------------
# The synthetic triplet.


def llama_tensors(spec: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v, hd = spec["hidden"], spec["inter"], spec["vocab"], spec["hidden"] // spec["heads"]
    kv = spec["kv"] * hd
    out = [("model.embed_tokens.weight", (v, h))]
    for n in range(spec["layers"]):
        p = f"model.layers.{n}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def generate(size: str) -> Path:
    """Write .bench/models/<size>/{base,chat,cp}; skipped when a finished copy is there."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from chatvector.testing.tinymodels import save_tokenizer

    spec = SIZES[size]
    root = BENCH / "models" / size
    marker = root / "spec.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    tensors = llama_tensors(spec)
    cfg = LlamaConfig(
        vocab_size=spec["vocab"], hidden_size=spec["hidden"], intermediate_size=spec["inter"],
        num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"], num_key_value_heads=spec["kv"],
        tie_word_embeddings=False, architectures=["LlamaForCausalLM"], dtype="bfloat16",
        bos_token_id=spec["vocab"] - 5, eos_token_id=spec["vocab"] - 4,
    )
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(1 << 24, generator=g) * 1e-3  # noise for chat and cp, sliced at varying offsets
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size_now = 0
    for name, shape in tensors:
        n = 2 * _numel(shape)
        if shards[-1] and size_now + n > SHARD:
            shards.append([])
            size_now = 0
        shards[-1].append((name, shape))
        size_now += n
    files = [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    for model in ("base", "chat", "cp"):
        (root / model).mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(root / model)
    weight_map = {}
    for k, (shard, fname) in enumerate(zip(shards, files)):
        base, chat, cp = {}, {}, {}
        for j, (name, shape) in enumerate(shard):
            b = torch.randn(shape, generator=g).mul_(0.02).to(torch.bfloat16)
            base[name] = b
            for out, salt in ((chat, 7919), (cp, 104729)):
                out[name] = (b.float() + _noise(pool, b.numel(), (k * 1000 + j) * salt).view(shape)).to(torch.bfloat16)
            weight_map[name] = fname
        for model, sd in (("base", base), ("chat", chat), ("cp", cp)):
            save_file(sd, root / model / fname, metadata={"format": "pt"})
        del base, chat, cp
    total = sum(2 * _numel(s) for _, s in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for model in ("base", "chat", "cp"):
        (root / model / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        save_tokenizer(root / model, model, "llama", vocab_size=spec["vocab"])
    marker.write_text(json.dumps(spec))
    print(f"generated {size} triplet ({total / 1e9:.2f} GB each) in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _noise(pool, n: int, offset: int):
    start = offset % pool.numel()
    reps = -(-(start + n) // pool.numel())
    return (pool.repeat(reps) if reps > 1 else pool)[start : start + n]


def warm(root: Path) -> None:
    """Read every input once so that every contender starts from the same warm page cache."""
    buf = bytearray(64 << 20)
    for f in sorted(root.glob("*/*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def write_recipes(models: Path, size: str, lam: float) -> tuple[Path, Path]:
    """The benchmark's recipe with local `path:` sources, and the same with the sources on a local Hub."""
    body = (f"coefficients: {{default: {lam}}}\n"
            f"output: {{dtype: bfloat16, shard_size: {SHARD}}}\n")
    local = models / "recipe.yaml"
    local.write_text(f"name: bench-{size}\nbase: {{path: base}}\nchat: {{path: chat}}\ncp: {{path: cp}}\n" + body)
    hub = models / "recipe-hub.yaml"
    hub.write_text(f"name: bench-{size}\n" + "".join(f"{r}: {{repo_id: bench/{size}-{r}}}\n" for r in ("base", "chat", "cp"))
                   + body + f"target: {{repo_id: bench/{size}-out}}\ncard: {{license: mit}}\n")
    return local, hub


# ------------------------------------------------------------------------------------------------
# Measuring a subprocess.


def measure(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Wall time, max RSS and peak RssAnon of one subprocess, sampled from /proc every 5 ms.

    VmHWM (the kernel's own high-water mark) is read rather than wait4's ru_maxrss, which would
    report the benchmark's own RSS: Linux carries the parent's size across fork + exec."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    peak = {"anon": 0, "hwm": 0}
    done = threading.Event()

    def sample():
        path = f"/proc/{proc.pid}/status"
        while not done.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak["hwm"] = max(peak["hwm"], int(line.split()[1]) * 1024)
                        elif line.startswith("RssAnon:"):
                            peak["anon"] = max(peak["anon"], int(line.split()[1]) * 1024)
                            break
            except OSError:
                return
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda s=s, a=a: a.append(s.read()), daemon=True)
               for s, a in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
    for r in readers:
        r.start()
    _, status = os.waitpid(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    th.join()
    return {
        "wall": wall, "rc": proc.returncode, "max_rss": peak["hwm"], "peak_anon": peak["anon"],
        "stdout": "".join(out_chunks), "stderr": "".join(err_chunks),
    }


# ------------------------------------------------------------------------------------------------
# Contenders.


def merge_cmd(recipe: Path, out: Path, device: str) -> list[str]:
    return [PY, "-m", "chatvector", "merge", str(recipe), "--out", str(out), "--device", device, "--format", "json"]


def engine_cmd(models: Path, out: Path, device: str, lam: float) -> list[str]:
    return [PY, str(ROOT / "bench" / "engine_jobs.py"), "--base", str(models / "base"), "--chat", str(models / "chat"),
            "--cp", str(models / "cp"), "--out", str(out), "--device", device, "--lam", str(lam),
            "--shard-size", str(SHARD), "--json"]


def mergekit_cmd(models: Path, out: Path, lam: float, device: str) -> list[str]:
    cfg = out.parent / f"{out.name}.yml"
    cfg.write_text(
        "merge_method: task_arithmetic\n"
        f"base_model: {models / 'base'}\n"
        "parameters:\n  normalize: false\n"
        "dtype: bfloat16\n"
        "models:\n"
        f"  - model: {models / 'cp'}\n    parameters:\n      weight: 1.0\n"
        f"  - model: {models / 'chat'}\n    parameters:\n      weight: {lam}\n"
    )
    cmd = [str(MERGEKIT_VENV / "bin" / "mergekit-yaml"), str(cfg), str(out), "--out-shard-size", "1B", "--no-copy-tokenizer"]
    if device == "cuda":
        cmd.append("--cuda")
    return cmd


def io_floor_cmd(models: Path, out: Path, out_sizes: list[int]) -> list[str]:
    return [PY, __file__, "--io-floor-worker", json.dumps({"inputs": [str(p) for p in sorted(models.glob("*/*.safetensors"))],
                                                           "out": str(out), "sizes": out_sizes})]


def io_floor_worker(spec: dict) -> None:
    """Read the inputs chunk by chunk, write outputs of the given sizes, fsync each; print seconds."""
    t0 = time.perf_counter()
    chunk = 64 << 20
    buf = bytearray(chunk)
    view = memoryview(buf)
    inputs = [open(p, "rb", buffering=0) for p in spec["inputs"]]
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    live = list(inputs)
    for k, size in enumerate(spec["sizes"]):
        fd = os.open(out / f"floor-{k}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        written = 0
        while written < size:
            for f in list(live):  # read a chunk of every input per chunk written
                if not f.readinto(buf):
                    live.remove(f)
            n = min(chunk, size - written)
            written += os.write(fd, view[:n])
        os.fsync(fd)
        os.close(fd)
    for f in live:  # whatever is left to read
        while f.readinto(buf):
            pass
    for f in inputs:
        f.close()
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def ensure_mergekit(allow_install: bool) -> str | None:
    """Path of mergekit-yaml, installing it into its own venv if allowed; None (with a note) if not."""
    exe = MERGEKIT_VENV / "bin" / "mergekit-yaml"
    if exe.exists():
        return str(exe)
    if not allow_install:
        return None
    print("installing mergekit into .bench/mergekit-venv (a few minutes, once)...", flush=True)
    log = BENCH / "mergekit-install.log"
    try:
        BENCH.mkdir(exist_ok=True)  # a fresh clone has no .bench yet
        with open(log, "w") as fh:
            subprocess.run([sys.executable, "-m", "venv", str(MERGEKIT_VENV)], check=True, stdout=fh, stderr=fh)
            pip = [str(MERGEKIT_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
            subprocess.run(pip + ["torch==2.13.0"], check=True, stdout=fh, stderr=fh)
            subprocess.run(pip + ["mergekit"], check=True, stdout=fh, stderr=fh)
    except (subprocess.CalledProcessError, OSError):
        print(f"mergekit could not be installed (see {log}); skipping it", flush=True)
        return None
    return str(exe) if exe.exists() else None


# ------------------------------------------------------------------------------------------------


def run_contender(name: str, cmd: list[str], out: Path | None, env=None) -> dict:
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    r = measure(cmd, env=env)
    if r["rc"] != 0:
        raise SystemExit(f"{name} failed (exit {r['rc']}):\n{r['stderr'][-4000:]}")
    inner = _json_output(r["stdout"])
    stages = (inner.get("stages") if inner else None) or _stages_line(r["stderr"])
    r["stages"] = stages
    # the time of the work itself: the engine's own figure, or the command's merge stage
    r["seconds"] = inner.get("seconds") if inner and "seconds" in inner else (stages or {}).get("merge")
    r["files"] = inner.get("files") if inner and isinstance(inner.get("files"), dict) else None
    r.pop("stdout")
    r.pop("stderr")
    return r


def _stages_line(stderr: str) -> dict | None:
    """`chatvector -v` ends with "stages: plan 0.61 s, ..." on stderr."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("stages: "):
            return {k: float(v) for k, v in (part.rsplit(" ", 2)[:2] for part in line[8:].split(", "))}
    return None


def _json_output(stdout: str) -> dict | None:
    """A command's JSON document: the whole stdout (chatvector --format json), else its last JSON line."""
    try:
        doc = json.loads(stdout)
        return doc if isinstance(doc, dict) else None
    except ValueError:
        pass
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def output_sizes(out: Path) -> list[int]:
    return [f.stat().st_size for f in sorted(out.glob("*.safetensors"))]


class BenchHub:
    """`chatvector hub serve` in its own process, seeded with one size's triplet."""

    def __init__(self, root: Path):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.root = root
        self.proc = subprocess.Popen([PY, "-m", "chatvector", "hub", "serve", "--root", str(root), "--token",
                                      f"bench={TOKEN}:write"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line.startswith("Serving on "):
            raise SystemExit(f"the local Hub did not start: {line!r}")
        self.url = line.split()[-1]

    def api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=TOKEN)

    def seed(self, models: Path, size: str) -> None:
        api = self.api()
        t0 = time.perf_counter()
        for role in ("base", "chat", "cp"):
            repo = f"bench/{size}-{role}"
            api.create_repo(repo, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(models / role), ignore_patterns=["*.yaml"])
        print(f"  seeded the local Hub with the {size} triplet in {time.perf_counter() - t0:.0f} s", flush=True)

    def env(self, home: Path) -> dict:
        shutil.rmtree(home, ignore_errors=True)
        return dict(os.environ, HF_ENDPOINT=self.url, HF_TOKEN=TOKEN, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
                    HF_HUB_DISABLE_PROGRESS_BARS="1")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark of chatvector merge and publish (see the module docstring).")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", choices=["1x", "2x", "both"], default="both")
    ap.add_argument("--device", default="cpu", help="merge device(s): cpu, cuda, auto, or a list like cpu,cuda")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--skip-publish", action="store_true", help="no local Hub: merge, engine, floor only")
    ap.add_argument("--smoke", action="store_true", help="tiny model, one run (checks the benchmark itself)")
    ap.add_argument("--results", type=Path, default=BENCH / "merge-results.json")
    ap.add_argument("--io-floor-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.io_floor_worker:
        io_floor_worker(json.loads(args.io_floor_worker))
        return 0

    sizes = ["smoke"] if args.smoke else (["1x", "2x"] if args.size == "both" else [args.size])
    runs = 1 if args.smoke else args.runs
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    mergekit = None if args.skip_mergekit else ensure_mergekit(allow_install=not args.smoke)
    notes = []
    if not args.skip_mergekit and mergekit is None:
        notes.append("mergekit not run: " + ("not installed (smoke never installs it)" if args.smoke else "install failed"))
    BENCH.mkdir(exist_ok=True)
    rows: dict[tuple[str, str], list[dict]] = {}
    for size in sizes:
        models = generate(size)
        local, hub_recipe = write_recipes(models, size, args.lam)
        warm(models)
        outs = BENCH / "out" / size
        outs.mkdir(parents=True, exist_ok=True)
        contenders = [(f"merge-{d}", merge_cmd(local, outs / f"merge-{d}", d), outs / f"merge-{d}") for d in devices]
        contenders += [(f"engine-{d}", engine_cmd(models, outs / f"engine-{d}", d, args.lam), outs / f"engine-{d}")
                       for d in devices]
        # mergekit on the reference size only: it is the baseline, not what must stay flat
        if mergekit and size in ("1x", "smoke"):
            mk_dev = "cuda" if "cuda" in devices and len(devices) == 1 else "cpu"
            contenders.append(("mergekit", mergekit_cmd(models, outs / "mergekit", args.lam, mk_dev), outs / "mergekit"))
        for run in range(runs):
            for name, cmd, out in contenders:
                _report(rows, size, name, run, runs, run_contender(name, cmd, out))
            sizes_out = output_sizes(outs / f"merge-{devices[0]}")
            _report(rows, size, "io-floor", run, runs,
                    run_contender("io-floor", io_floor_cmd(models, outs / "io-floor", sizes_out), outs / "io-floor"))
        if mergekit and ("mergekit", size) in rows:
            notes.append(f"{size}: " + compare_outputs(outs / f"merge-{devices[0]}", outs / "mergekit"))
        if len(devices) > 1:
            notes.append(f"{size}: " + compare_outputs(outs / f"merge-{devices[0]}", outs / f"merge-{devices[1]}",
                                                       f"the {devices[1]} output"))
        shutil.rmtree(outs, ignore_errors=True)  # frees the disk and the page cache for the next size
        if not args.skip_publish:
            run_publish(rows, models, hub_recipe, size, runs, devices[0])

    summary = summarize(rows)
    print_table(summary, notes, devices[0])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"summary": summary, "ratios": ratios(summary, devices[0]), "notes": notes,
                                        "runs": {f"{n}@{s}": v for (n, s), v in rows.items()},
                                        "machine": {"cpus": os.cpu_count()}}, indent=2))
    print(f"results: {args.results}")
    return 0


def run_publish(rows: dict, models: Path, recipe: Path, size: str, runs: int, device: str) -> None:
    """`chatvector plan` and `chatvector publish` against a local Hub holding the triplet; each run starts
    from an empty HF cache and a target that does not exist yet, with its own λ (so that it downloads,
    merges and uploads new bytes: the Hub's store keeps the blobs of earlier runs)."""
    hub = BenchHub(BENCH / "hub" / size)
    try:
        hub.seed(models, size)
        api = hub.api()
        for run in range(runs):
            plan = run_contender("plan", [PY, "-m", "chatvector", "-v", "plan", str(recipe), "--format", "json"], None,
                                 env=hub.env(BENCH / "home-plan"))
            _report(rows, size, "plan", run, runs, plan)
            api.delete_repo(f"bench/{size}-out", missing_ok=True)
            text = recipe.read_text()
            run_recipe = recipe.with_name(f"recipe-hub-{run}.yaml")
            run_recipe.write_text(_with_lambda(text, 1 - run / 20))
            cmd = [PY, "-m", "chatvector", "publish", str(run_recipe), "--device", device, "--format", "json"]
            _report(rows, size, "publish", run, runs, run_contender("publish", cmd, None, env=hub.env(BENCH / "home")))
    finally:
        hub.stop()
        for home in ("home", "home-plan"):
            shutil.rmtree(BENCH / home, ignore_errors=True)


def _with_lambda(recipe_text: str, lam: float) -> str:
    import re

    return re.sub(r"coefficients: \{default: [^}]*\}", f"coefficients: {{default: {lam}}}", recipe_text)


def _report(rows: dict, size: str, name: str, run: int, runs: int, r: dict) -> None:
    rows.setdefault((name, size), []).append(r)
    stages = ", ".join(f"{k} {v:.2f}" for k, v in (r.get("stages") or {}).items())
    print(f"  {size:>5} {name:<12} run {run + 1}/{runs}: wall {r['wall']:6.2f} s"
          + (f" (merge {r['seconds']:.2f} s)" if r.get("seconds") else "")
          + f", max RSS {r['max_rss'] / 2**20:6.0f} MiB, peak anon {r['peak_anon'] / 2**20:6.0f} MiB"
          + (f"\n{'':20}stages: {stages}" if stages else ""), flush=True)


def summarize(rows: dict) -> dict:
    out = {}
    for (name, size), rs in rows.items():
        med = lambda k: statistics.median(r[k] for r in rs) if all(r.get(k) is not None for r in rs) else None  # noqa: E731
        stage_names = list(dict.fromkeys(k for r in rs for k in (r.get("stages") or {})))
        stages = {k: statistics.median((r.get("stages") or {}).get(k, 0.0) for r in rs) for k in stage_names}
        out[f"{name}@{size}"] = {"name": name, "size": size, "runs": len(rs), "wall": med("wall"), "seconds": med("seconds"),
                                 "max_rss": med("max_rss"), "peak_anon": med("peak_anon"), "stages": stages}
    return out


def ratios(summary: dict, dev: str) -> dict:
    def get(key, field):
        return summary.get(key, {}).get(field)

    r = {}
    for size in ("1x", "2x", "smoke"):
        c, e, m, f = f"merge-{dev}@{size}", f"engine-{dev}@{size}", f"mergekit@{size}", f"io-floor@{size}"
        if get(c, "wall") and get(m, "wall"):
            r[f"chatvector merge / mergekit, wall ({size})"] = get(c, "wall") / get(m, "wall")
        if get(c, "wall") and get(f, "wall"):
            r[f"chatvector merge / I/O floor, wall ({size})"] = get(c, "wall") / get(f, "wall")
        if get(e, "wall") and get(f, "wall"):
            r[f"engine alone / I/O floor, wall ({size})"] = get(e, "wall") / get(f, "wall")
        if get(e, "wall") and get(m, "wall"):
            r[f"engine alone / mergekit, wall ({size})"] = get(e, "wall") / get(m, "wall")
    for name in (f"merge-{dev}", f"engine-{dev}"):
        if get(f"{name}@2x", "peak_anon") and get(f"{name}@1x", "peak_anon"):
            r[f"{name} peak anon 2x/1x"] = get(f"{name}@2x", "peak_anon") / get(f"{name}@1x", "peak_anon")
    return r


def print_table(summary: dict, notes: list[str], dev: str) -> None:
    print()
    print("| contender | size | runs | wall (median) | merge/work time | max RSS | peak anon |")
    print("|---|---|---|---|---|---|---|")
    for v in summary.values():
        sec = f"{v['seconds']:.2f} s" if v["seconds"] else "–"
        print(f"| {v['name']} | {v['size']} | {v['runs']} | {v['wall']:.2f} s | {sec} | {v['max_rss'] / 2**20:.0f} MiB |"
              f" {v['peak_anon'] / 2**20:.0f} MiB |")
    staged = [v for v in summary.values() if v["stages"]]
    if staged:
        names = list(dict.fromkeys(k for v in staged for k in v["stages"]))
        print()
        print("| stages (median s) | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for v in staged:
            print(f"| {v['name']}@{v['size']} | " + " | ".join(f"{v['stages'].get(k, 0):.2f}" for k in names) + " |")
    print()
    for k, v in ratios(summary, dev).items():
        print(f"{k}: {v:.2f}")
    for n in notes:
        print(f"note: {n}")


def compare_outputs(a: Path, b: Path, what: str = "mergekit's output") -> str:
    """How many elements of two merged checkpoints differ, and by how much."""
    import torch
    from safetensors import safe_open

    def index(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(f, "pt") as h:
                for k in h.keys():
                    out[k] = f
        return out

    ia, ib = index(a), index(b)
    diff = far = total = 0
    worst = 0.0
    for k, fa in ia.items():
        if k not in ib:
            continue
        with safe_open(fa, "pt") as ha, safe_open(ib[k], "pt") as hb:
            x, y = ha.get_tensor(k), hb.get_tensor(k)
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"engine and mergekit outputs differ in dtype/shape at {k}"
        d = (x.float() - y.float()).abs()
        # one ulp of x in its own dtype: the gap to the next representable value away from zero
        bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[x.dtype]
        nxt = (x.abs().view(bits) + 1).view(x.dtype).float()
        ulp = nxt - x.abs().float()
        diff += int((d != 0).sum())
        far += int((d > ulp).sum())
        worst = max(worst, float(d.max()))
        total += x.numel()
    return (f"{what} differs from chatvector's (exact: fp32, one rounding) in {100 * diff / max(total, 1):.1f}%"
            f" of elements, by more than 1 ulp in {100 * far / max(total, 1):.2f}%, max |difference| {worst:.3g}")


if __name__ == "__main__":
    sys.exit(main())
