"""Options every command takes after its name (`-v`, `-q`, `--token`), as the Hub's own `hf` CLI does."""

from __future__ import annotations

import uuid

from huggingface_hub import HfApi

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import READ_TOKEN, WRITE_TOKEN


def local_recipe(tmp_path, target: str | None = None) -> str:
    write_triplet(tmp_path / "m", TripletSpec(arch="llama"))
    text = "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
    if target:
        text += f"target: {{repo_id: {target}}}\ncard: {{license: mit}}\n"
    (tmp_path / "r.yaml").write_text(text)
    return str(tmp_path / "r.yaml")


def test_verbose_works_before_and_after_the_command(tmp_path, capsys):
    recipe = local_recipe(tmp_path)
    for argv in (["-v", "plan", recipe], ["plan", "-v", recipe], ["plan", recipe, "--verbose"]):
        assert main(argv) == 0
        assert "\nstages: " in "\n" + capsys.readouterr().err, argv  # -v ends with the stage times
    assert main(["plan", recipe]) == 0
    assert "stages: " not in capsys.readouterr().err


def test_quiet_leaves_only_the_result(tmp_path, capsys):
    recipe = local_recipe(tmp_path)
    assert main(["merge", recipe, "--out", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr()
    assert "fetch: snapshot" in loud.err and loud.out.startswith("wrote ")
    assert main(["merge", "-q", recipe, "--out", str(tmp_path / "b")]) == 0
    quiet = capsys.readouterr()
    assert quiet.out.startswith("wrote ") and "fetch:" not in quiet.err and "merge:" not in quiet.err


def test_token_option_is_the_token_used_and_never_printed(tmp_path, capsys, monkeypatch, api):
    target = f"alice/token-option-{uuid.uuid4().hex[:6]}"
    recipe = local_recipe(tmp_path, target)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN.secret)  # the environment's token may only read
    assert main(["publish", recipe]) == 2
    assert "the token of bob is read-only" in capsys.readouterr().err
    assert main(["publish", recipe, "--token", WRITE_TOKEN.secret]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"published {target} at ") and WRITE_TOKEN.secret not in out.out + out.err
    assert HfApi(token=WRITE_TOKEN.secret).file_exists(target, "chatvector.json")


def test_commit_message_and_private_options(tmp_path, capsys, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/options-{uuid.uuid4().hex[:6]}"
    recipe = local_recipe(tmp_path, target)
    assert main(["publish", recipe, "--private", "--commit-message", "Release 1: Korean chat"]) == 0
    info = HfApi(token=WRITE_TOKEN.secret).model_info(target)
    assert info.private is True
    assert HfApi(token=WRITE_TOKEN.secret).list_repo_commits(target)[0].title == "Release 1: Korean chat"
    capsys.readouterr()
    assert main(["publish", recipe]) == 0  # the message is not part of what is published: nothing changed
    assert capsys.readouterr().out.startswith("nothing changed:")


def test_every_option_that_takes_a_value_says_its_default_in_help():
    """As `hf upload --help` does: an option with a value is either required or its help names its default."""
    import argparse

    from chatvector.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = []
    for name, command in sub.choices.items():
        for action in command._actions:
            takes_value = action.option_strings and action.nargs != 0 and not action.required
            if takes_value and "default" not in command.formatter_class("x")._get_help_string(action):
                silent.append(f"{name} {action.option_strings[0]}")
    assert silent == []
    text = sub.choices["publish"].format_help()
    assert "--revision BRANCH" in text and "else main)" in text


# -- CLI conventions (issue 20, item 6) ----------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_token_quiet_and_verbose_go_before_the_command_too(tmp_path, capsys, monkeypatch, api):
    target = f"alice/token-first-{uuid.uuid4().hex[:6]}"
    recipe = local_recipe(tmp_path, target)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN.secret)
    code, out, err = run_cli(capsys, "--token", WRITE_TOKEN.secret, "-q", "publish", recipe)
    assert code == 0, err
    assert out.startswith(f"published {target} at ") and "fetch:" not in err and WRITE_TOKEN.secret not in out + err


def test_a_refused_token_given_with_the_option_is_the_one_blamed(tmp_path, capsys, monkeypatch):
    recipe = local_recipe(tmp_path, f"alice/bad-token-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)  # a good one in the environment: not the one used
    code, _, err = run_cli(capsys, "publish", recipe, "--token", "hf_not_a_token_of_this_hub")
    assert code == 2 and "--token" in err and "HF_TOKEN" not in err, err
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token_of_this_hub")
    code, _, err = run_cli(capsys, "publish", recipe)
    assert code == 2 and "HF_TOKEN" in err and "--token" not in err, err


def test_commit_description_is_the_commits(tmp_path, capsys, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/description-{uuid.uuid4().hex[:6]}"
    recipe = local_recipe(tmp_path, target)
    code, _, err = run_cli(capsys, "publish", recipe, "--commit-description", "Korean chat, λ 1.0; see the card")
    assert code == 0, err
    commit = api.list_repo_commits(target)[0]
    assert commit.message.startswith("Korean chat, λ 1.0; see the card\n\nRecipe "), commit.message


def test_dry_run_marks_unchanged_files_and_says_it_would_open_a_pr(tmp_path, capsys, monkeypatch, api):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    target = f"alice/dry-{uuid.uuid4().hex[:6]}"
    recipe = local_recipe(tmp_path, target)
    assert run_cli(capsys, "publish", recipe, "--commit-message", "first")[0] == 0
    code, out, err = run_cli(capsys, "publish", recipe, "--dry-run", "--force", "--create-pr")
    assert code == 0, err
    assert out.startswith(f"dry run: would open a pull request against main of {target} "), out
    listed = [line for line in out.splitlines() if line.startswith(("  + ", "  = "))]
    assert listed and all(line.startswith("  = ") and line.endswith(" bytes, unchanged)") for line in listed), listed
    code, out, _ = run_cli(capsys, "publish", recipe, "--dry-run", "--force")
    assert out.startswith(f"dry run: would commit to {api.endpoint}/{target}")


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    import subprocess
    import sys

    recipe = local_recipe(tmp_path)
    command = f"{sys.executable} -m chatvector plan {recipe} --json | true"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=120)
    assert result.stderr == "" and result.returncode == 141, result.stderr  # 128 + SIGPIPE, as `yes | true`


def test_an_endpoint_without_a_scheme_is_refused_at_once(tmp_path, capsys, monkeypatch):
    recipe = local_recipe(tmp_path, "alice/never")
    monkeypatch.setenv("HF_ENDPOINT", "localhost:8080")
    code, out, err = run_cli(capsys, "plan", recipe)
    assert code == 2 and out == ""
    assert err == ("error: HF_ENDPOINT='localhost:8080' is not a URL: give it with its scheme, e.g. "
                   "HF_ENDPOINT=http://localhost:8080 (or https://... for a server with TLS)\n")


def test_ctrl_c_says_nothing_was_pushed_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    import chatvector.publish.publish

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr(chatvector.publish.publish, "build_model", interrupted)
    code, _, err = run_cli(capsys, "publish", local_recipe(tmp_path, f"alice/ctrl-c-{uuid.uuid4().hex[:6]}"))
    assert code == 130
    assert err.splitlines()[-1] == ("interrupted: nothing was pushed; run the same command again to resume (shards "
                                    "already uploaded and files already downloaded are not redone)")


def test_hub_serve_takes_quiet_and_verbose(tmp_path):
    """-q: no line per request on stderr (the access log keeps them); -v: accepted as by every command."""
    import http.client
    import subprocess
    import sys

    for flag, echoed in (("-q", False), ("-v", True)):
        root = tmp_path / flag
        proc = subprocess.Popen([sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(root), flag],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().split()[-1]
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/api/models")
            assert conn.getresponse().status == 200
            conn.close()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert ("GET /api/models 200" in err) is echoed, err
        assert "GET /api/models 200" in (root / "access.log").read_text()


def test_eval_of_a_missing_folder_says_it_does_not_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "eval", "./missing")
    assert code == 2 and out == ""
    assert err == "error: model ./missing: the folder does not exist (nor is it a Hub repository id, namespace/name)\n"


def test_a_perplexity_threshold_without_a_reference_is_refused_before_generating(tmp_path, capsys, monkeypatch):
    import chatvector.evaluation

    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluate() ran")

    monkeypatch.setattr(chatvector.evaluation, "evaluate", must_not_run)
    (tmp_path / "model").mkdir()
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "model"), "--language", "ko", "--require", "perplexity=1.5")
    assert code == 2
    assert err.startswith("error: --require perplexity=1.5: the threshold is on the ratio to a reference model; give "
                          "--reference DIR|REPO"), err


def test_a_tokenizer_error_is_told_whole(tmp_path, monkeypatch):
    """transformers breaks its message across lines; the first line alone ends mid-sentence ("...from one of:")."""
    import pytest
    import transformers

    from chatvector.plan.tokenizer_files import TokenizerUnreadable, read_tokenizer

    said = ("Couldn't instantiate the backend tokenizer from one of: \n(1) a `tokenizers` library serialization file, "
            "\n(2) a slow tokenizer instance to convert or \n(3) an equivalent slow tokenizer class to instantiate and "
            "convert. \nYou need to have sentencepiece or tiktoken installed to convert a slow tokenizer to a fast one.")

    def refuse(*args, **kwargs):
        raise ValueError(said)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    (tmp_path / "tokenizer.model").write_bytes(b"not sentencepiece")  # no tokenizer.json: transformers reads it
    with pytest.raises(TokenizerUnreadable) as caught:
        read_tokenizer(tmp_path)
    assert str(caught.value) == " ".join(said.split())
