"""The local Hub, driven through the real huggingface_hub client over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from chatvector.localhub import LocalHub
from tests.conftest import OTHER_WRITER, READ_TOKEN, WRITE_TOKEN

ROOT = Path(__file__).resolve().parents[1]


def new_repo(api: HfApi, private: bool = False) -> str:
    repo_id = f"alice/r-{uuid.uuid4().hex[:10]}"
    api.create_repo(repo_id, private=private)
    return repo_id


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def requests_since(hub: LocalHub, mark: int):
    return list(hub.requests)[mark:]


def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# -- repos ------------------------------------------------------------------------------------------------
def test_create_repo_returns_url_and_initial_commit(api, hub):
    url = api.create_repo("alice/created")
    assert url == f"{hub.url}/alice/created" and url.repo_id == "alice/created"
    info = api.model_info("alice/created")
    assert len(info.sha) == 40 and [s.rfilename for s in info.siblings] == [".gitattributes"]


def test_create_repo_twice_is_409_unless_exist_ok(api):
    repo_id = new_repo(api)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(repo_id)
    assert exc.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id


def test_create_repo_without_namespace_uses_token_owner(api):
    name = f"plain-{uuid.uuid4().hex[:6]}"
    assert api.create_repo(name).repo_id == f"alice/{name}"


def test_private_repo_is_not_found_for_anonymous(api):
    repo_id = new_repo(api, private=True)
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", token=False)
    assert HfApi(token=READ_TOKEN.secret).model_info(repo_id).id == repo_id


def test_delete_repo(api):
    repo_id = new_repo(api)
    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_dataset_repos_live_apart_from_models(api, tmp_path):
    repo_id = f"alice/ds-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id=repo_id, repo_type="dataset")
    path = hf_hub_download(repo_id, "data.csv", repo_type="dataset", token=WRITE_TOKEN.secret)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)


def test_whoami(api):
    assert api.whoami()["name"] == "alice"
    with pytest.raises(HfHubHTTPError):
        HfApi(token="hf_not_a_real_token").whoami()


# -- uploads and downloads --------------------------------------------------------------------------------
def test_upload_folder_regular_and_lfs_then_snapshot_download(api, hub, tmp_path):
    repo_id = new_repo(api)
    files = {
        "config.json": b'{"a": 1}',
        "sub/notes.txt": b"small regular file",
        "basic.bin": os.urandom(300 * 1024),  # above the 256 KiB LFS threshold, one part
        "weights/multi.bin": os.urandom(1300 * 1024),  # above the 512 KiB chunk: multipart in 3 parts
    }
    mark = len(hub.requests)
    api.upload_folder(repo_id=repo_id, folder_path=write_files(tmp_path / "up", files))
    log = requests_since(hub, mark)
    assert any(r.path.endswith(".git/info/lfs/objects/batch") for r in log)
    assert sum("/part/" in r.path and r.method == "PUT" for r in log) == 3
    assert any(r.path.endswith("/complete") for r in log)
    assert any(r.path.endswith("/objects/verify") for r in log)

    info = api.model_info(repo_id, files_metadata=True)
    by_name = {s.rfilename: s for s in info.siblings}
    assert by_name["basic.bin"].lfs is not None and by_name["basic.bin"].lfs.size == 300 * 1024
    assert by_name["config.json"].lfs is None

    snapshot = Path(snapshot_download(repo_id, token=WRITE_TOKEN.secret))
    for name, data in files.items():
        assert (snapshot / name).read_bytes() == data
    local = Path(snapshot_download(repo_id, local_dir=tmp_path / "local", token=WRITE_TOKEN.secret))
    for name, data in files.items():
        assert (local / name).read_bytes() == data


def test_hf_hub_download_cache_and_local_dir(api, tmp_path):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"payload", path_in_repo="x/y.txt", repo_id=repo_id)
    cached = hf_hub_download(repo_id, "x/y.txt", token=WRITE_TOKEN.secret)
    assert Path(cached).read_bytes() == b"payload" and "snapshots" in cached
    local = hf_hub_download(repo_id, "x/y.txt", local_dir=tmp_path / "ld", token=WRITE_TOKEN.secret)
    assert Path(local).read_bytes() == b"payload"


def test_reupload_of_unchanged_folder_makes_no_commit(api, tmp_path):
    repo_id = new_repo(api)
    folder = write_files(tmp_path / "up", {"a.txt": b"same", "big.bin": os.urandom(400 * 1024)})
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    before = api.model_info(repo_id).sha
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert api.model_info(repo_id).sha == before


def test_ranged_get_returns_exact_bytes(api, hub):
    repo_id = new_repo(api)
    data = os.urandom(700 * 1024)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    url = f"{hub.url}/{repo_id}/resolve/main/w.bin"
    status, headers, body = raw_get(url, {"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = raw_get(url, {"Range": "bytes=-16"})
    assert status == 206 and body == data[-16:]
    status, _, body = raw_get(url, {"Range": f"bytes={len(data) - 5}-"})
    assert status == 206 and body == data[-5:]
    status, headers, _ = raw_get(url, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = raw_get(url)
    assert status == 200 and body == data and headers["X-Linked-Size"] == str(len(data))


def test_head_reports_commit_etag_and_real_size(api, hub):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"12345", path_in_repo="f.txt", repo_id=repo_id)
    req = urllib.request.Request(f"{hub.url}/{repo_id}/resolve/main/f.txt", method="HEAD")
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Length"] == "5" and resp.headers["X-Linked-Size"] == "5"
        assert len(resp.headers["X-Repo-Commit"]) == 40 and resp.headers["ETag"]
        assert "X-Xet-Hash" not in resp.headers


def test_tree_lists_folders_and_paginates_with_absolute_links(tmp_path, api):
    with LocalHub(tmp_path / "small-pages", tokens=[WRITE_TOKEN], page_size=3) as small:
        client = HfApi(endpoint=small.url, token=WRITE_TOKEN.secret)
        client.create_repo("alice/paged")
        files = {f"d{i}/f{j}.txt": b"x" for i in range(3) for j in range(3)}
        client.upload_folder(repo_id="alice/paged", folder_path=write_files(tmp_path / "up", files))
        assert sorted(client.list_repo_files("alice/paged")) == sorted([*files, ".gitattributes"])
        top = {e.path for e in client.list_repo_tree("alice/paged")}
        assert top == {"d0", "d1", "d2", ".gitattributes"}
        assert {e.path for e in client.list_repo_tree("alice/paged", path_in_repo="d1")} == {
            "d1/f0.txt", "d1/f1.txt", "d1/f2.txt"}
        assert sum(r.path.endswith("/tree/main") for r in small.requests) >= 4  # followed several pages
        with pytest.raises(EntryNotFoundError):
            list(client.list_repo_tree("alice/paged", path_in_repo="nope"))


def test_paths_info_and_commit_history(api):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"1", path_in_repo="a/b.txt", repo_id=repo_id, commit_message="first")
    api.upload_file(path_or_fileobj=b"2", path_in_repo="c.txt", repo_id=repo_id, commit_message="second")
    infos = api.get_paths_info(repo_id, ["a/b.txt", "a", "missing"])
    assert {i.path for i in infos} == {"a/b.txt", "a"}
    titles = [c.title for c in api.list_repo_commits(repo_id)]
    assert titles == ["second", "first", "initial commit"]


# -- refs, PRs and concurrency ----------------------------------------------------------------------------
def test_tags_and_branches(api):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo_id)
    api.create_tag(repo_id, tag="v1.0", tag_message="first")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(repo_id, tag="v1.0")
    assert exc.value.response.status_code == 409
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=repo_id, revision="dev")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=repo_id)
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]
    read = lambda rev: Path(hf_hub_download(repo_id, "f.txt", revision=rev, token=WRITE_TOKEN.secret)).read_bytes()
    assert (read("v1.0"), read("dev"), read("main")) == (b"v1", b"dev", b"v2")
    api.delete_tag(repo_id, tag="v1.0")
    api.delete_branch(repo_id, branch="dev")
    assert api.list_repo_refs(repo_id).tags == []
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "f.txt", revision="dev", token=WRITE_TOKEN.secret)


def test_pr_commit_leaves_main_alone(api):
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"main", path_in_repo="f.txt", repo_id=repo_id)
    main_sha = api.model_info(repo_id).sha
    info = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="f.txt", repo_id=repo_id, create_pr=True)
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1"
    assert api.model_info(repo_id).sha == main_sha
    pr_file = hf_hub_download(repo_id, "f.txt", revision="refs/pr/1", token=WRITE_TOKEN.secret)
    assert Path(pr_file).read_bytes() == b"proposal"
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    details = api.get_discussion_details(repo_id, 1)
    assert details.is_pull_request and details.status == "open"


def test_folder_upload_as_pr_uses_discussions_api(api, tmp_path):
    repo_id = new_repo(api)
    pr = api.create_pull_request(repo_id, title="Add weights")
    api.upload_folder(repo_id=repo_id, folder_path=write_files(tmp_path / "u", {"w.txt": b"w"}),
                      revision=pr.git_reference)
    assert api.file_exists(repo_id, "w.txt", revision=pr.git_reference)
    assert not api.file_exists(repo_id, "w.txt")


def test_stale_parent_commit_is_412(api):
    repo_id = new_repo(api)
    old = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(repo_id, [CommitOperationAdd("b.txt", b"2")], commit_message="late", parent_commit=old)
    assert exc.value.response.status_code == 412
    assert not api.file_exists(repo_id, "b.txt")
    head = api.model_info(repo_id).sha
    api.create_commit(repo_id, [CommitOperationDelete("a.txt")], commit_message="ok", parent_commit=head)
    assert not api.file_exists(repo_id, "a.txt")


def test_concurrent_committers_are_serialized(api):
    repo_id = new_repo(api)
    head = api.model_info(repo_id).sha
    results: dict[int, object] = {}

    def commit(i: int, parent: str | None) -> None:
        client = HfApi(token=(WRITE_TOKEN if i % 2 else OTHER_WRITER).secret)
        try:
            client.create_commit(repo_id, [CommitOperationAdd(f"f{i}.txt", b"%d" % i)],
                                 commit_message=f"c{i}", parent_commit=parent)
            results[i] = "ok"
        except HfHubHTTPError as err:
            results[i] = err.response.status_code

    def run_all(threads: list[threading.Thread]) -> None:
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run_all([threading.Thread(target=commit, args=(i, head)) for i in range(4)])  # same parent: one wins
    run_all([threading.Thread(target=commit, args=(i, None)) for i in range(4, 8)])  # no parent: all land
    racing = [results[i] for i in range(4)]
    assert racing.count("ok") == 1 and racing.count(412) == 3
    assert all(results[i] == "ok" for i in range(4, 8))
    files = set(api.list_repo_files(repo_id))
    assert {f"f{i}.txt" for i in range(4, 8)} <= files
    assert len(list(api.list_repo_commits(repo_id))) == 1 + 1 + 4


# -- errors and auth --------------------------------------------------------------------------------------
def test_error_classes(api):
    repo_id = new_repo(api)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="nope", token=WRITE_TOKEN.secret)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", token=WRITE_TOKEN.secret)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="nope")


def test_bad_token_is_401(api):
    repo_id = new_repo(api)
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token="hf_wrong").model_info(repo_id)
    assert exc.value.response.status_code == 401


def test_read_token_cannot_write(api):
    repo_id = new_repo(api)
    reader = HfApi(token=READ_TOKEN.secret)
    with pytest.raises(HfHubHTTPError) as exc:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert exc.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as exc:
        reader.create_repo("bob/new-repo")
    assert exc.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token=False).create_repo("alice/anon")
    assert exc.value.response.status_code == 401


def test_gated_repo_download_is_refused(api):
    repo_id = f"carol/gated-{uuid.uuid4().hex[:6]}"
    owner = HfApi(token=OTHER_WRITER.secret)
    owner.create_repo(repo_id)
    owner.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    owner.update_repo_settings(repo_id, gated="auto")
    with pytest.raises(GatedRepoError):
        hf_hub_download(repo_id, "config.json", token=WRITE_TOKEN.secret)
    assert Path(hf_hub_download(repo_id, "config.json", token=OTHER_WRITER.secret)).read_bytes() == b"{}"


def test_invalid_card_metadata_is_refused(api):
    repo_id = new_repo(api)
    with pytest.raises(ValueError, match="base_model_relation"):
        api.upload_file(path_or_fileobj=b"---\nbase_model_relation: blend\nbase_model: a/b\n---\n",
                        path_in_repo="README.md", repo_id=repo_id)


def test_tokens_never_appear_in_logs(api, hub):
    api.model_info(new_repo(api))
    with pytest.raises(HfHubHTTPError):
        HfApi(token="hf_wrong_secret_token").model_info("alice/x")
    log_text = (hub.root / "access.log").read_text()
    assert "GET /api/models/" in log_text
    for secret in (WRITE_TOKEN.secret, READ_TOKEN.secret, "hf_wrong_secret_token"):
        assert secret not in log_text


def test_state_survives_restart(tmp_path):
    root = tmp_path / "persist"
    with LocalHub(root, tokens=[WRITE_TOKEN]) as first:
        client = HfApi(endpoint=first.url, token=WRITE_TOKEN.secret)
        client.create_repo("alice/keep")
        client.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="alice/keep")
        sha = client.model_info("alice/keep").sha
    with LocalHub(root, tokens=[WRITE_TOKEN]) as second:
        client = HfApi(endpoint=second.url, token=WRITE_TOKEN.secret)
        assert client.model_info("alice/keep").sha == sha
        assert client.list_repo_files("alice/keep") == [".gitattributes", "k.txt"]


# -- transformers round trip ------------------------------------------------------------------------------
@pytest.mark.slow
def test_transformers_push_to_hub_and_from_pretrained(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "saved")
    model.push_to_hub("alice/tiny-llama", token=WRITE_TOKEN.secret, private=True)
    loaded = AutoModelForCausalLM.from_pretrained("alice/tiny-llama", token=WRITE_TOKEN.secret)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


# -- the command line -------------------------------------------------------------------------------------
def test_cli_serve_prints_url_and_serves(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(tmp_path / "cli-hub"),
         "--token", "dave=hf_dave_secret:write"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("Serving on http://127.0.0.1:")
        url = line.removeprefix("Serving on ")
        client = HfApi(endpoint=url, token="hf_dave_secret")
        assert client.create_repo("dave/cli").repo_id == "dave/cli"
        status, _, body = raw_get(f"{url}/api/models/dave/cli")
        assert status == 200 and b'"sha"' in body
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "POST /api/repos/create 200 user=dave" in stderr  # each request echoed to stderr
    assert "hf_dave_secret" not in stderr + (tmp_path / "cli-hub" / "access.log").read_text()


def test_cli_help_teaches_every_command():
    result = subprocess.run([sys.executable, "-m", "chatvector", "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 0
    for command in ("plan", "merge", "publish", "demo", "hub"):
        assert f"\n    {command} " in result.stdout
    serve = subprocess.run([sys.executable, "-m", "chatvector", "hub", "serve", "--help"], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
    assert "HF_ENDPOINT=http://HOST:PORT" in serve.stdout and "--token NAME=SECRET:read|write" in serve.stdout


def test_cli_rejects_malformed_token_spec(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(tmp_path), "--token", "dave-secret"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --token must look like NAME=SECRET:read or NAME=SECRET:write"]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.3, 1.0])
def test_killed_server_leaves_old_or_new_state_never_half(tmp_path, delay):
    """SIGKILL the server while a commit is in flight: after a restart the branch is at the old commit with
    the old files, or at the new one with every new file intact."""
    import signal
    import time

    root = tmp_path / "crash-hub"

    def start() -> tuple[subprocess.Popen, HfApi]:
        proc = subprocess.Popen([sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(root),
                                 "--token", "eve=hf_eve_secret:write", "--lfs-threshold", "1048576"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        url = proc.stdout.readline().strip().removeprefix("Serving on ")
        return proc, HfApi(endpoint=url, token="hf_eve_secret")

    proc, client = start()
    client.create_repo("eve/crash")
    client.upload_file(path_or_fileobj=b"old", path_in_repo="a.txt", repo_id="eve/crash")
    old_sha = client.model_info("eve/crash").sha
    new_files = {"a.txt": b"new", "big.bin": os.urandom(24 << 20), "small.txt": b"x" * 1000}
    folder = write_files(tmp_path / "new", new_files)
    uploader = threading.Thread(target=lambda: _swallow(lambda: client.upload_folder(
        repo_id="eve/crash", folder_path=folder)), daemon=True)
    uploader.start()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    uploader.join(timeout=60)

    proc, client = start()
    try:
        head = client.model_info("eve/crash").sha
        files = sorted(client.list_repo_files("eve/crash"))
        if head == old_sha:
            assert files == [".gitattributes", "a.txt"]
            assert Path(client.hf_hub_download("eve/crash", "a.txt", cache_dir=tmp_path / "c")).read_bytes() == b"old"
        else:
            assert files == sorted([".gitattributes", *new_files])
            for name, data in new_files.items():
                assert Path(client.hf_hub_download("eve/crash", name, cache_dir=tmp_path / "c")).read_bytes() == data
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _swallow(fn) -> None:
    try:
        fn()
    except Exception:  # the server was killed under it: any client error is expected here
        pass
