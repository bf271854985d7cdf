"""`chatvector publish`: plan → (skip if unchanged) → fetch → merge → verify → card → push, one commit.

The push is a single `create_commit` whose parent is the target's head as read before the run, so a
concurrent change to the target fails the push (412) instead of being overwritten, and a failure at any
earlier stage publishes nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from chatvector.card import render_card
from chatvector.chart import coefficient_chart_svg
from chatvector.errors import HubError, PipelineError
from chatvector.plan import Plan, make_plan
from chatvector.provenance import PROVENANCE_FILE, input_fingerprint
from chatvector.recipe import Recipe
from chatvector.runner import check_device, check_out_dir, merge
from chatvector.sources import network_errors

log = logging.getLogger(__name__)
CARD_FILE = "README.md"
CHART_FILE = "coefficients.svg"
# Files of an earlier version that a new output replaces: deleted when the new output lacks them.
STALE_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                  "pytorch_model.bin.index.json", "chat_template.jinja", "chat_template.json")


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


@dataclass
class TargetState:
    exists: bool
    head: str | None
    files: dict  # path → RepoSibling (size, blob_id, lfs)
    provenance: dict | None
    tags: set[str] = field(default_factory=set)


def publish(recipe: Recipe, *, dry_run: bool = False, create_pr: bool = False, tag: str | None = None,
            out_dir: Path | None = None, device: str | None = None, api=None, force: bool = False) -> PublishResult:
    """Publish a recipe's merge to its target; see the module docstring. Checks that need no weights run first."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    target = recipe.require_target()
    check_target_is_not_a_source(recipe)
    if tag is not None:
        check_tag_name(tag)
        if create_pr:
            raise PipelineError("--tag with --create-pr would tag a commit that is not on main; tag after merging the PR")
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    check_card_template(recipe)
    check_device(recipe, device)
    if not dry_run:
        check_write_token(api, target.repo_id)
    plan = make_plan(recipe, api=api)
    state = read_target(api, target.repo_id)
    url = f"{api.endpoint}/{target.repo_id}"
    if not force and state.provenance is not None and is_unchanged(plan, state):
        log.debug("nothing changed: %s@%s already holds this output", target.repo_id, state.head)
        return PublishResult(target.repo_id, changed=False, commit=state.head, url=url)
    if create_pr and not force and state.exists:
        proposed = open_pr_with_same_inputs(api, target.repo_id, plan)
        if proposed is not None:
            return PublishResult(target.repo_id, changed=False, commit=proposed[1], pr_url=proposed[0], url=url)
    if not force and state.provenance is None and _foreign_files(state):
        raise HubError(f"{target.repo_id} already holds files chatvector did not publish (e.g. "
                       f"{_foreign_files(state)[0]}); choose another target.repo_id, or pass --force to replace them")
    if tag is not None and not dry_run and tag in state.tags:
        raise HubError(f"--tag {tag}: {target.repo_id} already has that tag; choose another name")

    def finish(folder: Path, provenance: dict) -> None:
        _write_card(provenance, recipe, folder)

    with _staging(out_dir) as staged:
        merge(recipe, staged, device=device, api=api, plan=plan, finish=finish)
        added = {p.name: p.stat().st_size for p in sorted(staged.iterdir()) if p.is_file()}
        deleted = sorted(name for name in state.files
                         if name not in added and any(fnmatch.fnmatch(name, p) for p in STALE_PATTERNS))
        result = PublishResult(target.repo_id, True, out_dir=out_dir, added=added, deleted=deleted,
                               card=(staged / CARD_FILE).read_text(encoding="utf-8"), url=url)
        if not dry_run:
            _push(api, recipe, plan, state, staged, result, create_pr=create_pr, tag=tag)
    return result


def check_target_is_not_a_source(recipe: Recipe) -> None:
    target = recipe.require_target()
    for role, source in recipe.sources():
        if source.repo_id == target.repo_id:
            raise recipe.error_at("target.repo_id", f"{target.repo_id} is also the recipe's {role}; publishing "
                                  "there would overwrite an input")


def check_tag_name(tag: str) -> None:
    from chatvector.recipe import check_revision

    try:
        check_revision(tag)
    except ValueError as err:
        raise PipelineError(f"--tag {tag!r}: {err}") from None
    if not tag or len(tag) == 40 and all(c in "0123456789abcdef" for c in tag):
        raise PipelineError(f"--tag {tag!r}: not a usable tag name")


def check_card_template(recipe: Recipe) -> None:
    """A syntax error in the recipe's card template, found before any download."""
    from chatvector.card import check_template_syntax

    if recipe.card.template is not None:
        check_template_syntax(recipe.card.template)


def open_pr_with_same_inputs(api, repo_id: str, plan: Plan) -> tuple[str, str] | None:
    """(url, head) of an open pull request whose provenance has this plan's fingerprint, so that re-running
    `--create-pr` (e.g. on a schedule) does not open the same pull request again."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    fingerprint = input_fingerprint(plan)
    try:
        for ref in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests or []:
            num = int(ref.name)
            details = api.get_discussion_details(repo_id, num)
            if details.status != "open":
                continue
            try:
                path = hf_hub_download(repo_id, PROVENANCE_FILE, revision=ref.target_commit, token=api.token)
            except HfHubHTTPError:
                continue
            if json.loads(Path(path).read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return details.url, ref.target_commit
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id) from None
    return None


def _foreign_files(state: TargetState) -> list[str]:
    return sorted(n for n in state.files if n not in (".gitattributes", "README.md"))


def check_write_token(api, repo_id: str) -> None:
    """Fail before any download when the push cannot succeed: no token, a rejected one, a read-only one."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    if (api.token or get_token()) is None:
        raise HubError(f"publishing to {repo_id} needs a token with write access: set HF_TOKEN or run "
                       "`hf auth login` (or use --dry-run)")
    try:
        who = api.whoami()
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code == 404:
            raise HubError(f"{api.endpoint} does not answer like a Hugging Face Hub (404 on /api/whoami-v2): "
                           "check HF_ENDPOINT") from None
        raise _hub_error(err, repo_id) from None
    except network_errors() as err:
        raise HubError(f"cannot reach the Hub at {api.endpoint}: {err}") from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"the token of {who.get('name')} is read-only: publishing to {repo_id} needs write access")


def read_target(api, repo_id: str) -> TargetState:
    """The target's head, file listing and provenance, without downloading anything else."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    try:
        info = api.model_info(repo_id, files_metadata=True)
    except RepositoryNotFoundError:
        return TargetState(False, None, {}, None)
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id) from None
    except network_errors() as err:
        raise HubError(f"cannot reach the Hub at {api.endpoint} to read {repo_id}: {err}") from None
    files = {s.rfilename: s for s in info.siblings or []}
    provenance = None
    if PROVENANCE_FILE in files:
        try:
            path = hf_hub_download(repo_id, PROVENANCE_FILE, revision=info.sha, token=api.token)
            provenance = json.loads(Path(path).read_text(encoding="utf-8"))
        except (EntryNotFoundError, ValueError):
            provenance = None  # unreadable provenance: treat as changed and republish
    try:
        tags = {t.name for t in api.list_repo_refs(repo_id).tags}
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id) from None
    return TargetState(True, info.sha, files, provenance, tags)


def is_unchanged(plan: Plan, state: TargetState) -> bool:
    """Same recipe, same input commits, same tool, and the target still holds the recorded output files."""
    recorded = state.provenance or {}
    if recorded.get("fingerprint") != input_fingerprint(plan):
        return False
    output = recorded.get("output") or {}
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


def _write_card(provenance: dict, recipe: Recipe, folder: Path) -> None:
    layers = provenance["coefficients"]["layers"]
    (folder / CHART_FILE).write_text(coefficient_chart_svg(layers, f"{recipe.display_name}: λ per layer"),
                                     encoding="utf-8")
    text = render_card(provenance, recipe.text, recipe.card.template, CHART_FILE)
    (folder / CARD_FILE).write_text(text, encoding="utf-8")


def _push(api, recipe: Recipe, plan: Plan, state: TargetState, folder: Path, result: PublishResult, *,
          create_pr: bool, tag: str | None) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    target = recipe.require_target()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in result.added]
    operations += [CommitOperationDelete(path_in_repo=name) for name in result.deleted]
    try:
        if not state.exists:
            api.create_repo(target.repo_id, private=target.private, exist_ok=True)
            state.head = api.model_info(target.repo_id).sha
        info = api.create_commit(
            target.repo_id, operations, commit_message=commit_message(recipe, plan),
            commit_description=commit_description(recipe, plan), parent_commit=state.head, create_pr=create_pr,
        )
        result.commit, result.pr_url = info.oid, info.pr_url
        if info.oid == state.head:  # every file already matched (e.g. --force with nothing changed)
            result.changed = False
        if tag:
            api.create_tag(target.repo_id, tag=tag, revision=info.oid,
                           tag_message=f"chatvector {recipe.display_name}")
            result.tag = tag
    except HfHubHTTPError as err:
        raise _hub_error(err, target.repo_id) from None
    except network_errors() as err:
        raise HubError(f"cannot reach the Hub at {api.endpoint} to push {target.repo_id}: {err}") from None


def commit_message(recipe: Recipe, plan: Plan) -> str:
    if recipe.commit_message:
        return recipe.commit_message
    inputs = ", ".join(f"{role}@{(c.resolved.sha or 'local')[:7]}" for role, c in plan.checkpoints.items())
    return f"chatvector: {recipe.display_name} ({inputs})"


def commit_description(recipe: Recipe, plan: Plan) -> str:
    lines = [f"Recipe {recipe.path} (sha256 {recipe.sha256})", ""]
    lines += [f"- {role}: {c.resolved.label}" for role, c in plan.checkpoints.items()]
    return "\n".join(lines)


def _hub_error(err, repo_id: str) -> PipelineError:
    status = err.response.status_code if getattr(err, "response", None) is not None else None
    if status == 401:
        return HubError(f"publishing to {repo_id} needs a valid write token: set HF_TOKEN (the Hub answered 401)")
    if status == 403:
        return HubError(f"the token cannot write to {repo_id} (403): use a token with write access to it")
    if status == 412:
        return HubError(f"{repo_id} changed while this run was going on (412): nothing was pushed; run again")
    if status == 409:
        return HubError(f"{repo_id}: {str(err).splitlines()[0]}")
    return HubError(f"the Hub refused the push to {repo_id} ({status}): {str(err).splitlines()[0]}")


@contextlib.contextmanager
def _staging(out_dir: Path | None) -> Iterator[Path]:
    """Where the model is assembled: --out when given (kept), else a temp folder removed afterwards."""
    if out_dir is not None:
        yield Path(out_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="chatvector-publish-"))
    try:
        yield tmp / "model"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
