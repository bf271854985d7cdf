"""`chatvector merge` end to end on tiny models, checked bit for bit against a plain-torch reference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatvector.cli import main
from chatvector.recipe.coefficients import layer_index
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import WRITE_TOKEN, weight_downloads

ROOT = Path(__file__).resolve().parents[1]


def state_dict(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def token_ids(folder: Path) -> dict[str, int]:
    tok = AutoTokenizer.from_pretrained(folder)
    return {t: i for i, t in enumerate(tok.convert_ids_to_tokens(list(range(len(tok)))))}


def reference(cp: Path, vectors: list[tuple[Path, Path, float]], lam, dtype: torch.dtype,
              special: list[str] = ()) -> dict[str, torch.Tensor]:
    """out = cast(cp + Σ w·λ(t)·(chat − base)) on full fp32 tensors; rows only cp has keep cp's values;
    special-token rows are the first chat model's rows."""
    cp_sd = state_dict(cp)
    pairs = [(state_dict(b), state_dict(c), w) for b, c, w in vectors]
    cp_ids, chat_ids = token_ids(cp), token_ids(vectors[0][1])
    out = {}
    for name, value in cp_sd.items():
        acc = value.float()
        for base, chat, weight in pairs:
            coefficient = weight * lam(name)
            if coefficient == 0:
                continue
            rows = min(acc.shape[0], base[name].shape[0], chat[name].shape[0])
            if "embed_tokens" in name or "lm_head" in name:
                acc[:rows] = acc[:rows] + coefficient * (chat[name][:rows].float() - base[name][:rows].float())
            else:
                acc = acc + coefficient * (chat[name].float() - base[name].float())
        if "embed_tokens" in name or "lm_head" in name:
            for token in special:
                acc[cp_ids[token]] = pairs[0][1][name][chat_ids[token]].float()
        out[name] = acc.to(dtype)
    return out


def assert_bit_exact(out_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    got = state_dict(out_dir)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name].view(torch.int16 if tensor.element_size() == 2 else torch.int32),
                           tensor.view(torch.int16 if tensor.element_size() == 2 else torch.int32)), name


def write_recipe(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def merge(recipe: Path, out: Path) -> None:
    assert main(["merge", str(recipe), "--out", str(out), "--device", "cpu"]) == 0


def generate_with_chat_template(folder: Path) -> str:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tok.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or tok.eos_token_id in out[0].tolist()
    return tok.decode(out[0])


def test_llama_layers_modules_extended_vocab_special_tokens_bf16(tmp_path):
    m = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
    recipe = write_recipe(tmp_path / "r.yaml", """
base: {path: m/base}
chat: {path: m/chat}
cp: {path: m/cp}
coefficients:
  default: 0.7
  layers: {"0-1": 0.3, "3": 1.25}
  modules:
    - {match: "norm", value: 0.0}
    - {match: "lm_head", value: 1.0}
special_tokens: ["<|eot_id|>", "<|start_header_id|>"]
output: {dtype: bfloat16, shard_size: 100KB}
""")
    merge(recipe, tmp_path / "out")

    def lam(name: str) -> float:
        if "norm" in name:
            return 0.0
        if "lm_head" in name:
            return 1.0
        layer = layer_index(name)
        return {0: 0.3, 1: 0.3, 3: 1.25}.get(layer, 0.7)

    expected = reference(m["cp"], [(m["base"], m["chat"], 1.0)], lam, torch.bfloat16,
                         ["<|eot_id|>", "<|start_header_id|>"])
    assert_bit_exact(tmp_path / "out", expected)
    # rows only cp has are cp's own values, untouched
    cp = state_dict(m["cp"])
    assert torch.equal(state_dict(tmp_path / "out")["model.embed_tokens.weight"][405:], cp["model.embed_tokens.weight"][405:])
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    text = generate_with_chat_template(tmp_path / "out")
    assert "<|start_header_id|>user<|end_header_id|>" in text


def test_output_config_tokenizer_and_generation_config(tmp_path):
    m = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    merge(recipe, tmp_path / "out")
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 425 and config["dtype"] == "bfloat16"
    assert (out / "chat_template.jinja").read_text() == (m["chat"] / "chat_template.jinja").read_text()
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 425 and tok.eos_token == "<|eot_id|>"
    generation = json.loads((out / "generation_config.json").read_text())
    chat_generation = json.loads((m["chat"] / "generation_config.json").read_text())
    assert generation["eos_token_id"] == chat_generation["eos_token_id"] == config["eos_token_id"]
    provenance = json.loads((out / "chatvector.json").read_text())
    assert all(check["ok"] for check in provenance["verification"]["checks"])
    for name, digest in provenance["output"]["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert provenance["inputs"]["cp"]["files"]["config.json"] == hashlib.sha256(
        (m["cp"] / "config.json").read_bytes()).hexdigest()


def test_qwen2_tied_biases_gradient_fp16(tmp_path):
    m = write_triplet(tmp_path / "m", TripletSpec(arch="qwen2", extra_cp_tokens=10))
    recipe = write_recipe(tmp_path / "r.yaml", """
base: {path: m/base}
chat: {path: m/chat}
cp: {path: m/cp}
coefficients:
  default: 0.5
  gradient: [0.2, 1.0]
special_tokens: ["<|im_end|>"]
output: {dtype: float16}
""")
    merge(recipe, tmp_path / "out")
    gradient = {0: 0.2, 1: 0.2 + 0.8 / 3, 2: 0.2 + 1.6 / 3, 3: 1.0}

    def lam(name: str) -> float:
        layer = layer_index(name)
        return 0.5 if layer is None else gradient[layer]

    expected = reference(m["cp"], [(m["base"], m["chat"], 1.0)], lam, torch.float16, ["<|im_end|>"])
    assert "lm_head.weight" not in expected and any(".bias" in n for n in expected)
    assert_bit_exact(tmp_path / "out", expected)
    assert (tmp_path / "out" / "model.safetensors").is_file()  # fits one shard
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    generate_with_chat_template(tmp_path / "out")


def test_mistral_several_vectors_in_order(tmp_path):
    m1 = write_triplet(tmp_path / "a", TripletSpec(arch="mistral", seed=1, dtype="float32"))
    m2 = write_triplet(tmp_path / "b", TripletSpec(arch="mistral", seed=2, dtype="float32"))
    recipe = write_recipe(tmp_path / "r.yaml", """
vectors:
  - {base: {path: a/base}, chat: {path: a/chat}, weight: 0.6}
  - {base: {path: b/base}, chat: {path: b/chat}, weight: 0.3}
cp: {path: a/cp}
coefficients: {default: 0.9}
output: {dtype: bfloat16}
""")
    merge(recipe, tmp_path / "out")
    expected = reference(m1["cp"], [(m1["base"], m1["chat"], 0.6), (m2["base"], m2["chat"], 0.3)],
                         lambda name: 0.9, torch.bfloat16)
    assert_bit_exact(tmp_path / "out", expected)


def test_merge_is_deterministic_and_replaces_previous_output(tmp_path):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=5))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                               "output: {shard_size: 80KB}\n")

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    (tmp_path / ".one.partial-killed").mkdir()  # what a killed run leaves behind
    merge(recipe, tmp_path / "one")
    merge(recipe, tmp_path / "two")
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    recipe.write_text(recipe.read_text().replace("80KB", "10GB"))
    merge(recipe, tmp_path / "one")  # a re-run into the same folder replaces it whole
    assert sorted(p.name for p in (tmp_path / "one").glob("model*")) == ["model.safetensors"]
    assert not list(tmp_path.glob(".one.*"))


def test_merge_refuses_to_overwrite_a_foreign_folder(tmp_path, capsys):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "precious")]) == 2
    assert "is not an earlier chatvector output" in capsys.readouterr().err
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_merge_from_the_hub_downloads_only_planned_files(example_repos, hub, tmp_path, monkeypatch, lfs_transfer):
    """Which files were downloaded, read off the Hub's log: through LFS each is a GET of its path (Xet downloads
    are named by content, and hf_xet serves what its own caches hold without asking)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # nothing cached yet
    mark = len(hub.requests)
    merge(ROOT / "recipes" / "demo.yaml", tmp_path / "out")
    downloads = {r.path.rsplit("/", 1)[-1] for r in weight_downloads(list(hub.requests)[mark:])}
    plan = json.loads((tmp_path / "out" / "chatvector.json").read_text())
    expected = {f for role in ("base", "chat", "cp") for f in plan["inputs"][role]["files"] if f.endswith(".safetensors")}
    assert downloads == expected
    for role in ("base", "chat", "cp"):
        assert len(plan["inputs"][role]["sha"]) == 40
    generate_with_chat_template(tmp_path / "out")


@pytest.mark.gpu
@pytest.mark.parametrize("default", [1.0, 0.7, -0.35])
def test_cuda_merge_matches_cpu(tmp_path, default):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20, dtype="bfloat16"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                               f"coefficients: {{default: {default}}}\n")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert main(["merge", str(recipe), "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 0
    cpu, gpu = state_dict(tmp_path / "cpu"), state_dict(tmp_path / "gpu")
    for name in cpu:  # the same bits at any λ
        assert torch.equal(cpu[name].view(torch.int16), gpu[name].view(torch.int16)), name
    weights = sorted(p.name for p in (tmp_path / "cpu").glob("*.safetensors"))
    for name in weights:
        assert (tmp_path / "cpu" / name).read_bytes() == (tmp_path / "gpu" / name).read_bytes(), name
    provenance = json.loads((tmp_path / "gpu" / "chatvector.json").read_text())
    assert provenance["merge"]["device"].startswith("cuda:") and "(" in provenance["merge"]["device"]


def test_chat_template_kept_in_tokenizer_config_when_the_chat_model_has_it_there(tmp_path):
    m = write_triplet(tmp_path / "m", TripletSpec(arch="mistral", chat_template_in_config=True))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    merge(recipe, tmp_path / "out")
    chat_config = json.loads((m["chat"] / "tokenizer_config.json").read_text())
    out_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert out_config["chat_template"] == chat_config["chat_template"]
    assert not (tmp_path / "out" / "chat_template.jinja").exists()
    assert "[INST]" in generate_with_chat_template(tmp_path / "out")


def test_chat_template_from_a_file(tmp_path):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    template = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{{ m.content }}<|eot_id|>" \
               "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}"
    (tmp_path / "tpl.jinja").write_text(template)
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                               "output: {chat_template: tpl.jinja}\n")
    merge(recipe, tmp_path / "out")
    assert (tmp_path / "out" / "chat_template.jinja").read_text() == template


def test_chat_template_from_cp_needs_cp_to_have_one(tmp_path, capsys):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                               "output: {chat_template: cp}\n")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "output.chat_template: the cp model" in err and "has no chat template" in err
    assert not (tmp_path / "out").exists()


def test_chat_with_more_rows_than_cp(tmp_path):
    """A chat model whose vocabulary is longer than cp's: only the shared rows get the delta."""
    small = write_triplet(tmp_path / "s", TripletSpec(arch="llama"))
    big = write_triplet(tmp_path / "b", TripletSpec(arch="llama", extra_cp_tokens=20))
    (tmp_path / "tpl.jinja").write_text((small["chat"] / "chat_template.jinja").read_text())
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: s/base}\nchat: {path: b/cp}\ncp: {path: s/cp}\n"
                                               "output: {chat_template: tpl.jinja}\n")
    merge(recipe, tmp_path / "out")
    expected = reference(small["cp"], [(small["base"], big["cp"], 1.0)], lambda name: 1.0, torch.bfloat16)
    assert_bit_exact(tmp_path / "out", expected)


def test_out_folder_problems_are_one_line_before_any_work(tmp_path, capsys):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    assert main(["merge", str(recipe), "--out", "/dev/null/x"]) == 2
    assert capsys.readouterr().err.startswith("error: --out /dev/null/x: cannot create its folder: ")
    merge(recipe, tmp_path / "out")
    (tmp_path / "out" / "NOTES.md").write_text("mine")
    capsys.readouterr()
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "holds files chatvector did not write (NOTES.md)" in capsys.readouterr().err
    assert (tmp_path / "out" / "NOTES.md").read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_recipe_asking_for_cuda_without_cuda_names_the_field(tmp_path, capsys):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                                               "merge: {device: cuda}\n")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {recipe}:4: merge.device: cuda was asked for but CUDA is "
                                               "not available")


def test_merge_json_output_has_every_stage(tmp_path, capsys):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["stages"]) == ["import", "preflight", "plan", "fetch", "merge", "assemble", "verify",
                                   "provenance"]
    assert all(v >= 0 for v in doc["stages"].values()) and doc["out_dir"] == str(tmp_path / "out")
    names = [c["name"] for c in doc["checks"]]
    assert "sampled tensors match a reference" in names and all(c["ok"] for c in doc["checks"])


def test_a_wrong_value_the_engine_writes_is_caught_by_the_spot_check(tmp_path, capsys, monkeypatch):
    """Verification does not trust the engine: sampled tensors are recomputed from the inputs."""
    from chatvector.merge import compute

    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = write_recipe(tmp_path / "r.yaml", "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    real = compute.combine_into

    def off_by_a_bit(out, *args):
        real(out, *args)
        out[:1] += 1.0  # finite, plausible, wrong

    monkeypatch.setattr(compute, "combine_into", off_by_a_bit)
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: verification failed: sampled tensors match a reference: ") and "differ" in err
    assert not (tmp_path / "out").exists()


def test_a_cached_input_whose_bytes_changed_is_refused(example_repos, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    merge(ROOT / "recipes" / "demo.yaml", tmp_path / "first")
    blob = max((tmp_path / "cache").rglob("blobs/*"), key=lambda p: p.stat().st_size)  # a weight shard
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: what a bad disk or a tampered cache looks like
    blob.write_bytes(bytes(data))
    assert main(["merge", str(ROOT / "recipes" / "demo.yaml"), "--out", str(tmp_path / "second")]) == 2
    err = capsys.readouterr().err
    assert "input files do not match the Hub's hashes (a corrupt download or cache)" in err
    assert blob.name[:12] in err and not (tmp_path / "second").exists()
