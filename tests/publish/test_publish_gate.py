"""`publish` and `sweep --publish` with an `eval:` section: the assembled model is evaluated before anything is
pushed; a missed threshold blocks the push with one line per miss (exit 2), a pass publishes the responses and a
card that shows the scores. The λ-switch triplet answers in Korean below λ* = 0.6 and in English above it, by construction."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from chatvector.testing import tinymodels as tm
from tests.conftest import HUB, WRITE_TOKEN
from tests.hubkit import run_main
from tests.test_mistakes import pushed


@pytest.fixture(scope="module")
def switch_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    tm.write_switch_triplet(root)
    (root / "prompts.txt").write_text("오늘 날씨 어때요?\n주말에 뭐 할까요?\n")
    (root / "one-prompt.txt").write_text("오늘 날씨 어때요?\n")
    return root


def gated_recipe(root: Path, lam: float, target: str) -> Path:
    path = root / f"gate-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"base: {{path: base}}\nchat: {{path: chat}}\ncp: {{path: cp}}\ncoefficients: {{default: {lam}}}\n"
                    f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko, en]}}\n"
                    "eval: {language: ko, prompts: prompts.txt, max_new_tokens: 12, perplexity: false, "
                    "require: {fidelity: 0.9, format: 1.0}}\n")
    return path


def test_a_model_that_answers_in_english_is_not_published(switch_folders, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/gate-{uuid.uuid4().hex[:6]}"
    mark = len(HUB.requests)
    code, out, err = run_main(capsys, "publish", str(gated_recipe(switch_folders, 0.65, target)))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines == ["error: the evaluation gate blocks this publish (nothing was pushed): fidelity 0.00 < 0.9 "
                     "required (eval.require.fidelity): 2 of 2 responses were not in ko (detected: en)"]
    assert "Traceback" not in err and out == ""
    assert pushed(list(HUB.requests)[mark:]) == []
    assert not HfApi(token=WRITE_TOKEN.secret).repo_exists(target)


def test_a_model_that_passes_is_published_with_its_responses_and_scores(switch_folders, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/gate-{uuid.uuid4().hex[:6]}"
    recipe = gated_recipe(switch_folders, 0.55, target)
    code, out, err = run_main(capsys, "publish", str(recipe))
    assert code == 0, err
    files = set(HfApi(token=WRITE_TOKEN.secret).list_repo_files(target))
    assert {"eval_responses.jsonl", "README.md", "chatvector.json"} <= files
    rows = [json.loads(line) for line in Path(hf_hub_download(target, "eval_responses.jsonl", cache_dir=tmp_path))
            .read_text(encoding="utf-8").splitlines()]
    assert [r["response"] for r in rows] == [tm.KO_ANSWER] * 2 and all(r["in_language"] for r in rows)
    provenance = json.loads(Path(hf_hub_download(target, "chatvector.json", cache_dir=tmp_path)).read_text())
    assert provenance["evaluation"]["passed"] is True and provenance["evaluation"]["scores"]["fidelity"] == 1.0
    card = Path(hf_hub_download(target, "README.md", cache_dir=tmp_path)).read_text(encoding="utf-8")
    assert "## Evaluation" in card and "| 1.00 | ≥ 0.9 | ✅ |" in card
    code, out, _ = run_main(capsys, "publish", str(recipe))  # unchanged: not evaluated again, nothing pushed
    assert code == 0 and out.startswith("nothing changed:")
    recipe.write_text(recipe.read_text().replace("max_new_tokens: 12", "max_new_tokens: 10"))  # only eval: changes
    code, out, _ = run_main(capsys, "plan", str(recipe))
    assert "Publish would: commit" in out and "the recipe's eval section changed" in out
    code, out, err = run_main(capsys, "publish", str(recipe))
    assert code == 0 and out.startswith(f"published {target} at "), err
    provenance = json.loads(Path(hf_hub_download(target, "chatvector.json", cache_dir=tmp_path / "2")).read_text())
    assert provenance["evaluation"]["max_new_tokens"] == 10


# -- sweep --publish: each variant on its branch lambda-F, the largest factor that passes on main

def sweep_recipe(root: Path, target: str) -> Path:
    path = root / f"r-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text("base: {path: base}\nchat: {path: chat}\ncp: {path: cp}\ncoefficients: {default: 1.0}\n"
                    f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko, en]}}\n"
                    "eval: {language: ko, prompts: one-prompt.txt, max_new_tokens: 12, perplexity: false, "
                    "require: {fidelity: 1.0, format: 1.0}}\n")
    return path


def test_each_variant_on_its_branch_and_the_largest_passing_factor_on_main(switch_folders, tmp_path, capsys,
                                                                             monkeypatch, transfer):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    api = HfApi(token=WRITE_TOKEN.secret)
    target = f"alice/sweep-{uuid.uuid4().hex[:6]}"
    code, out, err = run_main(capsys, "-q", "sweep", str(sweep_recipe(switch_folders, target)), "--lambdas", "0.5,0.55,0.65",
                              "--out", str(tmp_path / "s"), "--publish")
    assert code == 0, err
    assert "main holds lambda-0.55: the largest factor that passes eval.require" in out
    refs = {b.name: b.target_commit for b in api.list_repo_refs(target).branches}
    assert set(refs) == {"main", "lambda-0.5", "lambda-0.55", "lambda-0.65"}
    main_index = hf_hub_download(target, "chatvector.json", revision="main", cache_dir=tmp_path / "c")
    recorded = json.loads(Path(main_index).read_text())
    assert recorded["sweep"]["factor"] == 0.55 and recorded["evaluation"]["passed"] is True
    table = recorded["evaluation"]["sweep"]
    assert table["chosen"] == 0.55 and [v["passed"] for v in table["variants"]] == [True, True, False]
    card = Path(hf_hub_download(target, "README.md", revision="main", cache_dir=tmp_path / "c")).read_text()
    assert "| **0.55** (this model) |" in card and "![fidelity and format against the λ factor](sweep.svg)" in card
    assert "sweep.svg" in api.list_repo_files(target, revision="main")
    weights = [f for f in api.list_repo_files(target, revision="main") if f.endswith(".safetensors")]
    main_info = {f.path: f.lfs.sha256 for f in api.get_paths_info(target, weights, revision="main")}
    branch_info = {f.path: f.lfs.sha256 for f in api.get_paths_info(target, weights, revision="lambda-0.55")}
    assert main_info == branch_info  # main holds the chosen variant's very weights
    rows = Path(hf_hub_download(target, "eval_responses.jsonl", revision="lambda-0.65", cache_dir=tmp_path / "c"))
    assert json.loads(rows.read_text().splitlines()[0])["response"] == tm.EN_ANSWER


def test_nothing_is_pushed_when_no_variant_passes(switch_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/sweep-{uuid.uuid4().hex[:6]}"
    mark = len(HUB.requests)
    code, _, err = run_main(capsys, "-q", "sweep", str(sweep_recipe(switch_folders, target)), "--lambdas", "0.65,0.8",
                            "--out", str(tmp_path / "s"), "--publish")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines[0].startswith("error: no variant of the sweep passes the evaluation gate (nothing was pushed): "
                               "lambda-0.65: fidelity 0.00 < 1 required (eval.require.fidelity)")
    assert lines[1].startswith("error: lambda-0.8: fidelity 0.00 < 1 required")
    assert pushed(list(HUB.requests)[mark:]) == []


def test_publish_needs_a_target_and_an_eval_section_before_anything_is_merged(switch_folders, tmp_path, capsys):
    path = switch_folders / "bare.yaml"
    path.write_text("base: {path: base}\nchat: {path: chat}\ncp: {path: cp}\n")
    code, _, err = run_main(capsys, "sweep", str(path), "--lambdas", "0.5", "--out", str(tmp_path / "s"),
                            "--publish")
    assert code == 2 and not (tmp_path / "s").exists()
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: sweep --publish: the recipe has no target; add `target: {repo_id: org/name}`",
        "error: sweep --publish: the recipe has no eval section to choose a variant by; add `eval: {language: ko, "
        "require: {fidelity: 0.9, format: 1.0}}`"]


def test_plan_says_what_the_gate_will_evaluate_and_require(switch_folders, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    code, out, err = run_main(capsys, "plan", str(gated_recipe(switch_folders, 0.55, f"alice/gate-{uuid.uuid4().hex[:6]}")))
    assert code == 0, err
    assert (f"Evaluate first: ko prompts ({switch_folders / 'prompts.txt'}), at most 12 new tokens each; the push needs "
            "fidelity ≥ 0.9, format ≥ 1 (the whole output is written to disk for it, and loaded: about ") in out
    assert " of memory, " in out and " available)" in out


def test_an_evaluation_the_machine_cannot_hold_is_refused_before_any_weight_moves(switch_folders, hub, capsys,
                                                                                 monkeypatch):
    """eval: loads the merged model whole: on a machine without the memory for it, plan and publish say so in one
    line (what it needs, what there is, what would hold it), exit 2, and nothing is downloaded or pushed."""
    from chatvector.build import preflight

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(preflight, "available_memory", lambda: (1_000_000_000, 2_000_000_000))
    target = f"alice/gate-{uuid.uuid4().hex[:6]}"
    r = gated_recipe(switch_folders, 0.55, target)
    for command in ("plan", "publish"):
        mark = len(hub.requests)
        code, _, err = run_main(capsys, command, str(r))
        assert code == 2, err
        [line] = [x for x in err.splitlines() if x.startswith("error: ")]
        assert "eval: the evaluation (eval:) loads the merged model" in line and "1.0 GB available (2.0 GB in all)" \
            in line and "a larger runner" in line and "chatvector eval" in line, line
        assert not any(q.method in ("POST", "PUT") for q in list(hub.requests)[mark:])  # nothing pushed
    assert not HfApi(token=WRITE_TOKEN.secret).repo_exists(target)
    monkeypatch.setattr(preflight, "available_memory", lambda: (64_000_000_000, 64_000_000_000))
    code, _, err = run_main(capsys, "plan", str(r))
    assert code == 0, err
