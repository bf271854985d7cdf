"""`chatvector publish`: plan → preflight → (nothing changed? stop) → build → card → push, in one commit.

    result = publish(load_recipe("recipes/x.yaml"))                 # the whole `chatvector publish`
    result = publish(recipe, PublishOptions(dry_run=True, out_dir=Path("out")), api=api)

The push is a single `create_commit` whose parent is the target's head as read before the run, so a
concurrent change to the target fails the push (412) instead of being overwritten, and a failure at any
earlier stage publishes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator
from urllib.parse import quote

from chatvector.build import preflight
from chatvector.build.provenance import read_provenance
from chatvector.card.card import render_card
from chatvector.card.chart import coefficient_chart_svg
from chatvector.conventions import (
    CARD_FILE,
    CHART_FILE,
    GITATTRIBUTES_FILE,
    PROVENANCE_FILE,
    RESPONSES_FILE,
    WEIGHTS_INDEX_FILE,
)
from chatvector.errors import HubError, Problem
from chatvector.fetch.mode import FetchChoice, choose_fetch
from chatvector.fetch.workspace import finished, target_workspace, work_folder
from chatvector.hub.client import connect, hub_call, translate
from chatvector.plan.plan import Plan
from chatvector.publish.gate import evaluate_for_publish, spec_dict
from chatvector.recipe.recipe import Recipe, check_branch
from chatvector.runner import (
    Build,
    Decided,
    IOStats,
    RunOptions,
    build_model,
    preload_engine,
    prepare_run,
    staged_folder,
)
from chatvector.stages import timed

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.build.shardupload import ShardUploader

log = logging.getLogger(__name__)
SMALL_FILES_ROOM = 64 << 20  # disk for the small files of a streaming publish (config, tokenizer, card, index)
# Files of an earlier version that a new output replaces: deleted when the new output lacks them.
STALE_PATTERNS = ("model*.safetensors", WEIGHTS_INDEX_FILE, "pytorch_model*.bin",
                  "pytorch_model.bin.index.json", "chat_template.jinja", "chat_template.json",
                  RESPONSES_FILE)


@dataclass
class PublishResult:
    repo_id: str
    changed: bool
    commit: str | None = None  # the new commit, or the head that already holds this output
    pr_url: str | None = None
    tag: str | None = None
    out_dir: Path | None = None  # the assembled folder, when kept (--out)
    added: dict[str, int] = field(default_factory=dict)  # file → size
    deleted: list[str] = field(default_factory=list)
    card: str = ""  # the README.md text
    url: str = ""
    branch: str = "main"  # the branch committed to (target.revision)
    branch_created: str | None = None  # the branch this run created (target.revision, when it was missing)
    io: "IOStats | None" = None  # bytes moved, disk and memory high-water marks
    unchanged: list[str] = field(default_factory=list)  # a dry run's files the target holds already, byte for byte
    card_only: bool = False  # only the card's files were published: the target held these weights already


@dataclass
class TargetState:
    exists: bool
    head: str | None
    files: dict  # path → RepoSibling (size, blob_id, lfs)
    provenance: dict | None
    tags: set[str] = field(default_factory=set)
    private: bool = False  # how to create it, when it does not exist
    branch: str = "main"  # the branch the run commits to
    branch_exists: bool = True  # False: it is created at `head` (the default branch's) before the commit

    @property
    def foreign_files(self) -> list[str]:
        """Files of a target chatvector did not publish (it has no provenance)."""
        if self.provenance is not None:
            return []
        return sorted(n for n in self.files if n not in (GITATTRIBUTES_FILE, CARD_FILE))


@dataclass(frozen=True)
class PublishOptions:
    """How `publish` runs: the command's flags, built by its caller. Each means one thing: `force` publishes although
    nothing changed upstream; `overwrite` replaces files of the target chatvector did not publish; `tag` tags the new
    commit, or the head when nothing changed (no merge: the head holds this output already). `from_dir`: push the
    folder `chatvector merge` wrote for this very plan (its chatvector.json must record the plan's fingerprint; every
    file is verified again) instead of merging. `private`: create a missing target private (as `target.private:
    true`). `revision`: the branch to commit to (as `target.revision`; default main), created from the default
    branch's head when missing. `gate`: a missed threshold of the recipe's `eval.require` stops the publish (False:
    the evaluation is published as it came out, as `sweep --publish` does for each variant's branch). `fetch`:
    "auto", "snapshot" or "stream" (default: the recipe's merge.fetch); see chatvector.fetch.mode."""

    plan_file: str | Path | None = None
    dry_run: bool = False
    create_pr: bool = False
    tag: str | None = None
    out_dir: Path | None = None  # keep the assembled folder there
    device: str | None = None
    force: bool = False
    fetch: str | None = None
    overwrite: bool = False
    progress: bool = True
    from_dir: Path | None = None
    private: bool = False
    revision: str | None = None
    gate: bool = True


@dataclass(frozen=True)
class TargetDecision:
    """What publish's pre-flight checks decided: the target's state as read before the run, and how the inputs are
    read (None: nothing is read, `--from` gives the folder)."""

    state: TargetState
    fetch: FetchChoice | None = None


def publish(recipe: Recipe, options: PublishOptions = PublishOptions(), *, api: "HfApi | None" = None,
            plan: Plan | None = None) -> PublishResult:
    """Publish a recipe's merge to its target (see the module docstring), as `options` say."""
    o = options
    recipe, bad_branch = on_branch(recipe, o.revision)
    target = recipe.require_target()
    with timed("import"):
        api = api or connect()
    with timed("preflight"):
        early = bad_branch + early_problems(recipe, api, o)
    plan, decided = prepare_run(recipe, api, publish_checks(recipe, api, o), plan=plan, plan_file=o.plan_file,
                                early=early)
    assert decided is not None  # the checks decide whenever the plan was made
    state = decided.state
    state.private = o.private or target.private  # for a target this run creates
    url = target_url(api.endpoint, target.repo_id, target.revision)
    if not o.force and unchanged(plan, state):
        return publish_nothing_changed(api, recipe, state, o, url)
    if o.create_pr and not o.force and state.exists:
        proposed = open_pr_with_same_inputs(api, target.repo_id, plan)
        if proposed is not None:
            return PublishResult(target.repo_id, changed=False, commit=proposed[1], pr_url=proposed[0], url=url,
                                 branch=target.revision)
    if not o.force and card_only_run(plan, state, o.out_dir, o.from_dir):
        return publish_card(api, plan, state, url=url, dry_run=o.dry_run, create_pr=o.create_pr, tag=o.tag)
    return build_and_push(api, plan, decided, o, url)


def early_problems(recipe: Recipe, api: "HfApi", o: PublishOptions) -> list[Problem]:
    """The checks before any Hub request but the token's: the options, the target, the card's template."""
    early = preflight.check_target_is_not_a_source(recipe) + preflight.check_tag(o.tag, o.create_pr)
    early += (preflight.check_out_dir(Path(o.out_dir)) + preflight.check_out_is_not_in_a_source(recipe, Path(o.out_dir))
              if o.out_dir is not None else [])
    early += check_from_dir(o.from_dir, o.out_dir) if o.from_dir is not None else []
    early += preflight.check_device(recipe, o.device) + preflight.check_card_template(recipe)
    if not early and not o.dry_run:
        early += preflight.check_write_access(api, recipe.require_target().repo_id)
    return early


def publish_checks(recipe: Recipe, api: "HfApi", o: PublishOptions) -> Callable[[Plan | None], Decided[TargetDecision]]:
    """The checks once the plan is made: the card, the target (its state is read here, and kept: `TargetDecision`),
    then, unless nothing will be merged, the target's foreign files and tags, the disk (for the fetch mode decided
    here) and the device's memory."""
    target = recipe.require_target()

    def checks(planned: Plan | None) -> Decided[TargetDecision]:
        if planned is None:
            return Decided([])
        problems = preflight.check_card(planned, api.endpoint)
        state = read_target(api, target.repo_id, target.revision)
        taken = o.tag is not None and not o.dry_run and o.tag in state.tags
        if not o.force and (unchanged(planned, state) or card_only_run(planned, state, o.out_dir, o.from_dir)):
            if taken:
                problems.append(Problem(f"--tag {o.tag}: {target.repo_id} already has that tag; choose another "
                                        "name"))
            # no weight will be downloaded or written (a --tag tags the head, or the card's commit)
            return Decided(problems, TargetDecision(state))
        if not o.overwrite and state.foreign_files:
            problems.append(Problem(f"{target.repo_id} already holds files chatvector did not publish (e.g. "
                                    f"{state.foreign_files[0]}); choose another target.repo_id, or pass "
                                    "--overwrite to replace them"))
        if taken:
            problems.append(Problem(f"--tag {o.tag}: {target.repo_id} already has that tag; choose another name"))
        if o.from_dir is not None:  # nothing is downloaded or merged: the folder is there
            return Decided(problems + check_from_plan(planned, Path(o.from_dir)), TargetDecision(state))
        choice, disk = fetch_and_disk(recipe, planned, o)
        return Decided(problems + disk + preflight.check_gpu_memory(recipe, planned, o.device)
                       + preflight.check_eval_memory(recipe, planned, o.device), TargetDecision(state, choice))

    return checks


def fetch_and_disk(recipe: Recipe, plan: Plan, o: PublishOptions) -> tuple[FetchChoice, list[Problem]]:
    """The fetch mode of a publish that merges, and the disk it needs in that mode."""
    write_dir = Path(o.out_dir).parent if o.out_dir is not None else work_folder(plan, recipe.require_target().repo_id)
    choice = choose_fetch(plan, o.fetch or recipe.merge.fetch, write_dir)
    if choice.mode != "stream":
        return choice, preflight.check_disk(plan, write_dir)
    # else the shards stay: the output is written whole (an evaluation loads the whole model)
    whole = " (the evaluation, eval:, loads the whole output from disk)" if recipe.eval is not None else ""
    writes = plan.largest_file_bytes + SMALL_FILES_ROOM if streams(recipe, o, choice) else None
    return choice, preflight.check_disk(plan, write_dir, downloads=0, how=" in stream mode" + whole, writes=writes)


def streams(recipe: Recipe, o: PublishOptions, choice: FetchChoice | None) -> bool:
    """A streaming publish: each shard leaves the disk as it is written (stream mode, no --out to keep it, no dry run,
    no evaluation that loads the whole output)."""
    return choice is not None and choice.mode == "stream" and not o.dry_run and o.out_dir is None \
        and recipe.eval is None


def publish_nothing_changed(api: "HfApi", recipe: Recipe, state: TargetState, o: PublishOptions,
                            url: str) -> PublishResult:
    """The target holds this output already: no merge; the branch asked for is created at the head, and a --tag tags
    that head (a release of what the target holds)."""
    target = recipe.require_target()
    log.debug("nothing changed: %s@%s already holds this output", target.repo_id, state.head)
    result = PublishResult(target.repo_id, changed=False, commit=state.head, url=url, branch=target.revision)
    if not o.dry_run and not o.create_pr and not state.branch_exists:  # the branch asked for, at that head
        with hub_call(api, target.repo_id, action="write"):
            ensure_branch(api, target.repo_id, state)
        result.branch_created = target.revision
    if o.tag and not o.dry_run and not o.create_pr:
        with hub_call(api, target.repo_id, action="write"):
            api.create_tag(target.repo_id, tag=o.tag, revision=state.head,
                           tag_message=f"chatvector {recipe.display_name}")
        result.tag = o.tag
    return result


def build_and_push(api: "HfApi", plan: Plan, decided: TargetDecision, o: PublishOptions, url: str) -> PublishResult:
    """The whole publish: the model built (or --from's folder adopted), evaluated (the gate), its card written,
    then pushed in one commit (a dry run stops before the push)."""
    recipe = plan.require_recipe()
    target, state, choice = recipe.require_target(), decided.state, decided.fetch
    if o.from_dir is None:
        preload_engine()  # torch loads while the weights download
    with _staging(plan, target.repo_id, o.out_dir) as folder:
        uploader = start_streaming_upload(api, plan, state, folder, create_pr=o.create_pr) \
            if streams(recipe, o, choice) else None
        try:
            build = built_and_evaluated(api, plan, folder, choice, o, uploader)
            with timed("card"):
                write_card(plan, build.provenance, folder)
            added = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
            deleted = sorted(name for name in state.files
                             if name not in added and any(fnmatch.fnmatch(name, p) for p in STALE_PATTERNS))
            result = PublishResult(target.repo_id, True, out_dir=o.out_dir, added=added, deleted=deleted,
                                   branch=target.revision,
                                   card=(folder / CARD_FILE).read_text(encoding="utf-8"), url=url, io=build.io)
            if o.dry_run:
                result.unchanged = files_the_target_holds(state, folder, added)
            else:
                with timed("push"):
                    push(api, plan, state, folder, result, create_pr=o.create_pr, tag=o.tag,
                         prebuilt=uploader.operations if uploader else None)
        finally:
            if uploader is not None:
                uploader.close()
    return result


def built_and_evaluated(api: "HfApi", plan: Plan, folder: Path, choice: FetchChoice | None, o: PublishOptions,
                        uploader: "ShardUploader | None") -> Build:
    """The verified model in `folder` (merged, or --from's adopted), with the evaluation in its provenance; raises
    GateError (nothing pushed) when the gate's threshold is missed."""
    recipe = plan.require_recipe()
    if o.from_dir is not None:
        with timed("verify"):
            build = adopt_merged_folder(plan, Path(o.from_dir), folder)
    else:
        build = build_model(plan, folder, api=api, uploader=uploader,
                            options=RunOptions(o.device, o.progress, choice))
    with timed("eval"):  # the gate: raises GateError, nothing pushed, when a threshold is missed
        evaluated = evaluate_for_publish(plan, folder, api=api, device=o.device or recipe.merge.device, enforce=o.gate)
        build.provenance = evaluated or build.provenance
    return build


def files_the_target_holds(state: TargetState, folder: Path, names) -> list[str]:
    """Those of `names` in `folder` that the target's branch holds already, byte for byte (its listing's LFS sha256,
    or git blob id of a small file): a dry run marks them unchanged."""
    from chatvector.fetch.hashing import sha256_file
    from chatvector.plan.sources import git_blob_id

    def held(name: str) -> bool:
        remote, local = state.files.get(name), folder / name
        if remote is None or remote.size not in (None, local.stat().st_size):
            return False
        return remote.lfs.sha256 == sha256_file(local) if remote.lfs is not None else remote.blob_id == git_blob_id(local)

    return [name for name in names if held(name)]


def on_branch(recipe: Recipe, revision: str | None) -> tuple[Recipe, list[Problem]]:
    """The recipe with its target's branch replaced by --revision (when given and valid), and the problem with it."""
    if revision is None:
        return recipe, []
    try:
        branch = check_branch(revision)
    except ValueError as err:
        return recipe, [Problem(f"--revision: {err}")]
    return dataclasses.replace(recipe, target=dataclasses.replace(recipe.require_target(), revision=branch)), []


def start_streaming_upload(api: "HfApi", plan: Plan, state: TargetState, folder: Path, *,
                           create_pr: bool) -> "ShardUploader":
    """The uploader of a streaming publish, ready for the merge (its journal beside `folder`). Objects are
    pre-uploaded into the target, so a new target is created (empty, with the recipe's visibility) first; the
    content still lands in one commit."""
    from chatvector.build.shardupload import ShardUploader

    target = plan.require_recipe().require_target()
    if not state.exists:
        with hub_call(api, target.repo_id, action="push"):
            create_target(api, plan, state)
    uploader = ShardUploader(api, target.repo_id, plan, folder, create_pr=create_pr)
    uploader.prepare()
    return uploader


def check_from_dir(from_dir: Path, out_dir: Path | None) -> list[Problem]:
    """--from DIR, before any Hub request: a folder holding a merge's provenance."""
    from_dir = Path(from_dir)
    if out_dir is not None:
        return [Problem("--from and --out: the folder to publish is --from's already; leave out --out")]
    if not (from_dir / PROVENANCE_FILE).is_file():
        return [Problem(f"--from {from_dir}: no {PROVENANCE_FILE} there; give the folder `chatvector merge RECIPE "
                        "--out DIR` wrote")]
    return []


def check_from_plan(plan: Plan, from_dir: Path) -> list[Problem]:
    """--from DIR was merged from this very plan (the fingerprint its provenance records)."""
    recorded = ((read_provenance(from_dir / PROVENANCE_FILE) or {}).get("fingerprint") or {}).get("sha256")
    if recorded != plan.fingerprint["sha256"]:
        return [Problem(f"--from {from_dir}: it was merged from another plan (fingerprint {str(recorded)[:12]}…, "
                        f"now {plan.fingerprint['sha256'][:12]}…: the recipe, an input or the tool changed since); "
                        "merge again, or pin the plan it was made from with --plan")]
    return []


def adopt_merged_folder(plan: Plan, from_dir: Path, folder: Path) -> Build:
    """The merged folder, checked again (every file's sha256 against its provenance, then the whole verification
    with a full scan of the values), linked into `folder` for the card and the push (the folder is not changed)."""
    import os

    from chatvector.build.provenance import sha256_file
    from chatvector.build.verify import verify_model_folder
    from chatvector.errors import VerificationError

    provenance = read_provenance(from_dir / PROVENANCE_FILE) or {}
    recorded = (provenance.get("output") or {}).get("files") or {}
    for name, sha256 in sorted(recorded.items()):
        path = from_dir / name
        if not path.is_file():
            raise VerificationError(f"--from {from_dir}: {name} is missing (the merge wrote it); merge again")
        if sha256_file(path) != sha256:
            raise VerificationError(f"--from {from_dir}: {name} changed since the merge (its sha256 differs from "
                                    f"{PROVENANCE_FILE}'s); merge again")
    report = verify_model_folder(from_dir, {t.name: (t.shape, t.out_dtype) for t in plan.tensors})
    report.raise_for_failures()
    for path in sorted(from_dir.iterdir()):
        if path.is_file() and path.name not in (CARD_FILE, CHART_FILE):
            os.symlink(path.resolve(), folder / path.name)
    return Build(folder, provenance, "none (--from)", 0.0, None)


def create_target(api: "HfApi", plan: Plan, state: TargetState) -> None:
    """Create the target the run found missing. If it exists by now, another run created it meanwhile: this run
    was planned against a repository that was not there, so it stops rather than commit on top of the other."""
    from huggingface_hub.errors import HfHubHTTPError

    target = plan.require_recipe().require_target()
    try:
        api.create_repo(target.repo_id, private=target.private or state.private, exist_ok=False)
    except HfHubHTTPError as err:
        if err.response is None or err.response.status_code != 409:
            raise
        raise HubError(f"{target.repo_id} was created by another run while this run was going on: nothing was "
                       "pushed; run again (it will find what that run published)") from None
    state.head, state.exists = api.model_info(target.repo_id).sha, True
    state.branch_exists = target.revision == "main"


def ensure_branch(api: "HfApi", repo_id: str, state: TargetState) -> None:
    """The branch the run commits to, created at the head the run read (the default branch's) when missing."""
    if not state.branch_exists:
        api.create_branch(repo_id, branch=state.branch, revision=state.head, exist_ok=True)
        state.branch_exists = True


def target_url(endpoint: str, repo_id: str, branch: str) -> str:
    """The target's page; a branch other than main's files page."""
    return f"{endpoint}/{repo_id}" + (f"/tree/{quote(branch, safe='')}" if branch != "main" else "")


def unchanged(plan: Plan, state: TargetState) -> bool:
    """The target's provenance has this plan's fingerprint and the recipe's evaluation spec (an `eval:` changed
    since is published again: its results are part of the card), and the target still holds its output files."""
    recorded = state.provenance or {}
    if (recorded.get("fingerprint") or {}).get("sha256") != plan.fingerprint["sha256"]:
        return False
    if evaluation_changed(plan, recorded):
        return False
    return holds_output(state)


def holds_output(state: TargetState) -> bool:
    """The target still holds every output file its provenance records, with the recorded content."""
    output = (state.provenance or {}).get("output") or {}
    blob_ids = output.get("git_blob_ids") or {}
    for name, sha256 in (output.get("files") or {}).items():
        remote = state.files.get(name)
        if remote is None:
            return False
        if remote.lfs is not None:
            if remote.lfs.sha256 != sha256:
                return False
        elif blob_ids.get(name) != remote.blob_id:
            return False
    return True


# -- card only: the target holds this model already; what the card says changed -----------------------------
def card_only(plan: Plan, state: TargetState) -> bool:
    """Whether publishing this plan changes only the card's files (README.md, chatvector.json, coefficients.svg):
    the target's provenance records this plan's model (`model_sha256`: the weights, and the support files and the
    inputs they are made from), the target still holds those files, and the evaluation it records still stands (the
    recipe's `eval:` is the same, or gone). A change to `card:`, `name`, `target.private` or the recipe's text then
    needs no weight read, no merge and no shard upload."""
    recorded = state.provenance or {}
    if not state.exists or (recorded.get("fingerprint") or {}).get("model_sha256") != plan.fingerprint["model_sha256"]:
        return False
    if plan.require_recipe().eval is not None and evaluation_changed(plan, recorded):
        return False  # a new measurement needs the model loaded: the whole run
    return holds_output(state)


def card_only_run(plan: Plan, state: TargetState, out_dir: Path | None, from_dir: Path | None) -> bool:
    """A card-only publish, unless the run was asked for a whole folder (--out keeps it, --from pushes one)."""
    return out_dir is None and from_dir is None and not unchanged(plan, state) and card_only(plan, state)


def card_only_provenance(plan: Plan, recorded: dict, endpoint: str | None) -> dict:
    """The provenance of this plan for the model the target holds: what the plan says (recipe, card, coefficients,
    sources' commits and licenses) with what the model's run measured (its output files, verification, the inputs'
    hashes and, when the recipe still asks for it, the evaluation), which the same `model_sha256` makes true of this
    plan too. A sweep's record is not carried over (the recipe now says what it says)."""
    from chatvector.build.provenance import build_provenance

    provenance = build_provenance(plan, endpoint=endpoint)
    provenance["output"], provenance["verification"] = recorded["output"], recorded.get("verification")
    for role, entry in provenance["inputs"].items():
        entry["files"].update(((recorded.get("inputs") or {}).get(role) or {}).get("files") or {})
    if plan.require_recipe().eval is not None and recorded.get("evaluation"):
        provenance["evaluation"] = recorded["evaluation"]
    return provenance


def card_only_files(plan: Plan, state: TargetState, endpoint: str | None) -> dict[str, bytes]:
    """The card's files of a card-only publish that differ from the target's (README.md, chatvector.json and the
    λ chart when its content changed), as bytes."""
    from chatvector.build.provenance import provenance_text

    provenance = card_only_provenance(plan, state.provenance or {}, endpoint)
    files = {PROVENANCE_FILE: provenance_text(provenance), **card_files(plan, provenance)}
    out = {}
    for name, text in files.items():
        data = text.encode("utf-8")
        remote = state.files.get(name)
        if remote is None or remote.lfs is not None or remote.blob_id != _git_blob_id(data):
            out[name] = data
    return out


def _git_blob_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish_card(api: "HfApi", plan: Plan, state: TargetState, *, url: str, dry_run: bool, create_pr: bool,
                 tag: str | None) -> PublishResult:
    """The card-only publish: one commit of the card's files that changed (and the evaluation's responses deleted
    when the recipe dropped `eval:`); nothing is downloaded but the target's chatvector.json, nothing merged."""

    target = plan.require_recipe().require_target()
    endpoint = None if all(s.is_local for s in plan.sources.values()) else api.endpoint
    with timed("card"):
        files = card_only_files(plan, state, endpoint)
    deleted = [RESPONSES_FILE] if plan.require_recipe().eval is None and RESPONSES_FILE in state.files else []
    io = IOStats("none", "card only: the target holds these weights and files already")
    result = PublishResult(target.repo_id, True, added={n: len(d) for n, d in sorted(files.items())}, deleted=deleted,
                           branch=target.revision, url=url, io=io, card_only=True,
                           card=(files.get(CARD_FILE) or b"").decode("utf-8") or _remote_card(api, state, target))
    log.info("card only: %s (the target holds these weights: nothing downloaded or merged)", ", ".join(files))
    if dry_run:
        return result
    with _staging(plan, target.repo_id, None) as folder:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        with timed("push"):
            push(api, plan, state, folder, result, create_pr=create_pr, tag=tag)
    return result


def _remote_card(api: "HfApi", state: TargetState, target) -> str:
    """The target's README.md (a card-only publish whose card text did not change shows it)."""
    if CARD_FILE not in state.files:
        return ""
    with hub_call(api, target.repo_id):
        return Path(api.hf_hub_download(target.repo_id, CARD_FILE, revision=state.head)).read_text(encoding="utf-8")


def evaluation_changed(plan: Plan, provenance: dict) -> bool:
    """Whether the recipe's `eval:` differs from the one the published evaluation used (or one was added or
    removed)."""
    spec = plan.require_recipe().eval
    recorded = (provenance.get("evaluation") or {}).get("spec")
    return (spec_dict(spec) if spec is not None else None) != recorded


def read_target(api: "HfApi", repo_id: str, branch: str = "main") -> TargetState:
    """The head of the target's branch, its file listing, provenance and tags, without downloading anything else.
    A missing branch reads as the default branch's state, where the branch will be created."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    branch_exists = True
    try:
        try:
            info = api.model_info(repo_id, revision=branch, files_metadata=True)
        except RevisionNotFoundError:
            branch_exists = False
            info = api.model_info(repo_id, files_metadata=True)
    except RepositoryNotFoundError:  # a new target: the push creates it
        return TargetState(False, None, {}, None, branch=branch, branch_exists=branch == "main")
    except Exception as err:  # noqa: BLE001 - translated below, or re-raised as it is
        translated = translate(api, err, repo_id)
        if translated is None:
            raise
        raise translated from None
    files = {s.rfilename: s for s in info.siblings or []}
    provenance = None
    with hub_call(api, repo_id):
        if PROVENANCE_FILE in files:
            provenance = read_provenance(Path(api.hf_hub_download(repo_id, PROVENANCE_FILE, revision=info.sha)))
        tags = {t.name for t in api.list_repo_refs(repo_id).tags}
    return TargetState(True, info.sha, files, provenance, tags, branch=branch, branch_exists=branch_exists)


def open_pr_with_same_inputs(api: "HfApi", repo_id: str, plan: Plan) -> tuple[str, str] | None:
    """(url, head) of an open pull request whose provenance has this plan's fingerprint, so that re-running
    `--create-pr` (e.g. on a schedule) does not open the same pull request again."""
    from huggingface_hub.errors import HfHubHTTPError

    with hub_call(api, repo_id):
        for ref in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests or []:
            details = api.get_discussion_details(repo_id, int(ref.name))
            if details.status != "open":
                continue
            try:
                path = api.hf_hub_download(repo_id, PROVENANCE_FILE, revision=ref.target_commit)
            except HfHubHTTPError:
                continue
            recorded = (read_provenance(Path(path)) or {}).get("fingerprint") or {}
            if recorded.get("sha256") == plan.fingerprint["sha256"]:
                return details.url, ref.target_commit
    return None


def write_card(plan: Plan, provenance: dict, folder: Path) -> None:
    """README.md and the per-layer λ chart."""
    for name, text in card_files(plan, provenance).items():
        (folder / name).write_text(text, encoding="utf-8")


def card_files(plan: Plan, provenance: dict) -> dict[str, str]:
    """{file: text} of the card rendered from `provenance`: the per-layer λ chart and README.md."""
    recipe = plan.require_recipe()
    chart = coefficient_chart_svg(list(plan.layer_values), f"{recipe.display_name}: λ per layer")
    return {CHART_FILE: chart, CARD_FILE: render_card(provenance, recipe.text, recipe.card.template, CHART_FILE)}


def push(api: "HfApi", plan: Plan, state: TargetState, folder: Path, result: PublishResult, *,
         create_pr: bool, tag: str | None, prebuilt: dict | None = None) -> None:
    """One commit with every file (and deletions of stale ones), parent = the head read before the run.
    prebuilt: {file: CommitOperationAdd} of shards a streaming publish pre-uploaded already."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    recipe = plan.require_recipe()
    target = recipe.require_target()
    prebuilt = prebuilt or {}
    operations = [prebuilt.get(name) or CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                  for name in result.added]
    operations += [CommitOperationDelete(path_in_repo=name) for name in result.deleted]
    with hub_call(api, target.repo_id, action="push"):
        if not state.exists:
            create_target(api, plan, state)
        ensure_branch(api, target.repo_id, state)
        sent_before = {name for name, op in prebuilt.items() if op._is_uploaded}  # a streaming publish's shards
        info = commit_once(api, plan, target.repo_id, operations, parent=state.head, create_pr=create_pr,
                           branch=target.revision)
        result.commit, result.pr_url = info.oid, info.pr_url
        if result.io is not None:  # what the commit sent: each file the Hub did not hold already
            result.io.bytes_uploaded += sum(op.upload_info.size for op in operations
                                            if isinstance(op, CommitOperationAdd) and op.path_in_repo not in sent_before
                                            and not (op._remote_oid is not None and op._remote_oid == op._local_oid))
        adds = [op for op in operations if isinstance(op, CommitOperationAdd)]
        if info.oid == state.head or (len(adds) == len(operations) and all(
                op._remote_oid is not None and op._remote_oid == op._local_oid for op in adds)):
            # every file already matched (--force with nothing changed, or another run published these very
            # bytes meanwhile): huggingface_hub made no commit
            result.changed = False
        if tag:
            api.create_tag(target.repo_id, tag=tag, revision=info.oid, tag_message=f"chatvector {recipe.display_name}")
            result.tag = tag


def commit_once(api: "HfApi", plan: Plan, repo_id: str, operations: list, *, parent: str | None, create_pr: bool,
                branch: str = "main"):
    """`create_commit`, tried again after a transient failure (429, 5xx, a dropped connection). A retry that
    finds the parent moved (412) checks whether the head is this very commit (the first try landed but its
    answer was lost) before it reports a conflict. A pull request is retried only on 429 (not created then)."""
    from types import SimpleNamespace

    from chatvector.hub.retry import with_retries

    recipe = plan.require_recipe()
    message, description = commit_message(recipe, plan), commit_description(recipe, plan)

    def landed(err: BaseException, tries: int):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 412 and not create_pr:
            state = read_target(api, repo_id, branch)  # did an earlier try land, its answer lost?
            if (state.provenance or {}).get("fingerprint", {}).get("sha256") == plan.fingerprint["sha256"]:
                return SimpleNamespace(oid=state.head, pr_url=None)
        return None

    def may_retry(err: BaseException) -> bool:  # a pull request: only when it was surely not created
        return not create_pr or getattr(getattr(err, "response", None), "status_code", None) == 429

    return with_retries(lambda: api.create_commit(repo_id, operations, commit_message=message,
                                                  commit_description=description, parent_commit=parent,
                                                  create_pr=create_pr, revision=branch),
                        f"the commit to {repo_id}", recover=landed, retry_if=may_retry)


def commit_message(recipe: Recipe, plan: Plan) -> str:
    if recipe.commit_message:
        return recipe.commit_message
    inputs = ", ".join(f"{role}@{(s.sha or 'local')[:7]}" for role, s in plan.sources.items())
    return f"chatvector: {recipe.display_name} ({inputs})"


def commit_description(recipe: Recipe, plan: Plan) -> str:
    """The user's description (--commit-description), if any, then the recipe and the sources it pinned."""
    lines = [recipe.commit_description, ""] if recipe.commit_description else []
    lines += [f"Recipe {recipe.path} (sha256 {recipe.sha256})", ""]
    lines += [f"- {role}: {s.label}" for role, s in plan.sources.items()]
    return "\n".join(lines)


@contextlib.contextmanager
def _staging(plan: Plan, repo_id: str, out_dir: Path | None) -> Iterator[Path]:
    """Where the model is assembled: beside --out (moved there once the run succeeded), else the target's
    workspace under the HF cache (chatvector.fetch.workspace: swept by the next run if this one is killed), emptied
    when the run ends (a streaming publish's journal stays when it fails, to resume)."""
    if out_dir is not None:
        with staged_folder(Path(out_dir)) as folder:
            yield folder
        return
    with target_workspace(plan, repo_id) as work:
        folder = work / "model"
        folder.mkdir()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finished(work)
