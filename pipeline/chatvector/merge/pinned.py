"""Page-locked (pinned) host buffers for the accelerator pipeline, sized so that nothing is doubled.

PyTorch's pinned allocator (CachingHostAllocator) rounds every request up to the next power of two and keeps
the block cached for reuse: a request of 64 MiB + 4 KiB page-locks 128 MiB. So pinned buffers are requested
at exactly a power of two (the staged pipeline's blocks are powers of two, `pinned_block_bytes`), and every
request's page-locked footprint is counted in a `PinnedLedger`, which the run reports with its other memory
figures. Pinned memory is page-aligned, so no extra bytes are asked for O_DIRECT alignment either.
"""

from __future__ import annotations

import logging
import threading

import torch

log = logging.getLogger(__name__)

ALIGN = 4096  # O_DIRECT alignment (writer.ALIGN; repeated here to keep this module free of the writer)
STAGING_SLOTS = 2  # the staged backend's alternating staging slots (compute.StagedBackend.SLOTS)


def pinned_footprint(nbytes: int) -> int:
    """What the pinned allocator page-locks for a request of `nbytes`: the next power of two."""
    return 0 if nbytes <= 0 else 1 << (nbytes - 1).bit_length()


def pinned_block_bytes(block_bytes: int) -> int:
    """The largest power of two <= block_bytes (at least ALIGN): a block whose pinned buffer wastes nothing."""
    return max(ALIGN, 1 << (max(1, block_bytes).bit_length() - 1))


def staged_pinned_bytes(block_bytes: int, outputs: int, pool_depth: int, inputs: int, itemsize: int) -> int:
    """The most the staged pipeline page-locks: each output's buffer pool (pool_depth blocks) plus, per staging
    slot, one buffer per input read at once (cp, and base and chat per distinct term) of a block's elements at
    the widest input's item size. The model's size does not enter."""
    elements = block_bytes // 2  # outputs are at least 2 bytes an element
    pools = outputs * pool_depth * pinned_footprint(block_bytes)
    staging = STAGING_SLOTS * inputs * pinned_footprint(elements * itemsize)
    return pools + staging


class PinnedLedger:
    """The bytes a run page-locked (the allocator's footprint of every request), thread-safe."""

    def __init__(self) -> None:
        self.total = 0
        self.requests: list[int] = []
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.requests.append(nbytes)
            self.total += pinned_footprint(nbytes)


def _allocate_pinned(nbytes: int) -> torch.Tensor:
    """The one pinned allocation (a seam: the tests put an ordinary allocation here on machines without CUDA)."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def host_buffer(nbytes: int, *, pin: bool, ledger: PinnedLedger | None = None) -> torch.Tensor:
    """A uint8 buffer of `nbytes` whose start is ALIGN-aligned. Pinned: exactly `nbytes` asked of the allocator
    (page-aligned already), counted in `ledger`; ordinary: ALIGN bytes more, to align the start."""
    if pin:
        raw = _allocate_pinned(nbytes)
        if ledger is not None:
            ledger.add(nbytes)
        if raw.data_ptr() % ALIGN == 0:
            return raw
        log.debug("pinned buffer at %#x is not %d-aligned: taking an aligned view of a larger one", raw.data_ptr(),
                  ALIGN)
        raw = _allocate_pinned(nbytes + ALIGN)
        if ledger is not None:
            ledger.add(nbytes + ALIGN)
    else:
        raw = torch.empty(nbytes + ALIGN, dtype=torch.uint8)
    skip = -raw.data_ptr() % ALIGN
    return raw[skip : skip + nbytes]


def wants_pinned(dev: torch.device) -> bool:
    """Host buffers are pinned when an accelerator copies from and to them."""
    return dev.type == "cuda"
