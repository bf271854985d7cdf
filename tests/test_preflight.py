"""Pre-flight checks: what would fail after a long download fails first, in one line, with no weight request."""

from __future__ import annotations

import json
import re
import shutil
import struct
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from chatvector.build import preflight
from chatvector.cli import main
from chatvector.localhub import LocalHub, Org, Token
from chatvector.localhub.protocol import FineGrained, Scoped
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import OTHER_WRITER, WRITE_TOKEN


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    folders = write_triplet(tmp_path_factory.mktemp("pre"), TripletSpec(arch="llama"))
    api = HfApi(token=WRITE_TOKEN.secret)
    return {role: upload_model(api, f, f"alice/pre-{role}") and f"alice/pre-{role}" for role, f in folders.items()}


def hub_recipe(tmp_path: Path, sources: dict[str, str], target: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text("".join(f"{role}: {{repo_id: {repo}}}\n" for role, repo in sources.items())
                    + f"target: {{repo_id: {target}}}\n")
    return path


def test_a_token_that_cannot_write_to_the_target_namespace_is_refused_first(tmp_path, sources, hub, monkeypatch,
                                                                          capsys, api):
    monkeypatch.setenv("HF_TOKEN", OTHER_WRITER.secret)  # carol: a write token, member of no org
    target = f"my-org/preflight-{uuid.uuid4().hex[:6]}"
    mark = len(hub.requests)
    assert main(["publish", str(hub_recipe(tmp_path, sources, target))]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the token cannot write to {target} (user carol, orgs: team (write)): my-org is not carol's "
        "namespace nor an org of theirs; change target.repo_id or use a token of an account that may write there")
    assert [r.path for r in list(hub.requests)[mark:]] == ["/api/whoami-v2"]
    assert not api.repo_exists(target)


@pytest.fixture(scope="module")
def org_hub(tmp_path_factory):
    """A hub of its own: org `acme` with a writer, a reader and a contributor; fine-grained tokens of dan."""
    tokens = [
        Token("wendy", "hf_wendy", "write"), Token("rita", "hf_rita", "write"), Token("cody", "hf_cody", "write"),
        Token("dan", "hf_dan_ns", fine_grained=FineGrained((Scoped("user", "dan", ("repo.write",)),))),
        Token("dan", "hf_dan_repo", fine_grained=FineGrained((Scoped("model", "acme/one", ("repo.write",)),))),
        Token("dan", "hf_dan_read", fine_grained=FineGrained((Scoped("user", "dan", ("repo.content.read",)),))),
    ]
    orgs = [Org("acme", {"wendy": "write", "rita": "read", "cody": "contributor", "dan": "write"})]
    with LocalHub(tmp_path_factory.mktemp("orghub"), tokens=tokens, orgs=orgs) as other:
        HfApi(endpoint=other.url, token="hf_wendy").create_repo("acme/one")  # dan's repo-scoped token writes here
        yield other


@pytest.mark.parametrize("secret, repo_id, refusal", [
    ("hf_wendy", "acme/one", None),
    ("hf_wendy", "wendy/own", None),
    ("hf_cody", "acme/new", None),  # a contributor may create repos in the org
    ("hf_rita", "acme/one", "the token cannot write to acme/one (user rita, orgs: acme (read)): acme is not "
                            "rita's namespace and rita's role in it is read; change target.repo_id or use a token "
                            "of an account that may write there"),
    ("hf_wendy", "zed/x", "the token cannot write to zed/x (user wendy, orgs: acme (write)): zed is not wendy's "
                          "namespace nor an org of theirs; change target.repo_id or use a token of an account that "
                          "may write there"),
    ("hf_dan_ns", "dan/x", None),
    ("hf_dan_repo", "acme/one", None),
    ("hf_dan_repo", "acme/two", "the fine-grained token of dan has no repo.write permission for acme/two (nor for "
                                "acme); add it to the token's scopes on the Hub, or use another token"),
    ("hf_dan_read", "dan/x", "the fine-grained token of dan has no repo.write permission for dan/x (nor for dan); "
                             "add it to the token's scopes on the Hub, or use another token"),
], ids=["org-writer", "own", "contributor-creates", "org-reader", "foreign", "fine-namespace", "fine-repo",
        "fine-other-repo", "fine-read-only"])
def test_write_access_follows_the_hubs_namespace_rules(org_hub, secret, repo_id, refusal):
    api = HfApi(endpoint=org_hub.url, token=secret)
    problems = preflight.check_write_access(api, repo_id)
    assert [p.text for p in problems] == ([refusal] if refusal else [])
    if refusal is None:  # what the check allows the server allows, and what it refuses the server refuses
        api.create_repo(repo_id, exist_ok=True)
    else:
        with pytest.raises(HfHubHTTPError) as info:
            api.create_repo(repo_id, exist_ok=False)
        assert info.value.response.status_code == 403


def test_the_commands_client_is_the_one_given(org_hub, tmp_path, hub):
    """publish talks to the Hub its client names, never to HF_ENDPOINT's (one client for the whole command)."""
    from chatvector.publish.publish import publish
    from chatvector.recipe.recipe import load_recipe

    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\ntarget: {repo_id: wendy/elsewhere}\n")
    mark_session, mark_other = len(hub.requests), len(org_hub.requests)
    result = publish(load_recipe(recipe), api=HfApi(endpoint=org_hub.url, token="hf_wendy"))
    assert result.changed and HfApi(endpoint=org_hub.url, token="hf_wendy").file_exists("wendy/elsewhere",
                                                                                           "chatvector.json")
    assert list(hub.requests)[mark_session:] == [] and len(org_hub.requests) > mark_other


# -- disk ----------------------------------------------------------------------------------------------------
def add_sparse_shard(folder: Path, name: str, nbytes: int) -> None:
    """One more weight file holding a bf16 tensor of `nbytes`, sparse on disk: a model larger than the disk."""
    elements = nbytes // 2
    header = json.dumps({"__metadata__": {"format": "pt"},
                         name: {"dtype": "BF16", "shape": [elements], "data_offsets": [0, elements * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    shard = folder / "model-huge.safetensors"
    with open(shard, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + elements * 2)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"][name] = shard.name
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_not_enough_disk_for_the_output_is_refused_before_any_work(tmp_path, capsys):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    free = shutil.disk_usage(tmp_path).free
    add_sparse_shard(folders["cp"], "model.huge.weight", free + 10**12)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    assert main(["merge", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: not enough free disk: the run writes [\d.]+ TB into {tmp_path}, [\d.]+ TB in all, "
                        r"but [\d.]+ [kMGT]?B is free there; free space, or point HF_HOME or --out at a larger disk",
                        err), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_download_need_counts_only_what_the_cache_lacks(tmp_path, sources, monkeypatch):
    from chatvector.fetch.inputs import fetch
    from chatvector.hub.client import connect
    from chatvector.plan.planner import make_plan
    from chatvector.recipe.recipe import load_recipe

    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "home" / "hub"))
    api = connect(token=WRITE_TOKEN.secret)
    plan = make_plan(load_recipe(hub_recipe(tmp_path, sources, "alice/unused")), api)
    assert preflight.bytes_to_download(plan) == plan.download_bytes > 0
    fetch(plan, api)
    assert preflight.bytes_to_download(plan) == 0


@pytest.mark.gpu
def test_gpu_memory_check_refuses_buffers_larger_than_the_device(tmp_path):
    import torch

    free, _ = torch.cuda.mem_get_info()
    assert preflight.gpu_bytes_needed(64 << 20, 1) < free  # the default buffers fit a real GPU
    assert preflight.gpu_bytes_needed(free, 2) > free
