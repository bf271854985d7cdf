"""Benchmark of `chatvector sweep` (one pass over the inputs for K λ factors) against K separate
`chatvector merge` runs of the scaled recipes, in the same run (`make bench-sweep`).

Uses bench/merge.py's synthetic bf16 Llama triplet (generated once under .bench/models/; 1x: 953 M parameters,
1.9 GB per model, 1 GB shards; `--size small`: its 2-layer smoke model), local `path:` sources, warm page
cache, 1 GB output shards, recipe λ = 1.0 scaled by each factor. Each run, as subprocesses sampled for peak
memory (bench/merge.py's `measure`):
  sweep    `chatvector sweep RECIPE --lambdas 0.5,0.7,0.85,1.0 --out DIR --format json`
  merges   `chatvector merge RECIPE-F --out DIR-F --format json` for each factor F, one after another
           (RECIPE-F: the recipe with every coefficient × F, what each variant is defined to equal)
then checks that every variant's weight files have the sha256 of the matching merge's, and prints medians
over the runs: wall times, the ratio sweep / Σ merges (target ≤ 0.5), input bytes read (the sweep's report:
each file once; the merges: K times), peak memory, and the sweep's stage breakdown. Results:
.bench/sweep-results.json.

    python bench/sweep.py [--runs 1] [--size 1x|small] [--lambdas 0.5,0.7,0.85,1.0] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
PY = sys.executable


def _bench_merge():
    """bench/merge.py as a module: its triplet generator, cache warm-up and subprocess measurement."""
    spec = importlib.util.spec_from_file_location("bench_merge", ROOT / "bench" / "merge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_recipes(models: Path, factors: list[float]) -> tuple[Path, dict[float, Path]]:
    """The sweep's recipe (λ 1.0) and, per factor, the scaled recipe a separate merge runs."""
    def text(lam: float, sweep: bool) -> str:
        return (f"name: bench-sweep\nbase: {{path: base}}\nchat: {{path: chat}}\ncp: {{path: cp}}\n"
                f"coefficients: {{default: {lam!r}}}\noutput: {{dtype: bfloat16, shard_size: 1000000000}}\n"
                + (f"sweep: {{lambdas: {factors!r}}}\n" if sweep else ""))

    recipe = models / "recipe-sweep.yaml"
    recipe.write_text(text(1.0, True))
    scaled = {}
    for f in factors:
        scaled[f] = models / f"recipe-sweep-{f!r}.yaml"
        scaled[f].write_text(text(1.0 * f, False))
    return recipe, scaled


def weight_hashes(folder: Path) -> dict[str, str]:
    provenance = json.loads((folder / "chatvector.json").read_text())
    return {n: h for n, h in provenance["output"]["files"].items() if n.endswith(".safetensors")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="chatvector sweep against separate merges (see the module docstring)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each contender; medians are reported (default 1)")
    ap.add_argument("--size", choices=["1x", "small"], default="1x",
                    help="1x: the 953 M-parameter triplet; small: bench/merge.py's smoke model (seconds)")
    ap.add_argument("--lambdas", default="0.5,0.7,0.85,1.0", help="the factors (default 0.5,0.7,0.85,1.0)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", type=Path, default=BENCH / "sweep-results.json")
    args = ap.parse_args(argv)
    bm = _bench_merge()
    factors = [float(f) for f in args.lambdas.split(",")]
    models = bm.generate("smoke" if args.size == "small" else "1x")
    recipe, scaled = write_recipes(models, factors)
    bm.warm(models)
    outs = BENCH / "out" / f"sweep-{args.size}"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir(parents=True)
    rows: dict[str, list[dict]] = {"sweep": [], "merges": []}
    notes: list[str] = []
    sweep_cmd = [PY, "-m", "chatvector", "sweep", str(recipe), "--lambdas", args.lambdas, "--out", str(outs / "sweep"),
                 "--device", args.device, "--format", "json"]
    for run in range(args.runs):
        r = bm.measure(sweep_cmd)
        if r["rc"] != 0:
            raise SystemExit(f"sweep failed (exit {r['rc']}):\n{r['stderr'][-4000:]}")
        report = json.loads(r.pop("stdout"))
        r.pop("stderr")
        r.update(stages=report["stages"], bytes_read=report["inputs"]["bytes"], files_read=report["inputs"]["files"])
        rows["sweep"].append(r)
        print(f"  run {run + 1}/{args.runs} sweep: {r['wall']:.2f} s wall, {r['peak_anon'] / 2**20:.0f} MiB peak anon",
              flush=True)
        merges = {"wall": 0.0, "max_rss": 0, "peak_anon": 0, "each": []}
        for f in factors:
            out = outs / f"merge-{f!r}"
            m = bm.measure([PY, "-m", "chatvector", "merge", str(scaled[f]), "--out", str(out), "--device", args.device,
                            "--format", "json"])
            if m["rc"] != 0:
                raise SystemExit(f"merge of {scaled[f].name} failed (exit {m['rc']}):\n{m['stderr'][-4000:]}")
            merges["wall"] += m["wall"]
            merges["max_rss"], merges["peak_anon"] = max(merges["max_rss"], m["max_rss"]), max(merges["peak_anon"], m["peak_anon"])
            merges["each"].append({"factor": f, "wall": m["wall"], "stages": json.loads(m["stdout"])["stages"]})
            if run == 0:  # the variant and the separate merge: the same weight files
                same = weight_hashes(outs / "sweep" / f"lambda-{f!r}") == weight_hashes(out)
                notes.append(f"factor {f!r}: weight files {'identical to' if same else 'DIFFER FROM'} the separate merge's")
            shutil.rmtree(out)
        merges["bytes_read"] = len(factors) * report["inputs"]["bytes"]
        rows["merges"].append(merges)
        print(f"  run {run + 1}/{args.runs} {len(factors)} merges: {merges['wall']:.2f} s wall in all", flush=True)
        shutil.rmtree(outs / "sweep")
    shutil.rmtree(outs, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    summary = {name: {key: med(name, key) for key in ("wall", "max_rss", "peak_anon", "bytes_read")} for name in rows}
    summary["sweep"]["stages"] = {k: statistics.median(r["stages"].get(k, 0.0) for r in rows["sweep"])
                                  for k in rows["sweep"][0]["stages"]}
    ratio = summary["sweep"]["wall"] / summary["merges"]["wall"]
    gib = 2**20
    print(f"\n{args.size}, {len(factors)} factors {args.lambdas}, {args.runs} run(s), {os.cpu_count()} CPUs")
    print(f"  sweep          {summary['sweep']['wall']:8.2f} s   peak anon {summary['sweep']['peak_anon'] / gib:6.0f} MiB   "
          f"max RSS {summary['sweep']['max_rss'] / gib:6.0f} MiB   inputs read {summary['sweep']['bytes_read'] / 1e9:.2f} GB")
    print(f"  {len(factors)} merges       {summary['merges']['wall']:8.2f} s   peak anon {summary['merges']['peak_anon'] / gib:6.0f} MiB   "
          f"max RSS {summary['merges']['max_rss'] / gib:6.0f} MiB   inputs read {summary['merges']['bytes_read'] / 1e9:.2f} GB")
    print(f"  sweep / merges {ratio:.2f}× (target ≤ 0.5×)")
    print("  sweep stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary["sweep"]["stages"].items()))
    for note in notes:
        print(f"  {note}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"size": args.size, "factors": factors, "summary": summary, "ratio": ratio,
                                        "notes": notes, "runs": rows, "machine": {"cpus": os.cpu_count()}}, indent=2))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
