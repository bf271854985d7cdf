"""`sweep --publish`: every variant evaluated, each on its branch lambda-F, the largest factor that passes on main;
nothing pushed when none passes. The λ-switch triplet answers in Korean below λ* = 0.6, in English above."""

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
def switch_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep-publish")
    tm.write_switch_triplet(root)
    (root / "prompts.txt").write_text("오늘 날씨 어때요?\n")
    return root


def recipe(root: Path, target: str) -> Path:
    path = root / f"r-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text("base: {path: base}\nchat: {path: chat}\ncp: {path: cp}\ncoefficients: {default: 1.0}\n"
                    f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko, en]}}\n"
                    "eval: {language: ko, prompts: prompts.txt, max_new_tokens: 12, perplexity: false, "
                    "require: {fidelity: 1.0, format: 1.0}}\n")
    return path


def test_each_variant_on_its_branch_and_the_largest_passing_factor_on_main(switch_root, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    api = HfApi(token=WRITE_TOKEN.secret)
    target = f"alice/sweep-{uuid.uuid4().hex[:6]}"
    code, out, err = run_main(capsys, "-q", "sweep", str(recipe(switch_root, target)), "--lambdas", "0.5,0.55,0.65",
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


def test_nothing_is_pushed_when_no_variant_passes(switch_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/sweep-{uuid.uuid4().hex[:6]}"
    mark = len(HUB.requests)
    code, _, err = run_main(capsys, "-q", "sweep", str(recipe(switch_root, target)), "--lambdas", "0.65,0.8",
                            "--out", str(tmp_path / "s"), "--publish")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines[0].startswith("error: no variant of the sweep passes the evaluation gate (nothing was pushed): "
                               "lambda-0.65: fidelity 0.00 < 1 required (eval.require.fidelity)")
    assert lines[1].startswith("error: lambda-0.8: fidelity 0.00 < 1 required")
    assert pushed(list(HUB.requests)[mark:]) == []


def test_publish_needs_a_target_and_an_eval_section_before_anything_is_merged(switch_root, tmp_path, capsys):
    path = switch_root / "bare.yaml"
    path.write_text("base: {path: base}\nchat: {path: chat}\ncp: {path: cp}\n")
    code, _, err = run_main(capsys, "sweep", str(path), "--lambdas", "0.5", "--out", str(tmp_path / "s"),
                            "--publish")
    assert code == 2 and not (tmp_path / "s").exists()
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: sweep --publish: the recipe has no target; add `target: {repo_id: org/name}`",
        "error: sweep --publish: the recipe has no eval section to choose a variant by; add `eval: {language: ko, "
        "require: {fidelity: 0.9, format: 1.0}}`"]
