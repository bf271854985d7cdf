"""plan.json is a lock: `merge|publish RECIPE --plan plan.json` uses exactly its commits and decisions, and
refuses when the recipe or an input changed since."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import RECIPES, WRITE_TOKEN, weight_downloads


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def write_plan(recipe: Path, out: Path, capsys) -> Path:
    capsys.readouterr()
    assert main(["plan", str(recipe), "--json"]) == 0
    out.write_text(capsys.readouterr().out)
    return out


@pytest.fixture
def local_recipe(tmp_path) -> Path:
    write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                      'coefficients: {default: 0.7, modules: [{match: "norm", value: 0.0}]}\n'
                      'special_tokens: ["<|eot_id|>"]\noutput: {shard_size: 100KB}\n')
    return recipe


@pytest.mark.slow
def test_a_hub_plan_round_trips_into_merge_with_byte_identical_output(tmp_path, example_repos, hub, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    recipe = RECIPES / "demo.yaml"
    plan_file = write_plan(recipe, tmp_path / "plan.json", capsys)
    assert main(["merge", str(recipe), "--out", str(tmp_path / "fresh"), "--device", "cpu"]) == 0
    # Another machine: an empty cache, only the lock. The lock's commits are fetched, nothing is re-planned.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "other_home"))
    mark = len(hub.requests)
    assert main(["merge", str(recipe), "--plan", str(plan_file), "--out", str(tmp_path / "locked"),
                 "--device", "cpu"]) == 0
    assert digests(tmp_path / "locked") == digests(tmp_path / "fresh")
    shas = {s["sha"] for s in json.loads(plan_file.read_text())["sources"].values()}
    resolved = [r.path for r in list(hub.requests)[mark:] if "/revision/" in r.path]
    assert resolved and all(path.rsplit("/", 1)[1] in shas for path in resolved)  # only the pinned commits


def test_a_local_plan_round_trips_into_merge(tmp_path, local_recipe, capsys):
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    assert main(["merge", str(local_recipe), "--out", str(tmp_path / "a")]) == 0
    assert main(["merge", str(local_recipe), "--plan", str(plan_file), "--out", str(tmp_path / "b")]) == 0
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    provenance = json.loads((tmp_path / "b" / "chatvector.json").read_text())
    assert provenance["fingerprint"] == json.loads(plan_file.read_text())["fingerprint"]


def test_a_changed_input_is_refused(tmp_path, local_recipe, capsys):
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    config = tmp_path / "m" / "cp" / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps"', '"rms_norm_eps_x": 1, "rms_norm_eps"'))
    assert main(["merge", str(local_recipe), "--plan", str(plan_file), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: plan.json: cp ({tmp_path / 'm' / 'cp'}) is not what the plan read: config.json (changed); "
        "make it again: chatvector plan RECIPE --json > plan.json")
    assert not (tmp_path / "out").exists()


def test_a_changed_recipe_is_refused(tmp_path, local_recipe, capsys):
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    local_recipe.write_text(local_recipe.read_text().replace("default: 0.7", "default: 0.8"))
    assert main(["merge", str(local_recipe), "--plan", str(plan_file), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: plan.json was made from another recipe, or {local_recipe} changed since ({local_recipe} then); "
        "make it again: chatvector plan RECIPE --json > plan.json")


def test_a_comment_in_the_recipe_does_not_void_the_lock(tmp_path, local_recipe, capsys):
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    local_recipe.write_text("# reviewed, locked\n" + local_recipe.read_text())
    assert main(["merge", str(local_recipe), "--plan", str(plan_file), "--out", str(tmp_path / "out")]) == 0


def test_a_plan_of_another_version_is_refused(tmp_path, local_recipe, capsys):
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    doc = json.loads(plan_file.read_text())
    doc["tool"]["version"] = "0.0.1"
    plan_file.write_text(json.dumps(doc))
    assert main(["merge", str(local_recipe), "--plan", str(plan_file), "--out", str(tmp_path / "out")]) == 2
    assert "error: plan.json was made by chatvector 0.0.1, this is " in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "--plan {path}: no such file (write one with: chatvector plan RECIPE --json > plan.json)"),
    ("{not json", "--plan {path}: not JSON ("),
    ('{"format": 1, "tool": {}}', "--plan {path}: not a chatvector plan (KeyError: "),
], ids=["missing", "not-json", "not-a-plan"])
def test_a_bad_plan_file_is_one_line(tmp_path, local_recipe, capsys, content, message):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    assert main(["merge", str(local_recipe), "--plan", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(path=path)) and len(err.strip().splitlines()) == 1


def test_publish_dry_run_with_a_lock(tmp_path, local_recipe, capsys, hub):
    local_recipe.write_text(local_recipe.read_text() + "target: {repo_id: alice/locked-dry-run}\n")
    plan_file = write_plan(local_recipe, tmp_path / "plan.json", capsys)
    mark = len(hub.requests)
    assert main(["publish", str(local_recipe), "--plan", str(plan_file), "--dry-run", "--out",
                 str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("dry run: would commit to ")
    assert (tmp_path / "out" / "README.md").is_file() and weight_downloads(list(hub.requests)[mark:]) == []
