"""Non-finite output values, found on the values as the backends compute them: verification then needs no
second read of the written files for them.

    watch = FiniteWatch()
    watch.scan("model.norm.weight", out_values, first=0)     # any float dtype, CPU
    watch.report()   # {"model.norm.weight": NonFinite(count=2, first_index=17, first_value=nan)}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch


@dataclass
class NonFinite:
    count: int
    first_index: int  # flat index in the tensor
    first_value: float


@dataclass(frozen=True)
class FileScan:
    """What the scan found in one output file's tensors."""

    nonfinite: dict[str, NonFinite]
    tensors: int
    values: int


class FiniteWatch:
    """Thread-safe: compute workers scan their own pieces."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bad: dict[str, NonFinite] = {}
        self.values = 0  # values scanned
        self.names: set[str] = set()  # tensors scanned (any part)
        self._counts: dict[str, int] = {}  # values scanned per tensor

    def scan(self, name: str, values: torch.Tensor, first: int) -> None:
        """`values` are elements [first, first + n) of output tensor `name`."""
        n = values.numel()
        if n and values.dtype.is_floating_point:
            # aminmax propagates NaN and ±inf and is much faster than isfinite(x).all(); the exact pass
            # runs only on values already known to hold a non-finite one.
            lo, hi = torch.aminmax(values)
            if not (torch.isfinite(lo) and torch.isfinite(hi)):
                self.record(name, values, first)
        self.add(name, n)

    def add(self, name: str, n: int) -> None:
        """Count `n` scanned values of `name` (a backend that checks on the device calls `record` itself)."""
        with self._lock:
            self.values += n
            self.names.add(name)
            self._counts[name] = self._counts.get(name, 0) + n

    def record(self, name: str, values: torch.Tensor, first: int) -> None:
        """Count the non-finite values of a piece known (or suspected) to hold some."""
        bad = ~torch.isfinite(values.reshape(-1))
        count = int(bad.sum())
        if not count:
            return
        i = int(bad.nonzero()[0, 0])
        found = NonFinite(count, first + i, float(values.reshape(-1)[i]))
        with self._lock:
            known = self._bad.get(name)
            if known is None:
                self._bad[name] = found
            else:
                known.count += count
                if found.first_index < known.first_index:
                    known.first_index, known.first_value = found.first_index, found.first_value

    def part(self, names) -> FileScan:
        """The scan of some tensors (one output file's)."""
        with self._lock:
            names = [n for n in names if n in self.names]
            bad = {n: NonFinite(v.count, v.first_index, v.first_value) for n, v in self._bad.items() if n in names}
            return FileScan(bad, len(names), sum(self._counts.get(n, 0) for n in names))

    def report(self) -> dict[str, NonFinite]:
        with self._lock:
            return {name: NonFinite(v.count, v.first_index, v.first_value) for name, v in self._bad.items()}
