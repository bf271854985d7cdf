"""`chatvector eval` and chatvector.evaluation: fidelity, chat-format health and perplexity measured on tiny models
whose behaviour is known by construction (tinymodels.write_switch_triplet), the gate's lines, the shipped prompt
sets, the recipe's `eval:` section and bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from chatvector.evaluation import (
    SHIPPED,
    EvalResult,
    EvalSpec,
    Requirements,
    Response,
    check_gate,
    detect_language,
    evaluate,
    load_prompts,
    load_text,
    write_responses,
)
from chatvector.evaluation.hanzi import pairs, script_counts
from chatvector.evaluation.languages import LANGID_LABELS, _identifier
from chatvector.recipe.recipe import RecipeError, parse_recipe
from chatvector.testing import tinymodels as tm
from tests.hubkit import run_main

PROMPTS = ["오늘 날씨 어때요?", "점심 메뉴를 추천해 주세요.", "주말에 뭐 할까요?"]
LOW, HIGH = 0.55, 0.65  # on either side of the triplet's λ* = 0.6


@pytest.fixture(scope="module")
def switch(tmp_path_factory) -> dict[str, Path]:
    """The λ-switch triplet and two merges of it, at λ = LOW and HIGH: {role | "low" | "high" | "prompts": Path}."""
    from chatvector.cli import main

    root = tmp_path_factory.mktemp("switch")
    folders = tm.write_switch_triplet(root)
    for name, lam in (("low", LOW), ("high", HIGH)):
        recipe = root / f"{name}.yaml"
        recipe.write_text(f"base: {{path: base}}\nchat: {{path: chat}}\ncp: {{path: cp}}\n"
                          f"coefficients: {{default: {lam}}}\ncard: {{language: [ko, en]}}\n")
        assert main(["-q", "merge", str(recipe), "--out", str(root / name)]) == 0
        folders[name] = root / name
    folders["prompts"] = root / "prompts.txt"
    folders["prompts"].write_text("\n".join(PROMPTS) + "\n")
    return folders


def spec(prompts: Path, **kwargs) -> EvalSpec:
    return EvalSpec(**{"language": "ko", "prompts": prompts, "max_new_tokens": 16, **kwargs})


# -- the metrics, on models that behave as constructed --------------------------------------------------------------

def test_fidelity_flips_between_the_two_sides_of_lambda_star_and_perplexity_follows(switch):
    assert LOW < tm.SWITCH_LAMBDA < HIGH
    low = evaluate(switch["low"], spec(switch["prompts"]), reference=switch["cp"], device="cpu")
    high = evaluate(switch["high"], spec(switch["prompts"]), reference=switch["cp"], device="cpu")

    assert [r.response for r in low.responses] == [tm.KO_ANSWER] * 3
    assert {r.language for r in low.responses} == {"ko"} and low.fidelity == 1.0
    assert [r.response for r in high.responses] == [tm.EN_ANSWER] * 3
    assert {r.language for r in high.responses} == {"en"} and high.fidelity == 0.0
    # Both answer in clean turns: every word is one token, then the end-of-turn token.
    assert low.format == high.format == 1.0
    assert [r.n_tokens for r in low.responses] == [len(tm.KO_WORDS) + 1] * 3
    assert [r.n_tokens for r in high.responses] == [len(tm.EN_WORDS) + 1] * 3
    # The more of the vector, the less of cp's Korean: perplexity on the Korean text rises with λ.
    assert low.perplexity.text_source == "shipped:ko" and low.perplexity.n_tokens > 100
    assert all(math.isfinite(x) for x in (low.perplexity.value, high.perplexity.value, low.perplexity.reference_value))
    assert low.perplexity.reference_value == high.perplexity.reference_value
    assert 1.0 < low.perplexity.ratio < high.perplexity.ratio
    assert low.device == "cpu" and low.revision is None and low.prompts_source == str(switch["prompts"])


def test_leaking_a_template_marker_or_never_ending_a_turn_is_not_a_well_formed_answer(tmp_path, switch):
    english = spec(switch["prompts"], language="en", perplexity=False, max_new_tokens=12)
    healthy = evaluate(switch["chat"], english, device="cpu")
    leak = evaluate(tm.write_switch_triplet(tmp_path / "leak", tm.SwitchSpec(ending="leak"))["chat"], english,
                    device="cpu")
    loop = evaluate(tm.write_switch_triplet(tmp_path / "loop", tm.SwitchSpec(ending="loop"))["chat"], english,
                    device="cpu")
    assert healthy.format == 1.0 and leak.format == loop.format == 0.0
    assert healthy.fidelity == leak.fidelity == loop.fidelity == 1.0  # still English: only the turn's form is wrong
    assert all(r.ended_with_eot and r.leaked == ("<|start_header_id|>",) for r in leak.responses)
    assert leak.responses[0].response == tm.EN_ANSWER + "<|start_header_id|>"
    assert all(not r.ended_with_eot and not r.leaked and r.n_tokens == 12 for r in loop.responses)
    assert loop.responses[0].response.startswith(tm.EN_ANSWER + tm.EN_WORDS[0])


@pytest.mark.gpu
def test_on_cuda_the_answers_and_scores_are_those_of_the_cpu(switch):
    cpu = evaluate(switch["low"], spec(switch["prompts"]), reference=switch["cp"], device="cpu")
    gpu = evaluate(switch["low"], spec(switch["prompts"]), reference=switch["cp"], device="cuda")
    assert gpu.device.startswith("cuda") and gpu.responses == cpu.responses
    assert gpu.perplexity.ratio == pytest.approx(cpu.perplexity.ratio, rel=1e-4)


# -- the gate and the result's files ----------------------------------------------------------------------------------

def _result(languages: list[str], **kwargs) -> EvalResult:
    responses = tuple(Response(prompt=f"p{i}", response="x", language=lang, ended_with_eot=True, n_tokens=2)
                      for i, lang in enumerate(languages))
    return EvalResult(model="m", revision=None, language="ko", prompts_source="shipped:ko", max_new_tokens=64, seed=0,
                      device="cpu", responses=responses, **kwargs)


def test_the_gate_says_which_threshold_is_missed_by_how_much_and_why():
    result = _result(["ko"] * 36 + ["en"] * 10 + ["ja"] * 4)
    assert check_gate(result, Requirements(fidelity=0.9)) == [
        "fidelity 0.72 < 0.9 required (eval.require.fidelity): 14 of 50 responses were not in ko (detected: en, ja)"]
    assert check_gate(result, {"fidelity": 0.72}) == []
    assert check_gate(result, Requirements(fidelity=0.7, format=1.0)) == []
    # a share that rounds to its threshold is shown with the digits that tell them apart
    near = _result(["ko"] * 999 + ["en"])
    assert check_gate(near, {"fidelity": 1.0}, source="--require")[0].startswith(
        "fidelity 0.999 < 1 required (--require fidelity): 1 of 1000 responses were not in ko")

    doc = result.to_dict()
    bad = [{**r, "ended_with_eot": False} for r in doc["responses"][:3]]
    bad += [{**r, "leaked": ["<|eot_id|>"]} for r in doc["responses"][3:5]] + [{**doc["responses"][5], "response": " "}]
    broken = EvalResult.from_dict({**doc, "responses": bad + doc["responses"][6:]})
    assert check_gate(broken, Requirements(format=0.95)) == [
        "format 0.88 < 0.95 required (eval.require.format): 6 of 50 responses were not well-formed turns (3 did not "
        "end with an end-of-turn token within 64 tokens; 2 leaked special tokens or template markers; 1 were empty)"]
    assert check_gate(result, Requirements(perplexity=1.5))[0].startswith(
        "perplexity ratio unknown, at most 1.5 required (eval.require.perplexity): perplexity was not measured")


def test_results_round_trip_through_json_and_responses_files(switch, tmp_path):
    result = evaluate(switch["low"], spec(switch["prompts"], perplexity=False), device="cpu")
    doc = json.loads(json.dumps(result.to_dict()))
    assert EvalResult.from_dict(doc) == result
    assert doc["scores"] == {"fidelity": 1.0, "format": 1.0, "perplexity": None, "perplexity_ratio": None}
    lines = write_responses(result, tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["response"] for line in lines] == [tm.KO_ANSWER] * 3
    whole = json.loads(write_responses(result, tmp_path / "r.json").read_text())
    assert whole["language"] == "ko" and whole["scores"]["fidelity"] == 1.0 and len(whole["responses"]) == 3
    assert all(r["in_language"] and r["well_formed"] for r in whole["responses"])


# -- the command ------------------------------------------------------------------------------------------------------

def test_eval_a_hub_repo_takes_its_language_from_its_card_and_a_missed_gate_exits_2(switch, api, capsys):
    sha = tm.upload_model(api, switch["low"], "alice/eval-switch-low")
    code, out, err = run_main(capsys, "eval", "alice/eval-switch-low", "--prompts", str(switch["prompts"]),
                              "--max-new-tokens", "16", "--no-perplexity", "--format", "json",
                              "--require", "fidelity=1,format=1")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == "alice/eval-switch-low" and doc["revision"] == sha and doc["language"] == "ko"
    assert doc["scores"]["fidelity"] == 1.0 and doc["gate"] == {"require": {"fidelity": 1.0, "format": 1.0},
                                                                 "failures": [], "passed": True}

    code, out, err = run_main(capsys, "-q", "eval", str(switch["high"]), "--language", "ko", "--prompts",
                              str(switch["prompts"]), "--max-new-tokens", "16", "--reference", str(switch["cp"]),
                              "--require", "fidelity=0.9,format=1.0")
    assert code == 2
    assert err.strip().splitlines() == ["error: fidelity 0.00 < 0.9 required (--require fidelity): 3 of 3 responses "
                                        "were not in ko (detected: en)"]
    assert "fidelity    0.00  0 of 3 answers in ko" in out and "ratio" in out and tm.EN_ANSWER in out


@pytest.mark.parametrize("args, message", [
    (["--language", "fr"], "--language fr: no prompt set ships for 'fr' (shipped: ko, ja, zh-Hant); give a prompts "
                           "file (--prompts FILE)"),
    (["--language", "kr"], "--language: unknown language code 'kr' (did you mean 'ko'?)"),
    (["--language", "ko", "--prompts", "missing.txt"], "--prompts missing.txt: file not found"),
    (["--language", "ko", "--require", "fidelty=0.9"], "--require: unknown metric 'fidelty' (did you mean 'fidelity'?"),
    (["--language", "ko", "--require", "fidelity=1.5"], "--require: fidelity: fidelity is a share of responses: give a "
                                                        "number from 0 to 1, got 1.5"),
    (["--language", "ko", "--require", "format"], "--require: 'format': give a threshold, as in format=0.9"),
    (["--language", "ko", "--max-new-tokens", "0"], "--max-new-tokens: expected a whole number of tokens from 1"),
    (["--language", "ko", "--lm-eval", "kobest_boolq"], "-m pip install 'lm-eval>=0.4'"),
    (["--revision", "main", "--language", "ko"], "is a local folder: a revision applies to a Hub repository only"),
])
def test_bad_input_is_one_line_and_exit_2(switch, capsys, args, message):
    if "--lm-eval" in args and importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm-evaluation-harness is installed: the message for a missing one cannot be seen")
    code, out, err = run_main(capsys, "eval", str(switch["low"]), *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_a_model_without_a_chat_template_or_a_folder_that_is_not_there(switch, capsys):
    code, _, err = run_main(capsys, "-q", "eval", str(switch["cp"]), "--language", "ko", "--no-perplexity")
    assert code == 2 and err.startswith(f"error: {switch['cp']} has no chat template") and err.count("\n") == 1
    code, _, err = run_main(capsys, "eval", "./no/such/model", "--language", "ko")
    assert code == 2 and err == "error: model ./no/such/model: the folder does not exist (nor is it a Hub " \
                                "repository id, namespace/name)\n"
    code, _, err = run_main(capsys, "eval", str(switch["cp"]))
    assert code == 2 and "--language is needed" in err


# -- shipped data and language identification ------------------------------------------------------------------------

@pytest.mark.parametrize("language", SHIPPED)
def test_shipped_prompt_sets_and_texts_are_in_their_language(language):
    prompts, source = load_prompts(language)
    assert source == f"shipped:{language}" and 20 <= len(prompts) <= 50 and len(set(prompts)) == len(prompts)
    assert [p for p in prompts if detect_language(p) != language] == []
    text, _ = load_text(language)
    assert detect_language(text) == language and 100 <= len(text) <= 1000


def test_chinese_is_told_apart_by_script_and_the_label_list_is_py3langids():
    assert tuple(_identifier().labels) == LANGID_LABELS  # the classifier's own list (py3langid's model)
    table = dict(pairs())
    assert not set(table) & set(table.values()) and len(set(table.values())) == len(table)
    traditional, _ = load_prompts("zh-Hant")
    simplified = ["".join(table.get(ch, ch) for ch in p) for p in traditional]
    assert [detect_language(p) for p in simplified] == ["zh-Hans"] * len(simplified)
    assert script_counts("今天天氣很好") == (1, 0) and detect_language("这是一个简单的问题，请你回答。") == "zh-Hans"
    assert detect_language("") == detect_language(" 42 !") == "und"


# -- the recipe's eval section ---------------------------------------------------------------------------------------

def test_the_recipe_eval_section(tmp_path):
    (tmp_path / "p.txt").write_text("하나\n둘\n")
    head = "base: {path: b}\nchat: {path: c}\ncp: {path: d}\n"
    recipe = parse_recipe(head + "eval:\n  language: ko\n  prompts: p.txt\n  max_new_tokens: 32\n"
                                 "  require: {fidelity: 0.9, format: 1.0, perplexity: 1.5}\n"
                                 "  lm_eval: {tasks: [kobest_boolq], limit: 20}\n", tmp_path / "r.yaml")
    ev = recipe.eval
    assert (ev.language, ev.prompts, ev.max_new_tokens, ev.seed, ev.perplexity) == ("ko", tmp_path / "p.txt", 32, 0, True)
    assert ev.require == Requirements(0.9, 1.0, 1.5) and ev.lm_eval.tasks == ("kobest_boolq",)
    assert parse_recipe(head, tmp_path / "r.yaml").eval is None
    assert parse_recipe(head + "eval: {language: zh_hant}\n", tmp_path / "r.yaml").eval.language == "zh-Hant"

    with pytest.raises(RecipeError) as err:
        parse_recipe(head + "eval:\n  language: fr\n  seed: -1\n  max_new_tokens: 64.0\n"
                            "  require: {fidelity: 2, fromat: 1}\n  lm_eval: {tasks: []}\n", tmp_path / "r.yaml")
    assert str(err.value).splitlines() == [
        f"{tmp_path / 'r.yaml'}:6: eval.seed: expected a whole number >= 0, got -1",
        f"{tmp_path / 'r.yaml'}:7: eval.max_new_tokens: expected a whole number of tokens from 1 to 4096, got 64.0",
        f"{tmp_path / 'r.yaml'}:8: eval.require.fromat: unknown key 'fromat' (did you mean 'format'?)",
        f"{tmp_path / 'r.yaml'}:8: eval.require.fidelity: fidelity is a share of responses: give a number from 0 "
        "to 1, got 2",
        f"{tmp_path / 'r.yaml'}:9: eval.lm_eval.tasks: give at least one lm-evaluation-harness task (e.g. "
        "[kobest_boolq])",
    ]
    with pytest.raises(RecipeError, match=r"r.yaml:5: eval.language: no prompt set ships for 'fr' .*\(eval.prompts: "
                                          r"FILE\)"):
        parse_recipe(head + "eval:\n  language: fr\n  perplexity: false\n", tmp_path / "r.yaml")


def test_the_docs_name_every_eval_key_and_the_command():
    root = Path(__file__).resolve().parents[1]
    keys = (root / "recipes" / "README.md").read_text(encoding="utf-8")
    for key in ("eval", "eval.language", "eval.prompts", "eval.text", "eval.max_new_tokens", "eval.seed",
                "eval.perplexity", "eval.require.fidelity", "eval.require.format", "eval.require.perplexity",
                "eval.lm_eval.tasks", "eval.lm_eval.limit"):
        assert f"| `{key}` |" in keys, key
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "### Evaluating a merge" in readme and "| py3langid |" in readme and "chatvector eval ./merged" in readme
