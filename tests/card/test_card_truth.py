"""The card says what the recipe and the engine did: one test per statement, over a matrix of recipes."""

from __future__ import annotations

import pytest

from chatvector.card.card import render_card
from tests.card.test_card import RECIPE_TEXT, sample_provenance, two_vector_provenance

GRADIENT_RECIPE = RECIPE_TEXT.replace('  layers: {"0-1": 0.5, "3": 0.8}\n', "  gradient: [0.2, 1.0]\n")


def uniform() -> dict:
    p = sample_provenance()
    p["coefficients"] = {"default": 0.8, "layers": [], "modules": []}
    return p


def body(p: dict, recipe: str = RECIPE_TEXT) -> str:
    return render_card(p, recipe).split("\n---\n", 1)[1]


def test_default_only_recipe_shows_one_number():
    text = body(uniform())
    assert "out = cp + 0.8 · (chat − base)\n" in text
    assert "by tensor" not in text and "λ depends on the tensor" not in text
    assert "Every layer takes the default." in text


def test_layer_map_shows_the_actual_range_in_the_headline():
    p = sample_provenance()
    p["coefficients"] = {"default": 1.0, "layers": [0.5, 0.5, 1.0, 0.8], "modules": []}
    assert "out = cp + λ · (chat − base),  λ from 0.5 to 1.0 by tensor" in body(p)


def test_module_rule_widens_the_range_and_overrides_layers():
    text = body(sample_provenance())  # norm -> 0.0
    assert "λ from 0.0 to 1.0 by tensor" in text
    assert "Module rules override the layer values and the default" in text
    assert "| `norm` | 0.0 |" in text


def test_gradient_anchors_are_listed():
    p = sample_provenance()
    p["coefficients"] = {"default": 1.0, "layers": [0.2, 0.466667, 0.733333, 1.0], "modules": []}
    text = body(p, GRADIENT_RECIPE)
    assert "follow a gradient with anchors 0.2, 1.0, spread evenly from layer 0 to layer 3" in text
    assert "λ from 0.2 to 1.0 by tensor" in text
    assert "gradient" not in body(p)  # a layer map has no anchors


def test_zero_on_embeddings_says_the_vector_is_not_added_to_the_shared_rows():
    p = sample_provenance()
    p["coefficients"]["modules"].insert(0, {"match": "embed_tokens|lm_head", "value": 0.0})
    text = body(p)
    vocab = text.split("## Vocabulary")[1].split("## Usage")[0]
    assert "added to those" not in vocab
    assert "but no vector is added to any of them" in vocab
    assert "`embed_tokens` and `lm_head` take λ = 0 (set by module rule 0): the vector is not added" in vocab


def test_zero_on_lm_head_only_names_the_tensor_that_gets_the_vector():
    p = sample_provenance()
    p["coefficients"]["modules"] = [{"match": "lm_head", "value": 0.0}]
    vocab = body(p).split("## Vocabulary")[1]
    assert "the vector is added to those in `embed_tokens` (λ = 1.0)" in vocab
    assert "`lm_head` takes λ = 0 (set by module rule 0)" in vocab


def test_kept_embedding_tensor_counts_as_not_added():
    p = uniform()
    p["kept_tensors"] = [{"name": "model.embed_tokens.weight", "why": "coefficient 0 (default)"},
                         {"name": "lm_head.weight", "why": "coefficient 0 (default)"}]
    vocab = body(p).split("## Vocabulary")[1]
    assert "added to those" not in vocab and "keep cp's values" in vocab


def test_extended_vocabulary_rows_keep_cps_values():
    text = body(sample_provenance())
    assert "cp and the chat model share 405 token rows; the vector is added to those (λ = 1.0)." in text
    assert "The 285 rows only cp has (its extended vocabulary) keep cp's values." in text
    assert "on the rows cp added to the vocabulary" in text  # limitations


def test_matching_vocabularies():
    p = uniform()
    p["vocabulary"] = None
    assert "The vocabularies match row for row; the vector is added to every row (λ = 0.8)." in body(p)


def test_special_tokens_copied_from_the_chat_model():
    text = body(sample_provenance())
    assert "rows were copied from the chat model:" in text


def test_two_vectors_use_plural_wording_and_per_vector_lambdas():
    p = two_vector_provenance()
    text = body(p)
    assert "This merge adds 2 chat vectors to cp" in text
    assert "the vectors are added to" in text
    assert "the chat model share" not in text and "the vector is added" not in text
    assert "cp and the chat models share 405 token rows; the vectors are added to those " \
           "(chat₁ − base₁: λ = 0.56, chat₂ − base₂: λ = 0.24)." in text
    assert "rows were copied from the first chat model (chat₁)" in text
    assert "the first chat model's (chat₁) chat template" in text
    assert "Each vector's λ: chat₁ − base₁ 0.56, chat₂ − base₂ 0.24." in text


def test_two_vectors_with_a_schedule_show_each_vectors_range_and_columns():
    p = two_vector_provenance()
    p["coefficients"] = {"default": 1.0, "layers": [0.5, 1.0], "modules": [{"match": "norm", "value": 0.0}]}
    text = body(p)
    assert "out = cp + λ₁ · (chat₁ − base₁) + λ₂ · (chat₂ − base₂),  λ₁ from 0.0 to 0.7, " \
           "λ₂ from 0.0 to 0.3 by tensor" in text
    assert "| module rule (regex, first match wins) | λ | λ of chat₁ − base₁ | λ of chat₂ − base₂ |" in text
    assert "| `norm` | 0.0 | 0.0 | 0.0 |" in text
    assert "| 0 | 0.5 | 0.35 | 0.15 |" in text and "| 1 | 1.0 | 0.7 | 0.3 |" in text


def test_many_layers_are_compacted_to_three_significant_digits():
    p = sample_provenance()
    values = [0.5] * 16 + [0.7001, 0.6999] + [1 / 3] * 14
    p["coefficients"] = {"default": 1.0, "layers": values, "modules": []}
    text = body(p)
    assert "32 layers; layers with equal λ (to 3 significant digits) share a row." in text
    assert "| 0–15 | 0.5 |\n| 16–17 | 0.7 |\n| 18–31 | 0.333 |\n" in text


@pytest.mark.parametrize("license_, notice", [
    ("llama2", "Llama 2 is licensed under the LLAMA 2 Community License, Copyright © Meta Platforms, Inc. "
               "All Rights Reserved."),
    ("llama3", "Built with Meta Llama 3"),
    ("llama3.1", "Built with Llama"),
    ("gemma", "Gemma Terms of Use"),
])
def test_license_attribution_is_carried(license_, notice):
    p = sample_provenance()
    p["inputs"]["chat"]["license"] = license_
    assert notice in body(p)


def test_no_attribution_table_without_such_a_license():
    p = sample_provenance()
    p["inputs"]["chat"]["license"] = "apache-2.0"
    assert "| license | notice | sources |" not in body(p)


def test_install_line_device_map_bibtex_and_limitations():
    text = body(sample_provenance())
    assert "```bash\npip install -U transformers accelerate torch\n```" in text
    assert 'from_pretrained(model_id, dtype="auto", device_map="auto")' in text
    assert "## Limitations and risks" in text
    assert "```bibtex\n@inproceedings{huang-etal-2024-chat," in text
    assert "Chat Vector: A Simple Approach to Equip {LLM}s with Instruction Following and Model Alignment" in text
    assert "Association for Computational Linguistics" in text and 'year = "2024"' in text
    assert 'doi = "10.18653/v1/2024.acl-long.590"' in text and 'pages = "10943--10959"' in text


def test_tied_embeddings_say_the_head_reads_the_embedding_rows_and_no_lm_head_rule_applies():
    p = sample_provenance()
    p["tied_embeddings"] = True
    p["coefficients"] = {"default": 0.8, "layers": [], "modules": [{"match": "lm_head", "value": 0.0}]}
    text = body(p)
    vocab = text.split("## Vocabulary")[1].split("## Usage")[0]
    assert "The output head is tied to `embed_tokens` (`tie_word_embeddings`)" in vocab
    assert "`lm_head` takes λ = 0" not in vocab  # there is no such tensor to take it
    assert "the vector is added to those (λ = 0.8)." in vocab
    p["tied_embeddings"] = False
    untied = body(p).split("## Vocabulary")[1].split("## Usage")[0]
    assert "tied" not in untied and "`lm_head` takes λ = 0 (set by module rule 0)" in untied


def evaluated(passed: bool = True, sweep: bool = False) -> dict:
    p = sample_provenance()
    p["evaluation"] = {
        "language": "ko", "prompts": 30, "prompts_source": "shipped:ko", "max_new_tokens": 64, "seed": 0,
        "device": "cpu", "responses_file": "eval_responses.jsonl", "passed": passed, "failures": [],
        "scores": {"fidelity": 0.9333, "format": 1.0, "perplexity": 12.5, "perplexity_ratio": 1.0417},
        "perplexity": {"value": 12.5, "reference": "demo/cp", "reference_value": 12.0, "text": "shipped:ko"},
        "require": {"fidelity": 0.95, "format": 1.0},
    }
    if sweep:
        p["evaluation"]["sweep"] = {
            "chosen": 0.7, "chart": "sweep.svg", "rule": "The largest factor that passes every threshold is published.",
            "variants": [{"factor": f, "lambda_range": [0.0, f], "passed": f <= 0.7, "branch": f"lambda-{f}",
                          "scores": {"fidelity": 1.0 - f / 2, "format": 1.0, "perplexity_ratio": None}}
                         for f in (0.5, 0.7, 1.0)]}
    return p


def test_evaluation_section_shows_each_score_against_its_threshold_and_links_the_responses():
    text = body(evaluated())
    section = text.split("## Evaluation")[1].split("## Limitations")[0]
    assert "30 prompts in `ko` (shipped:ko)" in section and "[eval_responses.jsonl](eval_responses.jsonl)" in section
    assert "| target-language fidelity: the share of responses in ko | 0.93 | ≥ 0.95 | ❌ |" in section
    assert "| 1.00 | ≥ 1.0 | ✅ |" in section
    assert "| 1.04× (perplexity 12.50, cp's 12.00) |  |  |" in section  # measured, not required
    assert "not a benchmark" in text and "No benchmark was run" not in text
    assert "## Evaluation" not in body(sample_provenance())  # no evaluation: no section, the old limitation
    assert "No benchmark was run" in body(sample_provenance())


def test_sweep_table_marks_the_published_variant_and_shows_the_chart():
    section = body(evaluated(sweep=True)).split("### λ sweep")[1].split("## Limitations")[0]
    assert "This model is the variant λ × 0.7 of a sweep" in section
    assert "| **0.7** (this model) | 0.0–0.7 | 0.65 | 1.00 |  | ✅ pass | `lambda-0.7` |" in section
    assert "| 1.0 | 0.0–1.0 | 0.50 | 1.00 |  | ❌ fail | `lambda-1.0` |" in section
    assert "![fidelity and format against the λ factor](sweep.svg)" in section


def test_how_to_reproduce_shows_the_recipe_pinned_without_comments_or_local_paths():
    import yaml

    p = sample_provenance()
    p["inputs"]["base"] = {"repo_id": None, "path": "/home/me/secret/models/tiny-base", "sha": None}
    recipe = RECIPE_TEXT.replace("base: {repo_id: demo/tiny-base}", "base: {path: /home/me/secret/models/tiny-base}")
    recipe += "output: {chat_template: /home/me/secret/t.jinja}\n"
    shown = body(p, recipe).split("## How to reproduce")[1].split("```yaml\n")[1].split("```")[0]
    doc = yaml.safe_load(shown)
    assert doc["chat"] == {"repo_id": "demo/tiny-chat", "revision": "2" * 40}  # v1.0 became its commit
    assert doc["cp"] == {"repo_id": "demo/tiny-cp", "revision": "3" * 40}
    assert doc["base"] == {"path": "tiny-base"} and doc["output"] == {"chat_template": "t.jinja"}
    assert "/home/me" not in shown and "#" not in shown
    assert doc["coefficients"] == {"default": 1.0, "layers": {"0-1": 0.5, "3": 0.8},
                                   "modules": [{"match": "norm", "value": 0.0}]}


def test_a_sweep_variants_recipe_has_its_scaled_coefficients():
    import yaml

    from chatvector.recipe.recipe import parse_recipe
    from chatvector.sweep.variants import scaled_coefficients

    p = sample_provenance()
    p["sweep"] = {"factor": 0.7}
    text = body(p, RECIPE_TEXT + "sweep: {lambdas: [0.7, 1.0]}\n")
    assert "This model is the variant\nλ × 0.7 of a sweep" in text
    shown = text.split("## How to reproduce")[1].split("```yaml\n")[1].split("```")[0]
    assert "sweep" not in yaml.safe_load(shown)
    scaled = parse_recipe(shown).coefficients  # exactly the sweep's factor × value, float for float
    assert scaled == scaled_coefficients(parse_recipe(RECIPE_TEXT).coefficients, 0.7)


# -- a default that decides no tensor; one numbering of module rules (plan, recipes/README.md, card) ----------------
def planned_card(tmp_path, coefficients: str) -> tuple[str, str]:
    """(`chatvector plan`'s text, the card's body) of a recipe over a tiny local triplet."""
    from chatvector.build.provenance import build_provenance
    from chatvector.hub.client import connect
    from chatvector.plan.planner import make_plan
    from chatvector.plan.report import render
    from chatvector.recipe.recipe import load_recipe
    from chatvector.testing.tinymodels import TripletSpec, write_triplet

    if not (tmp_path / "m").exists():
        write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    (tmp_path / "r.yaml").write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n" + coefficients)
    recipe = load_recipe(tmp_path / "r.yaml")
    plan = make_plan(recipe, connect())
    return render(plan), body(build_provenance(plan, endpoint=None), recipe.text)


def test_a_default_that_decides_no_tensor_is_not_said_to_apply(tmp_path):
    plan, card = planned_card(tmp_path, 'coefficients:\n  default: 1.0\n  modules:\n'
                                        '    - {match: "norm", value: 0.0}\n    - {match: ".", value: 0.5}\n')
    assert "Coefficients λ(t) (default 1; it decides no tensor: the rules below cover every one)" in plan
    assert "applies elsewhere" not in card and "Every layer takes the default" not in card
    assert "from 0.0 to 0.5, for every tensor (the default coefficient 1.0 decides none)." in card
    assert "Here the module rules decide every tensor: no layer value and not the default applies to any." in card
    assert "| layers | λ |" not in card and "per-layer λ" not in card  # no layer value applies either
    assert "No layer value applies: the module rules above decide every tensor." in card

    plan, card = planned_card(tmp_path, 'coefficients:\n  default: 1.0\n  modules: [{match: ".", value: 0.5}]\n')
    assert "out = cp + 0.5 · (chat − base)\n" in card and "by tensor" not in card  # the one λ every tensor takes

    plan, card = planned_card(tmp_path, 'coefficients: {default: 1.0, modules: [{match: "norm", value: 0.0}]}\n')
    assert "it decides no tensor" not in plan and "and the default coefficient 1.0 applies elsewhere" in card


def test_module_rules_have_one_numbering_in_plan_and_card(tmp_path):
    plan, card = planned_card(tmp_path, 'coefficients:\n  modules:\n    - {match: "embed_tokens|lm_head", value: 0.0}\n'
                                        '    - {match: "norm", value: 0.0}\n')
    assert "[0] 'embed_tokens|lm_head' → 0" in plan and "[1] 'norm' → 0" in plan
    assert "| # | module rule (regex, first match wins) | λ |" in card
    assert "| 0 | `embed_tokens\\|lm_head` | 0.0 |" in card and "| 1 | `norm` | 0.0 |" in card
    assert "(set by module rule 0)" in card and "module rule 1)" not in card
