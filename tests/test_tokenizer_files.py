"""Reading tokenizers and rendering chat templates without transformers gives what transformers gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from chatvector.plan import chat_templates
from chatvector.plan.tokenizer_files import _from_files, _from_transformers, read_tokenizer
from chatvector.testing.tinymodels import ARCHS, TripletSpec, write_triplet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("tok")
    return {arch: write_triplet(root / arch, TripletSpec(arch=arch, extra_cp_tokens=20)) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("role", ["base", "chat", "cp"])
def test_token_strings_and_special_tokens_match_transformers(triplets, arch, role):
    folder = triplets[arch][role]
    fast, slow = _from_files(folder), _from_transformers(folder, False)
    assert fast.tokens == slow.tokens and len(fast.tokens) > 300
    assert fast.named == slow.named
    assert set(fast.special_tokens) == set(slow.special_tokens)


def test_special_tokens_a_tokenizer_class_adds_on_load_are_counted(triplets, tmp_path):
    """Qwen2's tokenizer class adds `<|endoftext|>` when tokenizer.json lacks it: so must the fast path."""
    import shutil

    folder = tmp_path / "qwen"
    shutil.copytree(triplets["qwen2"]["base"], folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|endoftext|>"]
    tok["model"]["vocab"].pop("<|endoftext|>", None)
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("added_tokens_decoder", "eos_token", "pad_token", "unk_token"):
        config.pop(key, None)
    config["tokenizer_class"] = "Qwen2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    fast, slow = _from_files(folder), _from_transformers(folder, False)
    assert fast.tokens == slow.tokens and fast.tokens[-1] == "<|endoftext|>"
    assert fast.named == slow.named == {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                        "pad_token": "<|endoftext|>"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("system", [True, False])
def test_chat_templates_render_as_transformers_renders_them(triplets, arch, system):
    folder = triplets[arch]["chat"]
    tok = AutoTokenizer.from_pretrained(folder)
    messages = ([{"role": "system", "content": "Be brief."}] if system else []) + [
        {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "How are you?"}]
    template = tok.chat_template
    named = read_tokenizer(folder).named
    try:
        want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # the template refuses this conversation: so must ours
        with pytest.raises(type(err)):
            chat_templates.render(template, messages, named)
        return
    assert chat_templates.render(template, messages, named) == want


def test_planning_and_help_import_neither_torch_nor_transformers(triplets, tmp_path):
    folders = triplets["llama"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {{path: {folders['base']}}}\nchat: {{path: {folders['chat']}}}\n"
                      f"cp: {{path: {folders['cp']}}}\ntarget: {{repo_id: alice/x}}\n")
    code = ("import sys\nfrom chatvector.cli import build_parser, main\nbuild_parser()\n"
            "assert not {'torch', 'transformers', 'huggingface_hub'} & set(sys.modules), 'help'\n"
            f"assert main(['plan', {str(recipe)!r}]) == 0\n"
            "heavy = {'torch', 'transformers'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
