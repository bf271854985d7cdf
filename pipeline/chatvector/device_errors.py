"""CUDA out-of-memory and accelerator errors as one line the user can act on.

torch raises `torch.OutOfMemoryError` (a RuntimeError) when the GPU's memory runs out, `torch.AcceleratorError`
(torch >= 2.8) or a RuntimeError starting "CUDA error" when the device fails. Neither is a bug of chatvector: each
becomes a `DeviceError` (exit 2) naming what ran out, what was asked for, and the fix. Imported without torch.
"""

from __future__ import annotations

import re
import sys

from chatvector.errors import PipelineError

# markers of a device failure in a RuntimeError's text (older torch raises plain RuntimeErrors)
_ACCELERATOR_MARKERS = ("CUDA error", "CUDA out of memory", "CUBLAS_STATUS", "cuDNN error", "CUDA driver",
                        "NCCL error", "HIP error", "device-side assert")


class DeviceError(PipelineError):
    """The accelerator ran out of memory or failed; the message says what to do instead."""


def is_out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err) and "CUDA" in str(err)


def is_device_error(err: BaseException) -> bool:
    """A CUDA out-of-memory or accelerator failure (not a bug of ours, not a bad input)."""
    if isinstance(err, DeviceError) or is_out_of_memory(err):
        return True
    torch = sys.modules.get("torch")
    accel = getattr(torch, "AcceleratorError", None) if torch is not None else None
    if accel is not None and isinstance(err, accel):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _ACCELERATOR_MARKERS)


def asked_for(err: BaseException) -> str:
    """What torch's out-of-memory message says was asked for and was free ("2.00 GiB with 1.00 GiB free")."""
    text = str(err)
    size = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]?i?B)", text)
    free = re.search(r"of which ([\d.]+ ?[KMGT]?i?B) is free", text)
    if size and free:
        return f"{size.group(1)} more with {free.group(1)} free"
    if size:
        return f"{size.group(1)} more"
    return "more than the GPU had free"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def device_error(err: BaseException, *, device: str, doing: str, holds: str = "", fix: str) -> DeviceError:
    """The one-line error for `err` raised while `doing` on `device` ("cuda:0 (NVIDIA H100 80GB HBM3)").
    holds: what the run itself asked of the device ("its buffers for 64 MiB blocks need about 1.1 GB");
    fix: what to run instead ("run with --device cpu")."""
    if is_out_of_memory(err):
        held = f"; {holds}" if holds else ""
        return DeviceError(f"the GPU ran out of memory while {doing} on {device}: it asked for {asked_for(err)}"
                           f"{held}; {fix}")
    return DeviceError(f"the GPU failed while {doing} on {device}: {first_line(err)}; {fix} "
                       "(-v shows the details)")
