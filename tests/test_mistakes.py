"""Typical user mistakes through the real CLI: each ends with one line that names the thing, the value and the fix,
exit code 2, no traceback, and nothing pushed (issue 12, item 8).

Most cases run in-process (`chatvector.cli.main` with capsys); the unreachable endpoint and Ctrl-C need a process of
their own. Each case pins the first line of the message with a precise regex.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chatvector.cli import main
from chatvector.testing.tinymodels import TripletSpec, write_triplet
from tests.conftest import HUB, OTHER_WRITER, READ_TOKEN, WRITE_TOKEN, weight_downloads
from tests.hubkit import env_for, seed_on

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """A tiny llama triplet on the session hub: {role: repo_id}."""
    return seed_on(HUB.url, tmp_path_factory.mktemp("mistakes"), TripletSpec(arch="llama", extra_cp_tokens=20),
                   prefix="mistake-")


def recipe_text(repos: dict[str, str], target_repo: str, **lines: str | None) -> str:
    """The recipe, one top-level key a line; a keyword replaces that line (None drops it, a new one is added)."""
    keys = {
        "name": "Mistake Test",
        "base": f"{{repo_id: {repos['base']}}}",
        "chat": f"{{repo_id: {repos['chat']}}}",
        "cp": f"{{repo_id: {repos['cp']}}}",
        "coefficients": '{default: 0.9, layers: {"0-1": 0.6}, modules: [{match: "norm", value: 0.0}]}',
        "special_tokens": '["<|eot_id|>"]',
        "output": "{shard_size: 150KB}",
        "target": f"{{repo_id: {target_repo}}}",
        "card": "{license: mit, language: [ko]}",
    } | lines
    return "".join(f"{key}: {value}\n" for key, value in keys.items() if value is not None)


def pushed(requests) -> list:
    """Requests that would change the Hub: a repo created, a preupload, a commit, an LFS upload, a tag."""
    return [r for r in requests if r.method in ("POST", "PUT", "DELETE") and (
        r.path.endswith("/api/repos/create") or "/preupload/" in r.path or "/commit/" in r.path
        or r.method == "PUT" or "/tag/" in r.path or "/branch/" in r.path or "/discussions" in r.path)]


@dataclass
class Case:
    """`args` with {recipe}, {other}, {tmp}, {target}, {cp} placeholders; the recipe's lines as in recipe_text."""
    args: list[str]
    expect: str  # a regex for the first error line, matched from its start (re.match) and to its end
    lines: dict = field(default_factory=dict)
    token: str | None = WRITE_TOKEN.secret
    raw: str | None = None  # the recipe file's whole text instead
    setup: str | None = None  # "local" (path sources), "plan-other", "plan-garbage"
    xfail: str | None = None


R = "{recipe}"
E = r"error: {recipe}:\d+: "  # the recipe's file and line
SHA = "[0-9a-f]{{40}}"
CASES = {
    # -- the recipe's own text
    "typo-in-key": Case(["plan", R], E + r"coeficients: unknown key 'coeficients' \(did you mean 'coefficients'\?\)",
                        lines={"coefficients": None, "coeficients": "{default: 1.0}"}),
    "bad-repo-id": Case(["plan", R], E + r"chat\.repo_id: expected a Hub repository id 'namespace/name' \(letters, "
                        r"digits, '-', '_' and '\.', not at either end; no '--' or '\.\.'\), got 'alice//chat'",
                        lines={"chat": "{repo_id: alice//chat}"}),
    "missing-repo": Case(["plan", R], E + r"chat\.repo_id: repository alice/mistake-chatt was not found on the Hub "
                         r"\(or it is private and the token, if any, has no access\) \(did you mean "
                         r"'alice/mistake-chat'\?\)",
                         lines={"chat": "{repo_id: alice/mistake-chatt}"}),
    "wrong-revision": Case(["plan", R], E + r"chat\.revision: revision 'mian' does not exist in alice/mistake-chat "
                           r"\(did you mean 'main'\?\)", lines={"chat": "{repo_id: alice/mistake-chat, revision: mian}"}),
    "short-hash": Case(["plan", R], E + r"chat\.revision: 'abc1234' looks like a shortened commit hash; give all 40 "
                       r"hex digits", lines={"chat": "{repo_id: alice/mistake-chat, revision: abc1234}"}),
    "layer-index": Case(["plan", R], E + r'coefficients\.layers\."40": layer 40 does not exist \(the cp model has 4 '
                        r"layers\)", lines={"coefficients": '{layers: {"40": 1.0}}'}),
    "layer-range": Case(["plan", R], E + r'coefficients\.layers\."2-9": layers 4-9 do not exist \(the cp model has 4 '
                        r"layers\)", lines={"coefficients": '{layers: {"2-9": 1.0}}'}),
    "gradient-under-layers": Case(["plan", R], E + r"coefficients\.layers\.gradient: 'gradient' is not a layer "
                                  r"range: it goes directly under coefficients \(coefficients\.gradient: \.\.\.\), "
                                  r"beside layers, not inside it",
                                  lines={"coefficients": "{layers: {gradient: [0.2, 1.0]}}"}),
    "layer-range-backwards": Case(["plan", R], E + r'coefficients\.layers\."3-1": range \'3-1\' ends before it starts; '
                                  r'write "1-3"', lines={"coefficients": '{layers: {"3-1": 1.0}}'}),
    "special-token": Case(["plan", R], E + r"special_tokens\[0\]: token '<\|eot_idd\|>' is not in cp's tokenizer "
                          r"\(alice/mistake-cp@" + SHA + r"\) \(did you mean '<\|eot_id\|>'\?\)",
                          lines={"special_tokens": '["<|eot_idd|>"]'}),
    "module-rule": Case(["plan", R], E + r"coefficients\.modules\[0\]\.match: 'layernrom' matches no tensor of cp "
                        r"\(alice/mistake-cp@" + SHA + r"\) \(did you mean 'layernorm'\?\)",
                        lines={"coefficients": '{modules: [{match: "layernrom", value: 0.0}]}'}),
    "license": Case(["plan", R], E + r"card\.license: 'MIT' is not a Hub license id \(did you mean 'mit'\?\)",
                    lines={"card": "{license: MIT}"}),
    "shard-size": Case(["plan", R], E + r'output\.shard_size: expected a size like "5GB", "500MB", "2GiB" or a number '
                       r"of bytes, got '5XB'", lines={"output": "{shard_size: 5XB}"}),
    "dtype": Case(["plan", R], E + r"output\.dtype: expected one of bfloat16, float16, float32; got 'bf16' \(did you "
                  r"mean 'bfloat16'\?\)", lines={"output": "{dtype: bf16}"}),
    "device-in-recipe": Case(["plan", R], E + r"merge\.device: expected one of auto, cuda, cpu; got 'tpu' \(did you "
                             r"mean 'cpu'\?\)", lines={"merge": "{device: tpu}"}),
    "fetch-in-recipe": Case(["plan", R], E + r"merge\.fetch: expected one of auto, snapshot, stream; got 'strem' \(did "
                            r"you mean 'stream'\?\)", lines={"merge": "{fetch: strem}"}),
    "duplicate-key": Case(["plan", R], r"error: {recipe}:2: name: duplicate key 'name' \(first given on line 1\)",
                          lines={"name": "A\nname: B"}),
    "empty-recipe": Case(["plan", R], r"error: {recipe}:1: the recipe is empty; it needs at least base, chat and cp",
                         raw=""),
    "not-yaml": Case(["plan", R], r"error: {recipe}:2: invalid YAML: expected ',' or '\]', but got '<stream end>'; "
                     r"while parsing a flow sequence \(column 1\)", raw="base: [unclosed\n"),
    # -- files and folders
    "missing-recipe": Case(["plan", "{tmp}/nope.yaml"], r"error: {tmp}/nope\.yaml: no such recipe file"),
    "recipe-is-a-directory": Case(["plan", "{tmp}"], r"error: {tmp}: is a folder, not a recipe file"),
    "out-is-a-source": Case(["merge", R, "--out", "{cp}"], r"error: --out {cp}: exists and is not an earlier "
                            r"chatvector output; choose a new or empty folder", setup="local"),
    "out-in-a-source": Case(["merge", R, "--out", "{cp}/merged"], r"error: --out {cp}/merged: inside the folder of "
                            r"the recipe's cp \(.*\); a model folder must not hold another: choose a folder outside "
                            r"it", setup="local"),
    "out-is-the-recipe": Case(["merge", R, "--out", R], r"error: --out {recipe}: exists and is a file; choose a new "
                              r"or empty folder"),
    "plan-file-missing": Case(["merge", R, "--plan", "{tmp}/plan.json", "--out", "{tmp}/o"],
                              r"error: --plan {tmp}/plan\.json: no such file \(write one with: chatvector plan RECIPE "
                              r"--json > plan\.json\)"),
    "plan-of-another-recipe": Case(["merge", R, "--plan", "{tmp}/plan.json", "--out", "{tmp}/o"],
                                   r"error: plan\.json was made from another recipe, or {recipe} changed since "
                                   r"\({tmp}/other\.yaml then\); make it again: chatvector plan RECIPE --json > "
                                   r"plan\.json", setup="plan-other"),
    "plan-not-json": Case(["merge", R, "--plan", "{tmp}/plan.json", "--out", "{tmp}/o"],
                          r"error: --plan {tmp}/plan\.json: not JSON \(.*\); make it again: chatvector plan RECIPE "
                          r"--json > plan\.json", setup="plan-garbage"),
    # -- publish: the token, the target, the tag
    "no-token": Case(["publish", R], r"error: publishing to {target} needs a token with write access: set HF_TOKEN or "
                     r"run `hf auth login` \(or use --dry-run\)", token=None),
    "read-only-token": Case(["publish", R], r"error: the token of bob is read-only: publishing to {target} needs write "
                            r"access; create a token with the write role at http://127\.0\.0\.1:\d+/settings/tokens "
                            r"and set HF_TOKEN to it \(or use --dry-run\)", token=READ_TOKEN.secret),
    "foreign-namespace": Case(["publish", R], r"error: the token cannot write to carol/mine \(user alice, orgs: .*\): "
                              r"carol is not alice's namespace nor an org of theirs; change target\.repo_id or use a "
                              r"token of an account that may write there", lines={"target": "{repo_id: carol/mine}"}),
    "not-a-member": Case(["publish", R], r"error: the token cannot write to my-org/x \(user carol, orgs: team "
                         r"\(write\)\): my-org is not carol's namespace nor an org of theirs; change target\.repo_id "
                         r"or use a token of an account that may write there", token=OTHER_WRITER.secret,
                         lines={"target": "{repo_id: my-org/x}"}),
    "target-is-a-source": Case(["publish", R], E + r"target\.repo_id: alice/mistake-cp is also the recipe's cp; "
                               r"publishing there would overwrite an input; change target\.repo_id", lines={"target": "{repo_id: alice/mistake-cp}"}),
    "no-target": Case(["publish", R], r"error: {recipe}:1: target\.repo_id: no target repository: add `target: "
                      r"\{{repo_id: org/name\}}`", lines={"target": None}),
    "bad-tag": Case(["publish", R, "--tag", "v 1"], r"error: --tag 'v 1': not a valid tag name: a tag may hold "
                    r"letters, digits and \. - _ / \(no spaces, .*\); e\.g\. --tag v1\.0"),
    "tag-with-create-pr": Case(["publish", R, "--tag", "v1", "--create-pr"], r"error: --tag with --create-pr would "
                               r"tag a commit that is not on main; tag after merging the PR"),
    # -- the command line (argparse: a usage line, then this one)
    "bad-fetch": Case(["merge", R, "--out", "{tmp}/o", "--fetch", "strem"], r"chatvector merge: error: argument "
                      r"--fetch: invalid choice: 'strem' \(choose from 'auto', 'snapshot', 'stream'\)"),
    "bad-device": Case(["merge", R, "--out", "{tmp}/o", "--device", "tpu"], r"chatvector merge: error: argument "
                       r"--device: invalid choice: 'tpu' \(choose from 'auto', 'cuda', 'cpu'\)"),
    "unknown-command": Case(["pubish", R], r"chatvector: error: argument COMMAND: invalid choice: 'pubish' \(choose "
                            r"from 'plan', 'merge', 'sweep', 'eval', 'publish', 'demo', 'hub'\)"),
    "merge-without-out": Case(["merge", R], r"chatvector merge: error: the following arguments are required: --out"),
    "unknown-option": Case(["publish", R, "--forse"], r"chatvector publish: error: unrecognized arguments: --forse "
                           r"\(--forse: did you mean --force\?\); chatvector publish --help lists the options"),
}
PARAMS = [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=case.xfail)) if case.xfail else name
          for name, case in CASES.items()]


def first_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"(error: |chatvector\b.*: error: )", line)]
    return errors[0] if errors else (lines[0] if lines else "")


@pytest.mark.parametrize("name", PARAMS)
def test_mistake(name, sources, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    target = f"alice/mistake-target-{uuid.uuid4().hex[:8]}"
    repos = dict(sources)
    cp = ""
    if case.setup == "local":
        folders = write_triplet(tmp_path / "m", TripletSpec(arch="llama", extra_cp_tokens=20))
        repos = {role: str(folder) for role, folder in folders.items()}
        lines = {role: f"{{path: {folder}}}" for role, folder in folders.items()}
        cp = str(folders["cp"])
    else:
        lines = {}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(case.raw if case.raw is not None else recipe_text(repos, target, **(lines | case.lines)))
    if case.setup == "plan-other":
        other = tmp_path / "other.yaml"
        other.write_text(recipe_text(repos, target, coefficients="{default: 0.5}"))
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
        assert main(["plan", str(other), "--json"]) == 0
        (tmp_path / "plan.json").write_text(capsys.readouterr().out)
    elif case.setup == "plan-garbage":
        (tmp_path / "plan.json").write_text("{not json")
    if case.token:
        monkeypatch.setenv("HF_TOKEN", case.token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    fill = {"recipe": str(recipe), "tmp": str(tmp_path), "target": target, "cp": cp}
    args = [a.format(**fill) for a in case.args]
    capsys.readouterr()
    mark = len(HUB.requests)
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    line = first_error(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert pushed(list(HUB.requests)[mark:]) == []
    assert re.fullmatch(case.expect.format(**{k: re.escape(v) for k, v in fill.items()}), line), line


# -- cases that need a process of their own -----------------------------------------------------------------
def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvector", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_unreachable_endpoint(sources, tmp_path, hub_env):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(sources, "alice/mistake-unreachable"))
    env = hub_env | {"HF_ENDPOINT": "http://127.0.0.1:1", "CHATVECTOR_HTTP_BACKOFF": "0.01"}
    mark = len(HUB.requests)
    result = run_cli(["publish", str(recipe)], env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert list(HUB.requests)[mark:] == []
    assert first_error(result.stderr) == (
        "error: cannot reach the Hub at http://127.0.0.1:1 for alice/mistake-unreachable (after 5 tries): [Errno 111] "
        "Connection refused; check the network (and HF_ENDPOINT) and run again"), result.stderr


@pytest.mark.slow
def test_ctrl_c_during_publish(tmp_path, own_hub):
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256, max_shard_size="400KB"),
                         throttle_total=2)  # 2 MB/s: the run is still downloading when Ctrl-C comes
    target = "alice/interrupted"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(repos, target, output="{shard_size: 300KB}"))
    proc = subprocess.Popen([sys.executable, "-m", "chatvector", "publish", str(recipe)], cwd=ROOT,
                            env=env_for(hub.url, tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not weight_downloads(list(hub.requests)):
        time.sleep(0.01)  # (a weight download has begun: through LFS or Xet)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("interrupted: nothing was pushed; run the same command again"), err
    assert not any("/commit/" in r.path for r in hub.requests)
