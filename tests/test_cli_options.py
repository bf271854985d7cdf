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
