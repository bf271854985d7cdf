"""A recipe with `sweep:` and `eval:` on a schedule: `publish` keeps what the sweep chose (nothing merged or pushed
while nothing changed, the sweep again when something did), `sweep --publish` can run again over its own folder,
and `sweep --eval` scores the variants without publishing (sweep.md shows them). The λ-switch triplet answers in
Korean below λ* = 0.6 and in English above it, by construction, so the largest passing factor is known."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from chatvector.testing import tinymodels as tm
from tests.conftest import HUB, WRITE_TOKEN
from tests.hubkit import run_main
from tests.test_mistakes import pushed

EVAL = ("eval: {language: ko, prompts: one-prompt.txt, max_new_tokens: 12, perplexity: false, "
        "require: {fidelity: 1.0, format: 1.0}}\n")


@pytest.fixture(scope="module")
def triplet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("schedule")
    tm.write_switch_triplet(root)
    (root / "one-prompt.txt").write_text("오늘 날씨 어때요?\n")
    return root


@pytest.fixture
def own_triplet(triplet, tmp_path) -> Path:
    """A copy of the triplet this test may change (an upstream change)."""
    root = tmp_path / "triplet"
    shutil.copytree(triplet, root)
    return root


def swept_recipe(root: Path, lambdas: str, target: str | None = None) -> Path:
    path = root / f"r-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text("# a sweep on a schedule\nbase: {path: base}\nchat: {path: chat}\ncp: {path: cp}\n"
                    f"coefficients: {{default: 1.0}}\nsweep: {{lambdas: [{lambdas}]}}\n"
                    + (f"target: {{repo_id: {target}}}\ncard: {{license: mit, language: [ko, en]}}\n" if target else "")
                    + EVAL)
    return path


def main_provenance(target: str, cache: Path) -> dict:
    return json.loads(Path(hf_hub_download(target, "chatvector.json", revision="main", cache_dir=cache)).read_text())


@pytest.fixture
def writer(monkeypatch) -> HfApi:
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    return HfApi(token=WRITE_TOKEN.secret)


def test_the_scheduled_publish_keeps_the_sweeps_choice_and_sweeps_again_when_an_input_changes(
        own_triplet, tmp_path, capsys, writer):
    target = f"alice/sched-{uuid.uuid4().hex[:6]}"
    recipe = swept_recipe(own_triplet, "0.5, 0.55, 0.65", target)
    code, out, err = run_main(capsys, "-q", "sweep", str(recipe), "--out", str(tmp_path / "s"), "--publish")
    assert code == 0, err
    assert "main holds lambda-0.55" in out
    head = writer.model_info(target).sha

    # the schedule's command, nothing changed: no merge, no push, exit 0 (it used to merge λ 1.0 and fail the gate)
    mark = len(HUB.requests)
    code, out, err = run_main(capsys, "-q", "publish", str(recipe))
    assert code == 0, err
    assert out == (f"nothing changed: {HUB.url}/{target} at {head} already holds lambda-0.55, the sweep's choice for "
                   "this recipe and the same inputs; nothing was merged or pushed\n")
    assert pushed(list(HUB.requests)[mark:]) == []
    recipe.write_text(recipe.read_text().replace("# a sweep on a schedule", "# a comment changes nothing"))
    code, out, _ = run_main(capsys, "-q", "publish", str(recipe))
    assert code == 0 and out.startswith("nothing changed:")
    code, out, _ = run_main(capsys, "plan", str(recipe))
    assert code == 0 and ("Publish would: do nothing — main holds lambda-0.55, the sweep's choice for this recipe and "
                          "the same inputs") in out

    # an input changed upstream (cp's config gains a byte): the sweep runs again and main gets its choice again
    config = own_triplet / "cp" / "config.json"
    config.write_text(config.read_text() + "\n")
    mark = len(HUB.requests)
    code, out, err = run_main(capsys, "-q", "publish", str(recipe), "--dry-run")
    assert code == 0, err
    assert out.startswith("dry run: would sweep λ factors 0.5, 0.55, 0.65 again, evaluate each, publish it to its "
                          "branch lambda-F and the largest factor that passes eval.require to main — ")
    assert "config.json" in out and pushed(list(HUB.requests)[mark:]) == []
    code, out, _ = run_main(capsys, "plan", str(recipe))
    assert "Publish would: sweep λ factors 0.5, 0.55, 0.65 again (`sweep --publish`" in out
    code, out, err = run_main(capsys, "-q", "publish", str(recipe))
    assert code == 0, err
    assert "published main:" in out and "main holds lambda-0.55" in out
    assert writer.model_info(target).sha != head
    recorded = main_provenance(target, tmp_path / "c")
    assert recorded["sweep"]["factor"] == 0.55 and recorded["evaluation"]["sweep"]["chosen"] == 0.55
    code, out, _ = run_main(capsys, "-q", "publish", str(recipe))  # and the next day: nothing again
    assert code == 0 and "already holds lambda-0.55" in out


def test_new_factors_are_swept_again_and_the_choice_follows(triplet, tmp_path, capsys, writer):
    target = f"alice/sched-{uuid.uuid4().hex[:6]}"
    recipe = swept_recipe(triplet, "0.5, 0.65", target)
    code, out, err = run_main(capsys, "-q", "publish", str(recipe))  # a first scheduled run sweeps
    assert code == 0, err
    assert "main holds lambda-0.5:" in out
    recipe.write_text(recipe.read_text().replace("0.5, 0.65", "0.5, 0.58, 0.65"))
    code, out, err = run_main(capsys, "-q", "publish", str(recipe), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["changed"] is True and doc["sweep"]["chosen"] == 0.58 and doc["sweep"]["kept"] is False
    assert {b.name for b in writer.list_repo_refs(target).branches} == {"main", "lambda-0.5", "lambda-0.58",
                                                                       "lambda-0.65"}
    assert main_provenance(target, tmp_path / "c")["sweep"]["factor"] == 0.58


def test_options_of_one_commit_are_refused_for_a_swept_recipe(triplet, capsys, writer):
    recipe = swept_recipe(triplet, "0.5", f"alice/sched-{uuid.uuid4().hex[:6]}")
    mark = len(HUB.requests)
    code, _, err = run_main(capsys, "publish", str(recipe), "--create-pr")
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: publish --create-pr: {recipe} has `sweep:` and `eval:`, so publish keeps the sweep's choice (every "
        "variant on its branch, the best on main), which takes no --create-pr; leave it out, or publish one factor "
        "from a copy of the recipe without `sweep:`"]
    assert list(HUB.requests)[mark:] == []


def test_sweep_publish_runs_again_over_its_own_folder(triplet, tmp_path, capsys, writer):
    target = f"alice/sched-{uuid.uuid4().hex[:6]}"
    recipe = swept_recipe(triplet, "0.5, 0.65", target)
    args = ["-q", "sweep", str(recipe), "--out", str(tmp_path / "s"), "--publish"]
    code, _, err = run_main(capsys, *args)
    assert code == 0, err
    assert {"eval_responses.jsonl", "sweep.svg"} <= {p.name for p in (tmp_path / "s" / "lambda-0.5").iterdir()}
    mark = len(HUB.requests)
    code, out, err = run_main(capsys, *args)  # used to fail: "holds files chatvector did not write"
    assert code == 0, err
    assert "unchanged main:" in out and "published" not in out
    assert pushed(list(HUB.requests)[mark:]) == []


def test_sweep_eval_scores_the_variants_without_publishing(triplet, tmp_path, capsys):
    recipe = swept_recipe(triplet, "0.5, 0.55, 0.65")  # no target: nothing to publish to
    mark = len(HUB.requests)
    code, out, err = run_main(capsys, "-q", "sweep", str(recipe), "--out", str(tmp_path / "s"), "--eval")
    assert code == 0, err
    assert "  lambda-0.65/  fidelity 0.00, format 1.00: fails: fidelity 0.00 < 1 required" in out
    assert "--publish would put lambda-0.55 on main: the largest factor that passes eval.require" in out
    assert pushed(list(HUB.requests)[mark:]) == []
    summary = (tmp_path / "s" / "sweep.md").read_text(encoding="utf-8")
    assert "## Evaluation" in summary
    assert "| ×0.55 (chosen) | 1.00 | 1.00 | — | ✅ passes |" in summary
    assert "| ×0.65 | 0.00 | 1.00 | — | ❌ fidelity 0.00 \\< 1 required" in summary  # Markdown-escaped
    assert "Chosen: [lambda-0.55/](lambda-0.55/)" in summary and "](sweep.svg)" in summary
    report = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert report["evaluation"]["chosen"] == 0.55
    assert [v["passed"] for v in report["evaluation"]["variants"]] == [True, True, False]
    assert (tmp_path / "s" / "sweep.svg").is_file() and (tmp_path / "s" / "lambda-0.5" / "eval_responses.jsonl").is_file()
    code, _, err = run_main(capsys, "-q", "sweep", str(recipe), "--out", str(tmp_path / "s"), "--lambdas", "0.65",
                            "--eval")  # again over its own folder; none passes: said, not an error
    assert code == 0, err
    summary = (tmp_path / "s" / "sweep.md").read_text(encoding="utf-8")
    assert "No variant passes eval.require: `--publish` would push nothing." in summary


def test_sweep_eval_needs_an_eval_section_before_anything_is_merged(triplet, tmp_path, capsys):
    path = triplet / "bare.yaml"
    path.write_text("base: {path: base}\nchat: {path: chat}\ncp: {path: cp}\n")
    code, _, err = run_main(capsys, "sweep", str(path), "--lambdas", "0.5", "--out", str(tmp_path / "s"), "--eval")
    assert code == 2 and not (tmp_path / "s").exists()
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: sweep --eval: the recipe has no eval section to choose a variant by; add `eval: {language: ko, "
        "require: {fidelity: 0.9, format: 1.0}}`"]
