"""Every check that can be made before the first byte is written: files, names, dtypes, shapes,
rows. All problems are collected and raised once, so a bad plan fails in seconds, not mid-merge."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from chatvector.conventions import MERGEABLE_CODES, OUTPUT_DTYPE_NAMES, summarize
from chatvector.errors import MergeError
from chatvector.merge.jobs import TensorJob, TensorSource
from chatvector.merge.safetensors_io import Header, TensorInfo, read_header


def source_key(src: TensorSource) -> str:
    """The input file's key: its absolute path, or a remote file's key as given ("hub://...")."""
    return src.file if isinstance(src.file, str) and "://" in src.file else os.path.abspath(os.fspath(src.file))


def used_tensors(jobs: Sequence[TensorJob]) -> dict[str, dict[str, int]]:
    """{input file key: {name of a tensor the jobs read from it: index of the first job that reads it}},
    for jobs in the order they run."""
    used: dict[str, dict[str, int]] = {}
    for i, job in enumerate(jobs):
        for src in _sources(job):
            used.setdefault(source_key(src), {}).setdefault(src.name, i)
    return used


def _sources(job: TensorJob) -> list[TensorSource]:
    out = [job.cp]
    for t in job.active_terms:
        out += [t.base, t.chat]
    out += [rc.chat for rc in job.row_copies]
    return out


def load_headers(jobs: Sequence[TensorJob], read=None) -> dict[str, Header]:
    """Parse each input file's header once (`read(key)`: the inputs' reader, local files by default).
    Raises MergeError listing every unreadable file."""
    read = read or (lambda key: read_header(Path(key)))
    headers: dict[str, Header] = {}
    errors: list[str] = []
    for job in jobs:
        for src in _sources(job):
            key = source_key(src)
            if key in headers:
                continue
            try:
                headers[key] = read(key)
            except MergeError as e:
                if str(e) not in errors:
                    errors.append(str(e))
                headers[key] = None  # type: ignore[assignment]  # reported once
    _raise(errors, "input files")
    return headers


def check_jobs(jobs: Sequence[TensorJob], headers: dict[str, Header]) -> None:
    """Raise one MergeError naming every problem in the plan (first 10 shown, then a count)."""
    errors: list[str] = []
    seen: set[str] = set()
    if not jobs:
        errors.append("nothing to merge: the plan has no tensors")
    for job in jobs:
        errors += _check_job(job, headers, seen)
    _raise(errors, "tensors")


def _raise(errors: list[str], what: str) -> None:
    """One MergeError: a count, then one problem a line (the first few; the rest are counted)."""
    if not errors:
        return
    head = f"{len(errors)} problem(s) with the merge's {what}:\n  " if len(errors) > 1 else ""
    raise MergeError(head + summarize(errors, sep="\n  "))


def _lookup(src: TensorSource, headers: dict[str, Header], errors: list[str], job: TensorJob, role: str) -> TensorInfo | None:
    header = headers[source_key(src)]
    info = header.tensors.get(src.name)
    if info is None:
        errors.append(f"{job.name}: {role} tensor {src.name!r} is not in {src.file}")
        return None
    if info.dtype not in MERGEABLE_CODES:
        errors.append(
            f"{job.name}: {role} tensor {src.name!r} in {src.file} has dtype {info.dtype}; only"
            f" {', '.join(MERGEABLE_CODES)} can be merged"
        )
        return None
    return info


def _check_job(job: TensorJob, headers: dict[str, Header], seen: set[str]) -> list[str]:
    errors: list[str] = []
    name = job.name
    if name in seen:
        errors.append(f"{name}: two jobs write this tensor name")
    seen.add(name)
    if job.dtype not in OUTPUT_DTYPE_NAMES:
        errors.append(f"{name}: output dtype {job.dtype!r} is not one of {', '.join(OUTPUT_DTYPE_NAMES)}")
    shape = tuple(job.shape)
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        errors.append(f"{name}: shape {list(shape)} is not a list of non-negative integers")
        return errors
    cp = _lookup(job.cp, headers, errors, job, "cp")
    if cp is not None and cp.shape != shape:
        errors.append(f"{name}: cp tensor in {job.cp.file} has shape {list(cp.shape)}, the job says {list(shape)}")
    rows = shape[0] if shape else None
    tail = shape[1:]
    if job.delta_rows is not None:
        if rows is None:
            errors.append(f"{name}: delta_rows={job.delta_rows} given for a 0-d tensor")
        elif not 0 <= job.delta_rows <= rows:
            errors.append(f"{name}: delta_rows={job.delta_rows} is outside [0, {rows}] (cp's rows)")
    for i, term in enumerate(job.terms):
        if not isinstance(term.coefficient, (int, float)) or not math.isfinite(term.coefficient):
            errors.append(f"{name}: term {i} has coefficient {term.coefficient!r}; it must be a finite number")
            continue
        if term.coefficient == 0:
            continue
        for role, src in (("base", term.base), ("chat", term.chat)):
            info = _lookup(src, headers, errors, job, f"term {i} {role}")
            if info is None:
                continue
            if job.delta_rows is None:
                if info.shape != shape:
                    errors.append(
                        f"{name}: term {i} {role} tensor in {src.file} has shape {list(info.shape)}, cp has"
                        f" {list(shape)} (vocabulary tensors need delta_rows)"
                    )
            elif info.shape[1:] != tail or (info.shape and info.shape[0] < job.delta_rows):
                errors.append(
                    f"{name}: term {i} {role} tensor in {src.file} has shape {list(info.shape)}; it needs at"
                    f" least {job.delta_rows} rows of {list(tail)}"
                )
    out_rows: set[int] = set()
    for rc in job.row_copies:
        if rows is None:
            errors.append(f"{name}: row copies given for a 0-d tensor")
            break
        if not 0 <= rc.out_row < rows:
            errors.append(f"{name}: row copy to row {rc.out_row}, outside [0, {rows})")
        if rc.out_row in out_rows:
            errors.append(f"{name}: two row copies write row {rc.out_row}")
        out_rows.add(rc.out_row)
        info = _lookup(rc.chat, headers, errors, job, "row-copy chat")
        if info is None:
            continue
        if not info.shape or info.shape[1:] != tail:
            errors.append(f"{name}: row-copy chat tensor in {rc.chat.file} has shape {list(info.shape)}; rows of {list(tail)} are needed")
        elif not 0 <= rc.chat_row < info.shape[0]:
            errors.append(f"{name}: row copy reads chat row {rc.chat_row}, outside [0, {info.shape[0]}) of {rc.chat.file}")
    return errors
