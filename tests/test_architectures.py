"""Tensor roles on architectures that do not name their tensors as Llama does (phi, GPT-J, GPT-NeoX, GPT-2,
Falcon): tiny triplets from transformers' own configs with an extended vocabulary, merged, loaded back with
transformers and compared bit for bit with a plain-torch reference; plan, provenance and card name the
embedding and the output head as the model does, and say tied only of a tied model."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatvector.card.card import render_card
from chatvector.cli import main
from chatvector.testing.tinymodels import OTHER_ARCHS, TripletSpec, write_triplet

EXTRA = 20  # tokens only cp has
END_OF_TURN = "<|im_end|>"  # the OTHER_ARCHS' chat turns end with it: its rows come from the chat model
LOADED_AS = {"embed_out.weight": "lm_head.weight"}  # transformers 5 loads GPT-NeoX's embed_out as lm_head


@dataclass(frozen=True)
class Case:
    vocab: tuple[str, ...]  # every tensor whose first axis is the vocabulary, written out here, not derived
    tied_to: str | None  # the embedding module the head reads, for a tied model
    zero: str  # the recipe's module rule at λ 0
    vocab_lines: tuple[str, ...]  # what the card's vocabulary section says


SHARED = "cp and the chat model share {shared} token rows; "
CASES = {
    # lm_head.bias has the vocabulary as its axis too (resize_token_embeddings resizes it)
    "phi": Case(("model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"), None, "final_layernorm",
                (SHARED + "the vector is added to those (λ = 0.7).",)),
    "gptj": Case(("transformer.wte.weight", "lm_head.weight", "lm_head.bias"), None, r"\bwte\b",
                 (SHARED + "the vector is added to those in `lm_head` (λ = 0.7).",
                  "`wte` takes λ = 0 (set by module rule 0): the vector is not added to its rows")),
    # untied: embed_in and embed_out are two tensors, each with its own λ
    "gpt_neox": Case(("gpt_neox.embed_in.weight", "embed_out.weight"), None, "embed_out",
                     (SHARED + "the vector is added to those in `embed_in` (λ = 0.7).",
                      "`embed_out` takes λ = 0 (set by module rule 0): the vector is not added to its rows")),
    # tied, and a module rule keeps the shared rows at λ 0
    "gpt2": Case(("transformer.wte.weight",), "wte", r"\bwte\b",
                 ("`wte` takes λ = 0 (set by module rule 0): the vector is not added to its rows",
                  "The output head is tied to `wte` (`tie_word_embeddings`)")),
    "falcon": Case(("transformer.word_embeddings.weight",), "word_embeddings", "ln_f",
                   (SHARED + "the vector is added to those (λ = 0.7).",
                    "The output head is tied to `word_embeddings` (`tie_word_embeddings`)")),
}


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> Callable[[str], dict]:
    """arch -> its triplet, the plan's text and the merged output folder: one merge per architecture, made when
    a test first asks (an architecture that fails fails its own tests only)."""
    root = tmp_path_factory.mktemp("architectures")
    return functools.cache(lambda arch: _merge(root / arch, arch))


def _merge(root: Path, arch: str) -> dict:
    folders = write_triplet(root / "m", TripletSpec(arch=arch, extra_cp_tokens=EXTRA))
    recipe = root / "r.yaml"
    recipe.write_text(f"""
base: {{path: m/base}}
chat: {{path: m/chat}}
cp: {{path: m/cp}}
coefficients:
  default: 0.7
  modules: [{{match: '{CASES[arch].zero}', value: 0.0}}]
special_tokens: ["{END_OF_TURN}"]
output: {{dtype: bfloat16}}
""")
    plan = _run(["plan", str(recipe)])
    _run(["merge", str(recipe), "--out", str(root / "out"), "--device", "cpu"])
    return {"folders": folders, "recipe": recipe, "plan": plan, "out": root / "out"}


def _run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


def _state(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _reference(arch: str, folders: dict[str, Path]) -> dict[str, torch.Tensor]:
    """cp + λ(chat − base) in fp32, one rounding to bf16: the shared rows of each vocabulary tensor get the
    delta, the rows only cp has keep cp's values, the end-of-turn row is the chat model's."""
    case = CASES[arch]
    base, chat, cp = (_state(folders[role]) for role in ("base", "chat", "cp"))
    tok = {role: AutoTokenizer.from_pretrained(folders[role]) for role in ("chat", "cp")}
    cp_row, chat_row = (tok[role].convert_tokens_to_ids(END_OF_TURN) for role in ("cp", "chat"))
    out = {}
    for name, value in cp.items():
        lam = 0.0 if re.search(case.zero, name) else 0.7
        acc = value.float()
        rows = base[name].shape[0]
        delta = chat[name].float() - base[name].float()
        if name in case.vocab:
            assert acc.shape[0] == rows + EXTRA, name
            acc[:rows] += lam * delta
            acc[cp_row] = chat[name][chat_row].float()
        else:
            acc += lam * delta
        out[name] = acc.to(torch.bfloat16)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int16)


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_merge_loads_with_transformers_and_matches_the_reference_bit_for_bit(merged, arch):
    run = merged(arch)
    expected = _reference(arch, run["folders"])
    model = AutoModelForCausalLM.from_pretrained(run["out"], dtype="auto")
    params = dict(model.named_parameters())  # a tied head is the embedding itself, listed once
    expected = {name if name in params else LOADED_AS[name]: tensor for name, tensor in expected.items()}
    assert params.keys() == expected.keys()
    for name, tensor in expected.items():
        assert params[name].dtype == torch.bfloat16, name
        assert torch.equal(_bits(params[name]), _bits(tensor)), name
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert (head.data_ptr() == embedding.data_ptr()) == (CASES[arch].tied_to is not None)
    assert head.shape[0] == len(AutoTokenizer.from_pretrained(run["out"]))


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_plan_names_the_models_own_tensors_and_ties_only_a_tied_model(merged, arch):
    case, text = CASES[arch], merged(arch)["plan"]
    assert "tensors do not match" not in text
    embedding = case.vocab[0]
    if case.tied_to:
        assert f"cp ties its output head to {case.tied_to} ({embedding}); the output stays tied" in text
    else:
        assert "ties" not in text
    modules = " and ".join(dict.fromkeys(name.split(".")[-2] for name in case.vocab))
    assert f"their {modules} rows keep cp's values" in text


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_provenance_and_card_say_what_the_merge_did_to_the_vocabulary(merged, arch):
    case, run = CASES[arch], merged(arch)
    provenance = json.loads((run["out"] / "chatvector.json").read_text())
    assert provenance["tied_embeddings"] is (case.tied_to is not None)
    roles = provenance["tensor_roles"]
    assert roles["embedding"] == case.vocab[0]
    assert roles["output_head"] == (None if case.tied_to else case.vocab[1])
    card = render_card(provenance, run["recipe"].read_text())
    vocabulary = " ".join(card.split("## Vocabulary")[1].split("## Usage")[0].split())
    shared = provenance["vocabulary"]["shared_tokens"]
    for line in case.vocab_lines:
        assert line.format(shared=shared) in vocabulary, (line, vocabulary)
    assert ("tied" in vocabulary) == (case.tied_to is not None)
    assert "embed_tokens" not in vocabulary or arch == "phi"
    assert f"The {EXTRA} rows only cp has (its extended vocabulary) keep cp's values." in vocabulary
