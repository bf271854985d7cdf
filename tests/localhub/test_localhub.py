"""The local Hub, driven through the real huggingface_hub client over HTTP."""

from __future__ import annotations

import http.client
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

from chatvector.cli import main
from chatvector.localhub import FineGrained, LocalHub, Org, Scoped, Token, parse_org_spec
from chatvector.localhub.protocol import parse_fine_grained_token_spec
from tests.conftest import OTHER_WRITER, READ_TOKEN, SHARED_ORG, WRITE_TOKEN

ROOT = Path(__file__).resolve().parents[2]


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


def test_private_repo_is_not_found_for_anonymous_or_other_users(api):
    repo_id = new_repo(api, private=True)
    assert api.model_info(repo_id).private is True
    for token in (False, READ_TOKEN.secret, OTHER_WRITER.secret):  # anonymous, bob, carol: not alice's namespace
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).model_info(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, ".gitattributes", token=token)


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
def test_upload_folder_regular_and_lfs_then_snapshot_download(api, hub, tmp_path, transfer):
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
    if transfer == "lfs":
        assert any(r.path.endswith(".git/info/lfs/objects/batch") for r in log)
        assert sum("/part/" in r.path and r.method == "PUT" for r in log) == 3
        assert any(r.path.endswith("/complete") for r in log)
        assert any(r.path.endswith("/objects/verify") for r in log)
    else:  # the large files went to the CAS: xorbs, then the shard naming the files; no LFS request at all
        assert any(r.path.endswith("/xet-write-token/main") for r in log)
        assert any(r.path.startswith("/xet-cas/v1/xorbs/") for r in log)
        assert any(r.path == "/xet-cas/v2/shards" for r in log)
        assert not any("/lfs" in r.path for r in log)

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


def test_ranged_get_returns_exact_bytes(api, hub, transfer):
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
    status, headers, body = raw_get(url)  # (urllib follows the redirect to the storage host, the Range with it)
    assert status == 200 and body == data
    conn = http.client.HTTPConnection(hub.url.removeprefix("http://"), timeout=10)
    conn.request("GET", url.removeprefix(hub.url))  # the Hub's own answer: a redirect carrying the file's metadata
    redirect = conn.getresponse()
    assert redirect.status == 302 and redirect.getheader("X-Linked-Size") == str(len(data))
    assert redirect.getheader("Location").startswith(hub.url.replace("127.0.0.1", "localhost") + "/cdn-lfs/")
    conn.close()


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
    repo_id = f"{SHARED_ORG}/r-{uuid.uuid4().hex[:10]}"  # an org where alice and carol both write
    api.create_repo(repo_id)
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


def test_card_metadata_is_checked_by_the_hubs_rules(api):
    repo_id = new_repo(api)
    bad = "---\nlicense: MIT\nlanguage: [KO, en]\ntags: [merge, Merge]\n---\n# x\n"
    with pytest.raises(ValueError) as exc:
        api.upload_file(path_or_fileobj=bad.encode(), path_in_repo="README.md", repo_id=repo_id)
    message = str(exc.value)
    assert 'Error: "license" must be one of [apache-2.0, mit,' in message  # the Hub's schema validator's words
    assert "\"language[0]\": 'KO' must be in lower case (did you mean 'ko'?)" in message
    assert "\"tags[1]\": 'Merge' repeats 'merge'" in message
    with pytest.raises(ValueError, match='"license_name" must give the license an id'):
        api.upload_file(path_or_fileobj=b"---\nlicense: other\n---\n", path_in_repo="README.md", repo_id=repo_id)
    with pytest.raises(ValueError, match='"model-index" must be a list of mappings'):
        api.upload_file(path_or_fileobj=b"---\nmodel-index: {name: x}\n---\n", path_in_repo="README.md",
                        repo_id=repo_id)
    assert not api.file_exists(repo_id, "README.md")

    good = ("---\nlicense: mit\nlanguage: [ko, en]\ntags: [merge, chat-vector]\nbase_model: [a/b, c/d]\n"
            "base_model_relation: merge\nmodel-index: [{name: x, results: []}]\n---\n# x\n")
    api.upload_file(path_or_fileobj=good.encode(), path_in_repo="README.md", repo_id=repo_id)
    card = api.model_info(repo_id).card_data
    assert card.license == "mit" and card.language == ["ko", "en"] and card.base_model == ["a/b", "c/d"]
    with pytest.warns(UserWarning, match="empty or missing yaml metadata in repo card"):  # a warning, not an error
        api.upload_file(path_or_fileobj=b"# no metadata\n", path_in_repo="README.md", repo_id=repo_id)
    assert api.model_info(repo_id).card_data is None


# -- organizations, namespaces and fine-grained tokens ----------------------------------------------------
def rights_error(exc) -> str:
    assert exc.value.response.status_code == 403, exc.value
    return exc.value.response.headers["X-Error-Message"]


def test_whoami_reports_orgs_roles_and_token_role(api):
    alice = api.whoami()
    assert alice["auth"]["accessToken"] == {"displayName": "alice", "role": "write"}
    assert {"type": "org", "name": "my-org", "fullname": "my-org", "roleInOrg": "write"} in alice["orgs"]
    assert {o["name"] for o in alice["orgs"]} == {"demo", "meta-llama", "beomi", "mistralai", "stabilityai",
                                                  "yentinglin", "my-org", SHARED_ORG}
    bob = HfApi(token=READ_TOKEN.secret).whoami()
    assert bob["auth"]["accessToken"]["role"] == "read" and bob["orgs"] == []
    carol = HfApi(token=OTHER_WRITER.secret).whoami()
    assert carol["orgs"] == [{"type": "org", "name": SHARED_ORG, "fullname": SHARED_ORG, "roleInOrg": "write"}]


def test_member_writes_to_its_org_and_an_outsider_is_refused(api, hub, tmp_path):
    repo_id = f"my-org/r-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)  # alice: write member of my-org
    api.upload_folder(repo_id=repo_id, folder_path=write_files(tmp_path / "up", {
        "a.txt": b"1", "big.bin": os.urandom(300 * 1024)}))  # the LFS path too
    api.create_branch(repo_id, branch="dev")
    api.create_tag(repo_id, tag="v1")
    head = api.model_info(repo_id).sha

    carol = HfApi(token=OTHER_WRITER.secret)
    with pytest.raises(HfHubHTTPError) as exc:
        carol.create_repo(f"my-org/c-{uuid.uuid4().hex[:8]}")
    assert rights_error(exc) == ('You don\'t have the rights to create a model under the namespace "my-org": '
                                 "carol is not a member of the organization my-org")
    refused = f"You don't have the rights to write to {repo_id}: carol is not a member of the organization my-org"
    writes = [
        lambda: carol.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id),
        lambda: carol.create_commit(repo_id, [CommitOperationDelete("a.txt")], commit_message="rm"),
        lambda: carol.create_branch(repo_id, branch="carols"),
        lambda: carol.create_tag(repo_id, tag="v2"),
        lambda: carol.delete_tag(repo_id, tag="v1"),
        lambda: carol.delete_branch(repo_id, branch="dev"),
        lambda: carol.update_repo_settings(repo_id, private=True),
        lambda: carol.delete_repo(repo_id),
    ]
    for write in writes:
        with pytest.raises(HfHubHTTPError) as exc:
            write()
        assert rights_error(exc) == refused
    # Proposing is not writing: on the Hub anyone who can see a repo opens PRs and discussions on it
    # (localhub/test_divergences.test_a_pull_request_on_a_repo_one_cannot_write).
    assert carol.create_pull_request(repo_id, title="mine").num == 1
    assert api.model_info(repo_id).sha == head and set(api.list_repo_refs(repo_id).tags[0].name) == set("v1")
    assert carol.create_repo(repo_id, exist_ok=True).repo_id == repo_id  # as on the Hub: 403, then repo_info

    with pytest.raises(HfHubHTTPError) as exc:  # another user's namespace
        carol.create_repo("alice/carols")
    assert rights_error(exc).endswith(': alice is neither carol\'s namespace nor an organization carol belongs to')
    with pytest.raises(HfHubHTTPError) as exc:
        carol.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=new_repo(api))
    assert "alice is neither carol's namespace" in rights_error(exc)


def test_private_org_repo_is_visible_to_members_only(api, tmp_path):
    repo_id = f"my-org/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"p", path_in_repo="p.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private and Path(
        hf_hub_download(repo_id, "p.txt", token=WRITE_TOKEN.secret)).read_bytes() == b"p"
    for token in (OTHER_WRITER.secret, READ_TOKEN.secret, False):
        client = HfApi(token=token)
        for read in (lambda: client.model_info(repo_id), lambda: client.list_repo_files(repo_id),
                     lambda: client.list_repo_refs(repo_id), lambda: client.list_repo_commits(repo_id),
                     lambda: hf_hub_download(repo_id, "p.txt", token=token, cache_dir=tmp_path / "outsider")):
            with pytest.raises(RepositoryNotFoundError):
                read()
        with pytest.raises(RepositoryNotFoundError):  # a write to a repo it cannot see: it does not exist
            client.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)


ORG_USERS = {u: Token(u, f"hf_{u}_org_secret_0123", "write") for u in ("alice", "dana", "rita", "olaf", "erin")}
FG_ORG_WRITE = Token("erin", "hf_erin_fg_org_write", fine_grained=FineGrained(
    (Scoped("org", "acme", ("repo.write",)),)))
FG_REPO_WRITE = Token("erin", "hf_erin_fg_repo_write", fine_grained=FineGrained(
    (Scoped("model", "acme/public", ("repo.write",)),)))
FG_REPO_READ = Token("erin", "hf_erin_fg_repo_read", fine_grained=FineGrained(
    (Scoped("model", "acme/secret", ("repo.content.read",)),)))
FG_NOTHING = Token("erin", "hf_erin_fg_nothing", fine_grained=FineGrained(global_permissions=("discussion.write",)))
FG_GATED = Token("erin", "hf_erin_fg_gated", fine_grained=FineGrained(can_read_gated_repos=True))
FG_READ_ROLE = Token("rita", "hf_rita_fg_org_write", fine_grained=FineGrained((Scoped("org", "acme", ("repo.write",)),)))
ACME = Org("acme", {"alice": "admin", "dana": "contributor", "rita": "read", "erin": "write"}, fullname="Acme Corp")


@pytest.fixture(scope="module")
def org_hub(tmp_path_factory):
    """A hub with an organization `acme`: alice admin, dana contributor, rita read, erin write (through
    fine-grained tokens); olaf is no member. acme/secret is private, acme/gated gated, acme/public public."""
    tokens = [*ORG_USERS.values(), FG_ORG_WRITE, FG_REPO_WRITE, FG_REPO_READ, FG_NOTHING, FG_GATED, FG_READ_ROLE]
    with LocalHub(tmp_path_factory.mktemp("org-hub"), tokens=tokens, orgs=[ACME]) as org_hub:
        admin = as_user(org_hub, ORG_USERS["alice"])
        for repo_id, private in (("acme/secret", True), ("acme/secret2", True), ("acme/public", False),
                                 ("acme/gated", False)):
            admin.create_repo(repo_id, private=private)
            admin.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
        admin.update_repo_settings("acme/gated", gated="auto")
        yield org_hub


def as_user(org_hub: LocalHub, token: Token) -> HfApi:
    return HfApi(endpoint=org_hub.url, token=token.secret)


def test_contributor_creates_repos_and_writes_only_to_its_own(org_hub):
    dana = as_user(org_hub, ORG_USERS["dana"])
    mine = f"acme/dana-{uuid.uuid4().hex[:6]}"
    dana.create_repo(mine)
    dana.upload_file(path_or_fileobj=b"d", path_in_repo="d.txt", repo_id=mine)
    dana.create_branch(mine, branch="dev")
    dana.create_tag(mine, tag="v1")
    assert dana.list_repo_files(mine) == [".gitattributes", "d.txt"]
    refused = ("You don't have the rights to write to acme/public: dana is a contributor in acme and may write "
               "only to the repos dana created")
    for write in (lambda: dana.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="acme/public"),
                  lambda: dana.create_tag("acme/public", tag="dana"),
                  lambda: dana.delete_repo("acme/public")):
        with pytest.raises(HfHubHTTPError) as exc:
            write()
        assert rights_error(exc) == refused
    as_user(org_hub, ORG_USERS["alice"]).upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=mine)
    dana.delete_repo(mine)  # its own


def test_read_member_sees_private_repos_and_cannot_write(org_hub, tmp_path):
    rita = as_user(org_hub, ORG_USERS["rita"])
    assert rita.model_info("acme/secret").private
    assert Path(rita.hf_hub_download("acme/secret", "config.json", cache_dir=tmp_path / "rita")).read_bytes() == b"{}"
    with pytest.raises(HfHubHTTPError) as exc:
        rita.create_repo("acme/ritas")
    assert rights_error(exc).endswith(": rita has the read role in acme, which cannot create or write to repos")
    with pytest.raises(HfHubHTTPError) as exc:
        rita.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="acme/public")
    assert rights_error(exc).startswith("You don't have the rights to write to acme/public: rita has the read role")

    olaf = as_user(org_hub, ORG_USERS["olaf"])
    assert olaf.model_info("acme/public").id == "acme/public"
    with pytest.raises(RepositoryNotFoundError):
        olaf.model_info("acme/secret")
    with pytest.raises(RepositoryNotFoundError):
        olaf.hf_hub_download("acme/secret", "config.json", cache_dir=tmp_path / "olaf")  # own cache: the client
        # would fall back to a cached copy when the server refuses


def test_gated_repo_downloads_go_to_org_members(org_hub, tmp_path):
    def download(token: Token) -> bytes:
        return Path(as_user(org_hub, token).hf_hub_download("acme/gated", "config.json",
                                                            cache_dir=tmp_path / token.secret)).read_bytes()

    assert download(ORG_USERS["dana"]) == download(ORG_USERS["rita"]) == download(FG_GATED) == b"{}"
    for outsider in (ORG_USERS["olaf"], FG_NOTHING):  # not a member; a member's token without gated reads
        with pytest.raises(GatedRepoError):
            download(outsider)


def test_whoami_of_a_fine_grained_token(org_hub):
    who = as_user(org_hub, FG_ORG_WRITE).whoami()
    assert who["name"] == "erin"
    assert who["orgs"] == [{"type": "org", "name": "acme", "fullname": "Acme Corp", "roleInOrg": "write"}]
    assert who["auth"]["accessToken"] == {"displayName": "erin", "role": "fineGrained", "fineGrained": {
        "canReadGatedRepos": False, "global": [],
        "scoped": [{"entity": {"type": "org", "name": "acme"}, "permissions": ["repo.write"]}]}}
    assert as_user(org_hub, FG_NOTHING).whoami()["auth"]["accessToken"]["fineGrained"]["global"] == [
        "discussion.write"]


def test_fine_grained_writes_need_repo_write_on_the_repo_or_its_namespace(org_hub):
    org_writer = as_user(org_hub, FG_ORG_WRITE)
    made = f"acme/fg-{uuid.uuid4().hex[:6]}"
    org_writer.create_repo(made)
    org_writer.upload_file(path_or_fileobj=b"1", path_in_repo="1.txt", repo_id=made)
    org_writer.upload_file(path_or_fileobj=b"1", path_in_repo="1.txt", repo_id="acme/public")
    with pytest.raises(HfHubHTTPError) as exc:  # its own user namespace is not in the token's scope
        org_writer.create_repo("erin/own")
    assert rights_error(exc) == ('You don\'t have the rights to create a model under the namespace "erin": '
                                 "the fine-grained token has no repo.write permission on erin")

    repo_writer = as_user(org_hub, FG_REPO_WRITE)
    repo_writer.upload_file(path_or_fileobj=b"2", path_in_repo="2.txt", repo_id="acme/public")
    with pytest.raises(HfHubHTTPError) as exc:
        repo_writer.upload_file(path_or_fileobj=b"2", path_in_repo="2.txt", repo_id=made)
    assert rights_error(exc) == (f"You don't have the rights to write to {made}: "
                                 f"the fine-grained token has no repo.write permission on {made}")
    with pytest.raises(HfHubHTTPError) as exc:
        repo_writer.create_repo(f"acme/fg2-{uuid.uuid4().hex[:6]}")
    assert rights_error(exc).endswith("the fine-grained token has no repo.write permission on acme")

    with pytest.raises(HfHubHTTPError) as exc:  # the token allows it, the user's role does not
        as_user(org_hub, FG_READ_ROLE).create_repo("acme/rita-fg")
    assert "rita has the read role in acme" in rights_error(exc)


def test_fine_grained_reads_of_private_repos_need_a_read_scope(org_hub, tmp_path):
    reader = as_user(org_hub, FG_REPO_READ)
    assert reader.model_info("acme/secret").private
    assert Path(reader.hf_hub_download("acme/secret", "config.json", cache_dir=tmp_path)).read_bytes() == b"{}"
    with pytest.raises(RepositoryNotFoundError):  # another private repo of the same org: not in the scope
        reader.model_info("acme/secret2")
    with pytest.raises(HfHubHTTPError) as exc:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="acme/secret")
    assert rights_error(exc).endswith("the fine-grained token has no repo.write permission on acme/secret")

    nothing = as_user(org_hub, FG_NOTHING)
    assert nothing.model_info("acme/public").id == "acme/public"  # public repos need no permission
    with pytest.raises(RepositoryNotFoundError):
        nothing.model_info("acme/secret")
    assert as_user(org_hub, FG_ORG_WRITE).model_info("acme/secret2").private  # repo.write implies reading


def test_store_of_an_older_version_gains_the_creator_column(tmp_path):
    import sqlite3

    root = tmp_path / "old-store"
    with LocalHub(root, tokens=[ORG_USERS["alice"]], orgs=[ACME]) as first:
        as_user(first, ORG_USERS["alice"]).create_repo("acme/old")
    db = sqlite3.connect(root / "hub.sqlite")
    db.execute("ALTER TABLE repos DROP COLUMN creator")  # the schema before repos knew their creator
    db.commit()
    db.close()
    with LocalHub(root, tokens=[ORG_USERS["alice"], ORG_USERS["dana"]], orgs=[ACME]) as second:
        assert as_user(second, ORG_USERS["dana"]).model_info("acme/old").id == "acme/old"
        with pytest.raises(HfHubHTTPError) as exc:  # created by nobody known: a contributor may not write
            as_user(second, ORG_USERS["dana"]).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="acme/old")
        assert "dana is a contributor in acme" in rights_error(exc)
        as_user(second, ORG_USERS["alice"]).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="acme/old")


def test_an_org_cannot_have_a_users_name(tmp_path):
    with pytest.raises(ValueError, match="organization alice has the name of a user"):
        LocalHub(tmp_path / "clash", tokens=[ORG_USERS["alice"]], orgs=[Org("alice", {"alice": "admin"})])
    with pytest.raises(ValueError, match="'owner' is not one of admin, write, contributor, read"):
        Org("acme", {"alice": "owner"})


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
    """The real process: `python -m chatvector hub serve` with tokens and an organization."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(tmp_path / "cli-hub"),
         "--token", "dave=hf_dave_secret:write", "--token", "faye=hf_faye_secret:write",
         "--org", "lab=dave:admin,faye:read",
         "--fine-grained-token", "gus=hf_gus_secret:org:lab=repo.content.read,model:gus/own=repo.write,gated"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("Serving on http://127.0.0.1:")
        url = line.removeprefix("Serving on ")
        usage = [proc.stdout.readline().rstrip("\n") for _ in range(5)]
        assert usage == [
            "# to use this server, paste into the client's shell (before huggingface_hub is imported):",
            f"export HF_ENDPOINT={url}",
            "# export HF_TOKEN=<SECRET given with --token dave>", "# export HF_TOKEN=<SECRET given with --token faye>",
            "# export HF_TOKEN=<SECRET given with --fine-grained-token gus>"]  # gus has repo.write on gus/own
        client = HfApi(endpoint=url, token="hf_dave_secret")
        assert client.create_repo("dave/cli").repo_id == "dave/cli"
        assert client.create_repo("lab/shared").repo_id == "lab/shared"
        status, _, body = raw_get(f"{url}/api/models/dave/cli")
        assert status == 200 and b'"sha"' in body
        assert HfApi(endpoint=url, token="hf_faye_secret").whoami()["orgs"] == [
            {"type": "org", "name": "lab", "fullname": "lab", "roleInOrg": "read"}]
        with pytest.raises(HfHubHTTPError, match="faye has the read role in lab") as exc:
            HfApi(endpoint=url, token="hf_faye_secret").create_repo("lab/mine")
        assert exc.value.response.status_code == 403
        gus = HfApi(endpoint=url, token="hf_gus_secret").whoami()["auth"]["accessToken"]
        assert gus["role"] == "fineGrained" and gus["fineGrained"] == {
            "canReadGatedRepos": True, "global": [],
            "scoped": [{"entity": {"type": "org", "name": "lab"}, "permissions": ["repo.content.read"]},
                       {"entity": {"type": "model", "name": "gus/own"}, "permissions": ["repo.write"]}]}
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "POST /api/repos/create 200 user=dave" in stderr  # each request echoed to stderr
    assert "warning" not in stderr  # write tokens were given
    assert "POST /api/repos/create 403 user=faye" in stderr
    log_text = (tmp_path / "cli-hub" / "access.log").read_text()
    for secret in ("hf_dave_secret", "hf_faye_secret", "hf_gus_secret"):
        assert secret not in stderr + log_text + "\n".join(usage)


@pytest.mark.parametrize("tokens", [[], ["--token", "ida=hf_ida_secret:read"],
                                    ["--fine-grained-token", "jo=hf_jo_secret:org:lab=repo.content.read"]])
def test_cli_serve_warns_without_a_write_token(tmp_path, tokens):
    """No token that can write: the export lines still come, no HF_TOKEN line, and one warning on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(tmp_path / "ro"),
                             *tokens], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip().removeprefix("Serving on ")
        assert [proc.stdout.readline().rstrip("\n") for _ in range(2)][1:] == [
            f"export HF_ENDPOINT={url}"]
        assert proc.stderr.readline().rstrip("\n") == (
            "warning: no write token (--token NAME=SECRET:write or a fine-grained token with repo.write): the server"
            " accepts reads only; uploads and publishes will be refused")
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=10)
    assert "HF_TOKEN" not in stdout and "hf_" not in stdout + stderr


def test_cli_help_teaches_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("plan", "merge", "publish", "demo", "hub"):
        assert f"\n    {command} " in out
    with pytest.raises(SystemExit):
        main(["hub", "serve", "--help"])
    serve = capsys.readouterr().out
    assert "HF_ENDPOINT=http://HOST:PORT" in serve and "--token NAME=SECRET:read|write" in serve
    assert "--org NAME=USER:ROLE[,USER:ROLE...]" in serve and "--fine-grained-token NAME=SECRET:SCOPE" in serve
    assert "TYPE:ENTITY=PERM[+PERM...]" in serve and "canReadGatedRepos" in serve


def serve_error(capsys, tmp_path, *args: str) -> str:
    """The one stderr line of `chatvector hub serve ARGS` that fails before serving (exit code 2)."""
    assert main(["hub", "serve", "--root", str(tmp_path / "never"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


def test_cli_rejects_malformed_token_spec(capsys, tmp_path):
    assert serve_error(capsys, tmp_path, "--token", "dave-secret") == (
        "error: --token must look like NAME=SECRET:read or NAME=SECRET:write")


@pytest.mark.parametrize("args, expected", [
    (["--org", "lab"], "error: --org must look like NAME=USER:ROLE[,USER:ROLE...] (ROLE: admin, write, contributor, "
                       "read), e.g. my-org=alice:admin"),
    (["--org", "lab=dave"], "error: --org lab: 'dave' must be USER:ROLE (ROLE: admin, write, contributor, read), "
                            "e.g. alice:write"),
    (["--org", "lab=dave:owner"], "error: --org lab: dave's role 'owner' is not one of admin, write, contributor, read"),
    (["--org", "lab=dave:admin,dave:read"], "error: --org lab: dave is listed twice; give each member one role"),
    (["--org", "lab=dave:admin", "--org", "lab=faye:read"],
     "error: --org lab is given twice: list all its members in one --org"),
    (["--token", "dave=hf_x:write", "--org", "dave=dave:admin"],
     "error: --org dave: dave is also a --token user; an organization needs a name of its own"),
    (["--fine-grained-token", "gus"], "error: --fine-grained-token must look like "
     "NAME=SECRET:TYPE:ENTITY=PERM[+PERM...][,TYPE:ENTITY=PERM...][,gated], e.g. erin=hf_secret:org:my-org=repo.write"),
    (["--fine-grained-token", "gus=hf_s3cret:org:lab"],
     "error: --fine-grained-token gus: 'org:lab' needs =PERM[+PERM...] after the entity, e.g. org:my-org=repo.write"),
    (["--fine-grained-token", "gus=hf_s3cret:org:lab=repo.wirte"],
     "error: --fine-grained-token gus: 'org:lab=repo.wirte': 'repo.wirte' is not a Hub permission "
     "(did you mean 'repo.write'?)"),
    (["--fine-grained-token", "gus=hf_s3cret:team:lab=repo.write"],
     "error: --fine-grained-token gus: 'team:lab=repo.write': the entity must be TYPE:NAME with TYPE one of user, "
     "org, model, dataset, space, kernel, e.g. org:my-org or model:alice/x"),
])
def test_cli_rejects_bad_org_and_fine_grained_specs(capsys, tmp_path, args, expected):
    line = serve_error(capsys, tmp_path, *args)
    assert line == expected and "hf_s3cret" not in line and "hf_x" not in line


def test_org_and_fine_grained_spec_parsing():
    assert parse_org_spec("lab=dave:admin,faye:contributor") == Org("lab", {"dave": "admin", "faye": "contributor"})
    token = parse_fine_grained_token_spec("gus=hf_s:user:gus=repo.write+repo.content.read,global=discussion.write,gated")
    assert (token.name, token.secret, token.scope) == ("gus", "hf_s", "fineGrained")
    assert token.fine_grained == FineGrained((Scoped("user", "gus", ("repo.write", "repo.content.read")),),
                                             ("discussion.write",), True)
    assert "hf_s" not in repr(token)
    with pytest.raises(ValueError, match="a token has fine_grained permissions exactly when its scope is fineGrained"):
        Token("gus", "hf_s")


_COMMITTER = """\
import sys
from huggingface_hub import HfApi
print("ready", flush=True)
url, folder = sys.stdin.readline().split()
HfApi(endpoint=url, token="hf_eve_secret").upload_folder(repo_id="eve/crash", folder_path=folder)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [0.05, "lfs/objects/batch", "lfs/objects/verify", "xet-cas/v1/xorbs",
                                     "xet-cas/v2/shards", "commit/main"])
def test_killed_server_leaves_old_or_new_state_never_half(tmp_path, kill_at):
    """SIGKILL the server while a commit is in flight: after a restart the branch is at the old commit with
    the old files, or at the new one with every new file intact.

    KILL_AT is seconds after the committer starts, or the request after whose answer the server dies: the
    LFS batch (the 24 MiB PUT is under way), the LFS verify (the commit POST is about to go or in flight),
    the commit (it is done). Server events, not sleeps, so each case hits its phase however fast the machine.
    The committer is its own process, killed with the server: it would only wait out its retry backoff
    (about 23 s) against a server that is gone, which proves nothing about the server's state."""
    import queue
    import signal
    import time

    root = tmp_path / "crash-hub"

    def start() -> tuple[subprocess.Popen, HfApi]:
        proc = subprocess.Popen([sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(root),
                                 "--token", "eve=hf_eve_secret:write", "--lfs-threshold", "1048576"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        url = proc.stdout.readline().strip().removeprefix("Serving on ")
        return proc, HfApi(endpoint=url, token="hf_eve_secret")

    def echoed_lines(proc: subprocess.Popen) -> queue.Queue:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
        return lines

    # Started first, so its imports overlap the server's start; it waits for the go (the URL) on stdin.
    # The LFS kill points need a client that uploads through LFS; the others run it as users have it (Xet).
    env = dict(os.environ, **({"HF_HUB_DISABLE_XET": "1"} if "lfs" in str(kill_at) else {}))
    committer = subprocess.Popen([sys.executable, "-c", _COMMITTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    proc, client = start()
    echoed = echoed_lines(proc)
    client.create_repo("eve/crash")
    client.upload_file(path_or_fileobj=b"old", path_in_repo="a.txt", repo_id="eve/crash")
    old_sha = client.model_info("eve/crash").sha
    new_files = {"a.txt": b"new", "big.bin": os.urandom(24 << 20), "small.txt": b"x" * 1000}
    folder = write_files(tmp_path / "new", new_files)
    while "GET /api/models/eve/crash " not in echoed.get(timeout=60):
        pass  # the set-up's requests (the last is model_info): the events below are the committer's
    try:
        assert committer.stdout.readline().strip() == "ready"
        committer.stdin.write(f"{client.endpoint} {folder}\n")
        committer.stdin.flush()
        if isinstance(kill_at, str):
            while f"/{kill_at}" not in echoed.get(timeout=60):
                pass
        else:
            time.sleep(kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        committer.kill()
        committer.wait(timeout=10)
        if proc.poll() is None:  # the test failed before the kill
            proc.kill()
            proc.wait(timeout=10)

    proc, client = start()
    echoed_lines(proc)  # keeps the pipe drained
    try:
        head = client.model_info("eve/crash").sha
        files = sorted(client.list_repo_files("eve/crash"))
        if kill_at == "commit/main":
            assert head != old_sha  # an answered commit survives the kill
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
