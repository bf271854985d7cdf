"""Pre-flight: every check of a command that is not about the checkpoints themselves, run once, before the
first weight byte moves. Each check returns problems (one line each) instead of raising, so that a run
lists them all together with the plan's.

- the output folder (`--out`) and the merge device (and its memory, on CUDA);
- free disk for what the run will download into the HF cache and write;
- the card template: it parses, and renders from the plan's provenance (an undefined variable is found now);
- publishing: a target that is not a source, a usable `--tag`, and a token that can write to the target's
  namespace (its user, or an org where it has a write role; a fine-grained token's scopes).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import PROVENANCE_FILE
from chatvector.errors import PipelineError, Problem
from chatvector.hub.client import token_of, token_origin, translate
from chatvector.recipe.recipe import Recipe, check_revision
from chatvector.units import human_bytes

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.plan.plan import Plan

# Org roles that may push: admin and write anywhere in the org; a contributor may create repos and write to
# the ones it created, which the API does not tell, so it is let through.
PUSH_ROLES = ("admin", "write", "contributor")


# -- the output folder and the device ------------------------------------------------------------------
def check_out_dir(out_dir: Path) -> list[Problem]:
    """--out must be creatable, and new, empty, or an earlier output holding only what chatvector wrote."""
    out_dir = Path(out_dir)
    parent = next((p for p in [out_dir.parent, *out_dir.parent.parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        return [Problem(f"--out {out_dir}: cannot create its folder: {parent} is not a writable folder")]
    if out_dir.is_file():
        return [Problem(f"--out {out_dir}: exists and is a file; choose a new or empty folder")]
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return []
    if not (out_dir / PROVENANCE_FILE).is_file():
        return [Problem(f"--out {out_dir}: exists and is not an earlier chatvector output; choose a new or "
                        "empty folder")]
    foreign = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                     if p.is_file() and p.name not in written_before(out_dir))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return [Problem(f"--out {out_dir}: holds files chatvector did not write ({shown}); replacing the folder "
                        "would delete them: move them or choose another folder")]
    return []


def written_before(out_dir: Path) -> set[str]:
    """The files an earlier run wrote into `out_dir`, as its provenance lists them: the output, the card, and an
    evaluation's responses and sweep chart (`sweep --eval|--publish`, a publish with `eval:`)."""
    from chatvector.build.provenance import read_provenance
    from chatvector.conventions import CARD_FILE, CHART_FILE

    provenance = read_provenance(out_dir / PROVENANCE_FILE) or {}
    files = set((provenance.get("output") or {}).get("files") or {})
    evaluation = provenance.get("evaluation") or {}
    files |= {name for name in (evaluation.get("responses_file"), (evaluation.get("sweep") or {}).get("chart"))
              if isinstance(name, str) and "/" not in name}
    return files | {PROVENANCE_FILE, CARD_FILE, CHART_FILE}


def torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, told from its files without importing it (seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(folder) / "lib" / name).exists() for folder in folders
               for name in ("libtorch_cuda.so", "torch_cuda.dll", "libtorch_hip.so"))


def _cpu_only(recipe: Recipe, device: str | None) -> bool:
    """The merge runs on the CPU, surely: asked for, or "auto" with a torch that has no CUDA."""
    wanted = device or recipe.merge.device
    return wanted == "cpu" or (wanted == "auto" and not torch_has_cuda())


def check_device(recipe: Recipe, device: str | None) -> list[Problem]:
    """The merge device can be had (a recipe's `merge.device: cuda` on a machine without CUDA is its error)."""
    if _cpu_only(recipe, device):
        return []
    from chatvector.merge import resolve_device

    try:
        resolve_device(device or recipe.merge.device)
    except PipelineError as err:
        if device is None and recipe.merge.device != "auto":  # the recipe asked for it, not a flag
            reason = str(err).split(" but ", 1)[-1]
            return [recipe.problem("merge.device", f"{recipe.merge.device} was asked for but {reason}")]
        return [Problem(str(err))]
    return []


def check_gpu_memory(recipe: Recipe, plan: "Plan", device: str | None, chunk_bytes: int = 64 << 20) -> list[Problem]:
    """On CUDA, the staging buffers must fit the device's free memory (on CPU there is nothing to check)."""
    dev = _cuda_device(recipe, device)
    if dev is None:
        return []
    import torch

    terms = max((sum(1 for lam in t.lambdas if lam) for t in plan.tensors), default=0)
    need = gpu_bytes_needed(chunk_bytes, terms, input_itemsize(plan))
    free, total = torch.cuda.mem_get_info(dev)
    if free < need:
        return [Problem(f"the merge on {dev} needs about {human_bytes(need)} of GPU memory (its buffers, temporaries "
                        f"and headroom) but only {human_bytes(free)} of {human_bytes(total)} is free; free the GPU or "
                        "use --device cpu")]
    return []


def _cuda_device(recipe: Recipe, device: str | None):
    """The CUDA device the run computes on (--device, else the recipe's merge.device), or None: the CPU, or a device
    that does not resolve (check_device reports that). The CPU asked for loads no torch."""
    if _cpu_only(recipe, device):
        return None
    from chatvector.merge import resolve_device

    try:
        dev = resolve_device(device or recipe.merge.device)
    except PipelineError:
        return None
    return dev if dev.type == "cuda" else None


GPU_HEADROOM_FRACTION = 0.10  # the caching allocator's rounding and fragmentation, kernels' workspaces
GPU_HEADROOM_MIN = 256 << 20


def input_itemsize(plan: "Plan") -> int:
    """The widest item size the merge reads: cp's tensors' dtypes and every source's checkpoint dtype (fp64: 8)."""
    from chatvector.conventions import DTYPE_BY_NAME

    names = {t.cp_dtype for t in plan.tensors} | {s.dtype for s in plan.sources.values()}
    return max((DTYPE_BY_NAME[n].itemsize for n in names if n in DTYPE_BY_NAME), default=4)


def gpu_bytes_needed(chunk_bytes: int, terms: int, itemsize: int = 4) -> int:
    """What the CUDA pipeline holds on the device, with headroom. Per staging slot (two): fp32 scratch (3) and
    output (1) for a block's elements, one input buffer each for cp and every term's base and chat at the widest
    input's item size, and the temporaries its kernels allocate (the finiteness flags, an fp64 source's fp32
    copy, row copies' rows). Then 10% (at least 256 MiB) for the allocator's rounding and fragmentation."""
    from chatvector.merge.pinned import STAGING_SLOTS, pinned_block_bytes

    elements = max(1, pinned_block_bytes(chunk_bytes) // 2)
    buffers = elements * 4 * (3 + 1) + elements * itemsize * (1 + 2 * terms)
    temporaries = elements * (1 + 4 + itemsize)
    need = STAGING_SLOTS * (buffers + temporaries)
    return need + max(GPU_HEADROOM_MIN, int(need * GPU_HEADROOM_FRACTION))


# -- the evaluation's memory -----------------------------------------------------------------------------------
EVAL_OVERHEAD = 1_500_000_000  # torch, transformers, the tokenizer and generation's activations, measured ~1.2 GB
EVAL_GPU_HEADROOM = 0.10  # the KV cache and the allocator's slack, beyond the weights


def eval_memory_need(plan: "Plan") -> int:
    """Bytes of memory the publish gate's evaluation needs: transformers loads the merged model whole, in its
    dtype, into memory (then onto the GPU, when there is one), and generates with it."""
    return plan.output_bytes + EVAL_OVERHEAD


def available_memory() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory: what a new allocation can take without swapping
    (MemAvailable), and all of it. (0, 0) when they cannot be told."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return total, total
        except (ValueError, OSError, AttributeError):
            return 0, 0


def check_eval_memory(recipe: Recipe, plan: "Plan", device: str | None, *, gpu: bool = True) -> list[Problem]:
    """With `eval:`, the machine must hold the merged model for the evaluation: told before any weight moves,
    with what would hold it. `gpu`: also check a CUDA device's free memory (False: `plan`, which loads no torch)."""
    if recipe.eval is None:
        return []
    need = eval_memory_need(plan)
    available, total = available_memory()
    what = f"the evaluation (eval:) loads the merged model, {human_bytes(plan.output_bytes)}, and generates with it"
    drop = "or drop eval: from the recipe and evaluate the published model elsewhere with `chatvector eval`"
    if total and available < need:
        return [recipe.problem("eval", f"{what}: about {human_bytes(need)} of memory, but this machine has "
                                       f"{human_bytes(available)} available ({human_bytes(total)} in all); run it "
                                       f"on a machine with at least {human_bytes(need)} of memory (a larger runner), "
                                       + drop)]
    if gpu and not _cpu_only(recipe, device):
        return _check_eval_gpu(recipe, plan, device, what, drop)
    return []


def _check_eval_gpu(recipe: Recipe, plan: "Plan", device: str | None, what: str, drop: str) -> list[Problem]:
    dev = _cuda_device(recipe, device)
    if dev is None:
        return []
    import torch

    need = int(plan.output_bytes * (1 + EVAL_GPU_HEADROOM))
    free, total = torch.cuda.mem_get_info(dev)
    if free < need:
        return [recipe.problem("eval", f"{what} on {dev}: about {human_bytes(need)} of GPU memory, but "
                                       f"{human_bytes(free)} of {human_bytes(total)} is free; use a GPU with more "
                                       f"memory, or --device cpu (it needs {human_bytes(eval_memory_need(plan))} of "
                                       f"memory), {drop}")]
    return []


# -- disk ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskNeed:
    folder: Path
    nbytes: int
    what: str


def check_disk(plan: "Plan", write_dir: Path, *, downloads: int | None = None, writes: int | None = None,
               how: str = "") -> list[Problem]:
    """Free space for the weights still to download (into the HF cache; `downloads`, default: what is not
    cached) and the output (into `write_dir`; `writes`, default: all of it); both on one filesystem add up.
    `how` says which fetch mode these figures are for, in the message."""
    problems = []
    for group, free in disk_needs(plan, write_dir, downloads=downloads, writes=writes):
        total = sum(n.nbytes for n in group)
        if free < total:
            parts = " and ".join(f"{n.what} {human_bytes(n.nbytes)} into {n.folder}" for n in group)
            stream = not how and any(n.what == "downloads" for n in group)  # streaming would download nothing
            problems.append(Problem(f"not enough free disk: the run{how} {parts}, {human_bytes(total)} in all, but "
                                    f"{human_bytes(free)} is free there; free space, or point HF_HOME or --out at "
                                    "a larger disk" + (", or stream the inputs (--fetch stream)" if stream else "")))
    return problems


def disk_needs(plan: "Plan", write_dir: Path, *, downloads: int | None = None, writes: int | None = None
               ) -> list[tuple[list["DiskNeed"], int]]:
    """The run's disk needs grouped by filesystem, each group with that filesystem's free bytes."""
    from huggingface_hub import constants

    needs = [DiskNeed(Path(constants.HF_HUB_CACHE), bytes_to_download(plan) if downloads is None else downloads,
                      "downloads"),
             DiskNeed(Path(write_dir), plan.output_bytes if writes is None else writes, "writes")]
    by_device: dict[int, list[DiskNeed]] = {}
    for need in needs:
        if need.nbytes:
            by_device.setdefault(_existing(need.folder).stat().st_dev, []).append(need)
    return [(group, shutil.disk_usage(_existing(group[0].folder)).free) for group in by_device.values()]


def bytes_to_download(plan: "Plan") -> int:
    """Weight bytes of the plan not in the HF cache yet."""
    from huggingface_hub import try_to_load_from_cache

    total = 0
    for role, files in plan.download_files.items():
        source = plan.sources[role]
        for name in files:
            cached = try_to_load_from_cache(source.repo_id, name, revision=source.sha)
            if not isinstance(cached, str):
                total += source.files[name].size
    return total


def _existing(folder: Path) -> Path:
    return next(p for p in [folder, *folder.parents] if p.exists())


# -- the card -----------------------------------------------------------------------------------------------
def check_card_template(recipe: Recipe) -> list[Problem]:
    """The recipe's card template parses (with what it includes): no Hub request needed."""
    from chatvector.card.card import check_template_syntax

    try:
        if recipe.card.template is not None:
            check_template_syntax(recipe.card.template)
    except PipelineError as err:
        return [Problem(str(err))]
    return []


def check_card(plan: "Plan", endpoint: str | None) -> list[Problem]:
    """The card renders from what the plan promises: an undefined variable or bad metadata is found before
    the merge, not after it."""
    from chatvector.build.provenance import build_provenance
    from chatvector.card.card import render_card

    recipe = plan.require_recipe()
    try:
        render_card(build_provenance(plan, endpoint=endpoint), recipe.text, recipe.card.template)
    except PipelineError as err:
        return [Problem(str(err))]
    return []


# -- publishing ------------------------------------------------------------------------------------------
def check_out_is_not_in_a_source(recipe: Recipe, out_dir: Path) -> list[Problem]:
    """--out inside a `path:` source's folder would mix the output with an input checkpoint."""
    out = Path(out_dir).resolve()
    for role, source in recipe.sources():
        if source.path is not None and out != Path(source.path).resolve() and out.is_relative_to(
                Path(source.path).resolve()):
            return [Problem(f"--out {out_dir}: inside the folder of the recipe's {role} ({source.path}); a model "
                            "folder must not hold another: choose a folder outside it")]
    return []


def check_target_is_not_a_source(recipe: Recipe) -> list[Problem]:
    target = recipe.require_target()
    return [recipe.problem("target.repo_id", f"{target.repo_id} is also the recipe's {role}; publishing there "
                                             "would overwrite an input; change target.repo_id")
            for role, source in recipe.sources() if source.repo_id == target.repo_id][:1]


def check_tag(tag: str | None, create_pr: bool) -> list[Problem]:
    if tag is None:
        return []
    try:
        check_revision(tag)
    except ValueError:
        return [Problem(f"--tag {tag!r}: not a valid tag name: a tag may hold letters, digits and . - _ / (no "
                        "spaces, no control characters, none of ~ ^ : ? * [ \\, no '..'); e.g. --tag v1.0")]
    if len(tag) == 40 and all(c in "0123456789abcdef" for c in tag):
        return [Problem(f"--tag {tag!r}: not a usable tag name (it looks like a commit hash)")]
    if create_pr:
        return [Problem("--tag with --create-pr would tag a commit that is not on main; tag after merging the PR")]
    return []


def _use_token_instead() -> str:
    """How to put another token in place of the refused one: where this one came from."""
    return "pass it with --token" if token_origin() != "HF_TOKEN" else "set HF_TOKEN to it"


def check_write_access(api: "HfApi", repo_id: str) -> list[Problem]:
    """The token can push to `repo_id`: it exists, the Hub accepts it, it has write scope, and the target's
    namespace is its user's or an org where its user may write (fine-grained tokens: `repo.write` there)."""
    if token_of(api) is None:
        return [Problem(f"publishing to {repo_id} needs a token with write access: set HF_TOKEN or run "
                        "`hf auth login` (or use --dry-run)")]
    try:
        who = api.whoami()
    except Exception as err:  # noqa: BLE001 - translated below, or re-raised as it is
        response = getattr(err, "response", None)
        if response is not None and response.status_code == 404:
            return [Problem(f"{api.endpoint} does not answer like a Hugging Face Hub (404 on /api/whoami-v2): "
                            "check HF_ENDPOINT")]
        translated = translate(api, err, repo_id, action="write")
        if translated is None:
            raise
        return [Problem(str(translated))]
    name = who.get("name") or "?"
    access = (who.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "read":
        return [Problem(f"the token of {name} is read-only: publishing to {repo_id} needs write access; create a "
                        f"token with the write role at {api.endpoint}/settings/tokens and {_use_token_instead()} (or use "
                        "--dry-run)")]
    namespace = repo_id.split("/", 1)[0]
    orgs = {o.get("name"): o.get("roleInOrg") for o in who.get("orgs") or [] if isinstance(o, dict)}
    if namespace != name and orgs.get(namespace) not in PUSH_ROLES:
        shown = ", ".join(f"{org} ({r or 'member'})" for org, r in sorted(orgs.items())) or "none"
        why = f"{namespace} is not {name}'s namespace" + (
            f" and {name}'s role in it is {orgs[namespace]}" if namespace in orgs else " nor an org of theirs")
        return [Problem(f"the token cannot write to {repo_id} (user {name}, orgs: {shown}): {why}; change "
                        "target.repo_id or use a token of an account that may write there")]
    if role == "fineGrained" and not _fine_grained_allows(access.get("fineGrained") or {}, repo_id):
        return [Problem(f"the fine-grained token of {name} has no repo.write permission for {repo_id} (nor for "
                        f"{namespace}); add it to the token's scopes on the Hub, or use another token")]
    return []


def _fine_grained_allows(grants: dict, repo_id: str) -> bool:
    namespace = repo_id.split("/", 1)[0]
    for scope in grants.get("scoped") or []:
        entity = scope.get("entity") or {}
        if "repo.write" not in (scope.get("permissions") or []):
            continue
        kind, entity_name = entity.get("type"), entity.get("name")
        if kind in ("user", "org") and entity_name == namespace:
            return True
        if kind == "model" and entity_name == repo_id:
            return True
    return False
