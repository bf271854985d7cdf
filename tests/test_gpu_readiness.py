"""What of the GPU path can be checked without a GPU: the exactness probe itself, pinned-memory sizing, the GPU
memory preflight, the direct-I/O fallback, the device in the provenance, and CUDA errors as one line (exit 2)."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import logging
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest
import torch

from chatvector.build import preflight
from chatvector.cli import main
from chatvector.merge import compute, engine, pinned, run_merge, writer
from chatvector.merge.pinned import pinned_block_bytes, pinned_footprint, staged_pinned_bytes
from chatvector.testing.adversarial import SHARD_SIZE, adversarial_jobs, write_adversarial
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import WRITE_TOKEN

ROOT = Path(__file__).resolve().parents[1]
OOM_TEXT = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
            "1.00 GiB is free. Including non-PyTorch memory, this process has 78.1 GiB memory in use.")


def load_probe():
    spec = importlib.util.spec_from_file_location("exactness_probe", ROOT / "bench" / "exactness_probe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- the exactness probe ---------------------------------------------------------------------------------------------
def test_the_probe_passes_cpu_against_cpu(tmp_path, capsys):
    probe = load_probe()
    report = probe.probe("cpu,cpu", work=tmp_path, json_out=tmp_path / "probe.json", quick=True)
    assert report.failures == [] and report.comparisons >= 10
    assert report.verdict("a", "b").startswith("exactness: PASS")
    assert json.loads((tmp_path / "probe.json").read_text())["failures"] == []


def test_the_probe_catches_a_careless_kernel(tmp_path, monkeypatch):
    """The staged path (the main thread here) accumulating in fp64: the probe must see other bits."""
    probe = load_probe()
    exact = compute.combine_into

    def careless(out, cp, terms, scratch):
        if threading.current_thread().name.startswith("merge-compute"):  # the CPU workers stay exact
            return exact(out, cp, terms, scratch)
        acc = cp.to(torch.float64)
        for lam, base, chat in terms:
            acc = acc + lam * (chat.to(torch.float64) - base.to(torch.float64))
        out.copy_(acc)

    monkeypatch.setattr(compute, "combine_into", careless)
    report = probe.probe("cpu,cpu", work=tmp_path, quick=True)
    assert report.failures and report.verdict("a", "b").startswith("exactness: FAIL: ")
    assert "differs" in report.failures[0] and "values differ" in report.failures[0]


def test_the_probe_refuses_without_cuda_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the message on a machine without CUDA")
    assert load_probe().main(["--devices", "cuda,cpu"]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [
        "exactness: FAIL: CUDA is not available (use --devices cpu,cpu to probe the CPU's two paths)"]


# -- pinned memory ---------------------------------------------------------------------------------------------------
def test_pinned_footprint_is_the_allocators_power_of_two():
    assert pinned_footprint((64 << 20) + 4096) == 128 << 20  # what nbytes + ALIGN used to page-lock
    assert pinned_footprint(64 << 20) == 64 << 20
    assert pinned_block_bytes(64 << 20) == 64 << 20
    assert pinned_block_bytes((64 << 20) // 3) == 16 << 20  # a sweep's third of a block
    assert pinned_block_bytes(100) == 4096
    # the default merge (bf16, one vector) on CUDA: 4 output buffers and 2 slots × 3 inputs of 64 MiB
    assert staged_pinned_bytes(64 << 20, outputs=1, pool_depth=4, inputs=3, itemsize=2) == 640 << 20


@pytest.fixture
def pretend_pinned(monkeypatch):
    """The staged pipeline on the CPU as on CUDA: host buffers "pinned" by an ordinary allocation; every
    request recorded."""
    requests = []

    def allocate(nbytes):
        requests.append(nbytes)
        raw = torch.empty(nbytes + 4096, dtype=torch.uint8)
        skip = -raw.data_ptr() % 4096
        return raw[skip: skip + nbytes]

    monkeypatch.setattr(pinned, "_allocate_pinned", allocate)
    monkeypatch.setattr(engine, "wants_pinned", lambda dev: True)
    monkeypatch.setattr(compute, "wants_pinned", lambda dev: True)
    return requests


@pytest.mark.parametrize("chunk", [1 << 20, (1 << 20) + 12288])
def test_pinned_buffers_are_powers_of_two_counted_and_bounded(tmp_path, pretend_pinned, chunk):
    inputs = write_adversarial(tmp_path / "in")
    jobs = adversarial_jobs(inputs, (0.7, -0.35), "bfloat16")
    res = run_merge(jobs, tmp_path / "out", shard_size=SHARD_SIZE, chunk_bytes=chunk, device="cpu",
                    backend="staged", progress=False)
    assert pretend_pinned and all(n & (n - 1) == 0 for n in pretend_pinned), pretend_pinned  # nothing rounded up
    assert res.pinned_bytes == sum(pretend_pinned)
    # fp64 inputs (8 bytes), cp + 2 terms' base and chat = 5 staged inputs, pool of depth 2 + 2
    bound = staged_pinned_bytes(1 << 20, outputs=1, pool_depth=4, inputs=5, itemsize=8)
    assert res.pinned_bytes <= bound
    plain = run_merge(jobs, tmp_path / "plain", shard_size=SHARD_SIZE, chunk_bytes=4096, device="cpu",
                      backend="cpu", progress=False)
    assert res.files == plain.files


def test_the_memory_figures_report_pinned_memory():
    from chatvector.runner import IOStats

    stats = IOStats("snapshot", "local", peak_memory=2 << 30, pinned_memory=640 << 20)
    assert "peak memory 2.1 GB, 671.1 MB of it pinned for the GPU" in stats.summary()
    assert "pinned" not in IOStats("snapshot", "local").summary()


# -- the GPU memory preflight ----------------------------------------------------------------------------------------
def test_gpu_preflight_counts_source_dtypes_temporaries_and_headroom():
    e = 32 << 20  # elements of a 64 MiB block
    per_slot = e * 4 * 4 + e * 2 * 3 + e * (1 + 4 + 2)  # scratch + output, 3 bf16 inputs, temporaries
    assert preflight.gpu_bytes_needed(64 << 20, 1, itemsize=2) == 2 * per_slot + max(256 << 20, 2 * per_slot // 10)
    assert preflight.gpu_bytes_needed(64 << 20, 1, itemsize=8) > preflight.gpu_bytes_needed(64 << 20, 1, itemsize=4)
    assert preflight.gpu_bytes_needed(4096, 1) >= 256 << 20  # headroom even for tiny buffers
    # a block that is not a power of two is cut to one (pinned sizing): the preflight counts what runs
    assert preflight.gpu_bytes_needed((64 << 20) + 4096, 2) == preflight.gpu_bytes_needed(64 << 20, 2)


def test_gpu_preflight_reads_the_widest_source_dtype(tmp_path):
    from types import SimpleNamespace as NS

    plan = NS(tensors=[NS(cp_dtype="bfloat16")], sources={"base": NS(dtype="float64"), "cp": NS(dtype="bfloat16")})
    assert preflight.input_itemsize(plan) == 8
    plan = NS(tensors=[NS(cp_dtype="float16")], sources={"cp": NS(dtype="unknown")})
    assert preflight.input_itemsize(plan) == 2


# -- direct I/O falls back on any error of its path ------------------------------------------------------------------
def test_direct_io_falls_back_once_on_any_error_with_a_warning(tmp_path, monkeypatch, caplog):
    inputs = write_adversarial(tmp_path / "in")
    jobs = adversarial_jobs(inputs, (0.7,), "bfloat16")
    real = writer._pwrite_all
    attempts = []

    def flaky(fd, view, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            attempts.append(offset)
            raise OSError(errno.EIO, "Input/output error")  # not EINVAL: a pinned page, a driver, a device
        return real(fd, view, offset)

    monkeypatch.setattr(writer, "_pwrite_all", flaky)
    with caplog.at_level(logging.WARNING, logger="chatvector.merge.writer"):
        res = run_merge(jobs, tmp_path / "out", shard_size=SHARD_SIZE, chunk_bytes=4096, device="cpu", progress=False)
    if not attempts:
        pytest.skip("this filesystem refuses O_DIRECT at open: the write path is never tried")
    assert len(attempts) == 1  # once: the later blocks and files go buffered without trying again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Input/output error" in warnings[0] and "buffered" in warnings[0]
    assert res.direct_io_files == ()
    buffered = run_merge(jobs, tmp_path / "buffered", shard_size=SHARD_SIZE, chunk_bytes=4096, device="cpu",
                         direct_io=False, progress=False)
    assert res.files == buffered.files


# -- the device in the record ----------------------------------------------------------------------------------------
def test_the_device_is_recorded_with_its_index_and_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 80GB HBM3")
    assert engine.device_label(torch.device("cuda", 0)) == "cuda:0 (NVIDIA H100 80GB HBM3)"
    assert engine.device_label(torch.device("cpu")) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert engine.resolve_device("cuda") == torch.device("cuda", 1)
    assert engine.resolve_device("auto") == torch.device("cuda", 1)


@pytest.fixture
def tiny(tmp_path):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=4))
    return tmp_path


def write_recipe(folder: Path, target: str | None = None) -> Path:
    recipe = folder / "r.yaml"
    recipe.write_text("name: GPU Test\nbase: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                      "coefficients: {default: 0.7}\n"
                      + (f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko]}}\n" if target else ""))
    return recipe


def test_the_provenance_records_the_merge_device(tiny):
    assert main(["merge", str(write_recipe(tiny)), "--out", str(tiny / "out"), "--device", "cpu", "-q"]) == 0
    provenance = json.loads((tiny / "out" / "chatvector.json").read_text())
    assert provenance["merge"] == {"device": "cpu", "backend": "cpu"}


# -- CUDA out of memory and accelerator errors: one line, exit 2, nothing written or pushed ---------------------------
@pytest.fixture
def gpu_fails(monkeypatch):
    """The merge's backend raises what CUDA raises, as if on an H100."""
    def install(err: Exception):
        def submit(self, blocks, bufs):
            raise err

        monkeypatch.setattr(compute.CpuBackend, "submit", submit)
        monkeypatch.setattr(engine, "device_label", lambda dev: "cuda:0 (NVIDIA H100 80GB HBM3)")

    return install


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "internal error" not in errors[0] and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_cuda_out_of_memory_in_the_merge_is_one_line_with_the_fix(tiny, gpu_fails, capsys):
    gpu_fails(torch.OutOfMemoryError(OOM_TEXT))
    capsys.readouterr()
    assert main(["merge", str(write_recipe(tiny)), "--out", str(tiny / "out"), "--device", "cpu", "-q"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: the GPU ran out of memory while merging on cuda:0 (NVIDIA H100 80GB HBM3): "
                           "it asked for 2.00 GiB more with 1.00 GiB free; its buffers for 1 output(s) of "), line
    assert line.endswith("free the GPU (other processes may hold its memory) or run with --device cpu"), line
    assert not (tiny / "out").exists()


def test_an_accelerator_error_in_a_sweep_is_one_line_with_the_fix(tiny, gpu_fails, capsys):
    gpu_fails(torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors..."))
    capsys.readouterr()
    code = main(["sweep", str(write_recipe(tiny)), "--lambdas", "0.5,1", "--out", str(tiny / "sweep"),
                 "--device", "cpu", "-q"])
    assert code == 2
    line = one_error_line(capsys)
    assert line == ("error: the GPU failed while merging on cuda:0 (NVIDIA H100 80GB HBM3): CUDA error: an illegal "
                    "memory access was encountered; free the GPU (other processes may hold its memory) or run with "
                    "--device cpu (-v shows the details)")
    assert not (tiny / "sweep").exists()


def test_cuda_out_of_memory_in_a_publish_pushes_nothing(tiny, gpu_fails, capsys, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/gpu-oom-{uuid.uuid4().hex[:8]}"
    gpu_fails(torch.OutOfMemoryError(OOM_TEXT))
    capsys.readouterr()
    assert main(["publish", str(write_recipe(tiny, target)), "--device", "cpu", "-q"]) == 2
    assert one_error_line(capsys).startswith("error: the GPU ran out of memory while merging on cuda:0")
    pushed = api.repo_exists(target) and api.list_repo_files(target)
    assert not pushed or "chatvector.json" not in pushed


def test_cuda_out_of_memory_loading_a_model_for_evaluation_is_one_line(tiny, monkeypatch):
    from chatvector.device_errors import DeviceError
    from chatvector.evaluation import models

    def no_room(self, *args, **kwargs):
        raise torch.OutOfMemoryError(OOM_TEXT)

    monkeypatch.setattr(torch.nn.Module, "to", no_room)
    monkeypatch.setattr(engine, "device_label", lambda dev: "cuda:0 (NVIDIA H100 80GB HBM3)")
    with pytest.raises(DeviceError) as caught:
        models.load(models.ModelRef(tiny / "m" / "chat", "m/chat"), torch.device("cpu"))
    text = str(caught.value)
    assert "\n" not in text and text.startswith("the GPU ran out of memory while loading m/chat on cuda:0 (NVIDIA H100 "
                                                "80GB HBM3): it asked for 2.00 GiB more with 1.00 GiB free; the "
                                                "model's weights are ")
    assert text.endswith("run with --device cpu, or on a GPU with more free memory")


def test_a_device_error_no_stage_translated_is_still_one_line_exit_2(capsys):
    from chatvector import cli

    assert cli._unexpected(torch.OutOfMemoryError(OOM_TEXT), verbose=False) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the GPU ran out of memory while computing on cuda: it asked for 2.00 GiB more with 1.00 GiB free; "
        "run with --device cpu, or with a smaller --batch-size (eval)")
