"""Weights and card are separate facts: a card edit publishes the card's files alone (no weight read, no merge,
no shard upload), and the card's pinned recipe merges to byte-identical shard files."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import HUB, WRITE_TOKEN, file_registrations, file_uploads, weight_downloads
from tests.hubkit import seed_on

RULES = ('coefficients:\n  default: 0.9\n  layers: {"0-1": 0.6}\n  modules:\n    - {match: "norm", value: 0.0}\n'
         'special_tokens: ["<|eot_id|>"]\noutput: {shard_size: 150KB}\n')


@pytest.fixture(scope="module")
def card_sources(tmp_path_factory) -> dict[str, str]:
    return seed_on(HUB.url, tmp_path_factory.mktemp("cardonly"), TripletSpec(arch="llama", extra_cp_tokens=4),
                   prefix=f"cardonly-{uuid.uuid4().hex[:6]}-")


def write_recipe(path: Path, sources: dict[str, str], target: str, card: str = "tags: [test]",
                 name: str = "Card Only") -> Path:
    path.write_text(f"name: {name}\nbase: {{repo_id: {sources['base']}}}\nchat: {{repo_id: {sources['chat']}}}\n"
                    f"cp: {{repo_id: {sources['cp']}}}\n{RULES}target: {{repo_id: {target}}}\n"
                    f"card: {{license: mit, language: [ko], {card}}}\n")
    return path


def cli_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main([*args, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def weight_files(api: HfApi, repo: str) -> dict[str, str]:
    """{file: LFS sha256} of the target's weight files."""
    info = api.model_info(repo, files_metadata=True)
    return {s.rfilename: s.lfs.sha256 for s in info.siblings if s.rfilename.endswith(".safetensors")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_card_edit_publishes_the_card_files_alone(tmp_path, card_sources, hub, api, capsys, monkeypatch, transfer):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/card-only-{uuid.uuid4().hex[:6]}"
    recipe = write_recipe(tmp_path / "r.yaml", card_sources, target)
    full = cli_json(capsys, "publish", str(recipe))
    assert full["changed"] and not full["card_only"]
    shards, commits = weight_files(api, target), len(api.list_repo_commits(target))
    assert len(shards) >= 2

    write_recipe(recipe, card_sources, target, card="tags: [test, korean]")  # one tag more
    capsys.readouterr()
    assert main(["plan", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "Publish would: commit " in out and "card only: README.md, chatvector.json (" in out, out
    assert "Fetch:" not in out
    facts = cli_json(capsys, "plan", str(recipe))["publish"]
    assert facts["would"] == "card only" and facts["files"] == ["README.md", "chatvector.json"]

    mark = len(hub.requests)
    edit = cli_json(capsys, "publish", str(recipe))
    log = list(hub.requests)[mark:]
    assert edit["changed"] and edit["card_only"] and sorted(edit["added"]) == ["README.md", "chatvector.json"]
    assert edit["deleted"] == [] and edit["io"]["bytes_downloaded"] == 0
    assert weight_downloads(log) == [] and file_uploads(log) == [] and file_registrations(log) == []
    assert all(r.range for r in log if r.path.endswith(".safetensors"))  # only the plan's header reads
    assert not any(target in r.path and r.path.endswith(".safetensors") for r in log)  # none of the target's
    assert len(api.list_repo_commits(target)) == commits + 1  # one commit
    assert weight_files(api, target) == shards  # the shards' bytes are unchanged
    card = Path(api.hf_hub_download(target, "README.md", cache_dir=tmp_path / "c1")).read_text(encoding="utf-8")
    assert "- korean" in card
    recorded = json.loads(Path(api.hf_hub_download(target, "chatvector.json", cache_dir=tmp_path / "c1")).read_text())
    assert {"test", "korean"} <= set(recorded["card"]["tags"])
    assert recorded["verification"]["checks"] and recorded["output"]["files"]  # the model's record carried over

    again = cli_json(capsys, "publish", str(recipe))  # the card-only commit records this recipe: nothing to do
    assert not again["changed"]

    # A new name retitles the λ chart too; a new λ is not a card edit.
    write_recipe(recipe, card_sources, target, card="tags: [test, korean]", name="Card Only Renamed")
    facts = cli_json(capsys, "plan", str(recipe))["publish"]
    assert facts["files"] == ["README.md", "chatvector.json", "coefficients.svg"]
    recipe.write_text(recipe.read_text().replace("default: 0.9", "default: 0.8"))
    assert cli_json(capsys, "plan", str(recipe))["publish"]["would"] == "commit"

    print(f"\nbytes (tiny llama, {transfer}): full publish {full['io']['bytes_downloaded']} down, "
          f"{full['io']['bytes_uploaded']} up; card-only publish {edit['io']['bytes_downloaded']} down, "
          f"{edit['io']['bytes_uploaded']} up ({sum(edit['added'].values())} bytes in {sorted(edit['added'])})")


def test_the_cards_pinned_recipe_merges_to_byte_identical_shards(tmp_path, card_sources, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/card-pinned-{uuid.uuid4().hex[:6]}"
    recipe = write_recipe(tmp_path / "r.yaml", card_sources, target)
    assert main(["-q", "publish", str(recipe)]) == 0
    write_recipe(recipe, card_sources, target, card="tags: [test, edited]")
    assert main(["-q", "publish", str(recipe)]) == 0  # a card-only commit: its card shows the recipe pinned
    published = Path(snapshot_download(target, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "dl"))
    card = (published / "README.md").read_text(encoding="utf-8")
    assert "byte-identical weight files" in card and "gives these very weights" not in card
    pinned = card.split("## How to reproduce")[1].split("```yaml\n")[1].split("```")[0]
    assert "revision: main" not in pinned and "edited" in pinned
    (tmp_path / "pinned.yaml").write_text(pinned)
    assert main(["-q", "merge", str(tmp_path / "pinned.yaml"), "--out", str(tmp_path / "again")]) == 0
    weights = sorted(p.name for p in published.iterdir() if p.name.startswith("model"))
    assert len(weights) >= 3  # shards and their index
    assert {n: sha256(tmp_path / "again" / n) for n in weights} == {n: sha256(published / n) for n in weights}


def test_only_what_decides_a_tensor_is_in_the_weights_fingerprint(tmp_path):
    """Name, card, target and how a revision is written change the fingerprint, not the weights' hash (which the
    shards' headers record); a coefficient changes both."""
    from chatvector.hub.client import connect
    from chatvector.plan.planner import make_plan
    from chatvector.recipe.recipe import load_recipe
    from chatvector.runner import shard_metadata

    write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=4))
    head = "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n" + RULES

    def plan(text: str):
        (tmp_path / "r.yaml").write_text(text)
        return make_plan(load_recipe(tmp_path / "r.yaml"), connect())

    one = plan(head + "name: one\ncard: {license: mit, tags: [a]}\ntarget: {repo_id: alice/x}\n")
    two = plan(head + "name: two\ncard: {license: apache-2.0, tags: [a, b]}\ntarget: {repo_id: alice/y}\n"
               "commit_message: another\n")
    assert one.fingerprint["sha256"] != two.fingerprint["sha256"]
    assert one.weights_sha256 == two.weights_sha256 and one.fingerprint["model_sha256"] == two.fingerprint["model_sha256"]
    assert shard_metadata(one) == shard_metadata(two) == {"chatvector_weights_sha256": one.weights_sha256}
    three = plan(head.replace("default: 0.9", "default: 0.8"))
    assert three.weights_sha256 != one.weights_sha256
