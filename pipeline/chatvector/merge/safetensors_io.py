"""The safetensors format, read and written by hand: header parsing, zero-copy tensor views over a
read-only mmap of each input, and the output header.

A safetensors file is: 8 bytes little-endian header length N, N bytes of JSON
(`{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`, offsets
relative to the end of the header), then the tensor bytes, contiguous, little-endian.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import mmap
import os
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from chatvector.conventions import DTYPE_BY_CODE, MERGEABLE_CODES
from chatvector.errors import MergeError
from chatvector.plan.sources import (  # the one header validator, shared with the plan
    MAX_HEADER_BYTES,  # noqa: F401 - the safetensors library's limit, checked there
    HeaderProblem,
    check_safetensors_header,
    header_length,
)

PAGE = mmap.PAGESIZE


def torch_dtype(code: str) -> torch.dtype | None:
    """The torch dtype of a safetensors dtype code, for the codes the arithmetic reads (else None)."""
    return getattr(torch, DTYPE_BY_CODE[code].name) if code in MERGEABLE_CODES else None


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in its file: `start` is the absolute file offset of its first byte."""

    dtype: str
    shape: tuple[int, ...]
    start: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return DTYPE_BY_CODE[self.dtype].itemsize

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """None for the dtypes the engine only carries through its header checks (ints, fp8)."""
        return torch_dtype(self.dtype)


@dataclass(frozen=True)
class Header:
    path: Path | str  # a local file, or a remote file's key
    tensors: dict[str, TensorInfo]
    file_size: int


def read_header(path: Path) -> Header:
    """Parse and check the header of a safetensors file; raise MergeError naming the file if bad."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return parse_header(path, size, lambda start, n: os.pread(f.fileno(), n, start))
    except FileNotFoundError:
        raise MergeError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MergeError(f"{path}: is a folder, expected a .safetensors file") from None
    except OSError as e:
        raise MergeError(f"{path}: cannot read: {e.strerror or e}") from None


def parse_header(path: Path | str, size: int, read) -> Header:
    """The header of a `size`-byte safetensors file whose bytes `read(start, n)` returns (a local file, or
    ranges of a remote one); `path` names it in messages. Checked as strictly as the safetensors library
    checks it, by the same validator the plan uses (chatvector.plan.sources.check_safetensors_header): the
    header length, the JSON, every dtype, shape and offset, and tensors that cover the data section
    exactly, without overlaps or gaps. Raises MergeError naming the file and the problem."""
    try:
        head = read(0, 8) if size >= 8 else b""
        data_start = 8 + header_length(size, head)
        entries = check_safetensors_header(size, lambda start, n: head[start:start + n] if start + n <= 8
                                           else read(start, n))
    except HeaderProblem as e:
        raise MergeError(f"{path}: {e}") from None
    tensors = {name: TensorInfo(e.dtype, e.shape, data_start + e.begin) for name, e in entries.items()}
    return Header(path, tensors, size)


class InputFile:
    """A read-only mmap of one input file. Tensors are zero-copy views of the page cache, so reading
    costs no anonymous memory; `release` drops consumed pages from this process's RSS."""

    def __init__(self, header: Header):
        self.header = header
        self.path = header.path
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise MergeError(f"{self.path}: cannot open: {e.strerror or e}") from None
        size = os.fstat(self._fd).st_size
        if size != header.file_size:
            os.close(self._fd)
            raise MergeError(f"{self.path}: changed size while the merge was starting; is it still being written?")
        self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self._mm) if self._mm is not None else memoryview(b"")

    def tensor(self, info: TensorInfo, first: int, count: int) -> torch.Tensor:
        """Elements [first, first + count) of the flattened tensor `info`, as a 1-D view."""
        dt = info.torch_dtype
        assert dt is not None and 0 <= first and first + count <= info.numel
        if count == 0:
            return torch.empty(0, dtype=dt)
        with warnings.catch_warnings():
            # The mapping is read-only on purpose; the engine never writes to these views.
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(self.view, dtype=dt, count=count, offset=info.start + first * info.itemsize)

    def bytes(self, start: int, nbytes: int) -> torch.Tensor:
        """File bytes [start, start + nbytes) as a uint8 view."""
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(self.view, dtype=torch.uint8, count=nbytes, offset=start)

    def willneed(self, start: int, end: int) -> None:
        """Ask the kernel to read [start, end) ahead (cold page cache); never blocks on the I/O."""
        self._advise(mmap.MADV_WILLNEED, start, end)

    def release(self, start: int, end: int) -> None:
        """Unmap consumed pages from this process (the page cache keeps them): keeps RSS flat.
        Safe even if another thread still reads a neighbouring page: it simply faults back in."""
        self._advise(mmap.MADV_DONTNEED, start, end)

    def _advise(self, option: int, start: int, end: int) -> None:
        if self._mm is None or end <= start:
            return
        a = start - start % PAGE
        b = min(end, len(self._mm))
        if b > a:
            try:
                self._mm.madvise(option, a, b - a)
            except (OSError, ValueError):
                pass  # advice only

    def close(self) -> None:
        self.view.release()
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a tensor view is still alive somewhere; the GC unmaps it later
        os.close(self._fd)


class InputReader(Protocol):
    """How the engine reads its input files, each named by its key (a local path, or "hub://..." for
    the streaming reader of chatvector.fetch.streaming).

    header(key): the file's parsed header. open(header, needed): an object with InputFile's methods
    (tensor, bytes, willneed, release, close); `needed` maps the names of the tensors the merge will read
    to the order of first use (0 = first), so a remote reader can fetch ahead in that order."""

    def header(self, key: str) -> Header: ...

    def open(self, header: Header, needed: Mapping[str, int]) -> InputFile: ...


class LocalInputs:
    """The default reader: local files, mapped (InputFile)."""

    def header(self, key: str) -> Header:
        return read_header(Path(key))

    def open(self, header: Header, needed: Mapping[str, int]) -> InputFile:
        return InputFile(header)


def build_header(entries: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]) -> tuple[bytes, list[int]]:
    """Header bytes for tensors laid out contiguously in the given order.

    entries: (name, safetensors dtype code, shape, nbytes). Returns the full header (8-byte length
    prefix + JSON padded with spaces to a multiple of 8, as the safetensors library does) and each
    tensor's absolute start offset. Deterministic: same entries -> same bytes.
    """
    doc: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    rel: list[int] = []
    for name, code, shape, nbytes in entries:
        doc[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        rel.append(offset)
        offset += nbytes
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    head = struct.pack("<Q", len(text)) + text
    return head, [len(head) + r for r in rel]


# sync_file_range(2): start writeback of a range without waiting, so the disk works while we compute
# and the final fsync has little left to do. Linux only; elsewhere a no-op.
_SYNC_FILE_RANGE_WRITE = 2
_libc = None
if hasattr(os, "posix_fadvise"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    except (OSError, AttributeError):
        _libc = None


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    if _libc is not None:
        _libc.sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
