"""`chatvector sweep`: every variant byte for byte a separate merge of the scaled recipe, the inputs read once.

The engine's several-outputs path is compared file for file with one run per output (both backends); the
variants' plans with the plans of scaled recipe files; the whole command, in snapshot and stream mode, with
separate `chatvector merge` runs of scaled recipe files, against the session's local Hub (its request log
shows what was read).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import torch

from chatvector.errors import MergeError
from chatvector.merge import MergeOutput, RowCopy, TensorJob, VectorTerm, run_merge, run_merges
from chatvector.merge.safetensors_io import InputFile, LocalInputs
from chatvector.plan.planner import make_plan
from chatvector.recipe.recipe import parse_recipe
from chatvector.recipe.sweep_factors import folder_name
from chatvector.sweep.variants import derive_plan, scaled_recipe, variant_plans
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests import hubkit
from tests.conftest import WRITE_TOKEN, weight_downloads
from tests.hubkit import folder_bytes, run_main, seed_on
from tests.test_merge_engine import near, rand, save, src

# ---------------------------------------------------------------------------------------------------------------
# The engine: K outputs from one read, each exactly what run_merge writes for it alone


def sweep_inputs(tmp_path: Path) -> dict[str, torch.Tensor]:
    cp = {"embed": rand((40, 16), torch.bfloat16, 1), "w": rand((24, 40), torch.bfloat16, 2),
          "norm": rand((24,), torch.float32, 3)}
    base = {k: near(v, 0.01, 4) for k, v in cp.items()}
    base["embed"] = rand((32, 16), torch.bfloat16, 9)  # fewer rows than cp: an extended vocabulary
    for name, sd in (("base", base), ("chat", {k: near(v, 0.01, 5) for k, v in base.items()}),
                     ("chat2", {k: near(v, 0.02, 6) for k, v in base.items()}), ("cp", cp)):
        save(tmp_path / f"{name}.safetensors", sd)
    return cp


def jobs_for(tmp_path: Path, cp: dict, lambdas: dict[str, tuple[float, float]]) -> list[TensorJob]:
    """Two vectors (chat and chat2 over one base); terms with λ = 0 left out, as the runner does."""
    jobs = []
    for name, value in cp.items():
        terms = tuple(VectorTerm(src(tmp_path, "base", name), src(tmp_path, chat, name), lam)
                      for lam, chat in zip(lambdas[name], ("chat", "chat2")) if lam)
        extra = {}
        if name == "embed":  # delta rows, and row copies inside them and past them
            extra = dict(delta_rows=32 if terms else None,
                         row_copies=(RowCopy(35, src(tmp_path, "chat", name), 3), RowCopy(5, src(tmp_path, "chat", name), 7)))
        jobs.append(TensorJob(name, tuple(value.shape), "bfloat16", src(tmp_path, "cp", name), terms, **extra))
    return jobs


class StrictInputs(LocalInputs):
    """Local inputs that refuse to read bytes the engine has released: a streaming input frees them (and would
    fetch them again), so no output may read what another output's chunk already gave back."""

    def open(self, header, needed):
        return _StrictFile(header)


class _StrictFile(InputFile):
    def __init__(self, header):
        super().__init__(header)
        self.released: list[tuple[int, int]] = []

    def tensor(self, info, first, count):
        a, b = info.start + first * info.itemsize, info.start + (first + count) * info.itemsize
        if any(x < b and a < y for x, y in self.released):
            raise AssertionError(f"{self.path}: bytes {a}-{b} read after they were released")
        return super().tensor(info, first, count)

    def release(self, start, end):
        self.released.append((start, end))
        super().release(start, end)


@pytest.mark.parametrize("backend", ["cpu", "staged"])
def test_one_read_writes_every_output_exactly_as_a_merge_of_its_own(tmp_path, backend):
    cp = sweep_inputs(tmp_path)
    variants = [  # the third cuts tensors differently (kept where the others merge): shared and unshared chunks
        {"embed": (0.7, 0.4), "w": (0.7, 0.4), "norm": (0.7, 0.4)},
        {"embed": (0.35, -0.2), "w": (1.0, 0.2), "norm": (0.0, 0.0)},
        {"embed": (0.0, 0.0), "w": (0.0, 0.0), "norm": (0.5, 0.0)},
    ]
    outputs = [MergeOutput(jobs_for(tmp_path, cp, v), tmp_path / "sweep" / f"v{i}", {"chatvector_recipe_sha256": f"{i}" * 64})
               for i, v in enumerate(variants)]
    together = run_merges(outputs, shard_size=3000, chunk_bytes=48, device="cpu", backend=backend, progress=False,
                          inputs=StrictInputs())
    assert len(together[0].files) == 3  # two shards and the index: several files, many blocks each
    for i, (output, got) in enumerate(zip(outputs, together)):
        alone = run_merge(output.jobs, tmp_path / f"alone{i}", shard_size=3000, chunk_bytes=48, device="cpu",
                          backend=backend, metadata=output.metadata, progress=False)
        assert got.files == alone.files, f"output {i}"  # sha256 of every file, headers included
        assert (got.scanned_values, got.scanned_tensors) == (alone.scanned_values, alone.scanned_tensors)
        assert got.files == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in output.out_dir.iterdir()}
    assert together[0].files != together[1].files
    # two outputs that cut every tensor alike: tile by tile, but the row copies still read rows another chunk merged
    pair = [MergeOutput(o.jobs, tmp_path / "pair" / f"v{i}", o.metadata) for i, o in enumerate(outputs[:2])]
    got = run_merges(pair, shard_size=3000, chunk_bytes=48, device="cpu", backend=backend, progress=False,
                     inputs=StrictInputs())
    assert [r.files for r in got] == [r.files for r in together[:2]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_every_output_is_what_it_is_alone_and_the_cpus(tmp_path):
    cp = sweep_inputs(tmp_path)
    variants = [{k: (1.0, 1.0) for k in cp}, {"embed": (0.35, -0.2), "w": (1.0, 0.2), "norm": (0.0, 0.0)},
                {"embed": (0.0, 0.0), "w": (0.0, 0.0), "norm": (0.5, 0.0)}]
    outputs = [MergeOutput(jobs_for(tmp_path, cp, v), tmp_path / "gpu" / f"v{i}") for i, v in enumerate(variants)]
    together = run_merges(outputs, shard_size=3000, chunk_bytes=4096, device="cuda", progress=False)
    assert together[0].backend == "staged" and together[0].device.startswith("cuda")
    for i, (output, got) in enumerate(zip(outputs, together)):
        alone = run_merge(output.jobs, tmp_path / f"alone{i}", shard_size=3000, chunk_bytes=4096, device="cuda",
                          progress=False)
        assert got.files == alone.files, f"output {i}"
    for i, output in enumerate(outputs):  # at any λ, bit for bit the CPU's
        cpu = run_merge(output.jobs, tmp_path / f"cpu{i}", shard_size=3000, chunk_bytes=4096, device="cpu",
                        progress=False)
        assert together[i].files == cpu.files, f"output {i}"


def test_outputs_that_do_not_share_a_layout_are_refused(tmp_path):
    cp = sweep_inputs(tmp_path)
    lams = {"embed": (0.5, 0.0), "w": (0.5, 0.0), "norm": (0.5, 0.0)}
    jobs = jobs_for(tmp_path, cp, lams)
    with pytest.raises(MergeError, match="do not merge the same tensors"):
        run_merges([MergeOutput(jobs, tmp_path / "a"), MergeOutput(jobs[:2], tmp_path / "b")], shard_size=1 << 30,
                   progress=False)
    with pytest.raises(MergeError, match="headers differ in length"):
        run_merges([MergeOutput(jobs, tmp_path / "a", {"m": "1"}), MergeOutput(jobs, tmp_path / "b", {"m": "1" * 20})],
                   shard_size=1 << 30, progress=False)
    with pytest.raises(MergeError, match="same folder"):
        run_merges([MergeOutput(jobs, tmp_path / "a"), MergeOutput(jobs, tmp_path / "a")], shard_size=1 << 30,
                   progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The variants' plans: the plans of the scaled recipes


def coefficients(f: float, gradient: bool = False) -> str:
    """The recipe's schedule with every value times f, as a scaled recipe file writes it."""
    layers = f"  gradient: [{-1.0 * f!r}, {2.0 * f!r}]\n" if gradient else \
        f'  layers: {{"0-1": {0.6 * f!r}, "3": {1.2 * f!r}}}\n'
    return (f"coefficients:\n  default: {0.9 * f!r}\n{layers}  modules:\n"
            f'    - {{match: "norm", value: {0.0 * f!r}}}\n    - {{match: "mlp.down_proj", value: {0.5 * f!r}}}\n')


def recipe_text(sources: dict[str, str], f: float = 1.0, gradient: bool = False) -> str:
    """Two vectors over one base/chat pair (weights 0.7, 0.4), layer and module rules, cp's extended vocabulary
    and the chat model's end-of-turn row."""
    vector = f"{{base: {sources['base']}, chat: {sources['chat']}"
    return (f"name: Sweep Test\nvectors:\n  - {vector}, weight: 0.7}}\n  - {vector}, weight: 0.4}}\n"
            f"cp: {sources['cp']}\n{coefficients(f, gradient)}"
            'special_tokens: ["<|eot_id|>"]\noutput: {shard_size: 150KB}\n')


SPEC = TripletSpec(arch="llama", extra_cp_tokens=20)


@pytest.fixture(scope="module")
def local_triplet(tmp_path_factory) -> dict[str, str]:
    """SPEC's triplet as `path:` sources: generated once per process, shared with seed_on (and test_stream_publish)."""
    if SPEC not in hubkit._TRIPLETS:
        hubkit._TRIPLETS[SPEC] = write_triplet(tmp_path_factory.mktemp("models"), SPEC)
    return {role: f"{{path: {folder}}}" for role, folder in hubkit._TRIPLETS[SPEC].items()}


@pytest.mark.parametrize("gradient", [False, True], ids=["layers", "gradient"])
def test_each_variant_plan_is_the_plan_of_the_scaled_recipe(tmp_path, api, local_triplet, gradient):
    recipe = parse_recipe(recipe_text(local_triplet, gradient=gradient), tmp_path / "r.yaml")
    plan = make_plan(recipe, api)
    factors = [0.7, 1.0, 1.3]  # 0.7 and 1.3: weight × (f × value) ≠ f × (weight × value) for some λ here
    got = variant_plans(plan, factors, api)
    for f, variant in zip(factors, got):
        written = make_plan(parse_recipe(recipe_text(local_triplet, f, gradient), tmp_path / "r.yaml"), api)
        assert variant.to_dict() == written.to_dict(), f  # every λ, kept tensor, file, hash and the fingerprint
        assert scaled_recipe(recipe, f).normalized_sha256 == written.recipe_sha256
    if gradient:  # [-1, 2] over 4 layers is 0 at layer 1 exactly; scaled by 0.7 it is -1.1e-16: not kept any more
        layer1 = [t for t in got[0].tensors if ".layers.1." in t.name and t.reason == "layer 1"]
        assert layer1 and all(not t.kept for t in layer1)
        assert derive_plan(plan, scaled_recipe(recipe, 0.7)) is None  # so that variant was planned on its own
        assert all(t.kept for t in plan.tensors if t.reason == "layer 1")
    assert got[1].to_dict() == plan.to_dict()  # factor 1 is the recipe itself


# ---------------------------------------------------------------------------------------------------------------
# The command, snapshot and stream


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    return lambda *args: run_main(capsys, *args)


def weight_reads(hub, mark: int) -> Counter:
    """The weight-file requests since `mark`: (path, range) counted."""
    return Counter((q.path, q.range) for q in list(hub.requests)[mark:]
                   if q.method == "GET" and q.path.endswith(".safetensors"))


def test_sweep_variants_are_separate_merges_of_the_scaled_recipe_and_read_the_inputs_once(tmp_path, cli, api, hub):
    repos = seed_on(api.endpoint, tmp_path, SPEC, prefix=f"sweep-{uuid.uuid4().hex[:6]}-")
    sources = {role: f"{{repo_id: {repo}}}" for role, repo in repos.items()}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(sources) + "sweep: {lambdas: [0.7, 1.0]}\n")  # the factors, from the recipe
    scaled = tmp_path / "r-0.7.yaml"
    scaled.write_text(recipe_text(sources, 0.7))
    out = tmp_path / "sweep"

    # snapshot, from an empty cache: each weight file downloaded once for both variants
    mark = len(hub.requests)
    code, _, err = cli("sweep", str(recipe), "--out", str(out), "--fetch", "snapshot", "--device", "cpu")
    assert code == 0, err
    downloads = Counter(q.path for q in weight_downloads(list(hub.requests)[mark:]))
    assert downloads and set(downloads.values()) == {1}
    snapshot = {f: folder_bytes(out / folder_name(f)) for f in (0.7, 1.0)}

    code, _, err = cli("merge", str(scaled), "--out", str(tmp_path / "m-0.7"), "--fetch", "snapshot", "--device", "cpu")
    assert code == 0, err
    assert snapshot[0.7] == folder_bytes(tmp_path / "m-0.7")  # every file byte for byte, safetensors headers too
    mark = len(hub.requests)
    code, _, err = cli("merge", str(recipe), "--out", str(tmp_path / "m-1.0"), "--fetch", "stream", "--device", "cpu")
    assert code == 0, err
    one_merge = weight_reads(hub, mark)
    assert snapshot[1.0] == folder_bytes(tmp_path / "m-1.0")  # factor 1.0 is the recipe as written
    assert snapshot[0.7] != snapshot[1.0]

    # stream, into the earlier sweep's folder (replaced): the very requests one merge makes, for both variants
    mark = len(hub.requests)
    code, stdout, err = cli("sweep", str(recipe), "--out", str(out), "--fetch", "stream", "--device", "cpu",
                            "--format", "json", "--lambdas", "0.7,1")
    assert code == 0, err
    assert weight_reads(hub, mark) == one_merge
    assert {f: folder_bytes(out / folder_name(f)) for f in (0.7, 1.0)} == snapshot
    report = json.loads(stdout)
    assert report == {**json.loads((out / "sweep.json").read_text()), "out_dir": str(out), "stages": report["stages"]}

    # the report and each variant's provenance
    merged = {f: json.loads((tmp_path / f"m-{f}" / "chatvector.json").read_text()) for f in (0.7, 1.0)}
    inputs = report["inputs"]
    sizes = {(repo, s.rfilename): s.size for repo in {repos["base"], repos["chat"], repos["cp"]}
             for s in api.model_info(repo, files_metadata=True).siblings if s.rfilename.endswith(".safetensors")}
    assert inputs["read_once"] and inputs["files"] == len(sizes) and inputs["bytes"] == sum(sizes.values())
    assert report["io"]["bytes_downloaded"] == inputs["bytes"]  # streamed once: nothing fetched twice
    assert report["factors"] == [0.7, 1.0] and [v["folder"] for v in report["variants"]] == ["lambda-0.7", "lambda-1.0"]
    for v in report["variants"]:
        folder = out / v["folder"]
        provenance = json.loads((folder / "chatvector.json").read_text())
        assert provenance["sweep"]["factor"] == v["factor"] and provenance["sweep"]["factors"] == [0.7, 1.0]
        assert provenance["fingerprint"] == merged[v["factor"]]["fingerprint"]  # the scaled recipe's own
        assert provenance["coefficients"] == merged[v["factor"]]["coefficients"]
        assert v["fingerprint"] == provenance["fingerprint"]["sha256"]
        assert v["files"] == {n: {"sha256": h, "bytes": (folder / n).stat().st_size}
                              for n, h in sorted(provenance["output"]["files"].items())}
        assert set(v["files"]) == {p.name for p in folder.iterdir()} - {"chatvector.json"}
        assert v["checks"]["passed"] == v["checks"]["total"] > 0
        # norms kept at 0; layer 3's 1.2, scaled, then times the first vector's weight, the largest
        assert v["lambda_range"] == [0.0, 0.7 * (v["factor"] * 1.2)]
        assert v["default_lambda"] == 0.9 * v["factor"]
    summary = (out / "sweep.md").read_text()
    assert "| ×0.7 | [lambda-0.7/](lambda-0.7/) |" in summary and "read once" in summary


@pytest.mark.parametrize("lambdas, message", [
    ("0.5,0", "--lambdas: 0.0 is not a positive finite number"),
    ("0.5,-1", "--lambdas: -1.0 is not a positive finite number"),
    ("0.7,0.70", "--lambdas: 0.7 is given twice (both would be lambda-0.7)"),
    ("1,1.0", "--lambdas: 1.0 is given twice (both would be lambda-1.0)"),
    ("0.5,nan", "--lambdas: nan is not a positive finite number"),
    ("0.5,x", "--lambdas: 'x' is not a number; give factors separated by commas"),
    ("0.5,,1", "--lambdas: '' is not a number"),
    (",".join(str(1 + i / 10) for i in range(17)), "--lambdas: 17 factors; a sweep writes at most 16 variants"),
])
def test_bad_lambdas_are_one_line_and_exit_2(tmp_path, capsys, lambdas, message):
    code, out, err = run_main(capsys, "sweep", str(tmp_path / "r.yaml"), "--lambdas", lambdas, "--out", str(tmp_path / "s"))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1


def test_no_factors_or_a_foreign_out_folder_stop_before_any_hub_request(tmp_path, capsys, hub, local_triplet):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(local_triplet))
    code, _, err = run_main(capsys, "sweep", str(recipe), "--out", str(tmp_path / "s"))
    assert code == 2 and "no λ factors to sweep: give --lambdas 0.5,0.7,1.0" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = run_main(capsys, "sweep", str(recipe), "--lambdas", "0.5", "--out", str(tmp_path / "busy"))
    assert code == 2 and "is not an earlier sweep's folder (it has no sweep.json)" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_the_recipe_sweep_section_is_checked_like_the_option(tmp_path):
    head = "base: {repo_id: a/b}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\n"
    assert parse_recipe(head + "sweep: {lambdas: [0.5, 1]}\n").sweep.lambdas == (0.5, 1.0)
    for lambdas, message in [("[0.5, 0.5]", "sweep.lambdas[1]: 0.5 is given twice"),
                             ("[0]", "sweep.lambdas[0]: 0.0 is not a positive finite number"),
                             ("[]", "sweep.lambdas: expected a non-empty list of factors"),
                             ('["0.5"]', "sweep.lambdas[0]: expected a number, got the quoted string"),
                             ("[" + ", ".join(str(i + 1) for i in range(17)) + "]", "sweep.lambdas: 17 factors")]:
        with pytest.raises(Exception, match=r"recipe\.yaml:4: " + message.replace("[", r"\[").replace("]", r"\]")):
            parse_recipe(head + f"sweep: {{lambdas: {lambdas}}}\n")
    assert parse_recipe(head).normalized_sha256 == parse_recipe(head + "sweep: {lambdas: [0.5]}\n").normalized_sha256


def test_folder_names_are_the_shortest_round_trip_text():
    assert [folder_name(f) for f in (0.7, 1, 1.0, 0.85, 1e-05, 2.5)] == [
        "lambda-0.7", "lambda-1.0", "lambda-1.0", "lambda-0.85", "lambda-1e-05", "lambda-2.5"]
