"""`publish --revision BRANCH` (and `target.revision`): commit to a branch of the target, as `hf upload
--revision` does: a missing branch is created from the default branch's head, main is left as it was."""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi

from tests.conftest import WRITE_TOKEN
from tests.hubkit import recipe, run_main, seed_on


@pytest.fixture(scope="module")
def branch_sources(tmp_path_factory):
    from chatvector.testing.tinymodels import TripletSpec
    from tests.conftest import HUB

    return seed_on(HUB.url, tmp_path_factory.mktemp("branch"), TripletSpec(arch="llama", extra_cp_tokens=2),
                   prefix=f"br-{uuid.uuid4().hex[:6]}-")


def refs(api: HfApi, repo: str) -> dict[str, str]:
    return {b.name: b.target_commit for b in api.list_repo_refs(repo).branches}


def test_revision_commits_to_a_new_branch_then_is_a_noop_there_and_main_stays(tmp_path, branch_sources, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    api = HfApi(token=WRITE_TOKEN.secret)
    target = f"alice/branch-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, branch_sources, target=target)

    code, out, _ = run_main(capsys, "plan", str(r), "--revision", "dev")
    assert code == 0
    assert f"Target: {target} (will be created; branch dev will be created)" in out

    code, out, err = run_main(capsys, "publish", str(r), "--revision", "dev")
    assert code == 0, err
    assert out.startswith(f"published {target} branch dev at ")
    branches = refs(api, target)
    assert set(branches) == {"main", "dev"}
    assert out.split(" at ")[1].split()[0] == branches["dev"]
    main_files = set(api.list_repo_files(target, revision="main"))
    assert "chatvector.json" not in main_files  # main holds only what creating the repo put there
    assert "chatvector.json" in api.list_repo_files(target, revision="dev")

    code, out, _ = run_main(capsys, "publish", str(r), "--revision", "dev")
    assert code == 0 and out.startswith("nothing changed:")
    assert refs(api, target) == branches

    # main publishes on its own (the branch is not main's provenance); dev is not touched
    code, out, _ = run_main(capsys, "publish", str(r))
    assert code == 0 and out.startswith(f"published {target} at ")
    assert refs(api, target)["dev"] == branches["dev"]


def test_a_new_branch_of_a_target_already_holding_the_output_is_created_there_without_a_merge(
        tmp_path, branch_sources, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    api = HfApi(token=WRITE_TOKEN.secret)
    target = f"alice/branch-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, branch_sources, target=target)
    assert run_main(capsys, "publish", str(r))[0] == 0
    head = refs(api, target)["main"]
    r.write_text(r.read_text().replace(f"target: {{repo_id: {target}}}",
                                       f"target: {{repo_id: {target}, revision: release}}"))
    code, out, _ = run_main(capsys, "plan", str(r))
    assert f"Target: {target} (exists; branch release will be created at {head[:7]})" in out
    assert "Publish would: do nothing" in out
    code, out, _ = run_main(capsys, "publish", str(r))
    assert code == 0
    assert out.startswith("nothing changed:") and "; created branch release there" in out
    assert refs(api, target) == {"main": head, "release": head}


@pytest.mark.parametrize("branch, says", [
    ("refs/pr/1", "'refs/pr/1' is a pull request's ref; use --create-pr to open a pull request"),
    ("a" * 40, "looks like a commit hash; give a branch name (e.g. main, dev)"),
    ("bad branch", "'bad branch' is not a valid branch name"),
])
def test_a_revision_that_is_not_a_branch_is_refused_before_anything_moves(tmp_path, branch_sources, capsys,
                                                                          monkeypatch, branch, says):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/branch-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, branch_sources, target=target)
    code, _, err = run_main(capsys, "publish", str(r), "--revision", branch)
    assert code == 2
    assert err.startswith("error: --revision: ") and says in err
    assert not HfApi(token=WRITE_TOKEN.secret).repo_exists(target)
    r.write_text(r.read_text().replace(f"target: {{repo_id: {target}}}",
                                       f"target: {{repo_id: {target}, revision: '{branch}'}}"))
    code, _, err = run_main(capsys, "plan", str(r))
    assert code == 2 and "target.revision" in err and says in err
