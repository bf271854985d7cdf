"""`chatvector plan` says what publishing would do: the target (created? private?), the commit or why nothing
would change (which input changed), the fetch mode and the disk, from the target's metadata only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import HUB, WRITE_TOKEN, weight_downloads
from tests.hubkit import seed_on


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """A tiny llama triplet under fresh names (cp gets new commits in a test): {role: repo_id}."""
    return seed_on(HUB.url, tmp_path_factory.mktemp("says"), TripletSpec(arch="llama", extra_cp_tokens=20),
                   prefix=f"says-{uuid.uuid4().hex[:6]}-")


def recipe_for(tmp_path: Path, sources: dict[str, str], target: str, private: bool = False) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: Says\nbase: {{repo_id: {sources['base']}}}\nchat: {{repo_id: {sources['chat']}}}\n"
        f"cp: {{repo_id: {sources['cp']}}}\ncoefficients: {{default: 0.9}}\n"
        f"target: {{repo_id: {target}, private: {'true' if private else 'false'}}}\ncard: {{license: mit}}\n")
    return path


@pytest.fixture
def plan_text(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)

    def run(recipe: Path, *extra: str) -> str:
        capsys.readouterr()
        code = main(["plan", str(recipe), *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    return run


def test_a_missing_target_will_be_created_and_the_commit_is_named(tmp_path, sources, plan_text, hub, api):
    target = f"alice/says-new-{uuid.uuid4().hex[:6]}"
    mark = len(hub.requests)
    out = plan_text(recipe_for(tmp_path, sources, target))
    assert f"Target: {target} (will be created)\n" in out
    cp_sha = api.model_info(sources["cp"]).sha
    assert 'Publish would: commit "chatvector: Says (' in out
    assert f"cp@{cp_sha[:7]}" in out and "the target does not exist yet" in out
    assert "Fetch: snapshot (" in out or "Fetch: stream (" in out
    assert "Disk: needs " in out and " into the HF cache " in out
    assert weight_downloads(list(hub.requests)[mark:]) == []
    assert not api.repo_exists(target)


def test_a_private_target_says_private(tmp_path, sources, plan_text):
    target = f"alice/says-private-{uuid.uuid4().hex[:6]}"
    assert f"Target: {target} (will be created, private)" in plan_text(recipe_for(tmp_path, sources, target, True))


def test_after_publishing_nothing_then_the_recipe_then_cp(tmp_path, sources, plan_text, api, monkeypatch, hub):
    target = f"alice/says-pub-{uuid.uuid4().hex[:6]}"
    recipe = recipe_for(tmp_path, sources, target)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    assert main(["publish", str(recipe)]) == 0
    head = api.model_info(target).sha

    mark = len(hub.requests)
    out = plan_text(recipe)
    assert f"Target: {target} at {head[:7]} (exists)" in out
    assert "Publish would: do nothing — the target's chatvector.json records this plan's fingerprint" in out
    assert "Fetch:" not in out
    assert weight_downloads(list(hub.requests)[mark:]) == []
    doc = json.loads(plan_text(recipe, "--json"))
    assert doc["publish"]["would"] == "nothing" and doc["publish"]["target"]["head"] == head

    recipe.write_text(recipe.read_text().replace("default: 0.9", "default: 0.5"))
    out = plan_text(recipe)
    assert "Publish would: commit " in out and "the recipe changed (normalized sha256 " in out
    assert "cp changed" not in out
    recipe.write_text(recipe.read_text().replace("default: 0.5", "default: 0.9"))

    old_cp = api.model_info(sources["cp"]).sha
    upload_model(api, write_triplet(tmp_path / "m2", TripletSpec(arch="llama", extra_cp_tokens=20, seed=7))["cp"],
                 sources["cp"])
    new_cp = api.model_info(sources["cp"]).sha
    out = plan_text(recipe)
    assert f"cp changed: {old_cp[:7]} → {new_cp[:7]} (" in out, out
    assert "the recipe changed" not in out and "vectors[0].base changed" not in out


def test_a_recipe_without_target_says_fetch_and_disk(tmp_path, plan_text):
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    out = plan_text(recipe)
    assert "Target:" not in out and "Publish would" not in out
    assert "Fetch: snapshot (every input is a local folder, read in place)" in out
    assert "Disk: needs " in out and "HF cache" not in out
