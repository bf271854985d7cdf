"""The Hub endpoints added to the local Hub, driven through the real huggingface_hub client: repo listings,
move_repo, discussion and pull-request writes (and the events they leave), merges, super-squash, LFS file
listing and deletion, auth_check."""

from __future__ import annotations

import sqlite3
import uuid
import warnings
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    BadRequestError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils._pagination import paginate

from chatvector.localhub.storage import Store, discussion_events
from tests.conftest import OTHER_WRITER, READ_TOKEN, SHARED_ORG, WRITE_TOKEN

BOB = HfApi(token=READ_TOKEN.secret)  # read-scope token, member of no organization
CAROL = HfApi(token=OTHER_WRITER.secret)  # write-scope token, no rights on alice's repos
BIG = 300 * 1024  # over the session hub's LFS threshold (256 KiB): such a file goes through LFS


def tag() -> str:
    return uuid.uuid4().hex[:10]


def new_repo(api: HfApi, prefix: str = "ep", **kwargs) -> str:
    repo_id = f"alice/{prefix}-{tag()}"
    api.create_repo(repo_id, **kwargs)
    return repo_id


def status_of(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response.status_code


# -- listings ----------------------------------------------------------------------------------------------
def test_list_models_by_search_and_author_shows_private_repos_only_to_those_who_may_see_them(api):
    """GET /api/models?search=&author=: the Hub lists the repos whose id contains the search text, of the given
    author, and a private repo only to those who can see it (alice her own; bob and anonymous not)."""
    key = tag()
    mine = [f"alice/lst-{key}-{n}" for n in "ab"]
    for repo_id in mine:
        api.create_repo(repo_id)
    api.create_repo(f"alice/lst-{key}-secret", private=True)
    CAROL.create_repo(f"carol/lst-{key}-c")

    assert sorted(m.id for m in api.list_models(search=key)) == sorted([*mine, f"alice/lst-{key}-secret",
                                                                       f"carol/lst-{key}-c"])
    assert sorted(m.id for m in BOB.list_models(search=key)) == sorted([*mine, f"carol/lst-{key}-c"])
    assert sorted(m.id for m in HfApi(token=False).list_models(search=key.upper())) == sorted(
        [*mine, f"carol/lst-{key}-c"])  # (case-insensitive, as the Hub's search)
    assert [m.id for m in api.list_models(search=key, author="carol")] == [f"carol/lst-{key}-c"]
    assert not list(api.list_datasets(search=key))  # models only
    listed = next(iter(api.list_models(search=f"{key}-secret")))
    assert listed.private is True and listed.downloads == 0 and listed.siblings is None  # the short listing


def test_list_models_pages_follow_the_link_header_and_keep_repeated_parameters(api, hub):
    """The Hub pages listings with `Link: <...>; rel="next"` (the client's paginate follows it verbatim): each
    page keeps every value of a repeated key (expand=sha&expand=private), the cursor moves on."""
    key = tag()
    ids = [f"alice/pg-{key}-{n}" for n in range(5)]
    for repo_id in ids:
        api.create_repo(repo_id)
    mark = len(hub.requests)
    items = list(paginate(f"{hub.url}/api/models", headers=build_hf_headers(token=WRITE_TOKEN.secret),
                          params={"search": key, "limit": 2, "sort": "id", "direction": 1,
                                  "expand": ["sha", "private"]}))
    assert [i["id"] for i in items] == ids  # ascending ids, across 3 pages
    assert all(set(i) == {"_id", "id", "modelId", "sha", "private"} for i in items)
    assert [r.path for r in list(hub.requests)[mark:]] == ["/api/models"] * 3


def test_list_models_sort_and_expand(api):
    """sort=lastModified|createdAt (descending, as the client sends them) and expand=[...] (exactly the named
    properties) or full=True (siblings, sha...), as the Hub answers list_models."""
    key = tag()
    first, second = f"alice/srt-{key}-1", f"alice/srt-{key}-2"
    api.create_repo(first)
    api.create_repo(second)
    assert [m.id for m in api.list_models(search=f"srt-{key}", sort="created_at")] == [second, first]
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=first)
    newest = list(api.list_models(search=f"srt-{key}", sort="last_modified", expand=["sha", "lastModified"]))
    assert [m.id for m in newest] == [first, second]
    assert newest[0].sha == api.model_info(first).sha and newest[0].last_modified is not None
    assert newest[0].downloads is None and newest[0].tags is None  # not asked for
    full = next(iter(api.list_models(search=first, full=True)))
    assert sorted(s.rfilename for s in full.siblings) == [".gitattributes", "x.txt"] and full.author == "alice"
    with pytest.raises(BadRequestError):
        list(api.list_models(search=key, expand=["noSuchProperty"]))


def test_list_datasets_filter_by_card_tags(api):
    """list_datasets(filter=...): the Hub keeps the datasets with every tag given (the card's `tags`);
    list_models never shows datasets."""
    key = tag()
    tagged, plain = f"alice/ds-{key}-t", f"alice/ds-{key}-p"
    for repo_id in (tagged, plain):
        api.create_repo(repo_id, repo_type="dataset")
    card = f"---\ntags:\n- tag-{key}\n- other\n---\n# data\n".encode()
    api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=tagged, repo_type="dataset")
    assert sorted(d.id for d in api.list_datasets(search=key)) == [plain, tagged]
    found = list(api.list_datasets(filter=[f"tag-{key}", "other"], full=True))
    assert [d.id for d in found] == [tagged] and found[0].card_data.tags == [f"tag-{key}", "other"]
    assert not list(api.list_datasets(filter=[f"tag-{key}", "missing"]))
    assert not list(api.list_models(search=key))


# -- move_repo ---------------------------------------------------------------------------------------------
def test_move_repo_keeps_files_refs_and_discussions(api):
    """POST /api/repos/move: the repo and everything in it (files, branches, tags, discussions) live under the
    new id; the old one leads there, as on the Hub (a redirect: localhub/test_divergences)."""
    old = new_repo(api, "mv")
    api.upload_file(path_or_fileobj=b"kept", path_in_repo="f.txt", repo_id=old)
    api.create_tag(old, tag="v1")
    api.create_discussion(old, title="still here")
    new = f"{SHARED_ORG}/moved-{tag()}"
    api.move_repo(old, new)
    assert api.model_info(old).id == new
    assert Path(hf_hub_download(new, "f.txt", token=WRITE_TOKEN.secret)).read_bytes() == b"kept"
    assert [t.name for t in api.list_repo_refs(new).tags] == ["v1"]
    assert [d.title for d in api.get_repo_discussions(new)] == ["still here"]


def test_move_repo_needs_write_on_both_namespaces_and_a_free_destination(api):
    """The Hub refuses a move onto an existing repo (409), by someone who cannot write to the repo, or into a
    namespace the mover cannot create repos in (403)."""
    source, taken = new_repo(api, "mv"), new_repo(api, "mv")
    with pytest.raises(HfHubHTTPError) as exc:
        api.move_repo(source, taken)
    assert status_of(exc) == 409
    with pytest.raises(HfHubHTTPError) as exc:
        CAROL.move_repo(source, f"carol/stolen-{tag()}")
    assert status_of(exc) == 403
    with pytest.raises(HfHubHTTPError) as exc:
        api.move_repo(source, f"carol/gift-{tag()}")
    assert status_of(exc) == 403
    assert api.repo_exists(source)


# -- discussions and pull requests -------------------------------------------------------------------------
def test_discussion_writes_and_their_events_in_order(api):
    """Comments, edits, hides, renames and status changes, each allowed to whom the Hub allows it (comment: any
    writer-scoped user who can see the repo; edit: the comment's author; hide: it or a repo writer; title and
    status: the discussion's author or a writer), and get_discussion_details lists them in order, the opening
    post first."""
    repo_id = new_repo(api, "disc")
    num = api.create_discussion(repo_id, title="Question", description="How?").num
    carol_says = CAROL.comment_discussion(repo_id, num, "Like this.")
    assert carol_says.author == "carol" and carol_says.content == "Like this." and len(carol_says.id) == 24
    with pytest.raises(HfHubHTTPError) as exc:
        BOB.comment_discussion(repo_id, num, "read tokens only read")
    assert status_of(exc) == 403
    edited = CAROL.edit_discussion_comment(repo_id, num, carol_says.id, "Like that.")
    assert edited.edited and edited.content == "Like that." and edited.number_of_edits == 1
    with pytest.raises(HfHubHTTPError) as exc:
        api.edit_discussion_comment(repo_id, num, carol_says.id, "not hers")
    assert status_of(exc) == 403
    with pytest.raises(HfHubHTTPError) as exc:
        CAROL.rename_discussion(repo_id, num, "hijacked")
    assert status_of(exc) == 403
    renamed = api.rename_discussion(repo_id, num, "Answered question")
    assert (renamed.old_title, renamed.new_title) == ("Question", "Answered question")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the client's "hiding is irreversible"
        hidden = api.hide_discussion_comment(repo_id, num, carol_says.id)
    assert hidden.hidden and hidden.content == ""
    closed = api.change_discussion_status(repo_id, num, "closed", comment="Done.")
    assert closed.new_status == "closed"
    api.change_discussion_status(repo_id, num, "closed")  # already closed: accepted and recorded, as on the Hub

    details = api.get_discussion_details(repo_id, num)
    assert details.title == "Answered question" and details.status == "closed"
    events = [(e.type, e.author) for e in details.events]
    assert events == [("comment", "alice"), ("comment", "carol"), ("title-change", "alice"),
                      ("comment", "alice"), ("status-change", "alice"), ("status-change", "alice")]
    opening, carols = details.events[0], details.events[1]
    assert opening.content == "How?" and carols.id == carol_says.id and carols.hidden and carols.edited
    assert details.events[3].content == "Done."


def test_private_repo_discussions_are_invisible_to_outsiders(api):
    """On a private repo, someone who cannot see it gets RepositoryNotFoundError, not a 403 that leaks it."""
    repo_id = new_repo(api, "priv", private=True)
    num = api.create_discussion(repo_id, title="Internal").num
    with pytest.raises(RepositoryNotFoundError):
        CAROL.comment_discussion(repo_id, num, "hello?")


def test_a_deleted_repos_events_do_not_reach_a_new_repo(api):
    """A repo made after one is deleted starts with no discussion events, as on the Hub (SQLite may give the
    new repo the deleted one's id: the events of the old one must be gone with it)."""
    old = new_repo(api, "gone")
    num = api.create_discussion(old, title="old").num
    api.comment_discussion(old, num, "from the deleted repo")
    api.delete_repo(old)
    fresh = new_repo(api, "fresh")
    num = api.create_discussion(fresh, title="new", description="first").num
    assert [e.content for e in api.get_discussion_details(fresh, num).events] == ["first"]


def test_a_store_older_than_the_events_table_opens_and_gets_it(tmp_path):
    """A store written before discussion events existed stays readable: opening it adds the table."""
    store = Store(tmp_path)
    repo = store.create_repo("model", "alice/old", False, "alice")
    store.create_discussion(repo, "t", "d", False, "alice")
    db = sqlite3.connect(tmp_path / "hub.sqlite")
    db.executescript("DROP TRIGGER discussion_events_of_deleted_repo; DROP TABLE discussion_events;")
    db.close()
    reopened = Store(tmp_path)
    assert reopened.get_repo("model", "alice/old") == repo and reopened.discussion(repo, 1)["title"] == "t"
    assert discussion_events(reopened, repo, 1) == []


def test_pr_commits_are_events_and_a_writer_merges_by_fast_forward(api):
    """Commits pushed to refs/pr/N appear as "commit" events; merge_pull_request (a writer's act) moves main to
    the PR's head when main has not moved, and the PR is then merged, its merge commit in the details."""
    repo_id = new_repo(api, "pr")
    pr = api.upload_file(path_or_fileobj=b"v1", path_in_repo="w.txt", repo_id=repo_id, create_pr=True)
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="w.txt", repo_id=repo_id, revision=pr.pr_revision,
                    commit_message="second")
    head = api.model_info(repo_id, revision=pr.pr_revision).sha
    details = api.get_discussion_details(repo_id, pr.pr_num)
    assert [e.type for e in details.events] == ["comment", "commit", "commit"]
    assert details.events[-1].oid == head and details.events[-1].summary == "second"
    assert details.conflicting_files == []
    with pytest.raises(HfHubHTTPError) as exc:
        CAROL.merge_pull_request(repo_id, pr.pr_num)
    assert status_of(exc) == 403
    api.merge_pull_request(repo_id, pr.pr_num, comment="Thanks")
    assert api.model_info(repo_id).sha == head
    merged = api.get_discussion_details(repo_id, pr.pr_num)
    assert merged.status == "merged" and merged.merge_commit_oid == head
    assert [e.type for e in merged.events][-2:] == ["comment", "status-change"]
    assert merged.events[-1].new_status == "merged"
    with pytest.raises(BadRequestError):
        api.merge_pull_request(repo_id, pr.pr_num)  # merged already
    with pytest.raises(BadRequestError):
        api.change_discussion_status(repo_id, pr.pr_num, "open")


def test_a_pr_opened_from_an_older_parent_lists_only_its_own_commits(api):
    """A PR opened with create_commit(create_pr=True) from an older parent_commit starts there: its commit
    events are only its own, not main's earlier history."""
    repo_id = new_repo(api, "prp")
    start = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"m", path_in_repo="m.txt", repo_id=repo_id)
    pr = api.create_commit(repo_id, [CommitOperationAdd("p.txt", b"p")], commit_message="proposal",
                           create_pr=True, parent_commit=start)
    details = api.get_discussion_details(repo_id, pr.pr_num)
    assert [(e.type, getattr(e, "summary", None)) for e in details.events] == [("comment", None),
                                                                              ("commit", "proposal")]


def test_a_discussion_author_who_is_no_writer_may_rename_and_close_it_but_not_hide_others(api):
    """The Hub lets a discussion's author rename and close it without write access to the repo, but hiding
    someone else's comment takes a writer. (carol opens it in an org both write to; the repo then moves to
    alice's namespace, where carol has no rights.)"""
    shared = f"{SHARED_ORG}/auth-{tag()}"
    api.create_repo(shared)
    num = CAROL.create_discussion(shared, title="Carol's question").num
    alices = api.comment_discussion(shared, num, "an answer")
    repo_id = f"alice/auth-{tag()}"
    api.move_repo(shared, repo_id)
    assert CAROL.rename_discussion(repo_id, num, "Carol's better question").new_title == "Carol's better question"
    assert CAROL.change_discussion_status(repo_id, num, "closed").new_status == "closed"
    with warnings.catch_warnings(), pytest.raises(HfHubHTTPError) as exc:
        warnings.simplefilter("ignore", UserWarning)
        CAROL.hide_discussion_comment(repo_id, num, alices.id)
    assert status_of(exc) == 403


def test_merge_after_main_moved_makes_a_merge_commit_and_refuses_conflicts(api):
    """When main moved since the PR started, merging writes a merge commit holding both sides' changes; a file
    both sides changed differently is a conflict (409, listed in filesWithConflicts) and main stays."""
    repo_id = new_repo(api, "mrg")
    api.upload_file(path_or_fileobj=b"a0", path_in_repo="a.txt", repo_id=repo_id)
    pr = api.upload_file(path_or_fileobj=b"b1", path_in_repo="b.txt", repo_id=repo_id, create_pr=True)
    clash = api.upload_file(path_or_fileobj=b"a-pr", path_in_repo="a.txt", repo_id=repo_id, create_pr=True)
    api.upload_file(path_or_fileobj=b"a-main", path_in_repo="a.txt", repo_id=repo_id)
    before = api.model_info(repo_id).sha

    assert api.get_discussion_details(repo_id, clash.pr_num).conflicting_files == ["a.txt"]
    with pytest.raises(HfHubHTTPError) as exc:
        api.merge_pull_request(repo_id, clash.pr_num)
    assert status_of(exc) == 409 and api.model_info(repo_id).sha == before

    api.merge_pull_request(repo_id, pr.pr_num)
    after = api.model_info(repo_id)
    assert after.sha == api.get_discussion_details(repo_id, pr.pr_num).merge_commit_oid != before
    assert api.list_repo_commits(repo_id)[1].commit_id == before  # the merge commit sits on main's head
    for path, content in (("a.txt", b"a-main"), ("b.txt", b"b1")):
        assert Path(hf_hub_download(repo_id, path, revision=after.sha, token=WRITE_TOKEN.secret)).read_bytes() == content


# -- super-squash ------------------------------------------------------------------------------------------
def test_super_squash_history_leaves_one_commit_and_other_refs_alone(api):
    """super_squash_history: the branch becomes one commit with the same files and the message given; tags
    and other branches keep their commits; a tag is refused (BadRequestError), an unknown branch is
    RevisionNotFoundError."""
    repo_id = new_repo(api, "sq")
    api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=repo_id)
    api.create_tag(repo_id, tag="v1")
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"2", path_in_repo="b.txt", repo_id=repo_id)
    tagged = api.list_repo_refs(repo_id).tags[0].target_commit
    files = sorted(api.list_repo_files(repo_id))
    api.super_squash_history(repo_id, commit_message="Squashed")
    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["Squashed"] and sorted(api.list_repo_files(repo_id)) == files
    refs = api.list_repo_refs(repo_id)
    assert refs.tags[0].target_commit == tagged and len(api.list_repo_commits(repo_id, revision="dev")) == 2
    with pytest.raises(BadRequestError):
        api.super_squash_history(repo_id, branch="v1")
    with pytest.raises(RevisionNotFoundError):
        api.super_squash_history(repo_id, branch="nope")


# -- LFS files ---------------------------------------------------------------------------------------------
def _lfs_repo(api: HfApi) -> tuple[str, bytes]:
    """A repo with an LFS file w.bin and, in a later commit, a regular a.txt; and w.bin's bytes."""
    repo_id = new_repo(api, "lfs")
    data = uuid.uuid4().bytes * (BIG // 16)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"small", path_in_repo="a.txt", repo_id=repo_id)
    return repo_id, data


def test_list_lfs_files_lists_committed_objects_to_writers(api):
    """list_lfs_files: each LFS object once, with its sha256, size, filename, push date and the ref holding it;
    regular files are not LFS objects; someone who cannot write to the repo is refused."""
    repo_id, data = _lfs_repo(api)
    (item,) = api.list_lfs_files(repo_id)
    w_bin = api.get_paths_info(repo_id, ["w.bin"])[0]
    assert (item.file_oid, item.oid, item.size) == (w_bin.lfs.sha256, w_bin.lfs.sha256, len(data))
    assert item.filename == "w.bin" and item.ref == "refs/heads/main" and item.pushed_at.year >= 2024
    with pytest.raises(HfHubHTTPError) as exc:
        list(BOB.list_lfs_files(repo_id))
    assert status_of(exc) == 403


def test_permanently_delete_lfs_files_rewrites_history(api):
    """permanently_delete_lfs_files (rewrite_history=True, the default): the Hub deletes the object and rewrites
    the history without the file: commits get new ids (the old head is RevisionNotFoundError), the other files
    and the commit messages stay."""
    repo_id, _ = _lfs_repo(api)
    old_head = api.model_info(repo_id).sha
    titles = [c.title for c in api.list_repo_commits(repo_id)]
    api.permanently_delete_lfs_files(repo_id, api.list_lfs_files(repo_id))
    assert list(api.list_lfs_files(repo_id)) == []
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "a.txt"]
    assert [c.title for c in api.list_repo_commits(repo_id)] == titles
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision=old_head)


def test_permanently_delete_lfs_files_without_rewrite_keeps_ids_and_the_file_fails(api, tmp_path):
    """rewrite_history=False: the commits keep their ids but the object is gone, so downloading the file fails
    (404 EntryNotFound here); another repo holding the same bytes is not affected."""
    repo_id, data = _lfs_repo(api)
    twin = new_repo(api, "lfs-twin")
    api.upload_file(path_or_fileobj=data, path_in_repo="copy.bin", repo_id=twin)
    head = api.model_info(repo_id).sha
    api.permanently_delete_lfs_files(repo_id, api.list_lfs_files(repo_id), rewrite_history=False)
    assert api.model_info(repo_id).sha == head
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "w.bin", revision=head, token=WRITE_TOKEN.secret, cache_dir=tmp_path)
    copy = hf_hub_download(twin, "copy.bin", token=WRITE_TOKEN.secret, cache_dir=tmp_path)
    assert Path(copy).read_bytes() == data


# -- auth_check --------------------------------------------------------------------------------------------
def test_auth_check(api):
    """auth_check: 200 with access; RepositoryNotFoundError for a repo the token cannot see (or that does not
    exist); GatedRepoError for a gated repo's outsider; write=True needs write access (403)."""
    private = new_repo(api, "auth", private=True)
    gated = new_repo(api, "auth")
    api.update_repo_settings(gated, gated="auto")
    api.auth_check(private)
    api.auth_check(gated, write=True)
    with pytest.raises(RepositoryNotFoundError):
        BOB.auth_check(private)
    with pytest.raises(RepositoryNotFoundError):
        api.auth_check(f"alice/missing-{tag()}")
    with pytest.raises(GatedRepoError):
        CAROL.auth_check(gated)
    with pytest.raises(HfHubHTTPError) as exc:
        CAROL.auth_check(gated, write=True)
    assert status_of(exc) == 403
    public = new_repo(api, "auth")
    CAROL.auth_check(public)
    with pytest.raises(HfHubHTTPError) as exc:
        BOB.auth_check(public, write=True)
    assert status_of(exc) == 403
