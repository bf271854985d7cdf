"""The scheduled publish workflow (.github/workflows/publish.yml), the pull-request plan workflow (plan.yml) and
their scripts (.github/scripts/list_recipes.py: which recipes each picks; plan_changed.py: the plans' outcomes).

Static checks run the real tools (zizmor, offline; check-jsonschema with the vendored GitHub-workflow
schema); the steps' own shell runs against temporary recipe folders and git repositories, the plans against
the local Hub without a token.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"
PLAN_WORKFLOW = ROOT / ".github" / "workflows" / "plan.yml"
WORKFLOWS = (WORKFLOW, PLAN_WORKFLOW)
SCRIPTS = ROOT / ".github" / "scripts"
LIST_SCRIPT = SCRIPTS / "list_recipes.py"
PLAN_SCRIPT = SCRIPTS / "plan_changed.py"
BIN = Path(sys.executable).parent


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {BIN} (pip install -e '.[test]' installs it)")
    return path


def _script(name: str):
    """A script of .github/scripts imported as a module (they import each other from their folder)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def _workflow(path: Path = WORKFLOW) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as the boolean true
    return doc


def _steps(job: str, path: Path = WORKFLOW) -> list[dict]:
    return _workflow(path)["jobs"][job]["steps"]


# --------------------------------------------------------------------------------------------------
# The real linters


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
@pytest.mark.parametrize("persona", ["regular", "auditor"])
def test_zizmor_reports_no_findings(persona, workflow):
    zizmor = _tool("zizmor")
    result = subprocess.run(
        [str(zizmor), "--offline", "--no-ignores", "--no-progress", f"--persona={persona}", "--format=json",
         str(workflow)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    findings = json.loads(result.stdout)
    assert findings == [], json.dumps(findings, indent=2)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_check_jsonschema_accepts_the_workflow(workflow):
    checker = _tool("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


# --------------------------------------------------------------------------------------------------
# Its structure


def test_runs_on_a_daily_schedule_and_by_hand_with_a_recipe_input():
    on = _workflow()["on"]
    (entry,) = on["schedule"]
    fields = entry["cron"].split()
    assert len(fields) == 5 and fields[2:] == ["*", "*", "*"], entry["cron"]  # once a day
    recipe = on["workflow_dispatch"]["inputs"]["recipe"]
    assert recipe["type"] == "string" and recipe["required"] is False and recipe["default"] == ""


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_default_permissions_and_jobs_only_read_contents(workflow):
    wf = _workflow(workflow)
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name


def test_publish_matrix_comes_from_the_list_job_one_concurrency_group_per_recipe():
    wf = _workflow()
    lister, publish = wf["jobs"]["list"], wf["jobs"]["publish"]
    assert lister["outputs"]["recipes"] == "${{ steps.list.outputs.recipes }}"
    assert publish["needs"] == "list"
    assert publish["strategy"]["matrix"] == {"recipe": "${{ fromJSON(needs.list.outputs.recipes) }}"}
    assert publish["strategy"]["fail-fast"] is False
    assert publish["if"] == "needs.list.outputs.recipes != '[]'"  # an empty matrix is an error on GitHub
    assert publish["concurrency"] == {"group": "publish-${{ matrix.recipe }}", "cancel-in-progress": False}


def test_publish_step_runs_make_publish_with_the_token_from_secrets():
    publish = _workflow()["jobs"]["publish"]
    runs = [s for s in publish["steps"] if "make publish RECIPE=" in s.get("run", "")]
    assert len(runs) == 1
    assert runs[0]["run"].strip() == 'make publish RECIPE="$RECIPE" FETCH="$FETCH" EXTRAS='
    assert publish["env"]["FETCH"] == "${{ vars.PUBLISH_FETCH || 'stream' }}"  # stream mode unless told otherwise
    assert runs[0]["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert publish["env"]["RECIPE"] == "${{ matrix.recipe }}"
    assert "HF_TOKEN" not in publish["env"]  # only the step that needs it sees the token
    # The secret belongs to an environment; the setup guide names the same one.
    assert publish["environment"] == "huggingface-hub"
    assert "name it `huggingface-hub`" in (ROOT / "docs" / "scheduled-publishing.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_expressions_never_appear_inside_run_scripts(workflow):
    for name, job in _workflow(workflow)["jobs"].items():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}: pass values through env"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_full_commits_and_checkouts_drop_credentials(workflow):
    text = workflow.read_text(encoding="utf-8")
    uses = re.findall(r"uses: (\S+)@(\S+)(.*)", text)
    assert {u[0] for u in uses} <= {"actions/checkout", "actions/setup-python", "actions/cache/restore",
                                    "actions/cache/save"}
    for action, ref, comment in uses:
        assert re.fullmatch(r"[0-9a-f]{40}", ref), action
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), action
    for name, job in _workflow(workflow)["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_pip_is_cached_and_a_failed_runs_journal_is_kept_for_its_rerun():
    steps = _steps("publish")
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["cache"] == "pip"
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    names = [s.get("name") for s in steps]
    assert names.index(restore["name"]) < names.index("publish") < names.index(save["name"])
    # the journal only (the path a streaming publish keeps it under), saved when the publish did not finish
    from chatvector.conventions import JOURNAL_FILE as JOURNAL

    assert restore["with"]["path"] == save["with"]["path"] == f"~/.cache/huggingface/chatvector/publish/*/*/{JOURNAL}"
    assert save["if"] == "failure() || cancelled()"
    assert save["with"]["key"] == restore["with"]["key"] and "${{ matrix.recipe }}" in save["with"]["key"]
    assert all(k.startswith("journal-${{ matrix.recipe }}-") for k in restore["with"]["restore-keys"].splitlines())


# --------------------------------------------------------------------------------------------------
# The listing step, run as GitHub runs it


def _listing_step() -> dict:
    (step,) = [s for s in _steps("list") if s.get("id") == "list"]
    return step


def _run_listing(repo: Path, requested: str = "") -> tuple[subprocess.CompletedProcess, list | None]:
    """Run the step's `run:` script with bash -e in `repo`, as a runner does; returns its GITHUB_OUTPUT."""
    script_dir = repo / ".github" / "scripts"
    script_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(LIST_SCRIPT, script_dir / LIST_SCRIPT.name)
    shim = repo / "_bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "python3").exists():
        (shim / "python3").symlink_to(sys.executable)
    output = repo / "github_output"
    output.write_text("")
    step = _listing_step()
    assert set(step["env"]) == {"REQUESTED"} and step["env"]["REQUESTED"] == "${{ inputs.recipe }}"
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "GITHUB_OUTPUT": str(output), "REQUESTED": requested}
    result = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=60)
    lines = output.read_text().splitlines()
    recipes = None
    if lines:
        (line,) = lines
        key, _, value = line.partition("=")
        assert key == "recipes"
        recipes = json.loads(value)
    return result, recipes


@pytest.fixture
def repo(tmp_path) -> Path:
    recipes = tmp_path / "recipes"
    (recipes / "drafts").mkdir(parents=True)
    for name in ("demo.yaml", "ko.yaml", "ja-swallow.yaml", "zh.yaml", "README.md", "notes.yml", "drafts/x.yaml"):
        (recipes / name).write_text("name: x\n")
    return tmp_path


def test_listing_every_recipe_leaves_out_the_demo(repo):
    result, recipes = _run_listing(repo)
    assert result.returncode == 0, result.stderr
    assert recipes == ["recipes/ja-swallow.yaml", "recipes/ko.yaml", "recipes/zh.yaml"]


def test_a_fresh_fork_publishes_nothing_it_did_not_add(tmp_path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    result, recipes = _run_listing(tmp_path)
    assert result.returncode == 0, result.stderr
    assert recipes == []  # the demo and the examples stay out of the schedule
    (notice,) = result.stderr.splitlines()
    assert notice.startswith("::notice title=list recipes::not published: the project's examples (recipes/llama2-")
    assert notice.endswith("copy it to a new recipes/NAME.yaml and set target.repo_id to a namespace your token can "
                           "write to")
    # what the fork adds (here a copy of an example, as the examples' comments suggest) is published
    mine = (ROOT / "recipes" / "llama3-korean.yaml").read_text(encoding="utf-8").replace("my-org/", "alice/")
    (tmp_path / "recipes" / "ko-mine.yaml").write_text(mine, encoding="utf-8")
    result, recipes = _run_listing(tmp_path)
    assert result.returncode == 0 and recipes == ["recipes/ko-mine.yaml"]


def test_the_examples_list_is_every_shipped_recipe_but_the_demo():
    script = _script("list_recipes")
    shipped = sorted(f"recipes/{p.name}" for p in (ROOT / "recipes").glob("*.yaml") if p.name != "demo.yaml")
    assert list(script.EXAMPLES) == shipped
    for name in shipped:  # each is a placeholder: no fork's token can write to its target
        assert yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))["target"]["repo_id"].startswith("my-org/")


def test_listing_refuses_recipe_file_names_that_would_need_quoting(repo):
    (repo / "recipes" / "my recipe$(x).yaml").write_text("name: x\n")
    result, recipes = _run_listing(repo)
    assert result.returncode == 2 and recipes is None
    assert "rename 'recipes/my recipe$(x).yaml': use letters, digits" in result.stderr


def test_listing_with_no_recipes_gives_an_empty_matrix(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text("name: demo\n")
    result, recipes = _run_listing(tmp_path)
    assert result.returncode == 0 and recipes == []


@pytest.mark.parametrize("requested", ["recipes/ko.yaml", "./recipes/ko.yaml", " recipes/ko.yaml\n"])
def test_a_manual_run_lists_only_the_requested_recipe(repo, requested):
    result, recipes = _run_listing(repo, requested)
    assert result.returncode == 0, result.stderr
    assert recipes == ["recipes/ko.yaml"]


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("recipes/demo.yaml", "recipes/demo.yaml is the offline demo"),
        ("recipes/llama3-korean.yaml", "recipes/llama3-korean.yaml is one of the project's examples (its target is a "
                                       "placeholder): copy it to a new recipes/NAME.yaml and set target.repo_id"),
        ("recipes/missing.yaml", "'recipes/missing.yaml' does not exist in this commit"),
        ("recipes/drafts/x.yaml", "is not a file name of the form recipes/NAME.yaml"),
        ("recipes/../pyproject.toml", "is not a file name of the form recipes/NAME.yaml"),
        ('recipes/x.yaml"; echo pwned; "', "is not a file name of the form recipes/NAME.yaml"),
        ("recipes/%0Aa.yaml", "is not a file name"),
    ],
)
def test_a_manual_run_refuses_anything_but_an_existing_recipe(repo, requested, message):
    result, recipes = _run_listing(repo, requested)
    assert result.returncode == 2
    assert recipes is None  # the step fails before writing an output, so no publish job starts
    assert result.stderr.startswith("::error title=list recipes::")
    assert message in result.stderr
    assert "pwned" not in result.stdout
    assert "\n" not in result.stderr.rstrip("\n")


# -- the workflow's own command lines, run against the local Hub --------------------------------------------
def _run_lines(job: str, step_name: str) -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    return next(s["run"] for s in workflow["jobs"][job]["steps"] if s.get("name") == step_name)


@pytest.mark.slow
def test_scheduled_run_command_lines_publish_then_noop_on_the_local_hub(example_repos, hub, hub_env, tmp_path):
    """The list step's and the publish step's `run:` scripts, as bash runs them on a runner: the first
    scheduled run publishes, the second finds nothing changed upstream and pushes nothing."""
    import huggingface_hub

    stamp = ROOT / ".venv" / ".installed"
    if not stamp.exists() and Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        stamp.touch()  # the venv running this test is the one `make publish` would build
    output = tmp_path / "github_output"
    env = dict(hub_env, REQUESTED="", GITHUB_OUTPUT=str(output))
    listed = subprocess.run(["bash", "-e", "-c", _run_lines("list", "list the recipes to publish (or only the "
                                                                   "requested one)")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    matrix = json.loads(output.read_text().strip().removeprefix("recipes="))
    assert matrix == []  # the project's own recipes are examples; a fork publishes what it adds, like this one

    publish_step = _run_lines("publish", "publish")
    env = dict(hub_env, RECIPE="recipes/llama3-korean.yaml")
    api = huggingface_hub.HfApi(token=env["HF_TOKEN"])
    first = subprocess.run(["bash", "-e", "-c", publish_step], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    head = api.model_info("my-org/Llama-3-Open-Ko-8B-Chat").sha
    mark = len(hub.requests)
    second = subprocess.run(["bash", "-e", "-c", publish_step], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "nothing changed" in second.stdout
    assert api.model_info("my-org/Llama-3-Open-Ko-8B-Chat").sha == head
    assert not any(r.method == "GET" and r.path.endswith(".safetensors") and not r.range
                   for r in list(hub.requests)[mark:])


# -- no test extras where the workflows install the project ------------------------------------------------
def test_the_workflows_install_the_project_without_its_test_extras():
    assert "EXTRAS=" in _run_lines("publish", "publish").split()
    install = next(s["run"] for s in _steps("plan", PLAN_WORKFLOW) if "make venv" in s.get("run", ""))
    assert "make venv EXTRAS=" in install.splitlines()
    make = shutil.which("make") or pytest.skip("make is not installed")
    dry = subprocess.run([make, "-n", "-B", "venv", "EXTRAS="], cwd=ROOT, capture_output=True, text=True, timeout=60)
    (pip,) = [line for line in dry.stdout.splitlines() if "pip install -q -e" in line]
    assert pip.endswith('pip install -q -e "."')  # and `make venv` alone, for developers, keeps [test]


# -- the pull-request job: which recipes it plans -------------------------------------------------------------
def test_the_plan_workflow_runs_on_pull_requests_that_touch_recipes_and_reads_no_secret():
    wf = _workflow(PLAN_WORKFLOW)
    assert set(wf["on"]) == {"pull_request"} and wf["on"]["pull_request"]["paths"] == ["recipes/*.yaml"]
    (job,) = wf["jobs"].values()
    assert "environment" not in job and "secrets." not in PLAN_WORKFLOW.read_text(encoding="utf-8")
    checkout, changed, *rest = job["steps"]
    assert checkout["with"]["fetch-depth"] == 2  # the merge commit and the base branch it is diffed against
    assert all(step["if"] == "steps.changed.outputs.recipes != '[]'" for step in rest)  # nothing to plan: no install
    assert rest[-1]["run"] == '.venv/bin/python .github/scripts/plan_changed.py "$RUNNER_TEMP/changed.txt"'


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


def _pull_request(repo: Path, base: dict[str, str], change: dict[str, str | None]) -> None:
    """A repository whose HEAD is GitHub's merge commit of a pull request: `base` on main, `change` (None deletes
    a file) on a branch, merged into main with --no-ff, so HEAD^1 is the base branch."""
    _git(repo, "init", "-q", "-b", "main")
    for name, text in base.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    _git(repo, "checkout", "-q", "-b", "pr")
    for name, text in change.items():
        if text is None:
            (repo / name).unlink()
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "change")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "merge", "-q", "--no-ff", "-m", "merge", "pr")


def _run_changed_step(repo: Path) -> tuple[subprocess.CompletedProcess, list | None]:
    """The plan workflow's `changed` step, as a runner runs it, in `repo`."""
    (step,) = [s for s in _steps("plan", PLAN_WORKFLOW) if s.get("id") == "changed"]
    shutil.copytree(SCRIPTS, repo / ".github" / "scripts", dirs_exist_ok=True)
    shim = repo.parent / "bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "python3").exists():
        (shim / "python3").symlink_to(sys.executable)
    output, temp = repo.parent / "github_output", repo.parent / "runner_temp"
    output.write_text("")
    temp.mkdir(exist_ok=True)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "GITHUB_OUTPUT": str(output), "RUNNER_TEMP": str(temp),
           "GIT_CONFIG_GLOBAL": os.devnull}
    result = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=60)
    lines = output.read_text().splitlines()
    return result, json.loads(lines[0].removeprefix("recipes=")) if lines else None


BASE = {"recipes/demo.yaml": "name: demo\n", "recipes/llama3-korean.yaml": "name: ko\n", "recipes/old.yaml": "name: o\n",
        "recipes/README.md": "# recipes\n", "recipes/keep.yaml": "name: k\n", "README.md": "# project\n"}


def test_the_pull_request_job_plans_the_recipes_the_pull_request_adds_or_changes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _pull_request(repo, BASE, {
        "recipes/mine.yaml": "name: mine\n",                # added
        "recipes/llama3-korean.yaml": "name: ko2\n",        # an example, changed: checked too
        "recipes/demo.yaml": "name: demo2\n",               # the demo: its sources are on the local Hub only
        "recipes/old.yaml": None,                           # deleted: nothing to plan
        "recipes/drafts/x.yaml": "name: x\n", "recipes/notes.yml": "x\n", "recipes/README.md": "# more\n",
        "README.md": "# changed\n",
    })
    result, recipes = _run_changed_step(repo)
    assert result.returncode == 0, result.stderr
    assert recipes == ["recipes/llama3-korean.yaml", "recipes/mine.yaml"]  # not recipes/keep.yaml: unchanged


def test_a_pull_request_that_changes_no_recipe_plans_nothing_and_an_odd_name_fails_it(tmp_path):
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    _pull_request(quiet, BASE, {"README.md": "# changed\n", "recipes/old.yaml": None})
    result, recipes = _run_changed_step(quiet)
    assert result.returncode == 0 and recipes == []
    odd = tmp_path / "odd"
    odd.mkdir()
    _pull_request(odd, BASE, {"recipes/my recipe.yaml": "name: x\n"})
    result, recipes = _run_changed_step(odd)
    assert result.returncode == 2 and recipes is None  # the schedule would refuse it: the pull request says so
    assert result.stderr.startswith("::error title=list recipes::rename 'recipes/my recipe.yaml'")


# -- the pull-request job: what the plans' outcomes become -------------------------------------------------------
GATED_LINE = ("error: recipes/ko.yaml:2: base.repo_id: meta-llama/Meta-Llama-3-8B is gated: accept its terms on the "
              "Hub and use a token (HF_TOKEN) of an account that has access")
GATED_CHAT = GATED_LINE.replace(":2: base.", ":3: chat.").replace("Llama-3-8B ", "Llama-3-8B-Instruct ")
MISSING_LINE = ("error: recipes/ko.yaml:4: cp.repo_id: repository beomi/Llama-3-Open-Ko-8C was not found on the Hub "
                "(or it is private and the token, if any, has no access) (did you mean 'beomi/Llama-3-Open-Ko-8B'?)")
TYPO_LINE = "error: recipes/ko.yaml:9: special_tokens[1]: token '<|eot_idd|>' is not in cp's tokenizer"


def test_a_gated_recipe_is_one_notice_and_does_not_fail_the_job():
    plan = _script("plan_changed")
    outcome = plan.classify(2, "", f"{GATED_LINE}\n{GATED_CHAT}\n")
    assert outcome.kind == "gated"
    assert plan.report("recipes/ko.yaml", outcome) == [
        "::notice file=recipes/ko.yaml,line=2,title=plan recipes/ko.yaml::not planned: gated source(s) "
        "meta-llama/Meta-Llama-3-8B, meta-llama/Meta-Llama-3-8B-Instruct; a pull request gets no token, the "
        "scheduled run plans it with HF_TOKEN (its account needs access)"]


def test_a_source_not_found_anonymously_is_a_warning_and_a_real_problem_an_error_on_its_line():
    plan = _script("plan_changed")
    unreadable = plan.classify(2, "", f"{GATED_LINE}\n{MISSING_LINE}\n")
    assert unreadable.kind == "unreadable"
    notice, warning = plan.report("recipes/ko.yaml", unreadable)
    assert notice.startswith("::notice file=recipes/ko.yaml,line=2,")
    assert warning == ("::warning file=recipes/ko.yaml,line=4,title=plan recipes/ko.yaml::cp.repo_id: repository "
                       "beomi/Llama-3-Open-Ko-8C was not found on the Hub (or it is private and the token, if any, "
                       "has no access) (did you mean 'beomi/Llama-3-Open-Ko-8B'?)")
    failed = plan.classify(2, "", f"{GATED_LINE}\n{TYPO_LINE}\n")
    assert failed.kind == "failed"
    assert plan.report("recipes/ko.yaml", failed)[1] == (
        "::error file=recipes/ko.yaml,line=9,title=plan recipes/ko.yaml::special_tokens[1]: token '<|eot_idd|>' is "
        "not in cp's tokenizer")
    crashed = plan.classify(1, "", "Traceback (most recent call last):\n  boom\n")
    assert crashed.kind == "failed" and plan.report("r.yaml", crashed)[-1] == "::error file=r.yaml,title=plan r.yaml::  boom"
    passed = plan.classify(0, "Plan for x\nok\n", "")
    assert plan.report("recipes/x.yaml", passed)[0] == "::group::plan recipes/x.yaml: passes"


@pytest.fixture(scope="module")
def public_triplet(tmp_path_factory) -> dict[str, str]:
    """A tiny public llama triplet on the session hub, and a gated copy of its base: {role | "gated": repo_id}."""
    import huggingface_hub

    from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet
    from tests.conftest import OTHER_WRITER, WRITE_TOKEN

    folders = write_triplet(tmp_path_factory.mktemp("wf"), TripletSpec(arch="llama", extra_cp_tokens=4))
    api = huggingface_hub.HfApi(token=WRITE_TOKEN.secret)
    repos = {role: f"alice/wf-{role}" for role in folders}
    for role, folder in folders.items():
        upload_model(api, folder, repos[role])
    owner = huggingface_hub.HfApi(token=OTHER_WRITER.secret)
    repos["gated"] = "carol/wf-gated-base"
    upload_model(owner, folders["base"], repos["gated"])
    owner.update_repo_settings(repos["gated"], gated="auto")
    return repos


def test_the_plan_step_against_the_hub_without_a_token(public_triplet, hub_env, tmp_path):
    """plan_changed.py as the job runs it: anonymous plans; a gated source is a notice, a typo fails the job."""
    t = public_triplet
    good = f"base: {{repo_id: {t['base']}}}\nchat: {{repo_id: {t['chat']}}}\ncp: {{repo_id: {t['cp']}}}\n"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "good.yaml").write_text(good)
    (recipes / "gated.yaml").write_text(good.replace(t["base"], t["gated"]))
    (recipes / "typo.yaml").write_text(good + "special_tokens: [\"<|no-such-token|>\"]\n")
    changed = tmp_path / "changed.txt"
    env = {k: v for k, v in hub_env.items() if k != "HF_TOKEN"}  # a pull request gets no secret

    def run(*names: str) -> subprocess.CompletedProcess:
        changed.write_text("".join(f"recipes/{n}\n" for n in names))
        return subprocess.run([sys.executable, str(PLAN_SCRIPT), str(changed)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    passing = run("good.yaml", "gated.yaml")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "::group::plan recipes/good.yaml: passes" in passing.stdout
    (notice,) = [line for line in passing.stdout.splitlines() if line.startswith("::")
                 and not line.startswith(("::group::", "::endgroup::"))]
    assert notice.startswith("::notice file=recipes/gated.yaml,line=1,title=plan recipes/gated.yaml::not planned: "
                             f"gated source(s) {t['gated']}; a pull request gets no token")
    failing = run("typo.yaml")
    assert failing.returncode == 1
    (error,) = [line for line in failing.stdout.splitlines() if line.startswith("::error")]
    assert error.startswith("::error file=recipes/typo.yaml,line=4,title=plan recipes/typo.yaml::special_tokens[0]: ")
