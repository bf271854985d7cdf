"""Finding a model (a folder, or a Hub repository downloaded into the Hugging Face cache) and loading it."""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatvector.evaluation.prompts import EvalInputError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)

# What loading a model for generation reads; weights only as safetensors (never pickles), no remote code.
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt"]


@dataclass(frozen=True)
class ModelRef:
    folder: Path  # where the files are
    label: str  # as the user named it: the folder or the repo id
    revision: str | None = None  # a Hub repo's commit


def resolve_model(ref: str | Path, revision: str | None, api: "HfApi", option: str = "model") -> ModelRef:
    """`ref` as a local folder, else as a Hub repo id (`revision`: a branch, tag or commit; default main),
    downloaded into the Hugging Face cache (only what loading needs)."""
    from chatvector.hub.client import hub_call
    from chatvector.recipe.recipe import check_repo_id, check_revision

    path = Path(ref).expanduser()
    if path.is_dir():
        if revision is not None:
            raise EvalInputError(f"{option} {ref} is a local folder: a revision applies to a Hub repository only")
        return ModelRef(path, str(ref))
    if path.exists():
        raise EvalInputError(f"{option} {ref} is a file: give a model folder or a Hub repository id")
    try:
        repo_id = check_repo_id(str(ref))
        if revision is not None:
            check_revision(revision)
    except ValueError as err:
        if "/" not in str(ref) or str(ref).startswith((".", "/", "~")):
            raise EvalInputError(f"{option} {ref}: no such folder, and not a Hub repository id "
                                 "(namespace/name)") from None
        raise EvalInputError(f"{option} {ref}: {err}") from None
    with hub_call(api, repo_id, revision=revision):
        sha = api.model_info(repo_id, revision=revision).sha
        log.info("eval: downloading %s@%s (config, tokenizer, safetensors weights)", repo_id, sha[:10])
        folder = api.snapshot_download(repo_id, revision=sha, allow_patterns=MODEL_FILES)
    return ModelRef(Path(folder), repo_id, sha)


@contextlib.contextmanager
def _quiet_loading(progress: bool):
    """transformers' "Loading weights" bar only when progress is wanted."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not progress:
            hf_logging.enable_progress_bar()


SMALL_MODEL_BYTES = 256 << 20  # below this, a forward pass is overhead: one CPU thread does it fastest


@contextlib.contextmanager
def cpu_threads_for(device, refs: list[ModelRef]):
    """torch single-threaded while small models run on the CPU, as the merge's CPU backend runs its tiles: on a
    tiny model OpenMP's idle workers spin more than they compute (10x slower on a busy 2-core machine). Large
    models keep torch's threads. The process-wide count is restored after the block."""
    import torch

    weights = sum(p.stat().st_size for ref in refs for p in ref.folder.glob("*.safetensors"))
    if device.type != "cpu" or weights >= SMALL_MODEL_BYTES:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Loaded:
    model: Any  # a transformers causal LM, in eval mode, on `device`
    tokenizer: Any
    device: Any  # torch.device


def load(ref: ModelRef, device, progress: bool = False) -> Loaded:
    """The model in its own dtype on `device`, and its tokenizer (left padding, for batched generation)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet_loading(progress):
            tokenizer = AutoTokenizer.from_pretrained(ref.folder)
            model = AutoModelForCausalLM.from_pretrained(ref.folder, dtype="auto")
    except (OSError, ValueError, KeyError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalInputError(f"{ref.label}: cannot be loaded with transformers: {text}") from None
    tokenizer.padding_side = "left"
    try:
        model = model.to(device)
    except Exception as err:
        from chatvector.device_errors import is_device_error

        if not is_device_error(err):
            raise
        raise _loading_device_error(err, ref, model, device) from err
    return Loaded(model.eval(), tokenizer, device)


def _loading_device_error(err: Exception, ref: ModelRef, model, device) -> Exception:
    """A CUDA out-of-memory or accelerator error while moving the model to the GPU: one line with the fix."""
    from chatvector.device_errors import device_error
    from chatvector.merge.engine import device_label
    from chatvector.units import human_bytes

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return device_error(err, device=device_label(device), doing=f"loading {ref.label}",
                        holds=f"the model's weights are {human_bytes(weights)}",
                        fix="run with --device cpu, or on a GPU with more free memory")


def release(loaded: Loaded) -> None:
    """Free a model's memory before the next one is loaded (a GPU holds one 8B model, not always two)."""
    import torch

    loaded.model = None
    if torch.cuda.is_available():  # (on the CPU the tensors go with their last reference; a gc pass costs ~0.4 s)
        gc.collect()
        torch.cuda.empty_cache()
