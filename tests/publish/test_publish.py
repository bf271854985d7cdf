"""`chatvector publish` against the local Hub: one commit, idempotent re-runs, PRs, tags, dry runs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, snapshot_download
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import HUB, READ_TOKEN, WRITE_TOKEN, weight_downloads
from tests.hubkit import seed_on


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """A tiny llama triplet on the hub under fresh names: {role: repo_id}."""
    return seed_on(HUB.url, tmp_path_factory.mktemp("pub"), TripletSpec(arch="llama", extra_cp_tokens=20),
                   prefix="pub-")


def recipe_for(tmp_path: Path, sources: dict[str, str], target: str, extra: str = "") -> Path:
    path = tmp_path / f"{target.split('/')[-1]}.yaml"
    path.write_text(
        f"name: Pub Test\nbase: {{repo_id: {sources['base']}}}\nchat: {{repo_id: {sources['chat']}}}\n"
        f"cp: {{repo_id: {sources['cp']}}}\n"
        'coefficients:\n  default: 0.9\n  layers: {"0-1": 0.6}\n  modules:\n    - {match: "norm", value: 0.0}\n'
        f"special_tokens: [\"<|eot_id|>\"]\ntarget: {{repo_id: {target}}}\n"
        "card: {license: mit, language: [ko], tags: [test]}\n" + extra
    )
    return path


def new_target() -> str:
    return f"alice/published-{uuid.uuid4().hex[:8]}"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def publish_cli(capsys, monkeypatch):
    """`chatvector publish ARGS` in-process (the process boundary is not what these tests are about)."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)

    def run(args: list[str]) -> Run:
        capsys.readouterr()
        code = main(["publish", *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def test_publish_end_to_end_then_rerun_is_a_noop(tmp_path, sources, hub, publish_cli, api, transfer):
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target, "output: {shard_size: 150KB}\n")
    result = publish_cli([str(recipe)])
    assert result.returncode == 0, result.stderr
    assert f"published {target} at " in result.stdout and WRITE_TOKEN.secret not in result.stdout + result.stderr

    commits = list(api.list_repo_commits(target))
    assert len(commits) == 2  # the repo's initial commit + exactly one commit with everything
    assert commits[0].title.startswith("chatvector: Pub Test (base@")
    files = set(api.list_repo_files(target))
    assert {"README.md", "coefficients.svg", "chatvector.json", "config.json", "generation_config.json",
            "tokenizer.json", "chat_template.jinja", "model.safetensors.index.json"} <= files
    assert sum(f.startswith("model-0") for f in files) >= 2

    local = Path(snapshot_download(target, token=WRITE_TOKEN.secret))
    tokenizer = AutoTokenizer.from_pretrained(local)
    model = AutoModelForCausalLM.from_pretrained(local)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] > inputs["input_ids"].shape[1]

    card = ModelCard((local / "README.md").read_text())
    assert card.data.base_model == [sources["cp"], sources["chat"], sources["base"]]
    assert card.data.base_model_relation == "merge" and "chat-vector" in card.data.tags
    for repo in sources.values():
        assert api.model_info(repo).sha in card.text  # each source pinned to its commit
    assert "| 0–1 | 0.6 |" in card.text and "| `norm` | 0.0 |" in card.text
    provenance = json.loads((local / "chatvector.json").read_text())
    assert provenance["inputs"]["cp"]["sha"] == api.model_info(sources["cp"]).sha

    head = api.model_info(target).sha
    mark = len(hub.requests)
    again = publish_cli([str(recipe)])
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing changed:")
    assert api.model_info(target).sha == head
    log = list(hub.requests)[mark:]
    assert weight_downloads(log) == []
    assert not any(r.method == "POST" and "/commit/" in r.path for r in log)


def test_new_cp_revision_makes_a_new_commit_without_stale_shards(tmp_path, publish_cli, api):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
    repos = {role: f"alice/moving-{uuid.uuid4().hex[:6]}-{role}" for role in folders}
    for role, folder in folders.items():
        upload_model(api, folder, repos[role])
    target = new_target()
    recipe = recipe_for(tmp_path, repos, target, "output: {shard_size: 150KB}\n")
    assert publish_cli([str(recipe)]).returncode == 0
    old_files = set(api.list_repo_files(target))
    assert "model.safetensors.index.json" in old_files

    # Upstream moves: a new cp revision (new weights), and the recipe now asks for one big shard.
    upload_model(api, write_triplet(tmp_path / "m2", TripletSpec(arch="llama", extra_cp_tokens=20, seed=7))["cp"],
                 repos["cp"])
    recipe.write_text(recipe.read_text().replace("150KB", "1GB"))
    result = publish_cli([str(recipe)])
    assert result.returncode == 0, result.stderr
    files = set(api.list_repo_files(target))
    assert "model.safetensors" in files
    assert not any(f.startswith("model-0") for f in files) and "model.safetensors.index.json" not in files
    assert len(list(api.list_repo_commits(target))) == 3
    provenance = json.loads(Path(snapshot_download(target, allow_patterns=["chatvector.json"],
                                                   token=WRITE_TOKEN.secret), "chatvector.json").read_text())
    assert provenance["inputs"]["cp"]["sha"] == api.model_info(repos["cp"]).sha


def test_dry_run_pushes_nothing_and_shows_files_and_card(tmp_path, sources, publish_cli, api):
    target = new_target()
    out = tmp_path / "preview"
    result = publish_cli([str(recipe_for(tmp_path, sources, target)), "--dry-run", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"dry run: would commit to {api.endpoint}/{target}")
    assert "  + README.md" in result.stdout and f"card: {out / 'README.md'}" in result.stdout
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and card.rstrip() in result.stdout  # the card it would commit is shown
    assert not api.repo_exists(target)


def test_create_pr_leaves_main_alone_and_tag(tmp_path, sources, monkeypatch, capsys, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target)
    assert main(["publish", str(recipe), "--tag", "v1"]) == 0
    head = api.model_info(target).sha
    assert [t.name for t in api.list_repo_refs(target).tags] == ["v1"]
    assert api.list_repo_refs(target).tags[0].target_commit == head
    recipe.write_text(recipe.read_text().replace("default: 0.9", "default: 0.5"))
    capsys.readouterr()
    assert main(["publish", str(recipe), "--create-pr"]) == 0
    assert "pull request" in capsys.readouterr().out
    assert api.model_info(target).sha == head
    refs = api.list_repo_refs(target, include_pull_requests=True)
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    assert api.file_exists(target, "model.safetensors", revision="refs/pr/1")
    capsys.readouterr()
    assert main(["publish", str(recipe), "--create-pr"]) == 0  # the same proposal again: no second PR
    assert "already proposes this output" in capsys.readouterr().out
    assert len(api.list_repo_refs(target, include_pull_requests=True).pull_requests) == 1


def test_verification_failure_blocks_the_push(tmp_path, monkeypatch, capsys, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    shard = sorted(folders["cp"].glob("model-*.safetensors"))[0]
    tensors = load_file(shard)
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, shard, metadata={"format": "pt"})
    target = new_target()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {{path: m/base}}\nchat: {{path: m/chat}}\ncp: {{path: m/cp}}\ntarget: {{repo_id: {target}}}\n")
    assert main(["publish", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: verification failed: all tensors finite: ") and name in err
    assert not api.repo_exists(target)


def test_publish_needs_a_target(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {repo_id: a/b}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\n")
    assert main(["publish", str(recipe)]) == 2
    assert "target.repo_id: no target repository" in capsys.readouterr().err


@pytest.mark.parametrize("token, message", [
    (READ_TOKEN.secret, "the token of bob is read-only: publishing to {target} needs write access; create a token "
                        "with the write role at {endpoint}/settings/tokens and set HF_TOKEN to it (or use --dry-run)"),
    ("hf_not_a_token", "publishing to {target} needs a valid write token: set HF_TOKEN (the Hub answered 401)"),
    (None, "publishing to {target} needs a token with write access: set HF_TOKEN or run `hf auth login` "
           "(or use --dry-run)"),
], ids=["read-only", "invalid", "missing"])
def test_publishing_without_a_usable_token_fails_before_any_download(tmp_path, sources, monkeypatch, capsys, api, hub,
                                                                     token, message):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    target = new_target()
    mark = len(hub.requests)
    assert main(["publish", str(recipe_for(tmp_path, sources, target))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: " + message.format(target=target, endpoint=hub.url)
    assert [r.path for r in list(hub.requests)[mark:]] in ([], ["/api/whoami-v2"])  # nothing else was asked
    assert not api.repo_exists(target) and (token is None or token not in err)


def test_private_target_is_created_private(tmp_path, sources, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target)
    recipe.write_text(recipe.read_text().replace(f"target: {{repo_id: {target}}}",
                                                 f"target: {{repo_id: {target}, private: true}}"))
    assert main(["publish", str(recipe)]) == 0
    assert api.model_info(target).private is True
    assert not HfApi(token=False).repo_exists(target)


def test_card_license_falls_back_to_cps_card(tmp_path, capsys):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="qwen2"))
    (folders["cp"] / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [ko]\n---\n# a Korean CP\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
                      "target: {repo_id: alice/license-fallback}\n")
    assert main(["publish", str(recipe), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    card = ModelCard((tmp_path / "out" / "README.md").read_text())
    assert card.data.license == "apache-2.0"
    assert "README.md" not in json.loads((tmp_path / "out" / "chatvector.json").read_text())["output"]["files"]


# -- refusals that come before any download ---------------------------------------------------------------
def test_target_that_is_a_source_is_refused(tmp_path, sources, monkeypatch, capsys, hub):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    recipe = recipe_for(tmp_path, sources, sources["cp"])
    mark = len(hub.requests)
    assert main(["publish", str(recipe), "--force"]) == 2
    assert f"target.repo_id: {sources['cp']} is also the recipe's cp; publishing there would overwrite an input" \
        in capsys.readouterr().err
    assert list(hub.requests)[mark:] == []


def test_target_holding_foreign_files_needs_overwrite(tmp_path, sources, monkeypatch, capsys, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    api.create_repo(target)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=target)
    head = api.model_info(target).sha
    recipe = recipe_for(tmp_path, sources, target)
    assert main(["publish", str(recipe)]) == 2
    assert (f"{target} already holds files chatvector did not publish (e.g. config.json); choose another "
            "target.repo_id, or pass --overwrite to replace them") in capsys.readouterr().err
    assert api.model_info(target).sha == head
    assert main(["publish", str(recipe), "--force"]) == 2  # --force is "although unchanged", not "overwrite"
    assert "pass --overwrite to replace them" in capsys.readouterr().err and api.model_info(target).sha == head
    assert main(["publish", str(recipe), "--overwrite"]) == 0
    assert api.file_exists(target, "chatvector.json")


def test_existing_tag_is_refused_before_anything_is_pushed(tmp_path, sources, monkeypatch, capsys, api, hub):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target)
    assert main(["publish", str(recipe), "--tag", "v1"]) == 0
    head = api.model_info(target).sha
    recipe.write_text(recipe.read_text().replace("default: 0.9", "default: 0.8"))
    mark = len(hub.requests)
    assert main(["publish", str(recipe), "--tag", "v1"]) == 2
    assert f"--tag v1: {target} already has that tag" in capsys.readouterr().err
    assert api.model_info(target).sha == head and weight_downloads(list(hub.requests)[mark:]) == []
    assert main(["publish", str(recipe), "--tag", "bad tag"]) == 2
    assert "--tag 'bad tag'" in capsys.readouterr().err
    assert main(["publish", str(recipe), "--tag", "v3", "--create-pr"]) == 2
    assert "would tag a commit that is not on main" in capsys.readouterr().err


def test_comment_only_recipe_edit_is_a_noop_and_tag_pr_force_say_what_they_did(tmp_path, sources, monkeypatch,
                                                                               capsys, api, hub):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target)
    assert main(["publish", str(recipe)]) == 0
    head = api.model_info(target).sha
    recipe.write_text("# a new comment, nothing else changed\n" + recipe.read_text())
    capsys.readouterr()
    mark = len(hub.requests)
    assert main(["publish", str(recipe), "--tag", "v2"]) == 0  # a release of what the target holds: no merge
    out = capsys.readouterr().out
    assert out.startswith("nothing changed:") and out.rstrip().endswith("; tagged it v2")
    assert api.model_info(target).sha == head
    assert {t.name: t.target_commit for t in api.list_repo_refs(target).tags} == {"v2": head}
    assert weight_downloads(list(hub.requests)[mark:]) == []
    assert main(["publish", str(recipe), "--tag", "v2"]) == 2  # the tag exists: refused, as with changes
    assert f"--tag v2: {target} already has that tag" in capsys.readouterr().err
    assert main(["publish", str(recipe), "--create-pr"]) == 0
    out = capsys.readouterr().out
    assert "(no pull request was created: there is nothing new to propose; --force merges and pushes anyway)" in out
    assert main(["publish", str(recipe), "--force", "--tag", "t3"]) == 0  # merged and pushed again: the card
    out = capsys.readouterr().out  # quotes the recipe, whose new comment makes this a real commit, tagged
    new_head = api.model_info(target).sha
    assert out.startswith(f"published {target} at {new_head} ") and out.rstrip().endswith(", tagged t3")
    assert {t.name: t.target_commit for t in api.list_repo_refs(target).tags}["t3"] == new_head != head


def test_readme_only_upstream_commit_is_a_noop(tmp_path, sources, monkeypatch, capsys, api, hub):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = new_target()
    recipe = recipe_for(tmp_path, sources, target)
    assert main(["publish", str(recipe)]) == 0
    head, cp_before = api.model_info(target).sha, api.model_info(sources["cp"]).sha
    api.upload_file(path_or_fileobj=b"# The cp model\n\nNow with a card.\n", path_in_repo="README.md",
                    repo_id=sources["cp"])
    assert api.model_info(sources["cp"]).sha != cp_before  # upstream moved, but not what the merge reads
    mark = len(hub.requests)
    capsys.readouterr()
    assert main(["publish", str(recipe)]) == 0
    assert capsys.readouterr().out.startswith("nothing changed:")
    log = list(hub.requests)[mark:]
    assert weight_downloads(log) == [] and not any("/commit/" in r.path for r in log)
    assert api.model_info(target).sha == head


def test_card_template_errors_come_early_or_leave_nothing(tmp_path, sources, monkeypatch, capsys, hub):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    (tmp_path / "broken.j2").write_text("# {{ title }\n")
    recipe = recipe_for(tmp_path, sources, new_target(), "")
    recipe.write_text(recipe.read_text().replace("card: {license: mit,", "card: {template: broken.j2, license: mit,"))
    mark = len(hub.requests)
    assert main(["publish", str(recipe), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    assert "broken.j2:1:" in capsys.readouterr().err and list(hub.requests)[mark:] == []
    (tmp_path / "broken.j2").write_text("# {{ nope }}\n")  # parses, fails only when rendered: before the merge
    mark = len(hub.requests)
    assert main(["publish", str(recipe), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    assert "broken.j2:1: 'nope' is undefined (card.template)" in capsys.readouterr().err
    assert weight_downloads(list(hub.requests)[mark:]) == []
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_dry_run_without_out_keeps_nothing(tmp_path, sources, monkeypatch, capsys):
    import tempfile

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(["publish", str(recipe_for(tmp_path, sources, new_target())), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "card (use --out DIR to keep the files):" in out and "---\nbase_model:" in out
    assert list((tmp_path / "tmp").iterdir()) == []
