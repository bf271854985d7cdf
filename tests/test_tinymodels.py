"""The tiny triplet generator: real loadable folders, shared vocabularies, deltas everywhere, determinism."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatvector.testing import tinymodels as tm

EXTRA = 12
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "How are you?"},
]
# The arch's own markers that must appear in a rendered conversation.
MARKERS = {
    "llama": ("<|start_header_id|>assistant<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>"),
    "qwen2": ("<|im_start|>system\nBe brief.<|im_end|>", "<|im_start|>assistant\n"),
    "mistral": ("[INST] Be brief.", " [/INST]", "Hello.</s>"),
}
END_OF_TURN = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "</s>"}
PLAIN_EOS = {"llama": "<|end_of_text|>", "qwen2": "<|endoftext|>", "mistral": "</s>"}


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for name in f.keys():
                out[name] = f.get_tensor(name)
    return out


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("triplets")
    return {a: tm.write_triplet(root / a, tm.TripletSpec(arch=a, extra_cp_tokens=EXTRA)) for a in tm.ARCHS}


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_loads_and_generates_with_chat_template(triplets, arch):
    folders = triplets[arch]
    assert set(folders) == {"base", "chat", "cp"}
    for role, folder in folders.items():
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == arch
        assert config["architectures"] == [type(model).__name__]
        assert config["vocab_size"] == len(tok) == model.get_input_embeddings().weight.shape[0]
        assert config["dtype"] == "bfloat16" and model.dtype == torch.bfloat16
        gen = json.loads((folder / "generation_config.json").read_text())
        if role == "chat":
            assert tok.eos_token == END_OF_TURN[arch]
            eot, eos = tok.convert_tokens_to_ids([END_OF_TURN[arch], PLAIN_EOS[arch]])
            assert gen["eos_token_id"] == ([eot, eos] if eot != eos else eos)
            assert config["eos_token_id"] == eot
            text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
            for marker in MARKERS[arch]:
                assert marker in text, (marker, text)
            inputs = tok.apply_chat_template(
                MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            ids = inputs["input_ids"][0].tolist()
            if tok.bos_token is not None:  # the template adds bos; encoding must not add a second one
                assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
        else:
            assert tok.eos_token == PLAIN_EOS[arch]
            assert gen["eos_token_id"] == tok.eos_token_id == config["eos_token_id"]
            assert tok.chat_template is None
            assert not (folder / "chat_template.jinja").exists()
            assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
            inputs = tok("The model reads the question", return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or out[0, -1].item() in tok.all_special_ids
        assert isinstance(tok.decode(out[0]), str)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_shared_vocabulary_and_cp_extension(triplets, arch):
    toks = {r: AutoTokenizer.from_pretrained(p) for r, p in triplets[arch].items()}
    n = len(toks["base"])
    assert 300 <= n <= 500
    assert len(toks["chat"]) == n and len(toks["cp"]) == n + EXTRA
    base_tokens = toks["base"].convert_ids_to_tokens(list(range(n)))
    assert None not in base_tokens
    assert toks["chat"].convert_ids_to_tokens(list(range(n))) == base_tokens
    assert toks["cp"].convert_ids_to_tokens(list(range(n))) == base_tokens
    # cp's new tokens are real (Korean) byte-level strings that cp's tokenizer actually produces.
    new = toks["cp"].convert_ids_to_tokens(list(range(n, n + EXTRA)))
    assert all(t and t not in base_tokens for t in new)
    korean = "안녕하세요. 저는 한국어를 배우고 있습니다."
    ids = toks["cp"](korean, add_special_tokens=False)["input_ids"]
    assert any(i >= n for i in ids)
    assert toks["cp"].decode(ids) == korean
    assert all(i < n for i in toks["base"](korean, add_special_tokens=False)["input_ids"])
    # All roles encode English identically (same ids for all base tokens).
    english = "The quick brown fox reads 12345 pages."
    assert len({tuple(t(english)["input_ids"]) for t in toks.values()}) == 1

    weights = {r: tensors(p) for r, p in triplets[arch].items()}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name not in weights["base"]:
            continue
        assert weights["base"][name].shape[0] == weights["chat"][name].shape[0] == n
        assert weights["cp"][name].shape[0] == n + EXTRA


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_every_tensor_gets_distinct_deltas(triplets, arch):
    base, chat, cp = (tensors(triplets[arch][r]) for r in ("base", "chat", "cp"))
    assert set(base) == set(chat) == set(cp)
    assert any(k.endswith("q_proj.bias") for k in base) == (arch == "qwen2")  # Qwen2's attention biases
    n = base["model.embed_tokens.weight"].shape[0]
    for name, b in base.items():
        c, p = chat[name].float(), cp[name][: b.shape[0]].float()
        b = b.float()
        if name.endswith("norm.weight"):
            assert torch.all(b == 1.0), name
        d_chat, d_cp = c - b, p - b
        assert d_chat.abs().max() > 0 and d_cp.abs().max() > 0, name
        assert (d_chat != 0).float().mean() > 0.5, name  # deltas survive bf16 rounding, mostly
        assert not torch.equal(d_chat, d_cp), name
        assert d_chat.abs().max() < 0.2, name  # small next to the weights
    extra = cp["model.embed_tokens.weight"][n:].float()
    assert extra.shape[0] == EXTRA and extra.std() > 0.005


def test_tied_qwen2_has_no_lm_head_and_llama_tie_is_optional(triplets, tmp_path):
    for role, folder in triplets["qwen2"].items():
        config = json.loads((folder / "config.json").read_text())
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        assert config["tie_word_embeddings"] is True
        assert "lm_head.weight" not in tensors(folder) and "lm_head.weight" not in index["weight_map"]
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for folder in triplets["llama"].values():
        assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False
        assert "lm_head.weight" in tensors(folder)
    tied = tm.write_triplet(tmp_path, tm.TripletSpec(arch="llama", tied_embeddings=True, extra_cp_tokens=3))
    assert "lm_head.weight" not in tensors(tied["cp"])
    assert AutoModelForCausalLM.from_pretrained(tied["cp"]).lm_head.weight.shape[0] == len(
        AutoTokenizer.from_pretrained(tied["cp"])
    )


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_default_checkpoints_are_sharded(triplets, arch):
    for folder in triplets[arch].values():
        shards = sorted(folder.glob("model-*-of-*.safetensors"))
        assert len(shards) >= 3
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"].values()) == {s.name for s in shards}
        assert not (folder / "model.safetensors").exists()


def test_deterministic_and_fast(tmp_path):
    spec = tm.TripletSpec(arch="qwen2", extra_cp_tokens=5)
    tm.write_triplet(tmp_path / "warm", spec)  # first call imports the modeling code
    tm._tokenizer_json.cache_clear()  # retrain the BPE: its trainer must be deterministic too
    start = time.perf_counter()
    tm.write_triplet(tmp_path / "a", spec)
    elapsed = time.perf_counter() - start
    tm.write_triplet(tmp_path / "b", spec)
    first, second = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert first == second and len(first) >= 25
    assert elapsed < 2.0
    # Writing again into the same folder replaces it cleanly.
    tm.write_triplet(tmp_path / "b", spec)
    assert file_hashes(tmp_path / "b") == first
    # Another seed changes the weights but not the tokenizers.
    tm.write_triplet(tmp_path / "c", tm.TripletSpec(arch="qwen2", extra_cp_tokens=5, seed=1))
    other = file_hashes(tmp_path / "c")
    assert other.keys() == first.keys()
    for name, digest in other.items():
        assert (digest == first[name]) == (not name.endswith(".safetensors")), name


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_chat_template_in_config(triplets, tmp_path, arch):
    folders = tm.write_triplet(tmp_path, tm.TripletSpec(arch=arch, chat_template_in_config=True))
    chat = folders["chat"]
    assert not (chat / "chat_template.jinja").exists()
    config = json.loads((chat / "tokenizer_config.json").read_text())
    assert config["chat_template"] == (triplets[arch]["chat"] / "chat_template.jinja").read_text()
    tok = AutoTokenizer.from_pretrained(chat)
    reference = AutoTokenizer.from_pretrained(triplets[arch]["chat"])
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == (
        reference.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    )
    # base does not depend on the template flag, nor on cp's extra tokens.
    assert file_hashes(folders["base"]) == file_hashes(triplets[arch]["base"])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_other_dtypes(tmp_path, dtype):
    folders = tm.write_triplet(tmp_path, tm.TripletSpec(arch="mistral", dtype=dtype, max_shard_size="1GB"))
    for folder in folders.values():
        assert json.loads((folder / "config.json").read_text())["dtype"] == dtype
        assert (folder / "model.safetensors").exists()  # one shard when the limit is large
        assert all(t.dtype == getattr(torch, dtype) for t in tensors(folder).values())
        assert AutoModelForCausalLM.from_pretrained(folder).dtype == getattr(torch, dtype)


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError):
        tm.TripletSpec(arch="t5")  # not a decoder family tinymodels writes (gpt2 is one now)
    with pytest.raises(ValueError):
        tm.TripletSpec(dtype="int8")
    with pytest.raises(ValueError):
        tm.TripletSpec(num_heads=3)


def test_seed_hub_uploads_loadable_models_and_reseeds_cleanly(tmp_path, api):
    from huggingface_hub import snapshot_download

    from tests.conftest import WRITE_TOKEN

    folders = tm.write_triplet(tmp_path / "m", tm.TripletSpec(arch="qwen2"))
    repos = tm.seed_hub(api, folders, "alice", "seeded", private=True)
    assert repos == {role: f"alice/seeded-{role}" for role in tm.ROLES}
    assert api.model_info(repos["chat"]).private is True
    local = snapshot_download(repos["chat"], token=WRITE_TOKEN.secret)
    assert AutoTokenizer.from_pretrained(local).chat_template
    # A re-seed with fewer shards leaves no stale shard behind.
    small = tm.write_triplet(tmp_path / "m2", tm.TripletSpec(arch="qwen2", max_shard_size="1GB"))
    tm.seed_hub(api, small, "alice", "seeded")
    files = api.list_repo_files(repos["cp"])
    assert "model.safetensors" in files and not any(f.startswith("model-0") for f in files)
