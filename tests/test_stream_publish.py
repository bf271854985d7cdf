"""Stream mode end to end: inputs read with range requests, shards uploaded as they are written, resume.

Every test runs the real CLI (in-process, or as a subprocess where it is killed) against a local Hub
through huggingface_hub, and compares bytes with a snapshot-mode run of the same recipe.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from chatvector.cli import main
from chatvector.localhub import LocalHub
from chatvector.testing.tinymodels import TripletSpec
from tests.conftest import WRITE_TOKEN, file_registrations, file_uploads
from tests.hubkit import env_for, folder_bytes, published_equals_snapshot, recipe, run_main, seed_on

ROOT = Path(__file__).resolve().parents[1]


def seed(tmp_path: Path, spec: TripletSpec, api: HfApi, tag: str) -> dict[str, str]:
    """The triplet on the session Hub under fresh names."""
    return seed_on(api.endpoint, tmp_path, spec, prefix=f"stream-{tag}-{uuid.uuid4().hex[:6]}-")


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN.secret)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


SPECS = {
    "extended-vocab": TripletSpec(arch="llama", extra_cp_tokens=20),
    "tied": TripletSpec(arch="qwen2", extra_cp_tokens=8),
    "mistral-fp16": TripletSpec(arch="mistral", dtype="float16"),
}


@pytest.mark.parametrize("kind", [*SPECS, "several-vectors"])
def test_stream_merge_writes_the_bytes_snapshot_writes(kind, tmp_path, cli, api, hub):
    spec = SPECS.get(kind, SPECS["extended-vocab"])
    repos = seed(tmp_path, spec, api, kind)
    r = recipe(tmp_path, repos, vectors=kind == "several-vectors", arch=spec.arch)
    mark = len(hub.requests)
    code, _, err = cli("merge", str(r), "--out", str(tmp_path / "stream"), "--fetch", "stream")
    assert code == 0, err
    assert "fetch: stream (as asked)" in err and "down" in err and "peak memory" in err
    streamed = list(hub.requests)[mark:]
    weights = [q for q in streamed if q.method == "GET" and q.path.endswith(".safetensors")]
    assert weights and all(q.range for q in weights)  # every weight byte came through a range request
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # and none went to disk
    reads = [(q.path, q.range) for q in weights if not q.range.startswith("bytes=0-")]  # (header probes aside)
    assert len(reads) == len(set(reads))  # each byte read once, also of a base and chat two vectors share
    code, _, err = cli("merge", str(r), "--out", str(tmp_path / "snapshot"), "--fetch", "snapshot")
    assert code == 0, err
    assert folder_bytes(tmp_path / "stream") == folder_bytes(tmp_path / "snapshot")
    inputs = [json.loads((tmp_path / d / "chatvector.json").read_text())["inputs"] for d in ("stream", "snapshot")]
    assert inputs[0] == inputs[1]  # the same input hashes, computed while streaming
    recorded = json.loads((tmp_path / "stream" / "chatvector.json").read_text())
    assert recorded["tied_embeddings"] is (kind == "tied")  # what the card's vocabulary section says of lm_head


def test_auto_says_what_it_chose_and_why(tmp_path, cli, api, sources_llama):
    r = recipe(tmp_path, sources_llama)
    code, _, err = cli("merge", str(r), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "fetch: snapshot (" in err and "fit on the free disk" in err
    code, _, err = cli("merge", str(r), "--out", str(tmp_path / "b"))
    assert code == 0 and "fetch: snapshot (the inputs are in the Hugging Face cache)" in err


@pytest.fixture(scope="module")
def sources_llama(tmp_path_factory):
    api = HfApi(token=WRITE_TOKEN.secret)
    return seed(tmp_path_factory.mktemp("llama"), TripletSpec(arch="llama", extra_cp_tokens=20, hidden_size=128, num_layers=6,
                                                              intermediate_size=256), api, "big")


class DiskWatch:
    """Samples the allocated bytes (sparse holes excluded) of the weight files under a folder."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            total = 0
            try:  # (folders come and go while the run writes: a walk that meets one gone is taken again)
                for p in self.folder.rglob("*safetensors*"):
                    try:
                        total += p.stat().st_blocks * 512
                    except OSError:
                        pass
            except OSError:
                continue
            self.peak = max(self.peak, total)
            time.sleep(0.002)


def test_streaming_publish_holds_one_shard_and_commits_once(tmp_path, cli, api, hub, sources_llama, monkeypatch,
                                                            transfer):
    target = f"alice/streamed-{uuid.uuid4().hex[:8]}"
    # Shards of another size for each transfer: other bytes, which the Hub cannot already hold from the other run
    shard = {"xet": 300_000, "lfs": 290_000}[transfer]
    r = recipe(tmp_path, sources_llama, target=target, shard=f"{shard // 1000}KB")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(tmp_path / "home"))
    mark = len(hub.requests)
    with DiskWatch(tmp_path / "home") as watch:
        code, out, err = cli("publish", str(r), "--fetch", "stream", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    shards = [n for n in doc["added"] if n.endswith(".safetensors")]
    total = sum(doc["added"][n] for n in shards)
    assert len(shards) >= 5 and total >= 5 * shard  # a model of at least 5 shards
    io = doc["io"]
    assert io["fetch"] == "stream" and io["disk_high_water"] <= shard * 1.1
    assert io["bytes_uploaded"] == sum(doc["added"].values())  # a new repo: every file went up, each once
    assert watch.peak <= shard * 1.1 + 64 * 1024, watch.peak  # measured: one shard (+ headers of the hollow ones)
    assert {"download", "merge", "upload-overlapped"} <= set(doc["stages"])
    log = list(hub.requests)[mark:]
    commits = [i for i, q in enumerate(log) if q.method == "POST" and "/commit/" in q.path]
    registered = {id(q) for q in file_registrations(log)}  # one a shard: its LFS verify, or its Xet shard upload
    uploads = [i for i, q in enumerate(log) if id(q) in registered]
    n_lfs = len(shards)  # every *.safetensors is LFS, whatever its size: the repo's .gitattributes says so
    assert len(commits) == 1 and len(uploads) == n_lfs and max(uploads) < commits[0]
    # (Whether the first shard goes up while inputs still stream in cannot be seen on a model this small: its
    # inputs fit in one 16 MiB range request each. The disk bound above is what shows one shard at a time.)
    assert len(api.list_repo_commits(target)) == 2  # the empty repo's first commit, then everything at once
    assert not (tmp_path / "home" / "chatvector" / "publish").exists() or not any(
        (tmp_path / "home" / "chatvector" / "publish").rglob("journal.jsonl"))

    code, _, err = cli("merge", str(r), "--out", str(tmp_path / "snap"), "--fetch", "snapshot")
    assert code == 0, err
    published = Path(snapshot_download(target, token=WRITE_TOKEN.secret, cache_dir=tmp_path / "dl"))
    same = folder_bytes(tmp_path / "snap")
    assert {n: h for n, h in folder_bytes(published).items() if n in same} == same
    provenance = json.loads((published / "chatvector.json").read_text())
    for name in shards:  # the provenance records the real bytes, not the hollow files'
        assert provenance["output"]["files"][name] == same[name]


def corrupt_blob(hub: LocalHub, api: HfApi, repo: str) -> str:
    """Flip the last byte of the repo's largest weight file in the Hub's store (same size, same listing).
    The store is content-addressed: the model must be one no other test uploads (its own seed)."""
    info = api.model_info(repo, files_metadata=True)
    f = max((s for s in info.siblings if s.rfilename.endswith(".safetensors")), key=lambda s: s.size)
    assert f.lfs is not None  # the check under test: the streamed bytes' sha256 against the LFS oid
    blob = hub.store.blob_path(f.lfs.sha256)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    return f.rfilename


def test_a_corrupted_input_byte_stops_the_publish_before_the_commit(tmp_path, cli, api, hub, monkeypatch):
    repos = seed(tmp_path, TripletSpec(arch="llama", seed=9173, max_shard_size="400KB"), api, "corrupt")
    name = corrupt_blob(hub, api, repos["chat"])
    target = f"alice/corrupt-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(tmp_path / "home"))
    code, _, err = cli("publish", str(recipe(tmp_path, repos, target=target)), "--fetch", "stream")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: chat {repos['chat']}@") and name in line and "sha256" in line, line
    assert "nothing was published" in line
    assert len(api.list_repo_commits(target)) == 1  # only the empty repo: nothing committed


def test_a_streaming_publish_under_faults_completes_with_the_same_output(tmp_path, own_hub, capsys, transfer):
    hub, repos = own_hub(TripletSpec(arch="llama"), "5xx=0.03,429=0.01,drop=0.02", seed=3)
    r = recipe(tmp_path, repos, target="alice/faulty", shard="100KB")
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", "stream")
    assert code == 0, err
    faults = {"5xx" if q.fault.startswith("5") else q.fault for q in hub.requests if q.fault}
    assert faults == {"5xx", "429", "drop"}, faults  # 5xx, 429 and dropped connections were all injected
    hub.stop()
    clean = own_hub.serve()  # the same state, without faults, for the comparison
    published_equals_snapshot(tmp_path, capsys, clean.url, "alice/faulty", r)


def test_a_hub_that_always_fails_stops_the_run_with_one_line_per_source(tmp_path, own_hub, capsys):
    hub, repos = own_hub(TripletSpec(arch="llama"), "5xx=1")
    code, _, err = run_main(capsys, "publish", str(recipe(tmp_path, repos, target="alice/never")), "--fetch", "stream")
    assert code == 2
    errors = err.strip().splitlines()
    assert [e.split(": ", 3)[2] for e in errors] == ["base.repo_id", "chat.repo_id", "cp.repo_id"], err
    assert all("fault injected" in e for e in errors)
    tries = [q for q in hub.requests if q.method == "GET" and "/api/models/alice/base" in q.path]
    assert len(tries) == 5  # CHATVECTOR_HTTP_ATTEMPTS, then the error
    assert not any("/commit/" in q.path for q in hub.requests)


def test_a_commit_that_always_fails_stops_after_bounded_retries_and_the_rerun_uploads_nothing_again(
        tmp_path, own_hub, capsys, transfer):
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256), "5xx=1",
                            only=("POST /api/models/alice/never/commit/",))
    r = recipe(tmp_path, repos, target="alice/never", shard="300KB")
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", "stream")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and "alice/never" in line and "50" in line, err
    tries = [q for q in hub.requests if "/commit/" in q.path]
    assert len(tries) == 5 and all(q.fault for q in tries)  # retried, but not forever
    assert file_uploads(hub.requests)  # the shards went up, invisible without the commit
    hub.stop()
    clean = own_hub.serve()  # the Hub is well again
    code, _, err = run_main(capsys, "publish", str(r), "--fetch", "stream")
    assert code == 0, err
    assert not file_uploads(clean.requests)  # every shard was held: none computed or sent again
    assert len(HfApi(endpoint=clean.url, token=WRITE_TOKEN.secret).list_repo_commits("alice/never")) == 2


def test_uploads_that_always_fail_stop_the_merge_and_commit_nothing(tmp_path, own_hub, capsys, transfer):
    only = {"lfs": "PUT /lfs-upload/", "xet": "POST /xet-cas/v1/xorbs/"}[transfer]
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256), "5xx=1", only=(only,))
    code, _, err = run_main(capsys, "publish", str(recipe(tmp_path, repos, target="alice/never", shard="300KB")),
                            "--fetch", "stream")
    assert code == 2
    [line] = err.strip().splitlines()
    assert "uploading model-00001-of-" in line and "nothing was committed" in line, err
    puts = file_uploads(hub.requests)
    assert 1 < len(puts) <= 6 and all(q.fault for q in puts), puts  # one shard's tries (the client's); then stop
    assert not any("/commit/" in q.path for q in hub.requests)


@pytest.mark.slow
def test_a_killed_streaming_publish_resumes_without_uploading_again(tmp_path, own_hub, capsys, transfer):
    """A publish in a process of its own, SIGKILLed once two shards are up; the rerun (in-process) skips them."""
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256, max_shard_size="400KB"),
                         throttle_total=3)
    r = recipe(tmp_path, repos, target="alice/resumed", shard="300KB")
    env = env_for(hub.url, tmp_path / "home")  # 3 MB/s: the run takes seconds, time to kill it midway
    proc = subprocess.Popen([sys.executable, "-m", "chatvector", "publish", str(r), "--fetch", "stream"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        # (only the workspace: the HF cache's temporary folders come and go while the run downloads)
        found = list((tmp_path / "home" / "chatvector").rglob("journal.jsonl"))
        if found and sum('"shard"' in line for line in found[0].read_text().splitlines()) >= 2:
            journal = found[0]
            break
        time.sleep(0.02)
    assert journal is not None and proc.poll() is None, "the run ended before two shards were uploaded"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = [json.loads(line)["shard"] for line in journal.read_text().splitlines() if '"shard"' in line]
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret)
    assert len(api.list_repo_commits("alice/resumed")) == 1  # the target is unchanged: its empty first commit only
    before = len(hub.requests)

    code, out, err = run_main(capsys, "publish", str(r), "--fetch", "stream", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    shards = [n for n in doc["added"] if n.endswith(".safetensors")]
    puts = file_registrations(list(hub.requests)[before:])
    assert doc["io"]["resumed_shards"] == len(held) >= 2
    assert len(puts) == len(shards) - len(held)  # the shards the Hub held were not uploaded again
    assert len(api.list_repo_commits("alice/resumed")) == 2
    assert not journal.exists()  # committed: the work folder is gone
    hub.stop()
    clean = own_hub.serve()  # unthrottled, for the comparison
    published_equals_snapshot(tmp_path, capsys, clean.url, "alice/resumed", r)  # byte-identical to a fresh merge


def served_bytes(hub_log) -> int:
    """Bytes of file content the Hub sent: ranged or whole GETs on the storage host and the CAS's xorb fetches."""
    import re

    total = 0
    for q in hub_log:
        if q.method == "GET" and q.status in (200, 206) and (q.path.startswith("/cdn-lfs/") or "/fetch/" in q.path):
            m = re.match(r"bytes=(\d+)-(\d+)$", q.range or "")
            assert m, f"an unranged read of a whole file: {q.path}"  # (stream mode reads ranges only)
            total += int(m.group(2)) - int(m.group(1)) + 1
    return total


def test_a_stream_sweep_of_hub_sources_reads_each_input_byte_once(tmp_path, own_hub, capsys):
    """plan's header probes are kept for the stream, the merge and every variant's spot check share one parsed
    header per file: a 4-factor stream sweep is served at most 1.05x the input files' bytes (1.19x before)."""
    hub, repos = own_hub(TripletSpec(arch="llama", hidden_size=128, intermediate_size=256, max_shard_size="400KB"))
    api = HfApi(endpoint=hub.url, token=WRITE_TOKEN.secret)
    inputs = sum(s.size for repo in set(repos.values()) for s in api.model_info(repo, files_metadata=True).siblings
                 if s.rfilename.endswith(".safetensors"))
    mark = len(hub.requests)
    code, _, err = run_main(capsys, "sweep", str(recipe(tmp_path, repos, shard="300KB")), "--out",
                            str(tmp_path / "s"), "--fetch", "stream", "--lambdas", "0.5,0.7,0.85,1")
    assert code == 0, err
    served = served_bytes(list(hub.requests)[mark:])
    assert inputs <= served <= 1.05 * inputs, served / inputs
