"""Faults, kills, races and secrets: every run ends in a correct result or one clear line.

- a fault matrix (rates × seeds) for plan, merge and publish on a local Hub that injects 5xx, 429 and dropped
  connections: each run completes with the bytes of a fault-free run;
- a publish killed while downloading, then the same command again (killed while uploading and resumed:
  tests/test_stream_publish.py): the target holds its old state after the kill and the complete new one after the rerun,
  and no litter is left;
- two publishes at once: exactly one commit;
- a recognisable token through every command, failing ones included, with -v: it appears in no output, log,
  cache file, card, provenance or commit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from chatvector.testing.tinymodels import TripletSpec
from tests.conftest import HUB, WRITE_TOKEN
from tests.hubkit import env_for, folder_bytes, published_equals_snapshot, recipe, run_main

SMALL = TripletSpec(arch="llama")
SHARDED = TripletSpec(arch="llama", hidden_size=128, intermediate_size=256, max_shard_size="400KB")
FAULT_LOG = os.environ.get("CHATVECTOR_TEST_FAULT_LOG")  # where to add up the faults injected (closing notes)


def record_faults(hub, what: str) -> int:
    faults = [q.fault for q in hub.requests if q.fault]
    if FAULT_LOG:
        with open(FAULT_LOG, "a") as f:
            f.write(json.dumps({"case": what, "requests": len(hub.requests), "faults": len(faults)}) + "\n")
    return len(faults)


# -- the fault matrix ---------------------------------------------------------------------------------------
MATRIX = [("plan", 0.05, 1), ("merge-snapshot", 0.05, 3), ("publish-stream", 0.06, 6), ("publish-snapshot", 0.03, 7)]


@pytest.mark.parametrize("command, rate, seed", MATRIX, ids=[f"{c}-{r}-seed{s}" for c, r, s in MATRIX])
def test_runs_under_faults_complete_with_the_bytes_of_a_fault_free_run(command, rate, seed, tmp_path, own_hub,
                                                                         capsys):
    spec = f"5xx={rate / 2:g},429={rate / 4:g},drop={rate / 4:g}"
    hub, repos = own_hub(SMALL, spec, seed=seed)
    target = f"alice/faults-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, repos, target=target, shard="100KB")
    if command == "plan":
        code, out, err = run_main(capsys, "plan", str(r), "--json")
    elif command.startswith("merge"):
        code, out, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "out"), "--fetch",
                                  command.split("-")[1])
    else:
        code, out, err = run_main(capsys, "publish", str(r), "--fetch", command.split("-")[1])
    assert code == 0, err
    assert "Traceback" not in err and "thrown while requesting" not in err  # the retries are silent
    assert record_faults(hub, f"{command}-{rate}-{seed}") >= 1, "no fault was injected"
    hub.stop()
    clean = own_hub.serve()
    if command == "plan":
        code, again, err = run_main(capsys, "plan", str(r), "--json")
        assert code == 0 and json.loads(again)["fingerprint"] == json.loads(out)["fingerprint"]
    elif command.startswith("merge"):
        code, _, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "clean"), "--fetch", "snapshot")
        assert code == 0 and folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "clean")
    else:
        published_equals_snapshot(tmp_path, capsys, clean.url, target, r)


# -- kills --------------------------------------------------------------------------------------------------
def weight_read(q) -> bool:
    """A GET of weight bytes past a header: through LFS a ranged read of the file, through Xet a xorb fetch."""
    if q.method != "GET":
        return False
    return q.path.startswith("/xet-cas/fetch/") or (
        q.path.endswith(".safetensors") and (q.range or "").split("-")[0] != "bytes=0")


KILLS = {  # (a stream killed while uploading, then resumed: tests/test_stream_publish.py)
    "snapshot-downloading": ("snapshot", lambda log: sum(map(weight_read, log)) >= 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILLS))
def test_a_publish_killed_at_each_stage_leaves_the_target_and_the_disk_clean_for_the_rerun(stage, tmp_path, own_hub,
                                                                                          capsys, caplog):
    mode, when = KILLS[stage]
    hub, repos = own_hub(SHARDED, throttle_total=2)  # 2 MB/s: seconds to kill the run in
    r = recipe(tmp_path, repos, target="alice/killed", shard="300KB")
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret)
    api.create_repo("alice/killed")
    before = api.model_info("alice/killed").sha
    proc = subprocess.Popen([sys.executable, "-m", "chatvector", "publish", str(r), "--fetch", mode],
                            env=env_for(hub.url, tmp_path / "home"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not when(list(hub.requests)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before the {stage} stage could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert api.model_info("alice/killed").sha == before  # the target holds its old state
    hub.stop()
    api = HfApi(endpoint=own_hub.serve().url, token=WRITE_TOKEN.secret)  # the rerun needs no slow link

    caplog.set_level(logging.INFO, logger="chatvector")
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", mode)
    assert code == 0, err
    assert len(api.list_repo_commits("alice/killed")) == 2  # the old state, then the complete new one
    if stage != "snapshot-downloading":  # (killed while downloading, it had not staged anything yet)
        assert "left by an interrupted run" in caplog.text
    target_dir = tmp_path / "home" / "chatvector" / "publish" / "alice--killed"
    assert [p.name for p in target_dir.iterdir()] == [".lock"]  # the rerun swept the litter and its own work
    assert not list((tmp_path / "home" / "hub").rglob("*.incomplete"))  # no half-downloaded file either


# -- races --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_publishes_at_once_from_two_machines_make_exactly_one_commit(tmp_path, own_hub):
    hub, repos = own_hub(SMALL)
    r = recipe(tmp_path, repos, target="alice/raced")
    procs = [subprocess.Popen([sys.executable, "-m", "chatvector", "publish", str(r), "--fetch", mode],
                              env=env_for(hub.url, tmp_path / f"machine-{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, mode in enumerate(("stream", "snapshot"))]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    commits = HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret).list_repo_commits("alice/raced")
    assert len(commits) == 2, results  # the repo's creation, and one publish
    assert sum(code == 0 and out.startswith("published") for code, out, _ in results) == 1, results
    # the other one found the target changed under it, or holding these very bytes already
    for code, out, err in results:
        errors = [x for x in err.splitlines() if x.startswith("error: ")]
        assert "Traceback" not in err
        assert (code == 0 and not errors and (out.startswith(("published", "nothing changed")))) or (
            code == 2 and len(errors) == 1 and "while this run was going on" in errors[0]), err


def test_a_second_publish_to_a_target_on_the_same_machine_is_refused_while_the_first_runs(tmp_path, own_hub,
                                                                                          capsys):
    from chatvector.fetch.workspace import target_workspace
    from chatvector.hub.client import connect
    from chatvector.plan.planner import make_plan
    from chatvector.recipe.recipe import load_recipe

    hub, repos = own_hub(SMALL)
    r = recipe(tmp_path, repos, target="alice/locked")
    plan = make_plan(load_recipe(r), connect())
    script = ("import fcntl, sys, time\n"
              "f = open(sys.argv[1], 'a+'); fcntl.flock(f.fileno(), fcntl.LOCK_EX); f.write('4242'); f.flush()\n"
              "print('held', flush=True); time.sleep(60)\n")
    with target_workspace(plan, "alice/locked") as work:
        lock = work.parent / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_main(capsys, "publish", str(r))
        assert code == 2
        [line] = err.strip().splitlines()
        assert line.startswith("error: another chatvector publish to alice/locked is running on this machine (pid ")
        assert not HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret).repo_exists("alice/locked")
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_main(capsys, "publish", str(r))
    assert code == 0, err


# -- secrets ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_token_appears_nowhere_whatever_the_command_and_its_outcome(tmp_path, example_repos, capsys, caplog,
                                                                       monkeypatch):
    secret = WRITE_TOKEN.secret
    home = tmp_path / "home"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(home))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(home / "hub"))
    caplog.set_level(logging.DEBUG)
    demo = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    target = f"demo/secret-{uuid.uuid4().hex[:6]}"
    r = tmp_path / "r.yaml"
    r.write_text(demo.read_text().replace("demo/tiny-llama-ko-chat", target))
    bad_revision = tmp_path / "bad.yaml"
    bad_revision.write_text(r.read_text().replace("cp:   {repo_id: demo/tiny-llama-cp}",
                                                  "cp:   {repo_id: demo/tiny-llama-cp, revision: nope}"))
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(r.read_text().replace(target, "stranger/x"))
    runs = [
        ("plan", str(r)), ("-v", "plan", str(r), "--json"),
        ("-v", "merge", str(r), "--out", str(tmp_path / "m1"), "--fetch", "stream"),
        ("merge", str(r), "--out", str(tmp_path / "m2"), "--fetch", "snapshot", "--format", "json"),
        ("publish", str(r), "--dry-run", "--out", str(tmp_path / "preview")),
        ("-v", "publish", str(r), "--fetch", "stream"), ("publish", str(r)),
        ("-v", "publish", str(bad_revision)), ("-v", "publish", str(foreign)), ("merge", str(bad_revision), "--out",
                                                                                   str(tmp_path / "m3")),
    ]
    seen = []
    for args in runs:
        code, out, err = run_main(capsys, *args)
        seen.append((args, code, out + err))
    assert [code for _, code, _ in seen] == [0] * 7 + [2, 2, 2], [(a, c, t[-300:]) for a, c, t in seen]
    leaks = [" ".join(a) for a, _, text in seen if secret in text]
    assert not leaks and secret not in caplog.text, leaks
    files = [p for folder in (home, tmp_path / "m1", tmp_path / "m2", tmp_path / "preview") for p in folder.rglob("*")
             if p.is_file()]
    assert files and not [p for p in files if secret.encode() in p.read_bytes()]
    assert secret not in HUB.root.joinpath("access.log").read_text()
    api = HfApi(token=secret)
    commits = api.list_repo_commits(target)
    assert not [c for c in commits if secret in (c.title or "") + (c.message or "")]
    published = Path(snapshot_download(target, token=secret, cache_dir=tmp_path / "dl"))
    assert not [p for p in published.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
