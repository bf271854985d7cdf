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
from chatvector.recipe.recipe import load_recipe
from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
from tests.conftest import HUB, OTHER_WRITER, RECIPES, WRITE_TOKEN, weight_downloads

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in RECIPES.glob("*.yaml"))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvector", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.mark.parametrize("name", EXAMPLES)
def test_plan_of_every_example_recipe(name, example_repos, hub, api, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    mark = len(hub.requests)
    assert main(["plan", str(RECIPES / name), "--json"]) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
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


def test_plan_text_shows_sources_coefficients_and_kept_tensors(example_repos, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    assert main(["plan", str(RECIPES / "demo.yaml")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
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
    """Run `chatvector plan` on a recipe text; whatever it finds, it must not have asked for a weight byte."""
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(body)
    mark = len(HUB.requests)
    code = main(["plan", str(recipe)])
    err = capsys.readouterr().err.strip()
    assert weight_downloads(list(HUB.requests)[mark:]) == []
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
    assert code == 2 and err.endswith(f"chat.revision: revision 'v9' does not exist in {llama['chat']} (it has main)")


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
    assert result.stderr.strip() == ("error: cannot reach the Hub at http://127.0.0.1:1 for demo/tiny-llama-base "
                                     "(after 5 tries): [Errno 111] Connection refused; check the network (and "
                                     "HF_ENDPOINT) and run again")


def test_chat_template_that_does_not_parse_fails_the_plan(tmp_path, capsys, monkeypatch, llama):
    chat = write_triplet(tmp_path / "t", TripletSpec(arch="llama"))["chat"]
    (chat / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% broken %}")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, chat=f"{{path: {chat}}}"))
    assert code == 2 and "output.chat_template: the chat template does not parse (line 1): " in err


# -- every problem at once, with suggestions ----------------------------------------------------------------
def test_every_plan_problem_is_reported_at_once_in_file_order(tmp_path, capsys, monkeypatch, llama, hub, api):
    body = (f"base: {{repo_id: {llama['base']}}}\nchat: {{repo_id: {llama['chat']}, revision: mian}}\n"
            f"cp: {{repo_id: {llama['cp']}}}\n"
            'coefficients:\n  layers: {"7": 0.5}\n'
            'special_tokens: ["<|eot_id|>", "<|eot_idd|>", "<|nope|>"]\n'
            "card: {license: MIT, language: [korean, KO], tags: [merge, Merge]}\n")
    mark = len(hub.requests)
    code, err = plan_exit(tmp_path, capsys, monkeypatch, body)
    r, cp = tmp_path / "r.yaml", f"{llama['cp']}@{api.model_info(llama['cp']).sha}"
    assert code == 2
    assert err.splitlines() == [
        f"error: {r}:2: chat.revision: revision 'mian' does not exist in {llama['chat']} (did you mean 'main'?)",
        f'error: {r}:5: coefficients.layers."7": layer 7 does not exist (the cp model has 4 layers)',
        f"error: {r}:6: special_tokens[1]: token '<|eot_idd|>' is not in cp's tokenizer ({cp}) "
        "(did you mean '<|eot_id|>'?)",
        f"error: {r}:6: special_tokens[2]: token '<|nope|>' is not in cp's tokenizer ({cp})",
        f"error: {r}:7: card.license: 'MIT' is not a Hub license id (did you mean 'mit'?)",
        f"error: {r}:7: card.language[0]: 'korean' is a language name, not an ISO 639 code (did you mean 'ko'?)",
        f"error: {r}:7: card.language[1]: 'KO' must be in lower case (did you mean 'ko'?)",
        f"error: {r}:7: card.tags[1]: duplicate tag 'Merge' (the Hub compares tags ignoring case: 'merge' is "
        "already listed)",
    ]
    assert weight_downloads(list(hub.requests)[mark:]) == []


def test_duplicate_tags_within_the_recipe_are_refused(tmp_path, capsys, monkeypatch, llama):
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama) + "card: {tags: [korean, Korean]}\n")
    assert code == 2 and err == (f"error: {tmp_path}/r.yaml:4: card.tags[1]: duplicate tag 'Korean' (the Hub "
                                 "compares tags ignoring case: 'korean' is already listed)")


def test_license_other_needs_a_name(tmp_path, capsys, monkeypatch, llama):
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama) + "card: {license: other}\n")
    assert code == 2 and "card.license: license: other needs card.license_name" in err


@pytest.mark.parametrize("rules, field, message", [
    ('[{match: "layernrom", value: 0.0}]', "coefficients.modules[0].match",
     "'layernrom' matches no tensor of cp ({cp}) (did you mean 'layernorm'?)"),
    ('[{match: "norm", value: 0.0}, {match: "layernorm", value: 0.5}]', "coefficients.modules[1].match",
     "'layernorm' never decides a coefficient: every tensor it matches is matched first by rule 0 ('norm') "
     "(the first match wins); move it up or remove it"),
], ids=["typo", "shadowed"])
def test_module_rules_that_decide_nothing_are_errors(tmp_path, capsys, monkeypatch, llama, hub, api, rules, field,
                                                     message):
    mark = len(hub.requests)
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama) + f"coefficients:\n  modules: {rules}\n")
    cp = f"{llama['cp']}@{api.model_info(llama['cp']).sha}"
    assert code == 2 and err == f"error: {tmp_path}/r.yaml:5: {field}: " + message.format(cp=cp)
    assert weight_downloads(list(hub.requests)[mark:]) == []


# -- tokens the output needs ------------------------------------------------------------------------------
def _retokenize(folder: Path, drop: str) -> None:
    """Rename token `drop` in a tokenizer.json (its id stays, so rows still line up for the other tokens)."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    for entry in tok["added_tokens"]:
        if entry["content"] == drop:
            entry["content"] = "<|renamed|>"
    vocab = tok["model"]["vocab"]
    if drop in vocab:
        vocab["<|renamed|>"] = vocab.pop(drop)
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    for entry in (data.get("added_tokens_decoder") or {}).values():
        if entry.get("content") == drop:
            entry["content"] = "<|renamed|>"
    config.write_text(json.dumps(data))


def test_end_of_turn_and_template_tokens_missing_from_cp_fail_the_plan(tmp_path, capsys, monkeypatch, llama):
    cp = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))["cp"]
    _retokenize(cp, "<|eot_id|>")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {cp}}}"))
    assert code == 2
    lines = err.splitlines()
    assert f"error: {tmp_path}/r.yaml:2: chat: the chat model's end-of-turn token '<|eot_id|>' is not in cp's " \
           f"tokenizer ({cp}): generation could not stop at the end of a turn" in lines
    assert any("output.chat_template: the chat template writes '<|eot_id|>', which cp's tokenizer" in line
               and "split into pieces the model never saw" in line for line in lines)


def test_cp_without_tokenizer_files_fails_the_plan(tmp_path, capsys, monkeypatch, llama):
    cp = write_triplet(tmp_path / "m", TripletSpec(arch="llama"))["cp"]
    (cp / "tokenizer.json").unlink()
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {cp}}}"))
    assert code == 2 and err == (f"error: {tmp_path}/r.yaml:3: cp.path: {cp} has no tokenizer files (one of "
                                 "tokenizer.json, tokenizer.model, vocab.json, vocab.txt)")


def test_chat_template_that_does_not_render_fails_the_plan(tmp_path, capsys, monkeypatch, llama):
    chat = write_triplet(tmp_path / "t", TripletSpec(arch="llama"))["chat"]
    (chat / "chat_template.jinja").write_text("{{ raise_exception('no chats here') }}")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, chat=f"{{path: {chat}}}"))
    assert code == 2 and err.endswith("output.chat_template: the chat template does not render a sample "
                                      "conversation: no chats here")


# -- licenses ----------------------------------------------------------------------------------------------
def test_license_warning_when_the_output_license_differs_from_the_sources(tmp_path, capsys, monkeypatch):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="qwen2"))
    for role in ("base", "chat"):
        (folders[role] / "README.md").write_text("---\nlicense: llama3\n---\n# a model\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\ncard: {license: mit}\n"
                      "target: {repo_id: alice/license-warning}\n")
    assert main(["plan", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "Warnings\n  the output's license mit differs from its sources' licenses (base: llama3, chat: llama3)" \
           in out
    assert main(["publish", str(recipe), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "> **Note:** the output's license mit differs from its sources' licenses (base: llama3, chat: llama3)" \
           in card


# -- the two bugs ------------------------------------------------------------------------------------------
def test_local_source_inside_a_cache_folder_is_read(tmp_path, capsys):
    """A `path:` source under any `.cache` folder (the HF cache itself) is a normal folder."""
    write_triplet(tmp_path / ".cache" / "models", TripletSpec(arch="llama"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: .cache/models/base}\nchat: {path: .cache/models/chat}\n"
                      "cp: {path: .cache/models/cp}\n")
    assert main(["plan", str(recipe), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["sources"]["cp"]["weight_files"]) > 1 and plan["tensors"]


def _add_token_without_a_row(folder: Path, token: str) -> None:
    """The tokenizer lists one token more than the model has rows, as Qwen2's does after loading."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    next_id = max([*tok["model"]["vocab"].values(), *(t["id"] for t in tok["added_tokens"])]) + 1
    tok["added_tokens"].append({"id": next_id, "content": token, "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(tok))


def test_vocabulary_alignment_ignores_token_ids_past_the_embedding_rows(tmp_path, capsys):
    folders = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
    for role in ("base", "chat"):
        _add_token_without_a_row(folders[role], "<|endoftext|>")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n")
    assert main(["plan", str(recipe), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    rows = plan["sources"]["base"]["embedding_rows"]
    assert plan["sources"]["base"]["vocab_size"] == rows + 1  # the token past the rows
    embed = next(t for t in plan["tensors"] if t["name"] == "model.embed_tokens.weight")
    assert embed["delta_rows"] == rows and plan["vocabulary"]["cp_extra_tokens"] == 20


def test_a_source_named_by_two_vectors_is_read_and_counted_once(tmp_path, capsys, monkeypatch, llama, hub):
    body = (f"vectors:\n  - {{base: {{repo_id: {llama['base']}}}, chat: {{repo_id: {llama['chat']}}}, weight: 0.5}}\n"
            f"  - {{base: {{repo_id: {llama['base']}}}, chat: {{repo_id: {llama['chat']}}}, weight: 0.25}}\n"
            f"cp: {{repo_id: {llama['cp']}}}\n")
    (tmp_path / "r.yaml").write_text(body)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    mark = len(hub.requests)
    assert main(["plan", str(tmp_path / "r.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    infos = [r.path for r in list(hub.requests)[mark:] if r.path.startswith("/api/models/") and "/revision/" in r.path]
    assert len(infos) == 3  # base, chat and cp resolved once each
    assert sorted(plan["download_files"]) == ["cp", "vectors[0].base", "vectors[0].chat"]
    sizes = {role: s["files"] for role, s in plan["sources"].items()}
    assert plan["download_bytes"] == sum(sizes[role][f]["size"] for role, files in plan["download_files"].items()
                                         for f in files)
    embed = next(t for t in plan["tensors"] if t["name"] == "model.embed_tokens.weight")
    assert embed["lambdas"] == [0.5, 0.25]


def test_a_cp_tokenizer_larger_than_its_embeddings_fails_the_plan(tmp_path, capsys, monkeypatch, llama):
    cp = write_triplet(tmp_path / "m", TripletSpec(arch="llama"))["cp"]
    _add_token_without_a_row(cp, "<|endoftext|>")
    code, err = plan_exit(tmp_path, capsys, monkeypatch, recipe_text(llama, cp=f"{{path: {cp}}}"))
    rows = json.loads((cp / "config.json").read_text())["vocab_size"]
    assert code == 2 and err == (f"error: {tmp_path}/r.yaml:3: cp.path: cp's tokenizer ({cp}) has {rows + 1} token "
                                 f"ids but its embeddings have {rows} rows: ids from {rows} on would index past them "
                                 "in the output; use a cp whose tokenizer fits its model")
