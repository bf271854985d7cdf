"""`publish` with an `eval:` section: the assembled model is evaluated before anything is pushed; a missed
threshold blocks the push with one line per miss (exit 2), a pass publishes the responses and a card that shows
the scores. The λ-switch triplet answers in Korean below λ* = 0.6 and in English above it, by construction."""

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
