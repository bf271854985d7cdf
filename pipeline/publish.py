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

from pipeline.card import render_card
from pipeline.chart import coefficient_chart_svg
from pipeline.errors import HubError, PipelineError
from pipeline.plan import Plan, make_plan
from pipeline.provenance import PROVENANCE_FILE, input_fingerprint
from pipeline.recipe import Recipe
from pipeline.runner import merge
from pipeline.sources import network_errors

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
    out_dir: Path | None = None  # the staged folder (kept for --dry-run and --out)
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    url: str = ""


@dataclass
class TargetState:
    exists: bool
    head: str | None
    files: dict  # path → RepoSibling (size, blob_id, lfs)
    provenance: dict | None


def publish(recipe: Recipe, *, dry_run: bool = False, create_pr: bool = False, tag: str | None = None,
            out_dir: Path | None = None, device: str | None = None, api=None, force: bool = False) -> PublishResult:
    from huggingface_hub import HfApi

    api = api or HfApi()
    target = recipe.require_target()
    if not dry_run:
        check_write_token(api, target.repo_id)
    plan = make_plan(recipe, api=api)
    state = read_target(api, target.repo_id)
    url = f"{api.endpoint}/{target.repo_id}"
    if not force and state.provenance is not None and is_unchanged(plan, state):
        log.info("nothing changed: %s@%s already holds this output", target.repo_id, state.head)
        return PublishResult(target.repo_id, changed=False, commit=state.head, url=url)
    with _staging(out_dir, keep=dry_run) as staged:
        outcome = merge(recipe, staged, device=device, api=api, plan=plan)
        _write_card(outcome.provenance, recipe, staged)
        added = sorted(p.name for p in staged.iterdir() if p.is_file())
        deleted = sorted(name for name in state.files
                         if name not in added and any(fnmatch.fnmatch(name, p) for p in STALE_PATTERNS))
        result = PublishResult(target.repo_id, True, out_dir=staged, added=added, deleted=deleted, url=url)
        if dry_run:
            return result
        _push(api, recipe, plan, state, staged, result, create_pr=create_pr, tag=tag)
    result.out_dir = out_dir
    return result


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
    return TargetState(True, info.sha, files, provenance)


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
def _staging(out_dir: Path | None, keep: bool) -> Iterator[Path]:
    """Where the model is assembled: --out when given (kept), else a temp folder (kept only on --dry-run)."""
    if out_dir is not None:
        yield Path(out_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="chatvector-publish-"))
    folder = tmp / "model"
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
