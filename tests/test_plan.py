"""`chatvector plan`: recipes checked against real checkpoint metadata on the local Hub, no weights fetched."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from chatvector.cli import main
from chatvector.recipe import load_recipe
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import OTHER_WRITER, RECIPES, WRITE_TOKEN, weight_downloads

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in RECIPES.glob("*.yaml"))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvector", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.mark.parametrize("name", EXAMPLES)
def test_plan_of_every_example_recipe(name, example_repos, hub, hub_env, api):
    mark = len(hub.requests)
    result = run_cli(["plan", str(RECIPES / name), "--json"], hub_env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    recipe = load_recipe(RECIPES / name)
    for role, repo_id in example_repos[name].items():
        source = plan["sources"][role]
        assert source["repo_id"] == repo_id and source["sha"] == api.model_info(repo_id).sha
    layers = plan["sources"]["cp"]["layers"]
    assert plan["layers"]["coefficients"] == recipe.coefficients.layer_values(layers)
    for tensor in plan["tensors"]:
        expected = recipe.coefficients.value_for(tensor["name"], layers)
        assert tensor["lambdas"] == [v.weight * expected for v in recipe.vectors], tensor["name"]
        assert ("kept" in tensor) == (expected == 0), tensor["name"]
    assert plan["output"]["bytes"] == sum(
        2 * __import__("math").prod(t["shape"]) for t in plan["tensors"])  # every example writes bf16
    assert plan["download_bytes"] > 0 and all(files for files in plan["download_files"].values())
    assert weight_downloads(list(hub.requests)[mark:]) == []


def test_plan_text_shows_sources_coefficients_and_kept_tensors(example_repos, hub_env):
    result = run_cli(["plan", str(RECIPES / "demo.yaml")], hub_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    sha = HfApi(token=WRITE_TOKEN.secret).model_info("demo/tiny-llama-cp").sha
    assert f"demo/tiny-llama-cp@{sha}" in out
    assert "layers   0-1: 0.8 | 2-3: 1" in out
    assert "[0] 'norm' → 0" in out
    assert "'<|eot_id|>': cp row" in out
    assert "model.norm.weight: coefficient 0 (module rule 0 ('norm'))" in out
    assert "Vocabulary rows that keep cp's values (tokens only cp has)\n  model.embed_tokens.weight: rows 405..424" in out
    assert "cp adds 20 tokens" in out


# -- compatibility errors ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict[str, str]:
    """A tiny llama triplet (cp with 20 extra tokens) on the hub: {role: repo_id}."""
    folders = write_triplet(tmp_path_factory.mktemp("llama"), TripletSpec(arch="llama", extra_cp_tokens=20))
    api = HfApi(token=WRITE_TOKEN.secret)
    return {role: upload_model(api, f, f"alice/plan-llama-{role}") and f"alice/plan-llama-{role}"
            for role, f in folders.items()}


def plan_exit(tmp_path, capsys, monkeypatch, body: str, token: str | None = WRITE_TOKEN.secret) -> tuple[int, str]:
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(body)
    code = main(["plan", str(recipe)])
    err = capsys.readouterr().err.strip()
    return code, err


def recipe_text(llama: dict[str, str], **overrides: str) -> str:
    roles = {role: f"{{repo_id: {repo}}}" for role, repo in llama.items()} | overrides
    return "\n".join(f"{role}: {value}" for role, value in roles.items()) + "\n"


def test_plan_of_local_folders(tmp_path, capsys):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="qwen2"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    assert main(["plan", str(recipe), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sources"]["cp"]["path"] == str(folders["cp"]) and plan["sources"]["cp"]["sha"] is None
    assert plan["sources"]["cp"]["tied_embeddings"] is True and plan["download_bytes"] == 0


def test_architecture_mismatch(tmp_path, capsys, monkeypatch, llama):
    other = write_triplet(tmp_path / "q", TripletSpec(arch="qwen2"))["cp"]
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {other}}}"))
    assert code == 2
    assert err.startswith(f"error: {tmp_path}/r.yaml:1: base: alice/plan-llama-base@")
    assert "is a llama model but cp" in err and "qwen2 model" in err


def test_layer_count_mismatch(tmp_path, capsys, monkeypatch, llama):
    deeper = write_triplet(tmp_path / "d", TripletSpec(arch="llama", num_layers=6))["chat"]
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, chat=f"{{path: {deeper}}}"))
    assert code == 2 and f"r.yaml:2: chat: {deeper} has 6 layers but cp (alice/plan-llama-cp@" in err
    assert err.endswith("has 4; base, chat and cp must be the same model size")


def test_shape_mismatch_lists_tensors(tmp_path, capsys, monkeypatch, llama):
    other = write_triplet(tmp_path / "w", TripletSpec(arch="llama", intermediate_size=96))["cp"]
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {other}}}"))
    assert code == 2 and err.startswith("error: tensors do not match: model.layers.0.mlp.gate_proj.weight: "
                                        "shape [96, 64] in cp but [128, 64] in base and chat; ")
    assert "... and 2 more" in err  # 4 layers × 3 MLP tensors, 10 listed


def test_vocabulary_misalignment(tmp_path, capsys, monkeypatch, llama):
    cp = write_triplet(tmp_path / "v", TripletSpec(arch="llama", extra_cp_tokens=20))["cp"]
    tok = json.loads((cp / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = [t for t, i in vocab.items() if i in (100, 101)]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (cp / "tokenizer.json").write_text(json.dumps(tok))
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {cp}}}"))
    assert code == 2 and "vocabularies do not line up: token 100 is" in err


def test_layer_out_of_range_names_recipe_line(tmp_path, capsys, monkeypatch, llama):
    body = recipe_text(llama) + 'coefficients:\n  layers: {"40": 0.5}\n'
    code, err = plan_exit(tmp_path, capsys, monkeypatch, body)
    assert code == 2
    assert err == f'error: {tmp_path}/r.yaml:5: coefficients.layers."40": layer 40 does not exist (the cp model has 4 layers)'


def test_unknown_special_token(tmp_path, capsys, monkeypatch, llama):
    body = recipe_text(llama) + 'special_tokens: ["<|eot_id|>", "<|nope|>"]\n'
    code, err = plan_exit(tmp_path, capsys, monkeypatch, body)
    assert code == 2 and "special_tokens[1]: token '<|nope|>' is not in cp's tokenizer" in err


def test_missing_repo(tmp_path, capsys, monkeypatch, llama):
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, base="{repo_id: alice/no-such-model}"))
    assert code == 2 and err.endswith("base.repo_id: repository alice/no-such-model was not found on the Hub "
                                      "(or it is private and the token, if any, has no access)")


def test_unknown_revision(tmp_path, capsys, monkeypatch, llama):
    body = recipe_text(llama, chat=f"{{repo_id: {llama['chat']}, revision: v9}}")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, body)
    assert code == 2 and err.endswith(f"chat.revision: revision 'v9' does not exist in {llama['chat']}")


def test_private_repo_without_token(tmp_path, capsys, monkeypatch, llama):
    private = f"alice/private-{uuid.uuid4().hex[:6]}"
    HfApi(token=WRITE_TOKEN.secret).create_repo(private, private=True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{repo_id: {private}}}"), token=None)
    assert code == 2 and f"cp.repo_id: repository {private} was not found" in err


def test_gated_repo(tmp_path, capsys, monkeypatch, llama):
    gated = f"carol/gated-{uuid.uuid4().hex[:6]}"
    owner = HfApi(token=OTHER_WRITER.secret)
    owner.create_repo(gated)
    owner.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=gated)
    owner.update_repo_settings(gated, gated="auto")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, base=f"{{repo_id: {gated}}}"))
    assert code == 2 and f"base.repo_id: {gated} is gated" in err


INVALID = sorted((ROOT / "tests" / "invalid_recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_recipes_fail_before_any_hub_request(path, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    mark = len(hub.requests)
    assert main(["plan", str(path)]) == 2
    expect = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    assert expect in capsys.readouterr().err
    assert list(hub.requests)[mark:] == []


def test_unreachable_hub_is_one_clear_line(hub_env):
    env = dict(hub_env, HF_ENDPOINT="http://127.0.0.1:1")  # nothing listens on port 1
    result = run_cli(["plan", str(RECIPES / "demo.yaml")], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: cannot reach the Hub at http://127.0.0.1:1 for demo/tiny-llama-base: "
                                     "[Errno 111] Connection refused")


def test_chat_template_that_does_not_parse_fails_the_plan(tmp_path, capsys, monkeypatch, llama):
    chat = write_triplet(tmp_path / "t", TripletSpec(arch="llama"))["chat"]
    (chat / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% broken %}")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, chat=f"{{path: {chat}}}"))
    assert code == 2 and "output.chat_template: the chat template does not parse (line 1): " in err
