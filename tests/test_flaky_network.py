"""A flaky network: with 30 % or 60 % of the Hub's requests failing (5xx, 429, dropped connections), `plan`,
`merge` and `publish` each either succeed with the bytes of a fault-free run, or stop after their bounded retries
with `error:` lines naming the repository and the HTTP status (or the dropped connection), exit 2. Never exit 1,
never a traceback, and no retry chatter without -v.

The full matrix (commands × rates × seeds) is slow; `make test` keeps two of its cells. With
CHATVECTOR_TEST_FAULT_MATRIX=FILE each run appends its outcome to FILE (JSON lines), for the counts per cell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from chatvector.testing.tinymodels import TripletSpec
from tests.hubkit import env_for, folder_bytes, published_equals_snapshot, recipe, run_main

SMALL = TripletSpec(arch="llama")
COMMANDS = ("plan", "merge-snapshot", "merge-stream", "publish-snapshot", "publish-stream")
RATES = (0.3, 0.6)
SEEDS = (1, 2)
ATTEMPTS = (5, 12)  # CHATVECTOR_HTTP_ATTEMPTS: the default, and a patient run (most runs then get through)
FAST = {("plan", 0.3, 1, 5), ("merge-stream", 0.3, 2, 12)}  # the cells `make test` runs (a few seconds each)
MATRIX_LOG = os.environ.get("CHATVECTOR_TEST_FAULT_MATRIX")
# One line per repository the run gave up on: its id, and the status it kept getting (or the connection).
REPO = re.compile(r"\balice/[\w-]+")
STATUS = re.compile(r"\b(429|500|502|503)\b|cannot reach the Hub")
CHATTER = ("Retrying in", "thrown while requesting", "Rate limited", "Traceback")


def fault_spec(rate: float) -> str:
    """`rate` of the requests failing, split as the issue's 5xx=0.2,429=0.05,drop=0.05 for 30 %."""
    return f"5xx={rate * 2 / 3:g},429={rate / 6:g},drop={rate / 6:g}"


def cells() -> list:
    return [pytest.param(command, rate, seed, attempts, id=f"{command}-{rate:g}-seed{seed}-tries{attempts}",
                         marks=() if (command, rate, seed, attempts) in FAST else (pytest.mark.slow,))
            for attempts in ATTEMPTS for command in COMMANDS for rate in RATES for seed in SEEDS]


@pytest.fixture
def no_xet(monkeypatch):
    """Git LFS, not Xet, whatever the session's default (the local Hub's Xet support is not under test here)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture
def short_waits(monkeypatch):
    """chatvector's own waits 10 ms at most: a 429's Retry-After (1 s) too (huggingface_hub's: `fast_retries`)."""
    import time
    import types

    from chatvector.hub import retry

    real_sleep = time.sleep
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(sleep=lambda seconds: real_sleep(min(seconds, 0.01))))


def command_args(command: str, r, out) -> list[str]:
    verb, _, fetch = command.partition("-")
    args = [verb, str(r)] + (["--json"] if verb == "plan" else []) + (["--out", str(out)] if verb == "merge" else [])
    return args + (["--fetch", fetch] if fetch else [])


def record(cell: str, code: int, hub) -> None:
    if MATRIX_LOG:
        with open(MATRIX_LOG, "a") as f:
            f.write(json.dumps({"cell": cell, "code": code, "requests": len(hub.requests),
                                "faults": sum(1 for q in hub.requests if q.fault)}) + "\n")


def assert_stopped_cleanly(err: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors and all(REPO.search(line) and STATUS.search(line) for line in errors), err
    assert "internal error" not in err, err


@pytest.mark.parametrize("command, rate, seed, attempts", cells())
def test_a_run_on_a_flaky_network_gives_the_fault_free_bytes_or_stops_cleanly(command, rate, seed, attempts, tmp_path,
                                                                                own_hub, capsys, monkeypatch, no_xet,
                                                                                short_waits):
    run_cell(command, rate, seed, attempts, tmp_path, own_hub, capsys, monkeypatch)


@pytest.mark.parametrize("command, seed", [
    pytest.param(c, s, id=f"{c}-seed{s}", marks=() if (c, s) == ("publish-stream", 1) else (pytest.mark.slow,))
    for c in ("merge-snapshot", "publish-snapshot", "publish-stream") for s in SEEDS])
def test_the_same_through_xet(command, seed, tmp_path, own_hub, capsys, monkeypatch, short_waits):
    """Xet on, the commands whose large files go through the CAS (snapshot downloads, uploads), 30 % faults on
    its endpoints too: hf_xet's retries and ours together give the fault-free bytes, or a clean stop."""
    run_cell(command, 0.3, seed, 14, tmp_path, own_hub, capsys, monkeypatch)


def run_cell(command: str, rate: float, seed: int, attempts: int, tmp_path, own_hub, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CHATVECTOR_HTTP_ATTEMPTS", str(attempts))
    hub, repos = own_hub(SMALL, fault_spec(rate), seed=seed)
    target = f"alice/flaky-{uuid.uuid4().hex[:6]}"
    r = recipe(tmp_path, repos, target=target, shard="100KB")
    code, out, err = run_main(capsys, *command_args(command, r, tmp_path / "out"))
    record(f"{command}-{rate:g}-seed{seed}-tries{attempts}", code, hub)
    assert code in (0, 2), err
    assert not [c for c in CHATTER if c in err], err
    assert any(q.fault for q in hub.requests), "no fault was injected"
    if code == 2:
        assert_stopped_cleanly(err)
        return
    hub.stop()
    monkeypatch.delenv("CHATVECTOR_HTTP_ATTEMPTS")
    clean = own_hub.serve()  # the same Hub without faults: the reference run
    if command == "plan":
        code, again, err = run_main(capsys, "plan", str(r), "--json")
        assert code == 0 and json.loads(again)["fingerprint"] == json.loads(out)["fingerprint"], err
    elif command.startswith("merge"):
        code, _, err = run_main(capsys, "merge", str(r), "--out", str(tmp_path / "clean"), "--fetch", "snapshot")
        assert code == 0 and folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "clean"), err
    else:
        published_equals_snapshot(tmp_path, capsys, clean.url, target, r)


def test_huggingface_hub_retry_chatter_shows_only_with_verbose():
    """huggingface_hub's logging sets its own level when first imported, which in a CLI run is after ours."""
    script = ("import sys; from chatvector.cli import configure_logging; configure_logging('-v' in sys.argv)\n"
              "from huggingface_hub.utils import logging\n"
              "logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n")
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    verbose = subprocess.run([sys.executable, "-c", script, "-v"], capture_output=True, text=True, check=True)
    assert "Retrying" not in quiet.stderr, quiet.stderr
    assert "Retrying in 1s" in verbose.stderr


@pytest.mark.slow
def test_a_cli_run_on_a_flaky_network_prints_no_retry_chatter(tmp_path, own_hub, no_xet):
    """As a user runs it: a process of its own (huggingface_hub imported after the CLI set up its logging)."""
    hub, repos = own_hub(SMALL, fault_spec(0.3), seed=1)
    r = recipe(tmp_path, repos, target="alice/flaky-cli", shard="100KB")
    done = subprocess.run([sys.executable, "-m", "chatvector", "plan", str(r)], env=env_for(hub.url, tmp_path / "h"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 2), done.stderr
    assert not [c for c in CHATTER if c in done.stderr], done.stderr
    assert any(q.fault for q in hub.requests)
    if done.returncode == 2:
        assert_stopped_cleanly(done.stderr)
