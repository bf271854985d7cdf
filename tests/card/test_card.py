"""The model card (chatvector.card.card) and the per-layer λ chart (chatvector.card.chart), from sample provenance."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest
import yaml
from huggingface_hub import ModelCard

from chatvector.card.card import render_card, validate_card_text
from chatvector.card.chart import coefficient_chart_svg
from chatvector.errors import PipelineError, RecipeError, VerificationError
from chatvector.hub.cardrules import card_errors

SHA = {"base": "1" * 40, "chat": "2" * 40, "cp": "3" * 40, "chat2": "4" * 40}

RECIPE_TEXT = """\
# Tiny demo: a tiny Llama CP + the tiny chat vector.
name: Tiny-Llama-Chat
base: {repo_id: demo/tiny-base}
chat: {repo_id: demo/tiny-chat, revision: v1.0}
cp: {repo_id: demo/tiny-cp}
coefficients:
  default: 1.0
  layers: {"0-1": 0.5, "3": 0.8}
  modules: [{match: "norm", value: 0.0}]
special_tokens: ["<|eot_id|>"]
target: {repo_id: demo/tiny-llama-chat}
card: {license: mit, language: [ko, en], tags: [korean]}
"""


def _input(repo_id, sha, revision="main", license=None, path=None):
    return {
        "repo_id": repo_id,
        "revision": revision if repo_id else None,
        "sha": sha,
        "path": path,
        "license": license,
        "files": {"model.safetensors": "ab" * 32, "config.json": "cd" * 32},
    }


def sample_provenance() -> dict:
    """One vector, every input on the Hub: the shape pipeline's publish stage writes."""
    return {
        "tool": {"name": "chatvector", "version": "0.1.0"},
        "hub": {"endpoint": "http://127.0.0.1:8765"},
        "recipe": {"path": "recipes/tiny.yaml", "sha256": "e3" * 32, "name": "Tiny-Llama-Chat", "text": RECIPE_TEXT},
        "target": {"repo_id": "demo/tiny-llama-chat", "private": False},
        # the card metadata as the plan decides it (tests/test_plan.py checks the deciding)
        "card": {"license": "mit", "license_source": "recipe", "language": ["ko", "en"],
                 "tags": ["chat-vector", "merge", "korean"],
                 "base_models": ["demo/tiny-cp", "demo/tiny-chat", "demo/tiny-base"], "extra": {}, "warnings": []},
        "inputs": {
            "base": _input("demo/tiny-base", SHA["base"]),
            "chat": _input("demo/tiny-chat", SHA["chat"], revision="v1.0", license="llama3"),
            "cp": _input("demo/tiny-cp", SHA["cp"], license="apache-2.0"),
        },
        "vectors": [{"base": "base", "chat": "chat", "weight": 1.0}],
        "coefficients": {"default": 1.0, "layers": [0.5, 0.5, 1.0, 0.8], "modules": [{"match": "norm", "value": 0.0}]},
        "special_tokens": [{"token": "<|eot_id|>", "cp_row": 400, "chat_row": 400}],
        "vocabulary": {"cp_extra_tokens": 285, "shared_tokens": 405},
        "output": {"dtype": "bfloat16", "files": {"model.safetensors": "ef" * 32}, "total_bytes": 123_456_789,
                   "chat_template": "chat"},
        "verification": {
            "checks": [
                {"name": "all tensors finite", "ok": True, "detail": "24 tensors"},
                {"name": "chat template renders", "ok": True, "detail": "eos <|eot_id|> | pad none\n2 lines"},
            ],
            "sample": "<|user|>\nHello```\n<|assistant|>\n",
        },
    }


def two_vector_provenance() -> dict:
    """Two vectors sharing one base, roles "vectors[i].base/chat"; a uniform schedule."""
    p = sample_provenance()
    p["inputs"] = {
        "vectors[0].base": _input("demo/tiny-base", SHA["base"]),
        "vectors[0].chat": _input("demo/tiny-chat", SHA["chat"]),
        "vectors[1].base": _input("demo/tiny-base", SHA["base"]),
        "vectors[1].chat": _input("demo/tiny-math", SHA["chat2"]),
        "cp": _input("demo/tiny-cp", SHA["cp"], license="apache-2.0"),
    }
    p["vectors"] = [
        {"base": "vectors[0].base", "chat": "vectors[0].chat", "weight": 0.7},
        {"base": "vectors[1].base", "chat": "vectors[1].chat", "weight": 0.3},
    ]
    p["coefficients"] = {"default": 0.8, "layers": None, "modules": []}
    p["card"]["base_models"] = ["demo/tiny-cp", "demo/tiny-chat", "demo/tiny-base", "demo/tiny-math"]
    return p


def metadata(text: str) -> dict:
    return ModelCard(text).data.to_dict()


# --------------------------------------------------------------------------------------------------
# The metadata block


def test_metadata_lists_sources_relation_license_and_tags():
    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert text.startswith("---\n")
    assert metadata(text) == {
        "base_model": ["demo/tiny-cp", "demo/tiny-chat", "demo/tiny-base"],
        "base_model_relation": "merge",
        "license": "mit",
        "language": ["ko", "en"],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["chat-vector", "merge", "korean"],
    }


def test_metadata_passes_the_hubs_validate_rules():
    for p in (sample_provenance(), two_vector_provenance()):
        text = render_card(p, RECIPE_TEXT)
        assert card_errors(text) == []
        assert validate_card_text(text) == metadata(text)


def test_several_vectors_list_every_repo_once():
    text = render_card(two_vector_provenance(), RECIPE_TEXT)
    assert metadata(text)["base_model"] == ["demo/tiny-cp", "demo/tiny-chat", "demo/tiny-base", "demo/tiny-math"]


def test_card_says_where_the_license_came_from():
    p = sample_provenance()
    p["card"].update(license="apache-2.0", license_source="cp")
    text = render_card(p, RECIPE_TEXT)
    assert metadata(text)["license"] == "apache-2.0"
    assert "`apache-2.0`, taken from cp's model card" in text


def test_license_is_omitted_when_neither_recipe_nor_cp_has_one():
    p = sample_provenance()
    p["card"].update(license=None, license_source=None)
    text = render_card(p, RECIPE_TEXT)
    assert "license" not in metadata(text)
    assert "No license was given" in text


def test_other_license_carries_its_name_and_link():
    p = sample_provenance()
    p["card"].update(license="other", license_name="my-license", license_link="LICENSE")
    data = metadata(render_card(p, RECIPE_TEXT))
    assert (data["license"], data["license_name"], data["license_link"]) == ("other", "my-license", "LICENSE")


def test_license_warnings_of_the_plan_appear_in_the_card():
    p = sample_provenance()
    p["card"]["warnings"] = ["the output's license mit differs from its sources' licenses (chat: llama3)"]
    assert "> **Note:** the output's license mit differs from its sources' licenses (chat: llama3)." in \
        render_card(p, RECIPE_TEXT)


def test_empty_language_is_omitted():
    p = sample_provenance()
    p["card"].update(language=[])
    assert "language" not in metadata(render_card(p, RECIPE_TEXT))


def test_yaml_lookalike_language_codes_stay_strings():
    p = sample_provenance()
    p["card"]["language"] = ["no", "en"]  # Norwegian: a YAML 1.1 boolean when unquoted
    assert metadata(render_card(p, RECIPE_TEXT))["language"] == ["no", "en"]


def test_local_path_sources_are_left_out_of_base_model():
    p = sample_provenance()
    p["inputs"]["cp"] = _input(None, None, path="/home/me/checkpoints/my-cp", license="apache-2.0")
    p["card"]["base_models"] = ["demo/tiny-chat", "demo/tiny-base"]  # the plan leaves local folders out
    text = render_card(p, RECIPE_TEXT)
    assert metadata(text)["base_model"] == ["demo/tiny-chat", "demo/tiny-base"]
    assert "| cp | local folder `my-cp` | – | – |" in text
    assert "/home/me" not in text
    assert f"- cp (`my-cp`):\n  - `config.json` `{'cd' * 32}`\n  - `model.safetensors` `{'ab' * 32}`\n" in text
    assert "Each link opens the exact commit that was merged." in text  # chat and base are on the Hub


def test_all_local_sources_drop_base_model_and_relation():
    p = sample_provenance()
    for role in ("base", "chat", "cp"):
        p["inputs"][role] = _input(None, None, path=f"ckpt/{role}")
    p["card"]["base_models"] = []
    text = render_card(p, RECIPE_TEXT)
    data = metadata(text)
    assert "base_model" not in data and "base_model_relation" not in data
    assert "Each link opens" not in text
    assert "| base | local folder `base` | – | – |" in text


def test_validate_card_text_rejects_a_card_without_metadata_or_with_bad_metadata():
    with pytest.raises(VerificationError, match="must start with a '---' metadata block"):
        validate_card_text("# no metadata\n")
    with pytest.raises(VerificationError, match='"base_model_relation" needs "base_model"'):
        validate_card_text("---\nbase_model_relation: merge\n---\n\n# x\n")
    with pytest.raises(VerificationError, match="does not round-trip"):
        validate_card_text("---\nlicense: mit\n---\n\n# x\n", expected={"license": "apache-2.0"})


# --------------------------------------------------------------------------------------------------
# The body


def test_body_has_title_formula_and_pinned_source_links():
    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert "\n# Tiny-Llama-Chat\n" in text
    assert "out = cp + λ · (chat − base),  λ from 0.0 to 1.0 by tensor" in text
    assert "λ depends on the tensor: the schedule below sets it per layer or module, from 0.0 to 1.0" in text
    url = f"http://127.0.0.1:8765/demo/tiny-chat/tree/{SHA['chat']}"
    assert f"| chat | [demo/tiny-chat]({url}) | `v1.0` | [`{SHA['chat'][:10]}`]({url}) |" in text
    assert f"http://127.0.0.1:8765/demo/tiny-cp/tree/{SHA['cp']}" in text
    assert f"http://127.0.0.1:8765/demo/tiny-base/tree/{SHA['base']}" in text


def test_default_endpoint_is_the_hugging_face_hub():
    p = sample_provenance()
    del p["hub"]
    text = render_card(p, RECIPE_TEXT)
    assert f"https://huggingface.co/demo/tiny-cp/tree/{SHA['cp']}" in text
    assert "HF_ENDPOINT" not in text


def test_several_vectors_show_each_weighted_term():
    text = render_card(two_vector_provenance(), RECIPE_TEXT)
    assert "out = cp + 0.56 · (chat₁ − base₁) + 0.24 · (chat₂ − base₂)" in text
    assert "chat₁ − base₁ has weight 0.7; chat₂ − base₂ has weight 0.3." in text
    assert "| chat₂ | [demo/tiny-math]" in text
    assert "Every layer takes the default." in text
    assert "schedule below does not set otherwise" not in text  # the schedule is uniform
    assert "![per-layer λ]" not in text


def test_negative_weight_subtracts():
    p = sample_provenance()
    p["vectors"][0]["weight"] = -0.5
    assert "out = cp + λ · (chat − base),  λ from -0.5 to 0.0 by tensor" in render_card(p, RECIPE_TEXT)
    p["coefficients"] = {"default": 1.0, "layers": [], "modules": []}
    assert "out = cp − 0.5 · (chat − base)" in render_card(p, RECIPE_TEXT)


def test_schedule_table_compacts_runs_and_shows_module_rules_and_chart():
    p = sample_provenance()
    p["coefficients"]["modules"].append({"match": "embed_tokens|lm_head", "value": 0.0})
    text = render_card(p, RECIPE_TEXT)
    assert "| layers | λ |\n|---|---|\n| 0–1 | 0.5 |\n| 2 | 1.0 |\n| 3 | 0.8 |\n" in text
    assert "| `norm` | 0.0 |" in text
    assert r"| `embed_tokens\|lm_head` | 0.0 |" in text
    assert "![per-layer λ](coefficients.svg)" in text
    assert "![per-layer λ]" not in render_card(p, RECIPE_TEXT, chart_file=None)


def test_code_cells_keep_backslashes_and_backticks_literal():
    p = sample_provenance()
    p["coefficients"]["modules"] = [{"match": r"^model\.norm\.", "value": 0.0}, {"match": "a`b", "value": 0.5}]
    text = render_card(p, RECIPE_TEXT)
    assert r"| `^model\.norm\.` | 0.0 |" in text
    assert "| ``a`b`` | 0.5 |" in text


def test_vocabulary_and_special_tokens_are_explained():
    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert "share 405 token rows" in text
    assert "The 285 rows only cp has (its extended vocabulary) keep cp's values." in text
    assert "| `<\\|eot_id\\|>` | 400 | 400 |" in text
    assert "copied from the chat model" in text
    assert "the chat model's chat template" in text


def test_usage_snippet_loads_the_target_repo():
    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert 'model_id = "demo/tiny-llama-chat"' in text
    for piece in ("AutoTokenizer.from_pretrained", "AutoModelForCausalLM.from_pretrained",
                  "apply_chat_template", "model.generate"):
        assert piece in text
    assert "HF_ENDPOINT=http://127.0.0.1:8765" in text
    assert "## Usage\n\nThis repository lives on" in text
    assert "private" not in text.split("## Usage")[1].split("```python")[0]
    p = sample_provenance()
    p["target"]["private"] = True
    p["hub"]["endpoint"] = "https://huggingface.co/"
    text = render_card(p, RECIPE_TEXT)
    assert "## Usage\n\nThe repository is private: log in first (`hf auth login`)" in text
    assert "token that can read it.\n\n```bash\npip install" in text


def test_verification_table_and_sample_cannot_break_the_markdown():
    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert "| all tensors finite | ✅ pass | 24 tensors |" in text
    assert "| chat template renders | ✅ pass | eos &lt;\\|eot_id\\|&gt; \\| pad none<br>2 lines |" in text
    # The sample holds a ``` run, so it is fenced with four backticks.
    assert "````text\n<|user|>\nHello```\n<|assistant|>\n````" in text


def test_failed_check_and_dry_run_card():
    p = sample_provenance()
    p["verification"]["checks"][0].update(ok=False, detail="2 tensors hold NaN")
    assert "| all tensors finite | ❌ fail | 2 tensors hold NaN |" in render_card(p, RECIPE_TEXT)
    p["verification"] = {"checks": [], "sample": None}  # what a dry run records
    assert "No verification results were recorded" in render_card(p, RECIPE_TEXT)
    del p["verification"]
    assert "No verification results were recorded" in render_card(p, RECIPE_TEXT)


def test_card_without_target_vocabulary_extension_or_special_tokens():
    p = sample_provenance()
    p.update(target=None, special_tokens=[], vocabulary={"cp_extra_tokens": 0, "shared_tokens": 405})
    p["hub"]["endpoint"] = None
    p["output"]["chat_template"] = "/home/me/templates/chatml.jinja"
    text = render_card(p, RECIPE_TEXT)
    assert 'model_id = "path/to/the/merged/folder"' in text
    assert "cp has no rows beyond the shared vocabulary." in text
    assert "| token | cp row | chat row |" not in text
    assert "with the chat template from `chatml.jinja`" in text
    assert "/home/me" not in text
    p["output"]["chat_template"] = "cp"
    assert "The tokenizer and chat template are cp's own." in render_card(p, RECIPE_TEXT)


def test_recipe_is_embedded_pinned_with_the_command_and_tool_version():
    from chatvector.card.pinned_recipe import pinned_recipe

    text = render_card(sample_provenance(), RECIPE_TEXT)
    assert "```yaml\n" + pinned_recipe(sample_provenance(), RECIPE_TEXT) + "```\n" in text
    assert "`chatvector merge recipe.yaml\n--out ./model`" in text
    assert "With chatvector 0.1.0" in text
    assert RECIPE_TEXT.splitlines()[0] not in text  # the recipe's comment line is not carried over


def test_a_recipe_that_is_not_a_mapping_is_shown_as_written():
    recipe = "- just\n- a list\n"
    assert "```yaml\n" + recipe + "```\n" in render_card(sample_provenance(), recipe)


def test_a_recipe_holding_backticks_gets_a_longer_fence():
    recipe = RECIPE_TEXT + 'commit_message: "uses ``` and ````"\n'
    text = render_card(sample_provenance(), recipe)
    block = text.split("## How to reproduce")[1].split("\n\n")[2]
    assert block.startswith("`````yaml\n") and block.rstrip().endswith("`````") and "uses ``` and ````" in block


def test_rendering_is_deterministic():
    assert render_card(sample_provenance(), RECIPE_TEXT) == render_card(sample_provenance(), RECIPE_TEXT)


# --------------------------------------------------------------------------------------------------
# Custom templates


def test_custom_template_sees_the_context_and_extra(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text("# {{ name }} for {{ extra.team }}\n\n{{ formula }}\n")
    p = sample_provenance()
    p["card"]["extra"] = {"team": "NLP"}
    text = render_card(p, RECIPE_TEXT, template)
    assert text.endswith("---\n\n# Tiny-Llama-Chat for NLP\n\n"
                         "out = cp + λ · (chat − base),  λ from 0.0 to 1.0 by tensor\n")
    assert metadata(text)["license"] == "mit"


def test_undefined_variable_in_custom_template_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "templates").mkdir()
    template = tmp_path / "templates" / "x.j2"
    template.write_text("# {{ name }}\n\n" * 5 + "{{ nmae }}\n")
    with pytest.raises(RecipeError, match=r"^templates/x\.j2:11: 'nmae' is undefined \(card\.template\)$"):
        render_card(sample_provenance(), RECIPE_TEXT, template)


def test_error_in_an_included_template_names_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.j2").write_text("# {{ name }}\n{% include 'part.j2' %}\n")
    (tmp_path / "part.j2").write_text("ok\n{{ extra.missing }}\n")
    with pytest.raises(RecipeError, match=r"^part\.j2:2: 'dict object' has no attribute 'missing'"):
        render_card(sample_provenance(), RECIPE_TEXT, tmp_path / "main.j2")


def test_syntax_error_in_custom_template_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.j2").write_text("# {{ name }}\n\n{% if name %}\nno endif\n")
    with pytest.raises(RecipeError, match=r"^bad\.j2:4: Unexpected end of template"):
        render_card(sample_provenance(), RECIPE_TEXT, tmp_path / "bad.j2")


def test_include_of_a_missing_template_names_the_including_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.j2").write_text("# {{ name }}\n\n{% include 'gone.j2' %}\n")
    with pytest.raises(RecipeError, match=r"^main\.j2:3: template 'gone\.j2' not found next to main\.j2"):
        render_card(sample_provenance(), RECIPE_TEXT, tmp_path / "main.j2")


def test_sandbox_refuses_unsafe_attribute_access(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.j2").write_text("{{ name.__class__.__mro__ }}\n")
    with pytest.raises(RecipeError, match=r"^evil\.j2:1: .*unsafe"):
        render_card(sample_provenance(), RECIPE_TEXT, tmp_path / "evil.j2")


def test_missing_provenance_key_in_the_projects_template_is_not_blamed_on_the_recipe(monkeypatch):
    import chatvector.card.card

    real = chatvector.card.card.card_context

    def broken(*args):
        context = real(*args)
        del context["formula"]
        return context

    monkeypatch.setattr(chatvector.card.card, "card_context", broken)
    expected = r"model_card\.md\.j2:\d+: the project's card template failed: 'formula' is undefined"
    with pytest.raises(PipelineError, match=expected) as info:
        render_card(sample_provenance(), RECIPE_TEXT)
    assert not isinstance(info.value, RecipeError)


# --------------------------------------------------------------------------------------------------
# The chart


def test_chart_is_valid_svg_with_one_bar_per_layer():
    svg = coefficient_chart_svg([0.5, 0.5, 1.0, 0.8], "Tiny-Llama-Chat: λ per layer")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    bars = [r for r in root.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert [b.find(f"{ns}title").text for b in bars] == [
        "layer 0: λ = 0.5", "layer 1: λ = 0.5", "layer 2: λ = 1.0", "layer 3: λ = 0.8"]
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert {"layer", "λ", "0.0", "0.2", "1.0", "0", "3"} <= set(texts)
    heights = [float(b.get("height")) for b in bars]
    assert heights[0] == heights[1] < heights[3] < heights[2]


def test_chart_is_deterministic_byte_for_byte():
    values = [0.1 * i for i in range(32)]
    assert coefficient_chart_svg(values, "t") == coefficient_chart_svg(list(values), "t")
    assert coefficient_chart_svg(values, "t").encode() == coefficient_chart_svg(values, "t").encode()


def test_chart_escapes_the_title_and_handles_negative_zero_and_many_layers():
    svg = coefficient_chart_svg([-0.5, 0.0, 1.0] + [0.8] * 77, 'a <b> & "c"')
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}title").text == 'a <b> & "c"'
    labels = [t.text for t in root.iter(f"{ns}text") if t.text.isdigit()]
    assert labels[0] == "0" and labels[-1] == "79" and len(labels) <= 17
    ET.fromstring(coefficient_chart_svg([0.0, 0.0], "all zero"))


def test_chart_rejects_empty_and_non_finite_values():
    with pytest.raises(ValueError, match="at least one layer value"):
        coefficient_chart_svg([], "t")
    with pytest.raises(ValueError, match="finite"):
        coefficient_chart_svg([0.5, float("nan")], "t")


def test_sample_provenance_is_not_mutated():
    p = sample_provenance()
    before = copy.deepcopy(p)
    render_card(p, RECIPE_TEXT)
    assert p == before
    assert yaml.safe_load(RECIPE_TEXT)["name"] == "Tiny-Llama-Chat"


def _variants():
    yield sample_provenance()
    yield two_vector_provenance()
    p = sample_provenance()
    p.update(target=None, special_tokens=[], vocabulary=None, verification=None)
    p["card"].update(license=None, language=[], tags=[])
    p["inputs"]["cp"] = _input(None, None, path="ckpt/cp")
    p["output"]["chat_template"] = "cp"
    yield p


@pytest.mark.parametrize("provenance", list(_variants()), ids=["one-vector", "two-vectors", "sparse"])
def test_cards_have_no_runs_of_blank_lines_and_balanced_fences(provenance):
    text = render_card(provenance, RECIPE_TEXT)
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    body = text.split("\n---\n", 1)[1]
    fences = [line for line in body.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0
