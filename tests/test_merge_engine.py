"""The merge engine against an obviously-correct reference: whole tensors, plain torch, fp32."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from chatvector.errors import MergeError
from chatvector.merge import RowCopy, TensorJob, TensorSource, VectorTerm, compute, plan_shards, run_merge
from chatvector.merge.blocks import plan_blocks, plan_chunks
from chatvector.merge.safetensors_io import read_header

DT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# ---------------------------------------------------------------------------------------------
# Helpers: random checkpoints on disk and the reference arithmetic.


def save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def near(t: torch.Tensor, scale: float, seed: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (t.double() + scale * torch.randn(t.shape, generator=g, dtype=torch.float64)).to(dtype or t.dtype)


def rand(shape, dtype, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.05 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


def reference(cp, terms, dtype, delta_rows=None, row_copies=()):
    """acc = float32(cp); acc = acc + λ·(float32(chat) − float32(base)) per term; round once."""
    acc = cp.to(torch.float32).clone()
    for lam, base, chat in terms:
        if lam == 0:
            continue
        if delta_rows is None:
            acc = acc + lam * (chat.to(torch.float32) - base.to(torch.float32))
        else:
            n = delta_rows
            acc[:n] = acc[:n] + lam * (chat[:n].to(torch.float32) - base[:n].to(torch.float32))
    out = acc.to(dtype)
    for out_row, chat, chat_row in row_copies:
        out[out_row] = chat[chat_row].to(torch.float32).to(dtype)
    return out


def triplet(tmp_path: Path, shapes: dict[str, tuple], dtype=torch.bfloat16, seed=0, chat_dtype=None, cp_dtype=None):
    """base, chat, cp as {name: tensor}, saved under tmp_path/{base,chat,cp}.safetensors."""
    base = {k: rand(s, dtype, seed + i) for i, (k, s) in enumerate(shapes.items())}
    chat = {k: near(v, 0.01, 100 + seed + i, chat_dtype) for i, (k, v) in enumerate(base.items())}
    cp = {k: near(v, 0.01, 200 + seed + i, cp_dtype) for i, (k, v) in enumerate(base.items())}
    for n, sd in (("base", base), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", sd)
    return base, chat, cp


def src(tmp_path, model, name):
    return TensorSource(tmp_path / f"{model}.safetensors", name)


def simple_jobs(tmp_path, cp, lams=(1.0,), dtype="bfloat16", models=(("base", "chat"),)):
    jobs = []
    for k, v in cp.items():
        terms = tuple(VectorTerm(src(tmp_path, b, k), src(tmp_path, c, k), lam) for lam, (b, c) in zip(lams, models * len(lams)))
        jobs.append(TensorJob(k, tuple(v.shape), dtype, src(tmp_path, "cp", k), terms))
    return jobs


def load_all(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def assert_same(got: torch.Tensor, want: torch.Tensor):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))  # bits: -0 != +0


SHAPES = {"embed": (37, 24), "w": (24, 40), "norm": (24,), "bias": (5,), "scalar": (), "empty": (0, 24)}


# ---------------------------------------------------------------------------------------------
# Arithmetic.


@pytest.mark.parametrize("lam", [1.0, 0.7, 0.5, -0.3, 2.0])
def test_single_vector_matches_reference(tmp_path, lam):
    base, chat, cp = triplet(tmp_path, SHAPES)
    run_merge(simple_jobs(tmp_path, cp, (lam,)), tmp_path / "out", shard_size=1 << 30, progress=False)
    out = load_all(tmp_path / "out")
    assert set(out) == set(cp)
    for k in cp:
        assert_same(out[k], reference(cp[k], [(lam, base[k], chat[k])], torch.bfloat16))


def test_several_vectors_are_added_in_order(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    base2 = {k: near(v, 0.02, 300) for k, v in base.items()}
    chat2 = {k: near(v, 0.02, 400) for k, v in base2.items()}
    save(tmp_path / "base2.safetensors", base2)
    save(tmp_path / "chat2.safetensors", chat2)
    lams = (0.8, 0.35, 1.0)
    models = (("base", "chat"), ("base2", "chat2"), ("chat2", "base"))
    run_merge(simple_jobs(tmp_path, cp, lams, models=models), tmp_path / "out", shard_size=1 << 30, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        terms = [(0.8, base[k], chat[k]), (0.35, base2[k], chat2[k]), (1.0, chat2[k], base[k])]
        assert_same(out[k], reference(cp[k], terms, torch.bfloat16))


def test_zero_coefficients_keep_cp_bytes(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    run_merge(simple_jobs(tmp_path, cp, (0.0,)), tmp_path / "out", shard_size=1 << 30, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], cp[k])


def test_zero_terms_are_dropped_and_never_read(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    missing = TensorSource(tmp_path / "absent.safetensors", "x")
    jobs = [
        TensorJob(k, tuple(v.shape), "bfloat16", src(tmp_path, "cp", k),
                  (VectorTerm(missing, missing, 0.0), VectorTerm(src(tmp_path, "base", k), src(tmp_path, "chat", k), 0.5)))
        for k, v in cp.items()
    ]
    run_merge(jobs, tmp_path / "out", shard_size=1 << 30, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], reference(cp[k], [(0.5, base[k], chat[k])], torch.bfloat16))


@pytest.mark.parametrize(
    "cp_dt, vec_dt, out_dt",
    [
        ("bfloat16", "bfloat16", "bfloat16"),
        ("float16", "float16", "float16"),
        ("float32", "float32", "float32"),
        ("bfloat16", "float32", "bfloat16"),
        ("float32", "bfloat16", "float16"),
        ("float16", "bfloat16", "float32"),
        ("float64", "float64", "bfloat16"),
        ("bfloat16", "float16", "float32"),
    ],
)
@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_dtypes(tmp_path, cp_dt, vec_dt, out_dt, lam):
    base = {k: rand(s, DT[vec_dt], i) for i, (k, s) in enumerate(SHAPES.items())}
    chat = {k: near(v, 0.01, 10 + i) for i, (k, v) in enumerate(base.items())}
    cp = {k: near(v, 0.01, 20 + i, DT[cp_dt]) for i, (k, v) in enumerate(base.items())}
    for n, sd in (("base", base), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", sd)
    run_merge(simple_jobs(tmp_path, cp, (lam,), out_dt), tmp_path / "out", shard_size=1 << 30, chunk_bytes=64, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], reference(cp[k], [(lam, base[k], chat[k])], DT[out_dt]))


def test_cast_only_when_output_dtype_differs(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES, cp_dtype=torch.float32)
    run_merge(simple_jobs(tmp_path, cp, (), "bfloat16"), tmp_path / "out", shard_size=1 << 30, chunk_bytes=32, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], cp[k].to(torch.bfloat16))


@pytest.mark.parametrize("vec_rows, delta_rows", [(32, 32), (48, 40), (36, 30), (40, 0)])
def test_delta_rows_limit_the_vector_to_shared_rows(tmp_path, vec_rows, delta_rows):
    cp = {"embed": rand((40, 16), torch.bfloat16, 1), "lm_head": rand((40, 16), torch.bfloat16, 2)}
    base = {k: rand((vec_rows, 16), torch.bfloat16, 3 + i) for i, k in enumerate(cp)}
    chat = {k: near(v, 0.01, 5 + i) for i, (k, v) in enumerate(base.items())}
    for n, sd in (("base", base), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", sd)
    jobs = [
        TensorJob(k, (40, 16), "bfloat16", src(tmp_path, "cp", k),
                  (VectorTerm(src(tmp_path, "base", k), src(tmp_path, "chat", k), 0.9),), delta_rows=delta_rows)
        for k in cp
    ]
    run_merge(jobs, tmp_path / "out", shard_size=1 << 30, chunk_bytes=100, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        want = reference(cp[k], [(0.9, base[k], chat[k])], torch.bfloat16, delta_rows=delta_rows)
        assert_same(out[k], want)
        assert_same(out[k][delta_rows:], cp[k][delta_rows:])


@pytest.mark.parametrize("out_dt", ["bfloat16", "float32"])
def test_row_copies_overwrite_rows_last(tmp_path, out_dt):
    cp = {"embed": rand((40, 16), torch.bfloat16, 1)}
    base = {"embed": rand((32, 16), torch.bfloat16, 2)}
    chat = {"embed": near(base["embed"], 0.01, 3, torch.float32)}  # chat in fp32: copies are cast
    for n, sd in (("base", base), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", sd)
    copies = ((0, 5), (33, 31), (39, 2), (20, 20))  # inside the delta rows and past them
    job = TensorJob(
        "embed", (40, 16), out_dt, src(tmp_path, "cp", "embed"),
        (VectorTerm(src(tmp_path, "base", "embed"), src(tmp_path, "chat", "embed"), 0.6),),
        delta_rows=32,
        row_copies=tuple(RowCopy(o, src(tmp_path, "chat", "embed"), c) for o, c in copies),
    )
    run_merge([job], tmp_path / "out", shard_size=1 << 30, chunk_bytes=24, progress=False)
    out = load_all(tmp_path / "out")["embed"]
    want = reference(cp["embed"], [(0.6, base["embed"], chat["embed"])], DT[out_dt], 32,
                     [(o, chat["embed"], c) for o, c in copies])
    assert_same(out, want)


def test_row_copies_without_terms(tmp_path):
    cp = {"embed": rand((10, 8), torch.bfloat16, 1)}
    chat = {"embed": rand((6, 8), torch.bfloat16, 2)}
    save(tmp_path / "cp.safetensors", cp)
    save(tmp_path / "chat.safetensors", chat)
    job = TensorJob("embed", (10, 8), "bfloat16", src(tmp_path, "cp", "embed"), (),
                    row_copies=(RowCopy(9, src(tmp_path, "chat", "embed"), 5),))
    run_merge([job], tmp_path / "out", shard_size=1 << 30, chunk_bytes=16, progress=False)
    want = cp["embed"].clone()
    want[9] = chat["embed"][5]
    assert_same(load_all(tmp_path / "out")["embed"], want)


@pytest.mark.parametrize("chunk_bytes", [pytest.param(1, marks=pytest.mark.slow), pytest.param(6, marks=pytest.mark.slow),
                                         64, 1000, 4096, 3 * 4096 + 5, 1 << 20])
def test_chunk_size_never_changes_the_bytes(tmp_path, chunk_bytes):
    shapes = {"embed": (167, 133), "w": (133, 50), "norm": (133,), "bias": (7,)}  # tensors span several 4 KiB blocks
    base, chat, cp = triplet(tmp_path, shapes)
    res = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "out", shard_size=1 << 30, chunk_bytes=chunk_bytes, progress=False)
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], reference(cp[k], [(0.7, base[k], chat[k])], torch.bfloat16))
    big = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "out2", shard_size=1 << 30, progress=False)
    assert res.files == big.files


def test_staged_pipeline_equals_cpu_loop(tmp_path):
    """The accelerator pipeline (staging, slots, ordered hand-off) run on the CPU device."""
    cp = {"embed": rand((400, 16), torch.bfloat16, 1), "w": rand((16, 16), torch.bfloat16, 2), "n": rand((16,), torch.float32, 3)}
    base = {k: near(v, 0.01, 4, torch.bfloat16) for k, v in cp.items()}
    base["embed"] = rand((320, 16), torch.bfloat16, 9)
    chat = {k: near(v, 0.01, 5) for k, v in base.items()}
    for n, sd in (("base", base), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", sd)
    jobs = simple_jobs(tmp_path, cp, (0.7,))
    jobs[0] = TensorJob("embed", (400, 16), "bfloat16", jobs[0].cp, jobs[0].terms, delta_rows=320,
                        row_copies=(RowCopy(350, src(tmp_path, "chat", "embed"), 3),))
    jobs.append(TensorJob("copied", (16,), "float32", src(tmp_path, "cp", "n"), ()))
    cpu = run_merge(jobs, tmp_path / "cpu", shard_size=7000, chunk_bytes=48, device="cpu", progress=False)
    staged = run_merge(jobs, tmp_path / "staged", shard_size=7000, chunk_bytes=48, device="cpu", backend="staged",
                       progress=False)
    assert (cpu.backend, staged.backend) == ("cpu", "staged")
    assert cpu.files == staged.files
    assert len(cpu.files) > 2
    want = reference(cp["embed"], [(0.7, base["embed"], chat["embed"])], torch.bfloat16, 320, [(350, chat["embed"], 3)])
    assert_same(load_all(tmp_path / "staged")["embed"], want)


# ---------------------------------------------------------------------------------------------
# Files: layout, shards, index, determinism, atomicity.


def test_single_file_layout_and_metadata(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    res = run_merge(simple_jobs(tmp_path, cp), tmp_path / "out", shard_size=1 << 30, progress=False,
                    metadata={"chatvector": "recipe-x"}, device="cpu")  # the CPU, also on a host with a GPU
    assert sorted(os.listdir(tmp_path / "out")) == ["model.safetensors"]
    assert list(res.files) == ["model.safetensors"]
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "chatvector": "recipe-x"}
        assert list(f.keys()) == sorted(cp)
    assert res.total_bytes == sum(v.numel() * 2 for v in cp.values())
    assert res.device == "cpu"
    raw = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == res.files["model.safetensors"]
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0


def test_a_given_shard_layout_is_written_as_given(tmp_path):
    base, chat, cp = triplet(tmp_path, {f"layers.{i}.w": (16, 16) for i in range(3)})
    jobs = simple_jobs(tmp_path, cp, (0.7,))
    layout = [["layers.2.w"], ["layers.0.w", "layers.1.w"]]
    run_merge(jobs, tmp_path / "out", shard_size=1, shards=layout, progress=False)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"layers.2.w": "model-00001-of-00002.safetensors",
                                   "layers.0.w": "model-00002-of-00002.safetensors",
                                   "layers.1.w": "model-00002-of-00002.safetensors"}
    with pytest.raises(MergeError, match="must name every job exactly once"):
        run_merge(jobs, tmp_path / "bad", shard_size=1, shards=[["layers.0.w"]], progress=False)


def test_shards_and_index_like_transformers(tmp_path):
    shapes = {f"layers.{i}.w": (16, 16) for i in range(7)}  # 512 bytes each in bf16
    base, chat, cp = triplet(tmp_path, shapes)
    jobs = simple_jobs(tmp_path, cp, (0.7,))
    res = run_merge(jobs, tmp_path / "out", shard_size=1100, progress=False)
    names = [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    assert sorted(os.listdir(tmp_path / "out")) == names + ["model.safetensors.index.json"]
    assert set(res.files) == set(names) | {"model.safetensors.index.json"}
    index_raw = (tmp_path / "out" / "model.safetensors.index.json").read_text()
    index = json.loads(index_raw)
    assert index_raw == json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert index["metadata"] == {"total_size": 7 * 512}
    expect = {f"layers.{i}.w": names[i // 2] for i in range(7)}
    assert index["weight_map"] == expect
    for name in names:
        with safe_open(tmp_path / "out" / name, "pt") as f:
            assert set(f.keys()) == {k for k, v in expect.items() if v == name}
            assert f.metadata() == {"format": "pt"}
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], reference(cp[k], [(0.7, base[k], chat[k])], torch.bfloat16))
    for name, digest in res.files.items():
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == digest


def test_mixed_output_dtypes_stay_aligned(tmp_path):
    cp = {"a": rand((3,), torch.bfloat16, 1), "b": rand((5,), torch.float32, 2), "c": rand((7,), torch.float16, 3)}
    save(tmp_path / "cp.safetensors", cp)
    jobs = [TensorJob(k, tuple(v.shape), {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float16: "float16"}[v.dtype],
                      src(tmp_path, "cp", k), ()) for k, v in cp.items()]
    run_merge(jobs, tmp_path / "out", shard_size=1 << 30, progress=False)
    header = read_header(tmp_path / "out" / "model.safetensors")
    for info in header.tensors.values():
        assert info.start % info.itemsize == 0
    out = load_all(tmp_path / "out")
    for k in cp:
        assert_same(out[k], cp[k])


def test_plan_shards_is_greedy_and_never_splits():
    def job(name, n):
        return TensorJob(name, (n,), "float32", TensorSource(Path("x"), name), ())

    jobs = [job("a", 10), job("b", 10), job("big", 100), job("c", 5), job("d", 30)]  # bytes: 40 40 400 20 120
    shards = plan_shards(jobs, 100)
    assert [[j.name for j in s] for s in shards] == [["a", "b"], ["big"], ["c"], ["d"]]
    assert [[j.name for j in s] for s in plan_shards(jobs, 10_000)] == [["a", "b", "big", "c", "d"]]
    assert plan_shards([], 10) == []
    with pytest.raises(MergeError, match="shard size must be a positive"):
        plan_shards(jobs, 0)


def test_plan_chunks_splits_at_the_delta_rows_and_marks_raw_copies():
    job = TensorJob("e", (10, 4), "bfloat16", TensorSource(Path("x"), "e"),
                    (VectorTerm(TensorSource(Path("b"), "e"), TensorSource(Path("c"), "e"), 1.0),), delta_rows=6,
                    row_copies=(RowCopy(8, TensorSource(Path("c"), "e"), 1),))
    chunks = list(plan_chunks(job, "BF16"))
    assert [(c.first, c.count, c.delta, c.raw) for c in chunks] == [(0, 24, True, False), (24, 16, False, False)]
    assert [(p.at, p.count, p.src_first) for p in chunks[1].patches] == [(8, 4, 4)]
    assert [(c.first, c.count, c.raw) for c in plan_chunks(job, "BF16", 26, 31)] == [(26, 5, True)]
    assert [(c.first, c.count, c.raw) for c in plan_chunks(job, "BF16", 30, 35)] == [(30, 5, False)]
    assert not any(c.raw for c in plan_chunks(job, "F32"))
    no_terms = TensorJob("e", (10, 4), "bfloat16", TensorSource(Path("x"), "e"), (VectorTerm(job.cp, job.cp, 0.0),), delta_rows=6)
    assert [(c.first, c.count, c.delta, c.raw) for c in plan_chunks(no_terms, "BF16")] == [(0, 40, False, True)]


def test_plan_blocks_cover_the_file_exactly():
    jobs = [TensorJob(n, (k,), "bfloat16", TensorSource(Path("x"), n), ()) for n, k in (("a", 3000), ("b", 10), ("c", 5000))]
    header = b"h" * 24
    starts = [24, 24 + 6000, 24 + 6020]
    blocks = list(plan_blocks(jobs, starts, header, 4096, lambda j: "F32"))
    size = 24 + 2 * 8010
    assert [(b.offset, b.nbytes) for b in blocks] == [(0, 4096), (4096, 4096), (8192, 4096), (12288, size - 12288)]
    assert blocks[0].header == header and not blocks[1].header
    covered = []
    for b in blocks:
        for p in b.pieces:
            covered.append((b.offset + p.at, b.offset + p.at + 2 * p.chunk.count, p.job.name))
    assert covered[0] == (24, 4096, "a")
    assert [c[2] for c in covered] == ["a", "a", "b", "c", "c", "c"]
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:]))
    assert covered[-1][1] == size


def test_buffered_writes_give_the_same_files(tmp_path, caplog):
    """Filesystems without O_DIRECT get ordinary writes of the same blocks."""
    shapes = {"embed": (167, 133), "norm": (133,)}
    base, chat, cp = triplet(tmp_path, shapes)
    direct = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "a", shard_size=30_000, chunk_bytes=8192, progress=False)
    with caplog.at_level("INFO", logger="chatvector.merge.engine"):
        buffered = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "b", shard_size=30_000, chunk_bytes=8192,
                             progress=False, direct_io=False)
    assert direct.files == buffered.files
    assert buffered.direct_io_files == ()
    assert "(buffered writes: direct_io=False)" in caplog.text


def _direct_io_works(folder: Path) -> bool:
    try:
        fd = os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except (OSError, AttributeError):
        return False
    os.close(fd)
    (folder / ".probe").unlink()
    return True


def test_direct_io_is_used_where_the_filesystem_allows(tmp_path, caplog):
    base, chat, cp = triplet(tmp_path, {"w": (64, 64)})
    with caplog.at_level("INFO", logger="chatvector.merge.engine"):
        res = run_merge(simple_jobs(tmp_path, cp), tmp_path / "out", shard_size=1 << 30, progress=True)
    works = _direct_io_works(tmp_path)
    assert res.direct_io_files == (("model.safetensors",) if works else ())
    assert ("buffered writes" in caplog.text) != works
    assert "merged 1 tensors" in caplog.text


def test_two_runs_write_identical_bytes(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    a = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "a", shard_size=300, chunk_bytes=50, progress=False)
    b = run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "b", shard_size=300, chunk_bytes=50, progress=False)
    assert a.files == b.files and len(a.files) > 2


def test_rerun_replaces_earlier_output_and_stale_shards(tmp_path):
    base, chat, cp = triplet(tmp_path, SHAPES)
    out = tmp_path / "out"
    run_merge(simple_jobs(tmp_path, cp, (0.7,)), out, shard_size=300, progress=False)
    (out / "notes.txt").write_text("mine")
    res = run_merge(simple_jobs(tmp_path, cp, (0.5,)), out, shard_size=1 << 30, progress=False)
    assert sorted(os.listdir(out)) == ["model.safetensors", "notes.txt"]
    got = load_all(out)
    for k in cp:
        assert_same(got[k], reference(cp[k], [(0.5, base[k], chat[k])], torch.bfloat16))
    assert set(res.files) == {"model.safetensors"}


def test_failure_midway_leaves_no_partial_files_and_keeps_old_output(tmp_path, monkeypatch):
    base, chat, cp = triplet(tmp_path, SHAPES)
    out = tmp_path / "out"
    first = run_merge(simple_jobs(tmp_path, cp, (0.7,)), out, shard_size=300, progress=False)
    calls = {"n": 0}
    real = compute.combine_into

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        real(*args)

    monkeypatch.setattr(compute, "combine_into", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        run_merge(simple_jobs(tmp_path, cp, (0.5,)), out, shard_size=300, chunk_bytes=16, progress=False)
    assert sorted(os.listdir(out)) == sorted(first.files)
    for name, digest in first.files.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_disk_error_in_writer_is_a_merge_error_and_cleans_up(tmp_path, monkeypatch):
    base, chat, cp = triplet(tmp_path, SHAPES)
    calls = {"n": 0}
    real = os.pwrite

    def full(fd, data, offset):
        calls["n"] += 1
        if calls["n"] >= 2:  # a full disk stays full: the buffered retry of a failed direct write fails too
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)  # the one call that writes merged bytes
    with pytest.raises(MergeError, match="disk is full"):
        run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "out", shard_size=300, chunk_bytes=16, progress=False)
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate")
def test_full_disk_fails_when_the_file_is_reserved(tmp_path, monkeypatch):
    base, chat, cp = triplet(tmp_path, SHAPES)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(MergeError, match=r"not enough disk space for model-00001-of-\d{5}\.safetensors .*the disk is full"):
        run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "out", shard_size=300, progress=False)
    assert os.listdir(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------
# Input problems are MergeErrors that name the file and the fix, raised before any writing.


def test_input_problems_are_reported_together(tmp_path):
    base, chat, cp = triplet(tmp_path, {"w": (4, 4), "v": (3,)})
    save(tmp_path / "other.safetensors", {"w": rand((5, 4), torch.bfloat16, 1), "i": torch.arange(3)})
    jobs = [
        TensorJob("w", (4, 4), "bfloat16", src(tmp_path, "cp", "w"), (VectorTerm(src(tmp_path, "other", "w"), src(tmp_path, "chat", "w"), 1.0),)),
        TensorJob("v", (3,), "bfloat16", src(tmp_path, "cp", "missing"), ()),
        TensorJob("i", (3,), "float32", src(tmp_path, "other", "i"), ()),
        TensorJob("x", (3,), "int8", src(tmp_path, "cp", "v"), ()),
        TensorJob("y", (3,), "bfloat16", src(tmp_path, "cp", "v"), (VectorTerm(src(tmp_path, "base", "v"), src(tmp_path, "chat", "v"), float("nan")),)),
        TensorJob("z", (3,), "bfloat16", src(tmp_path, "cp", "v"), (), delta_rows=4),
        TensorJob("z", (4, 4), "bfloat16", src(tmp_path, "cp", "w"), (), row_copies=(RowCopy(4, src(tmp_path, "chat", "w"), 0), RowCopy(1, src(tmp_path, "chat", "w"), 9))),
    ]
    with pytest.raises(MergeError) as e:
        run_merge(jobs, tmp_path / "out", shard_size=1 << 30, progress=False)
    msg = str(e.value)
    for part in [
        "w: term 0 base tensor in", "has shape [5, 4], cp has [4, 4]",
        "v: cp tensor 'missing' is not in",
        "i: cp tensor 'i' in", "has dtype I64",
        "x: output dtype 'int8' is not one of bfloat16, float16, float32",
        "y: term 0 has coefficient nan",
        "z: delta_rows=4 is outside [0, 3]",
        "z: two jobs write this tensor name",
        "z: row copy to row 4, outside [0, 4)",
        "z: row copy reads chat row 9, outside [0, 4)",
    ]:
        assert part in msg
    assert not (tmp_path / "out").exists()


_W = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "too short for a header"),
        (b"\xff" * 16, "header length"),
        ((10).to_bytes(8, "little") + b"not json!!", "not valid JSON"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        (len(_W).to_bytes(8, "little") + _W, "truncated or corrupt"),
    ],
)
def test_corrupt_files_are_named(tmp_path, content, match):
    (tmp_path / "cp.safetensors").write_bytes(content)
    job = TensorJob("w", (4,), "float32", src(tmp_path, "cp", "w"), ())
    with pytest.raises(MergeError, match=match) as e:
        run_merge([job], tmp_path / "out", shard_size=1 << 30, progress=False)
    assert str(tmp_path / "cp.safetensors") in str(e.value)


def test_missing_file_is_named(tmp_path):
    job = TensorJob("w", (4,), "float32", src(tmp_path, "nope", "w"), ())
    with pytest.raises(MergeError, match=r"nope\.safetensors: file not found"):
        run_merge([job], tmp_path / "out", shard_size=1 << 30, progress=False)


def test_output_folder_holding_inputs_is_refused(tmp_path):
    base, chat, cp = triplet(tmp_path, {"w": (4, 4)})
    (tmp_path / "cp.safetensors").rename(tmp_path / "model.safetensors")
    job = TensorJob("w", (4, 4), "bfloat16", TensorSource(tmp_path / "model.safetensors", "w"), ())
    with pytest.raises(MergeError, match="holds input file .*model.safetensors; write the merge to another folder"):
        run_merge([job], tmp_path, shard_size=1 << 30, progress=False)


def test_bad_arguments(tmp_path):
    base, chat, cp = triplet(tmp_path, {"w": (4, 4)})
    jobs = simple_jobs(tmp_path, cp)
    with pytest.raises(MergeError, match="device 'tpu' is not one of auto, cpu, cuda, cuda:N"):
        run_merge(jobs, tmp_path / "out", shard_size=1 << 30, device="tpu", progress=False)
    with pytest.raises(MergeError, match="metadata must map strings to strings"):
        run_merge(jobs, tmp_path / "out", shard_size=1 << 30, metadata={"n": 3}, progress=False)
    with pytest.raises(MergeError, match="nothing to merge"):
        run_merge([], tmp_path / "out", shard_size=1 << 30, progress=False)
    with pytest.raises(MergeError, match="chunk_bytes must be positive"):
        run_merge(jobs, tmp_path / "out", shard_size=1 << 30, chunk_bytes=0, progress=False)
    with pytest.raises(MergeError, match="backend 'gpu' is not one of auto, cpu, staged"):
        run_merge(jobs, tmp_path / "out", shard_size=1 << 30, backend="gpu", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_an_error(tmp_path):
    base, chat, cp = triplet(tmp_path, {"w": (4, 4)})
    with pytest.raises(MergeError, match="--device cuda was asked for but CUDA is not available"):
        run_merge(simple_jobs(tmp_path, cp), tmp_path / "out", shard_size=1 << 30, device="cuda", progress=False)
    res = run_merge(simple_jobs(tmp_path, cp), tmp_path / "out", shard_size=1 << 30, device="auto", progress=False)
    assert res.device == "cpu"


# ---------------------------------------------------------------------------------------------
# The output is a checkpoint transformers loads.


def test_transformers_loads_the_sharded_merge(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    chat = {k: near(v, 0.01, i) for i, (k, v) in enumerate(sd.items())}
    cp = {k: near(v, 0.01, 1000 + i) for i, (k, v) in enumerate(sd.items())}
    for n, d in (("base", sd), ("chat", chat), ("cp", cp)):
        save(tmp_path / f"{n}.safetensors", d)
    res = run_merge(simple_jobs(tmp_path, cp, (0.8,)), tmp_path / "out", shard_size=20_000, progress=False)
    assert "model.safetensors.index.json" in res.files
    cfg.save_pretrained(tmp_path / "out")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    got = loaded.state_dict()
    for k in sd:
        assert_same(got[k], reference(cp[k], [(0.8, sd[k], chat[k])], torch.bfloat16))


# ---------------------------------------------------------------------------------------------
# Memory: bounded by chunk_bytes, not by the model.

_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from chatvector.merge import TensorJob, TensorSource, VectorTerm, run_merge
    from chatvector.testing.memory import PeakMemory
    from safetensors import safe_open

    d = Path(sys.argv[1])
    with safe_open(d / "cp.safetensors", "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    S = lambda m, k: TensorSource(d / f"{m}.safetensors", k)
    jobs = [TensorJob(k, tuple(s), "bfloat16", S("cp", k), (VectorTerm(S("base", k), S("chat", k), 0.7),)) for k, s in shapes.items()]
    with PeakMemory() as peak:
        run_merge(jobs, d / "out", shard_size=1 << 30, chunk_bytes=1 << 20, device="cpu", progress=False)
    print(json.dumps({"anon": peak.anon, "rss": peak.rss}))
    """
)


@pytest.mark.slow
def test_peak_memory_is_bounded_by_chunks_not_model(tmp_path):
    shapes = {"embed": (32000, 1024), **{f"layers.{i}.w": (2048, 1024) for i in range(8)}}  # 49M params, ~100 MB bf16
    g = torch.Generator().manual_seed(0)
    for m in ("base", "chat", "cp"):
        save(tmp_path / f"{m}.safetensors", {k: torch.randn(s, generator=g, dtype=torch.float32).to(torch.bfloat16) for k, s in shapes.items()})
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path)], cwd=root, capture_output=True, text=True, check=True, timeout=300)
    peak = json.loads(res.stdout.strip().splitlines()[-1])
    # Expected: 3 × 1 MiB output buffers, 2 × 2 MiB fp32 tiles, torch's thread pool and allocator
    # slack (~25 MB measured). Holding any whole thing would break the bound: the embedding alone is
    # 64 MB in bf16 (128 MB in fp32), the single output file ~100 MB, the three inputs ~300 MB.
    assert peak["anon"] < 48 << 20, peak
    assert peak["rss"] < 96 << 20, peak  # mapped input pages are dropped once used


# ---------------------------------------------------------------------------------------------
# CUDA: the same bytes as the CPU.


def _gpu_case(tmp_path, out_dt):
    cp = {"embed": rand((300, 64), torch.bfloat16, 1), "w": rand((64, 96), torch.bfloat16, 2), "n": rand((64,), torch.float32, 3)}
    base = {k: near(v, 0.01, 4, torch.bfloat16) for k, v in cp.items()}
    base["embed"] = rand((290, 64), torch.bfloat16, 9)
    chat = {k: near(v, 0.01, 5) for k, v in base.items()}
    base2 = {k: near(v, 0.01, 6) for k, v in base.items()}
    chat2 = {k: near(v, 0.01, 7) for k, v in base.items()}
    for n, sd in (("base", base), ("chat", chat), ("cp", cp), ("base2", base2), ("chat2", chat2)):
        save(tmp_path / f"{n}.safetensors", sd)

    def jobs(lams):
        out = simple_jobs(tmp_path, cp, lams, out_dt, models=(("base", "chat"), ("base2", "chat2")))
        e = out[0]
        out[0] = TensorJob(e.name, e.shape, e.dtype, e.cp, e.terms, delta_rows=290,
                           row_copies=(RowCopy(295, src(tmp_path, "chat", "embed"), 3),))
        return out

    return jobs


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("out_dt", ["bfloat16", "float16", "float32"])
def test_cuda_equals_cpu_bit_exactly_with_unit_coefficients(tmp_path, out_dt):
    jobs = _gpu_case(tmp_path, out_dt)((1.0, 1.0))
    cpu = run_merge(jobs, tmp_path / "cpu", shard_size=40_000, chunk_bytes=4096, device="cpu", progress=False)
    gpu = run_merge(jobs, tmp_path / "gpu", shard_size=40_000, chunk_bytes=4096, device="cuda", progress=False)
    assert gpu.device.startswith("cuda")
    assert gpu.files == cpu.files


@pytest.mark.gpu
@cuda
def test_cuda_runs_the_staged_backend_and_refuses_cpu_workers(tmp_path):
    jobs = _gpu_case(tmp_path, "bfloat16")((1.0, 1.0))
    assert run_merge(jobs, tmp_path / "gpu", shard_size=40_000, device="cuda", progress=False).backend == "staged"
    with pytest.raises(MergeError, match="backend 'cpu' computes on the CPU; it cannot run on device cuda"):
        run_merge(jobs, tmp_path / "out", shard_size=40_000, device="cuda", backend="cpu", progress=False)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("out_dt", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("lams", [(0.7, -0.35), (1 / 3, 1e-3)])
def test_cuda_equals_cpu_bit_exactly_at_any_coefficient(tmp_path, out_dt, lams):
    jobs = _gpu_case(tmp_path, out_dt)(lams)
    cpu = run_merge(jobs, tmp_path / "cpu", shard_size=40_000, chunk_bytes=4096, device="cpu", progress=False)
    gpu = run_merge(jobs, tmp_path / "gpu", shard_size=40_000, chunk_bytes=1 << 20, device="cuda", progress=False)
    assert gpu.files == cpu.files  # sha256 of every file: the same bits, not within an ulp


def _adversarial_pair(tmp_path, case, a: dict, b: dict):
    """One adversarial case (chatvector.testing.adversarial) merged twice; the two results."""
    from chatvector.testing.adversarial import SHARD_SIZE, adversarial_jobs, write_adversarial

    _, lams, out_dt = case
    inputs = write_adversarial(tmp_path / "inputs")
    jobs = adversarial_jobs(inputs, lams, out_dt)
    first = run_merge(jobs, tmp_path / "a", shard_size=SHARD_SIZE, progress=False, **a)
    second = run_merge(jobs, tmp_path / "b", shard_size=SHARD_SIZE, progress=False, **b)
    return jobs, inputs, first, second


def _adversarial_cases():
    from chatvector.testing.adversarial import cases

    return cases()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("case", _adversarial_cases(), ids=lambda c: c[0])
def test_cuda_equals_cpu_on_inputs_built_to_break_a_kernel(tmp_path, case):
    _, _, gpu, cpu = _adversarial_pair(tmp_path, case, dict(device="cuda", chunk_bytes=3 * 4096 + 100),
                                       dict(device="cpu", chunk_bytes=4096))
    assert gpu.device.startswith("cuda") and gpu.backend == "staged"
    assert gpu.files == cpu.files


@pytest.mark.parametrize("case", _adversarial_cases(), ids=lambda c: c[0])
def test_both_cpu_paths_write_plain_torchs_bits_on_inputs_built_to_break_a_kernel(tmp_path, case):
    """What the GPU test compares, on the CPU: the staged pipeline (what CUDA runs) against the worker threads, at
    other block sizes, and both against plain torch's whole-tensor arithmetic."""
    from chatvector.testing.adversarial import reference

    jobs, inputs, staged, threads = _adversarial_pair(
        tmp_path, case, dict(device="cpu", backend="staged", chunk_bytes=3 * 4096 + 100),
        dict(device="cpu", backend="cpu", chunk_bytes=4096))
    assert staged.files == threads.files
    out = load_all(tmp_path / "b")
    for job in jobs:
        assert not torch.isnan(out[job.name]).any(), job.name
        assert_same(out[job.name], reference(inputs, job))


# ---------------------------------------------------------------------------------------------
# What the engine learns on its one pass: non-finite outputs, and the inputs' hashes.


@pytest.mark.parametrize("backend", ["cpu", "staged"])
def test_non_finite_outputs_are_found_as_they_are_computed(tmp_path, backend):
    base, chat, cp = triplet(tmp_path, {"w": (64, 48), "v": (96,), "raw": (16, 16)})
    cp["w"].view(-1)[70] = float("nan")
    cp["w"].view(-1)[3000] = float("inf")
    chat["v"].view(-1)[5] = float("-inf")
    save(tmp_path / "cp.safetensors", cp)
    save(tmp_path / "chat.safetensors", chat)
    jobs = simple_jobs(tmp_path, cp, (0.5,))
    jobs[-1] = TensorJob("raw", (16, 16), "bfloat16", src(tmp_path, "cp", "raw"), ())  # a byte copy of cp
    result = run_merge(jobs, tmp_path / "out", shard_size=1 << 30, chunk_bytes=4096, backend=backend,
                       device="cpu", progress=False)
    assert set(result.nonfinite) == {"w", "v"}
    assert (result.nonfinite["w"].count, result.nonfinite["w"].first_index) == (2, 70)
    assert result.nonfinite["v"].first_index == 5 and result.nonfinite["v"].first_value == float("-inf")
    assert result.scanned_tensors == 3 and result.scanned_values == 64 * 48 + 96 + 256


def test_input_files_are_hashed_beside_the_merge(tmp_path):
    import hashlib

    from chatvector.fetch.hashing import InputHasher

    base, chat, cp = triplet(tmp_path, SHAPES)
    paths = [str(tmp_path / f"{m}.safetensors") for m in ("base", "chat", "cp")]
    hasher = InputHasher(paths)
    run_merge(simple_jobs(tmp_path, cp, (0.7,)), tmp_path / "out", shard_size=1 << 30, progress=False)
    assert hasher.digests() == {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
