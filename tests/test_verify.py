"""Verification of a merged model folder: a good tiny model passes; each kind of damage is named."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from chatvector.build import verify
from chatvector.build.verify import Check, VerificationReport, verify_model_folder
from chatvector.conventions import DTYPE_BY_CODE
from chatvector.errors import VerificationError
from chatvector.merge.safetensors_io import read_header
from chatvector.testing import tinymodels as tm

CHECK_NAMES = [
    "weights are readable",
    "shapes and dtypes as planned",
    "all tensors finite",
    "config matches the weights",
    "tokenizer fits the vocabulary",
    "chat template renders",
    "generation stops at end of turn",
]


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("verify")
    out = {a: tm.write_triplet(root / a, tm.TripletSpec(arch=a)) for a in tm.ARCHS}
    out["single"] = tm.write_triplet(root / "single", tm.TripletSpec(max_shard_size="10MB"))
    return out


@pytest.fixture
def chat(triplets, tmp_path) -> Path:
    """A private copy of the good llama chat folder (5 shards), free to damage."""
    return Path(shutil.copytree(triplets["llama"]["chat"], tmp_path / "chat"))


def stored(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor: (shape, safetensors dtype code)} over every shard, as the safetensors library reads them."""
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                out[name] = (tuple(sl.get_shape()), sl.get_dtype())
    return out


def plan_of(folder: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (shape, DTYPE_BY_CODE[code].name) for name, (shape, code) in stored(folder).items()}


def by_name(report: VerificationReport) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


def failed(report: VerificationReport) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


def shard_of(folder: Path, tensor: str) -> Path:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / index["weight_map"][tensor]


def rewrite_shard(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc, indent=2))


# --------------------------------------------------------------------------------------------------
# Good folders


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_good_chat_folder_passes_every_check(triplets, arch):
    folder = triplets[arch]["chat"]
    report = verify_model_folder(folder, plan_of(folder))
    assert report.ok, failed(report)
    assert [c.name for c in report.checks] == CHECK_NAMES
    assert all(c.detail and "\n" not in c.detail for c in report.checks)
    assert "Hello! Who are you?" in report.sample
    report.raise_for_failures()  # no exception


def test_good_details_say_what_was_checked(triplets):
    checks = by_name(verify_model_folder(triplets["llama"]["chat"]))
    assert checks["weights are readable"].detail.startswith("5 shards, 39 tensors, ")
    assert checks["all tensors finite"].detail == "39 tensors, 199.9 K values checked"
    assert checks["config matches the weights"].detail == (
        "vocab_size 405 = model.embed_tokens.weight rows = lm_head.weight rows"
    )
    assert checks["generation stops at end of turn"].detail == "eos_token_id [404, 401] includes <|eot_id|> (404)"
    assert checks["chat template renders"].detail.endswith("with a system message")


def test_sample_is_the_rendered_conversation(triplets):
    sample = verify_model_folder(triplets["llama"]["chat"]).sample
    assert sample == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello! Who are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_tied_model_without_lm_head_passes(triplets):
    checks = by_name(verify_model_folder(triplets["qwen2"]["chat"]))
    assert checks["config matches the weights"].ok
    assert "(tied, no lm_head)" in checks["config matches the weights"].detail


def test_single_file_model_passes(triplets):
    folder = triplets["single"]["chat"]
    assert (folder / "model.safetensors").exists()
    report = verify_model_folder(folder, plan_of(folder))
    assert report.ok, failed(report)
    assert by_name(report)["weights are readable"].detail.startswith("1 file, 39 tensors")


def test_without_a_plan_the_plan_check_is_left_out(triplets):
    report = verify_model_folder(triplets["llama"]["chat"])
    assert [c.name for c in report.checks] == [n for n in CHECK_NAMES if n != "shapes and dtypes as planned"]


def test_to_dict_is_json(triplets):
    report = verify_model_folder(triplets["llama"]["chat"])
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["sample"] == report.sample
    assert doc["checks"][0] == {"name": "weights are readable", "ok": True, "detail": report.checks[0].detail}
    assert set(doc) == {"checks", "sample"}


# --------------------------------------------------------------------------------------------------
# Non-finite values, read in chunks


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_non_finite_value_is_named_with_its_tensor_and_count(chat, value, shown):
    name = "model.layers.2.mlp.down_proj.weight"

    def plant(t):
        t[name][3, 5] = value
        t[name][-1, -1] = value

    rewrite_shard(shard_of(chat, name), plant)
    report = verify_model_folder(chat, chunk_bytes=100)  # many chunks per tensor, not row aligned
    assert failed(report) == {  # down_proj is [64, 128]: element [3, 5] is flat index 3 * 128 + 5
        "all tensors finite": f"{name}: 2 non-finite values of 8192 (first: {shown} at flat index 389)"
    }


def test_non_finite_in_several_tensors_counts_the_others(chat):
    names = ["model.norm.weight", "model.layers.0.input_layernorm.weight", "lm_head.weight"]
    for name in names:
        rewrite_shard(shard_of(chat, name), lambda t, n=name: t[n].view(-1).__setitem__(0, float("nan")))
    detail = failed(verify_model_folder(chat))["all tensors finite"]
    assert "1 non-finite value of" in detail
    assert detail.endswith("; 2 more tensors have some")


@pytest.mark.parametrize("chunk_bytes", [126, 1001, 64 << 20])
def test_any_chunk_size_finds_the_last_element(chat, chunk_bytes):
    name = "model.embed_tokens.weight"
    rewrite_shard(shard_of(chat, name), lambda t: t[name].view(-1).__setitem__(-1, float("inf")))
    detail = failed(verify_model_folder(chat, chunk_bytes=chunk_bytes))["all tensors finite"]
    assert detail.startswith(f"{name}: 1 non-finite value of 25920 (first: inf at flat index 25919)")


class SpyOpen:
    """Stands in for `safe_open` in chatvector.build.verify: records the bytes of every tensor read through it."""

    opens = 0
    reads: list[int] = []
    fail: str | None = None  # raise on reading values of this tensor

    def __init__(self, *args, **kwargs):
        type(self).opens += 1
        self.f = _real_safe_open(*args, **kwargs)

    def __enter__(self):
        self.f.__enter__()
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def get_slice(self, name):
        return _SpySlice(self.f.get_slice(name), name, type(self))

    def get_tensor(self, name):
        x = self.f.get_tensor(name)
        type(self).reads.append(x.numel() * x.element_size())
        return x


class _SpySlice:
    def __init__(self, sl, name, spy):
        self.sl, self.name, self.spy = sl, name, spy

    def __getattr__(self, name):
        return getattr(self.sl, name)

    def __getitem__(self, key):
        if self.name == self.spy.fail:
            raise OSError(5, "Input/output error")
        x = self.sl[key]
        self.spy.reads.append(x.numel() * x.element_size())
        return x


_real_safe_open = safe_open


@pytest.fixture
def spy(monkeypatch) -> type[SpyOpen]:
    cls = type("Spy", (SpyOpen,), {"opens": 0, "reads": [], "fail": None})
    monkeypatch.setattr(verify, "safe_open", cls)
    return cls


def stored_bytes(folder: Path) -> int:
    return sum(math.prod(shape) * DTYPE_BY_CODE[code].itemsize for shape, code in stored(folder).values())


def test_values_are_read_in_chunks_no_larger_than_chunk_bytes(chat, spy):
    assert verify_model_folder(chat, chunk_bytes=1000).ok
    assert max(spy.reads) <= 1000
    assert sum(spy.reads) == stored_bytes(chat)  # every byte read once


def test_a_row_larger_than_chunk_bytes_is_read_alone(chat, spy):
    assert verify_model_folder(chat, chunk_bytes=100).ok  # rows are 128 or 256 bytes here
    assert max(spy.reads) == 256
    assert sum(spy.reads) == stored_bytes(chat)


def test_files_are_reopened_so_mapped_pages_do_not_pile_up(chat, spy, monkeypatch):
    monkeypatch.setattr(verify, "_REMAP_BYTES", 4096)
    assert verify_model_folder(chat, chunk_bytes=1000).ok
    shards = len(list(chat.glob("*.safetensors")))
    # One open per shard to list it, then one per 4 KiB read or so in the values pass.
    assert spy.opens >= shards + stored_bytes(chat) // (4096 + 1000)


_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from chatvector.build import verify
    from chatvector.testing.memory import PeakMemory

    verify._REMAP_BYTES = 16 << 20
    weights = verify._read_weights(Path(sys.argv[1]))
    with PeakMemory() as peak:
        check = verify._check_finite(weights, 1 << 20)
    print(json.dumps({"anon": peak.anon, "rss": peak.rss, "ok": check.ok, "detail": check.detail}))
    """
)


@pytest.mark.slow
def test_peak_memory_of_the_values_pass_is_bounded(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"embed": torch.randn((16384, 2048), generator=g).to(torch.bfloat16)}  # 64 MiB, one tensor
    tensors |= {f"layers.{i}.w": torch.randn((1024, 1024), generator=g).to(torch.bfloat16) for i in range(16)}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    del tensors
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         check=True, timeout=300)
    peak = json.loads(res.stdout.strip().splitlines()[-1])
    assert peak["ok"] and peak["detail"] == "17 tensors, 50.3 M values checked", peak
    # The file is 96 MiB and its largest tensor 64 MiB: reading views of the library's mapping costs no
    # anonymous memory, and reopening the file every 16 MiB keeps the mapped pages near that.
    assert peak["anon"] < 16 << 20, peak
    assert peak["rss"] < 40 << 20, peak


def test_a_read_error_midway_is_a_failed_check_naming_the_file(chat, spy):
    name = "model.layers.1.mlp.up_proj.weight"
    spy.fail = name
    report = verify_model_folder(chat)
    assert failed(report) == {
        "all tensors finite": f"{shard_of(chat, name).name}: cannot read {name}: [Errno 5] Input/output error"
    }


# --------------------------------------------------------------------------------------------------
# Shapes and dtypes against the plan


def test_dtype_mismatch_is_reported(chat):
    plan = plan_of(chat)
    plan["model.norm.weight"] = ((64,), "float16")
    detail = failed(verify_model_folder(chat, plan))["shapes and dtypes as planned"]
    assert detail == "model.norm.weight: bfloat16, expected float16"


def test_stored_dtype_differing_from_plan_is_reported(chat):
    name = "model.norm.weight"
    rewrite_shard(shard_of(chat, name), lambda t: t.__setitem__(name, t[name].to(torch.float16)))
    plan = plan_of(chat)
    plan[name] = ((64,), "bfloat16")
    report = verify_model_folder(chat, plan)
    assert failed(report) == {"shapes and dtypes as planned": "model.norm.weight: float16, expected bfloat16"}


def test_shape_mismatch_missing_and_unexpected_are_listed(chat):
    plan = plan_of(chat)
    plan["lm_head.weight"] = ((406, 64), "bfloat16")
    plan["model.extra.weight"] = ((1,), "bfloat16")
    del plan["model.norm.weight"]
    detail = failed(verify_model_folder(chat, plan))["shapes and dtypes as planned"]
    assert detail == (
        "lm_head.weight: shape [405, 64], expected [406, 64]; missing: model.extra.weight;"
        " unexpected: model.norm.weight"
    )


def test_many_plan_mismatches_are_summarised(chat):
    plan = {f"{n}.x": v for n, v in plan_of(chat).items()}
    detail = failed(verify_model_folder(chat, plan))["shapes and dtypes as planned"]
    assert detail.startswith("missing: lm_head.weight.x; missing: ")
    assert detail.endswith("; ... and 75 more")  # 39 missing + 39 unexpected, 3 shown


# --------------------------------------------------------------------------------------------------
# Readable weights


def test_missing_shard_named_by_the_index(chat):
    (chat / "model-00003-of-00005.safetensors").unlink()
    report = verify_model_folder(chat)
    problems = failed(report)
    assert problems["weights are readable"] == "model-00003-of-00005.safetensors: named by the index but missing"
    assert problems["all tensors finite"].startswith("not fully checked: ")
    assert set(problems) == {"weights are readable", "all tensors finite"}  # the other checks still ran
    assert len(report.checks) == 6


def test_index_naming_the_wrong_shard(chat):
    index = chat / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    right = doc["weight_map"]["model.norm.weight"]
    wrong = next(f for f in sorted(set(doc["weight_map"].values())) if f != right)
    doc["weight_map"]["model.norm.weight"] = wrong
    index.write_text(json.dumps(doc))
    detail = failed(verify_model_folder(chat))["weights are readable"]
    assert detail == f"model.norm.weight: stored in {right} but the index names {wrong}"


def test_tensor_stored_twice(chat):
    name = "model.norm.weight"
    home = shard_of(chat, name)
    other = next(p for p in sorted(chat.glob("model-*.safetensors")) if p != home)
    value = load_file(home)[name]
    rewrite_shard(other, lambda t: t.__setitem__(name, value))
    detail = failed(verify_model_folder(chat))["weights are readable"]
    first, second = sorted([home.name, other.name])
    assert f"{name}: in both {first} and {second}" in detail


def test_stray_shard_is_reported(chat):
    shutil.copy(chat / "model-00001-of-00005.safetensors", chat / "model-00001-of-00004.safetensors")
    detail = failed(verify_model_folder(chat))["weights are readable"]
    assert detail == "model-00001-of-00004.safetensors: not named by the index (a stale shard?)"


def test_no_weights_at_all(chat):
    for p in chat.glob("model*"):
        p.unlink()
    problems = failed(verify_model_folder(chat))
    assert problems["weights are readable"] == f"no model.safetensors or model.safetensors.index.json in {chat}"
    assert problems["all tensors finite"] == (
        "not fully checked: the weights are not all readable; 0 readable tensors are finite"
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: struct.pack("<Q", 1 << 40) + b[8:], "header length 1099511627776 does not fit"),
        (lambda b: b[:8] + b"{not json" + b[17:], "header is not valid JSON"),
        (lambda b: b[:200], "header length"),
        (lambda b: b[:-100], "lies at bytes [" ),
    ],
    ids=["length", "json", "truncated", "data"],
)
def test_corrupt_header_is_named_and_other_checks_still_run(chat, damage, message):
    shard = chat / "model-00002-of-00005.safetensors"
    shard.write_bytes(damage(shard.read_bytes()))
    report = verify_model_folder(chat)
    detail = failed(report)["weights are readable"]
    assert detail.startswith("model-00002-of-00005.safetensors: ")
    assert message in detail
    assert str(chat) not in detail  # the file is named relative to the folder: one short line
    checks = by_name(report)
    assert checks["chat template renders"].ok and checks["tokenizer fits the vocabulary"].ok
    assert report.sample is not None


# A writer bug that the engine's own header parser would not notice: the file is written by hand,
# byte by byte, as a buggy writer would, and must fail verification because the safetensors library
# (what transformers loads with) refuses it.


def write_by_hand(path: Path, tensors: dict[str, torch.Tensor], bug: str) -> None:
    doc: dict = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        code = next(d.code for d in DTYPE_BY_CODE.values() if getattr(torch, d.name) == t.dtype)
        doc[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    first = next(iter(tensors))
    end = doc[first]["data_offsets"][1]
    if bug == "gap":  # 8 stray bytes after the first tensor; the later offsets account for them
        for name in list(tensors)[1:]:
            doc[name]["data_offsets"] = [o + 8 for o in doc[name]["data_offsets"]]
        data = data[:end] + bytes(8) + data[end:]
    elif bug == "overlap":  # a second name for the first tensor's bytes
        doc[first + ".alias"] = dict(doc[first])
    elif bug == "trailing":  # bytes past the last tensor
        data += bytes(16)
    elif bug == "metadata":  # a metadata value that is not a string
        doc["__metadata__"]["total_size"] = len(data)
    head = json.dumps(doc).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


@pytest.mark.parametrize(
    "bug, said",
    [
        ("gap", "invalid offset for tensor"),
        ("overlap", "invalid offset for tensor"),
        ("trailing", "file not fully covered"),
        ("metadata", "expected a string"),
    ],
)
def test_a_file_the_safetensors_library_refuses_fails_verification_and_the_engine_refuses_it_too(chat, bug, said):
    from chatvector.errors import MergeError

    shard = shard_of(chat, "model.norm.weight")
    tensors = load_file(shard)
    write_by_hand(shard, tensors, bug)
    with pytest.raises(MergeError, match=rf"^{re.escape(str(shard))}: "):
        read_header(shard)  # the engine's parser is as strict as the library (an input like this is refused)
    report = verify_model_folder(chat)
    detail = failed(report)["weights are readable"]
    assert detail.startswith(f"{shard.name}: the safetensors library cannot read it (")
    assert said in detail and detail.endswith("; the file is corrupt")
    assert failed(report)["all tensors finite"].startswith("not fully checked: ")


def test_a_file_written_by_hand_without_a_bug_passes(chat):
    shard = shard_of(chat, "model.norm.weight")
    write_by_hand(shard, load_file(shard), bug="none")
    report = verify_model_folder(chat, plan_of(chat))
    assert report.ok, failed(report)


def test_metadata_format_transformers_refuses(chat):
    shard = shard_of(chat, "model.norm.weight")
    save_file(load_file(shard), shard, metadata={"format": "np"})
    detail = failed(verify_model_folder(chat))["weights are readable"]
    assert detail == f"{shard.name}: metadata format 'np'; transformers loads only pt, tf, flax, mlx"


def test_unreadable_index(chat):
    (chat / "model.safetensors.index.json").write_text("{")
    detail = failed(verify_model_folder(chat))["weights are readable"]
    assert detail.startswith("model.safetensors.index.json is unreadable: ")


# --------------------------------------------------------------------------------------------------
# Config, tokenizer, chat template, generation config


def test_wrong_config_vocab_size(chat):
    edit_json(chat / "config.json", vocab_size=400)
    assert failed(verify_model_folder(chat)) == {
        "config matches the weights": "vocab_size 400 but model.embed_tokens.weight has 405 rows;"
        " vocab_size 400 but lm_head.weight has 405 rows",
        "tokenizer fits the vocabulary": "405 token ids but vocab_size is 400:"
        " ids >= 400 would index past the embeddings",
    }


def test_tied_config_with_a_stored_lm_head(chat):
    edit_json(chat / "config.json", tie_word_embeddings=True)
    detail = failed(verify_model_folder(chat))["config matches the weights"]
    assert detail == "tie_word_embeddings is true but lm_head.weight is stored; transformers would ignore it"


def test_untied_config_without_lm_head(triplets, tmp_path):
    folder = Path(shutil.copytree(triplets["qwen2"]["chat"], tmp_path / "qwen"))
    edit_json(folder / "config.json", tie_word_embeddings=False)
    detail = failed(verify_model_folder(folder))["config matches the weights"]
    assert detail.startswith("tie_word_embeddings is false but there is no lm_head tensor")


def test_config_that_does_not_load(chat):
    (chat / "config.json").unlink()
    detail = failed(verify_model_folder(chat))["config matches the weights"]
    assert detail.startswith("config.json does not load: ")


def test_tokenizer_larger_than_the_embeddings(chat):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat)
    tok.add_tokens(["<|new_a|>", "<|new_b|>"])
    tok.save_pretrained(chat)
    assert failed(verify_model_folder(chat)) == {
        "tokenizer fits the vocabulary": "407 token ids but model.embed_tokens.weight rows is 405:"
        " ids >= 405 would index past the embeddings"
    }


def test_no_chat_template_in_the_cp_folder(triplets):
    report = verify_model_folder(triplets["llama"]["cp"])
    assert failed(report) == {
        "chat template renders": "the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json)"
    }
    assert report.sample is None


def test_template_rejecting_the_system_role_falls_back_to_user_only(chat):
    (chat / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    )
    report = verify_model_folder(chat)
    assert report.ok, failed(report)
    assert report.sample == "[user] Hello! Who are you?\n"
    assert by_name(report)["chat template renders"].detail == (
        "27 chars without a system message (the template rejects it: System role not supported)"
    )


def test_template_that_always_fails(chat):
    (chat / "chat_template.jinja").write_text("{{ raise_exception('broken template') }}")
    report = verify_model_folder(chat)
    assert failed(report) == {"chat template renders": "the template fails: broken template"}
    assert report.sample is None


def test_template_that_drops_the_user_message(chat):
    (chat / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['role'] }}]{% endfor %}")
    detail = failed(verify_model_folder(chat))["chat template renders"]
    assert detail == "the rendered text does not contain the user message: '[system][user]'"


def test_stale_generation_eos_is_reported(chat):
    edit_json(chat / "generation_config.json", eos_token_id=401)  # cp's plain eos, as the reference code leaves it
    assert failed(verify_model_folder(chat)) == {
        "generation stops at end of turn": "eos_token_id 401 does not include the tokenizer's eos <|eot_id|> (404):"
        " generation would not stop at end of turn"
    }


def test_generation_config_without_eos(chat):
    doc = json.loads((chat / "generation_config.json").read_text())
    del doc["eos_token_id"]
    (chat / "generation_config.json").write_text(json.dumps(doc))
    detail = failed(verify_model_folder(chat))["generation stops at end of turn"]
    assert detail == "generation_config.json has no eos_token_id"


def test_missing_generation_config(chat):
    (chat / "generation_config.json").unlink()
    detail = failed(verify_model_folder(chat))["generation stops at end of turn"]
    assert detail.startswith("no generation_config.json")


def test_unloadable_tokenizer_fails_the_checks_that_need_it(chat):
    (chat / "tokenizer.json").write_text("not json")
    (chat / "tokenizer_config.json").write_text("not json")
    problems = failed(verify_model_folder(chat))
    assert problems["tokenizer fits the vocabulary"].startswith("tokenizer does not load: ")
    assert problems["chat template renders"] == "not checked: the tokenizer did not load"
    assert problems["generation stops at end of turn"].startswith("not checked: ")


# --------------------------------------------------------------------------------------------------
# The report


def test_raise_for_failures_names_the_first_failure_and_counts_the_rest():
    report = VerificationReport(
        (Check("a", True, "fine"), Check("b", False, "bad thing"), Check("c", False, "worse"), Check("d", False, "x")),
        None,
    )
    assert not report.ok
    with pytest.raises(VerificationError, match=r"^verification failed: b: bad thing; and 2 more$"):
        report.raise_for_failures()


def test_raise_for_a_single_failure_has_no_count(chat):
    edit_json(chat / "generation_config.json", eos_token_id=401)
    with pytest.raises(VerificationError) as exc:
        verify_model_folder(chat).raise_for_failures()
    assert str(exc.value) == (
        "verification failed: generation stops at end of turn: eos_token_id 401 does not include the"
        " tokenizer's eos <|eot_id|> (404): generation would not stop at end of turn"
    )


def test_chunk_bytes_must_be_positive(chat):
    with pytest.raises(ValueError, match="chunk_bytes must be >= 1"):
        verify_model_folder(chat, chunk_bytes=0)
