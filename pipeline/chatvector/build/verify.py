"""The checks a merged model folder must pass before anything is published.

`verify_model_folder` runs every check, even after one fails, and returns a `VerificationReport`;
`report.raise_for_failures()` turns failures into one `VerificationError`. Each check reads only what
it needs: headers for the layout; the values (a streaming pass, or, after a merge, the engine's scan of
the values it computed: no second read); then config, tokenizer, chat template and generation config as
transformers would load them, read from the files without importing transformers (`tokenizer_files`,
`chat_templates`: seconds of start-up saved).

The weights are read with the safetensors library (the reader transformers uses), never with the
merge engine's own parser, so that a bug in how the engine writes files cannot pass its own check.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open  # the one reader of weights here (tests wrap it to watch the reads)

from chatvector.conventions import (
    CHAT_TEMPLATE_FILE,
    CHAT_TEMPLATE_JSON_FILE,
    CONFIG_FILE,
    DTYPE_BY_CODE,
    EMBEDDING,
    GENERATION_CONFIG_FILE,
    OUTPUT_HEAD,
    SINGLE_WEIGHTS_FILE,
    TOKENIZER_CONFIG_FILE,
    WEIGHTS_INDEX_FILE,
    role_tensor,
    summarize,
)
from chatvector.errors import VerificationError
from chatvector.plan import chat_templates
from chatvector.plan.tokenizer_files import TokenizerUnreadable, read_tokenizer
from chatvector.units import human_bytes

log = logging.getLogger(__name__)

SAMPLE_SYSTEM = "You are a helpful assistant."
SAMPLE_USER = "Hello! Who are you?"

_SHOWN = 3  # problems spelled out in a one-line detail; the rest are counted
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
# The library maps a whole file, and every page read stays in this process's RSS until the file is
# closed; the values pass reopens a file after this many bytes so that RSS stays flat.
_REMAP_BYTES = 128 << 20
# `__metadata__["format"]` values transformers loads (4.x refuses any other; a file without one is fine).
_LOADABLE_FORMATS = ("pt", "tf", "flax", "mlx")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # one line: what was checked, or the first failure


@dataclass(frozen=True)
class VerificationReport:
    checks: tuple[Check, ...]
    sample: str | None  # the sample conversation as the chat template renders it

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict:
        return {"checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
                "sample": self.sample}

    def raise_for_failures(self) -> None:
        failed = self.failures
        if not failed:
            return
        msg = f"verification failed: {failed[0].name}: {failed[0].detail}"
        if len(failed) > 1:
            msg += f"; and {len(failed) - 1} more"
        raise VerificationError(msg)


@dataclass(frozen=True)
class EngineScan:
    """What the merge engine found scanning each value as it computed it (`MergeResult`)."""

    nonfinite: dict  # tensor → NonFinite(count, first_index, first_value)
    tensors: int
    values: int


def verify_model_folder(
    folder: Path,
    expected: dict[str, tuple[tuple[int, ...], str]] | None = None,
    *,
    chunk_bytes: int = 64 << 20,
    scanned: EngineScan | None = None,
    extra: tuple[Check, ...] = (),
) -> VerificationReport:
    """Run every check on `folder`; never raises for a bad folder (see `raise_for_failures`).

    expected: the plan, {tensor name: (shape, "bfloat16" | "float16" | "float32")}; without it the
    "shapes and dtypes as planned" check is left out. chunk_bytes: the most bytes of one tensor read
    at a time while checking values (whole rows; a row larger than that is read alone). scanned: the
    engine's scan of the values it wrote, used instead of reading them back. extra: checks made
    elsewhere (the runner's spot check against a reference), reported with these.
    """
    folder = Path(folder)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    t0 = time.perf_counter()
    weights = _read_weights(folder)
    checks = [weights.check]
    if expected is not None:
        checks.append(_check_planned(weights, expected))
    checks.append(_check_finite(weights, chunk_bytes) if scanned is None else _check_scanned(weights, scanned))
    checks += extra
    config_check, vocab_size = _check_config(folder, weights)
    checks.append(config_check)
    tok_check, tokenizer = _check_tokenizer(folder, weights, vocab_size)
    checks.append(tok_check)
    template_check, sample = _check_chat_template(folder, tokenizer)
    checks.append(template_check)
    checks.append(_check_generation_eos(folder, tokenizer))
    log.debug("verified %s in %.2f s", folder, time.perf_counter() - t0)
    return VerificationReport(tuple(checks), sample)


# --------------------------------------------------------------------------------------------------
# 1. weights are readable


@dataclass(frozen=True)
class _Tensor:
    """One stored tensor, as the safetensors library reads it."""

    file: str  # the file's name inside the folder
    dtype: str  # safetensors' code: "BF16"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class _Weights:
    check: Check
    folder: Path
    tensors: dict[str, _Tensor] = field(default_factory=dict)  # each file's tensors in file order
    unreadable: set[str] = field(default_factory=set)  # named by the index but not readable

    @property
    def complete(self) -> bool:
        return self.check.ok


def _read_weights(folder: Path) -> _Weights:
    name = "weights are readable"
    single, index = folder / SINGLE_WEIGHTS_FILE, folder / WEIGHTS_INDEX_FILE
    problems: list[str] = []
    out = _Weights(Check(name, True, ""), folder)
    if single.exists():
        if index.exists():  # transformers loads model.safetensors and ignores the index
            problems.append(f"both {SINGLE_WEIGHTS_FILE} and {WEIGHTS_INDEX_FILE} exist; remove the stale one")
        weight_map = None
        files = [SINGLE_WEIGHTS_FILE]
    elif index.exists():
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
            weight_map = doc["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map is not an object of file names")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            out.check = Check(name, False, f"{WEIGHTS_INDEX_FILE} is unreadable: {_one_line(e)}")
            return out
        files = sorted(set(weight_map.values()))
        named = set(files)
        # A stale shard from an earlier run would be published alongside the good ones.
        stray = sorted(p.name for p in folder.glob("model*.safetensors") if p.name not in named)
        problems += [f"{s}: not named by the index (a stale shard?)" for s in stray]
    else:
        out.check = Check(name, False, f"no {SINGLE_WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {folder}")
        return out

    seen: dict[str, str] = {}
    unreadable_files: set[str] = set()
    for fname in files:
        path = folder / fname
        if not path.resolve().is_relative_to(folder.resolve()):
            problems.append(f"{fname}: outside the model folder")
            unreadable_files.add(fname)
            continue
        if not path.is_file():
            problems.append(f"{fname}: named by the index but missing")
            unreadable_files.add(fname)
            continue
        try:
            stored, fmt = _list_file(path)
        except Exception as e:  # noqa: BLE001  (whatever the library refuses is the finding)
            problems.append(f"{fname}: " + _why_unreadable(path, e).replace(str(path), fname))
            unreadable_files.add(fname)
            continue
        if fmt is not None and fmt not in _LOADABLE_FORMATS:
            problems.append(f"{fname}: metadata format {fmt!r}; transformers loads only {', '.join(_LOADABLE_FORMATS)}")
        for tname, (dtype, shape) in stored.items():
            if tname in seen:
                problems.append(f"{tname}: in both {seen[tname]} and {fname}")
                continue
            seen[tname] = fname
            if weight_map is not None and weight_map.get(tname) != fname:
                where = f"names {weight_map[tname]}" if tname in weight_map else "does not name it"
                problems.append(f"{tname}: stored in {fname} but the index {where}")
            out.tensors[tname] = _Tensor(fname, dtype, shape)

    if weight_map is not None:
        for tname, fname in weight_map.items():
            if fname in unreadable_files:
                out.unreadable.add(tname)
            elif seen.get(tname) is None:
                problems.append(f"{tname}: the index names {fname} but it is not there")
                out.unreadable.add(tname)

    if problems:
        out.check = Check(name, False, summarize(problems, _SHOWN))
    else:
        nbytes = sum(t.numel * DTYPE_BY_CODE[t.dtype].itemsize for t in out.tensors.values() if t.dtype in DTYPE_BY_CODE)
        shards = f"{len(files)} shards" if len(files) > 1 else "1 file"
        out.check = Check(name, True, f"{shards}, {len(out.tensors)} tensors, {human_bytes(nbytes)}")
    return out


def _list_file(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], str | None]:
    """{tensor: (dtype code, shape)} in file order, and the metadata's "format", as the library reads
    them. Opening validates the whole layout: header, offsets, no gaps or overlaps, size."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        names = f.offset_keys() if hasattr(f, "offset_keys") else f.keys()  # offset_keys: safetensors >= 0.6
        out = {}
        for tname in names:
            sl = f.get_slice(tname)
            out[tname] = (str(sl.get_dtype()), tuple(int(d) for d in sl.get_shape()))
    return out, meta.get("format")


def _why_unreadable(path: Path, err: Exception) -> str:
    """Why the safetensors library refused `path`, in words one can act on.

    The library's verdict stands; this only looks at the first bytes to name the usual causes (a
    truncated file, one that is not safetensors at all) and otherwise quotes the library."""
    if isinstance(err, OSError):
        return f"cannot read: {err.strerror or err}"
    said = _one_line(err)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                return f"not a safetensors file ({size} bytes, too short for a header)"
            n = int.from_bytes(prefix, "little")
            if n > _MAX_HEADER_BYTES or 8 + n > size:
                return (f"not a safetensors file (header length {n} does not fit a {size}-byte file);"
                        " the file may be truncated or not safetensors at all")
            raw = f.read(n)
        try:
            doc = json.loads(raw)
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
            return f"header is not valid JSON ({_one_line(e)}); the file is corrupt"
        if not isinstance(doc, dict):
            return "header is not a JSON object; the file is corrupt"
        data = size - 8 - n
        for tname, entry in doc.items():
            offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
            if (tname != "__metadata__" and isinstance(offsets, list) and len(offsets) == 2
                    and all(isinstance(o, int) for o in offsets) and offsets[1] > data):
                return (f"tensor {tname!r} lies at bytes [{offsets[0]}, {offsets[1]}) of a {data}-byte data"
                        " section; the file is truncated or corrupt")
    except OSError:
        pass
    return f"the safetensors library cannot read it ({said}); the file is corrupt"


# --------------------------------------------------------------------------------------------------
# 2. shapes and dtypes as planned


def _dtype_name(code: str) -> str:
    return DTYPE_BY_CODE[code].name if code in DTYPE_BY_CODE else code


def _check_planned(weights: _Weights, expected: dict[str, tuple[tuple[int, ...], str]]) -> Check:
    name = "shapes and dtypes as planned"
    problems: list[str] = []
    for tname in sorted(expected):
        shape, dtype = tuple(expected[tname][0]), expected[tname][1]
        if tname not in weights.tensors:
            problems.append(f"missing: {tname}")
            continue
        t = weights.tensors[tname]
        got_dtype = _dtype_name(t.dtype)
        if t.shape != shape:
            problems.append(f"{tname}: shape {list(t.shape)}, expected {list(shape)}")
        if got_dtype != dtype:
            problems.append(f"{tname}: {got_dtype}, expected {dtype}")
    problems += [f"unexpected: {t}" for t in sorted(set(weights.tensors) - set(expected))]
    if problems:
        return Check(name, False, summarize(problems, _SHOWN))
    return Check(name, True, f"{len(expected)} tensors match the plan")


# --------------------------------------------------------------------------------------------------
# 3. all tensors finite


def _check_finite(weights: _Weights, chunk_bytes: int) -> Check:
    name = "all tensors finite"
    first_bad: str | None = None
    bad_tensors = 0
    checked = values = skipped = 0
    by_file: dict[str, list[tuple[str, _Tensor]]] = {}
    for tname, t in weights.tensors.items():
        by_file.setdefault(t.file, []).append((tname, t))
    for fname, entries in by_file.items():
        current = None
        try:
            with _Reader(weights.folder / fname, max(chunk_bytes, _REMAP_BYTES)) as reader:
                for tname, t in entries:  # file order: sequential reads
                    dt = DTYPE_BY_CODE.get(t.dtype)
                    if dt is None or not dt.floating:
                        skipped += 1  # integer and fp8 tensors: nothing to check, or no arithmetic for it
                        continue
                    current = tname
                    found = _scan_tensor(reader, tname, t, dt.itemsize, chunk_bytes, count=first_bad is None)
                    checked += 1
                    values += t.numel
                    if found is not None:
                        bad_tensors += 1
                        if first_bad is None:
                            first_bad = f"{tname}: {found}"
        except Exception as e:  # noqa: BLE001  (a file that reads badly is the finding, not a crash)
            if first_bad is None:
                what = f"cannot read {current}" if current else "cannot open it"
                first_bad = f"{fname}: {what}: {_one_line(e)}".replace(str(weights.folder / fname), fname)
    skip_note = f" ({skipped} non-float tensors skipped)" if skipped else ""
    if first_bad is not None:
        more = f"; {bad_tensors - 1} more tensors have some" if bad_tensors > 1 else ""
        return Check(name, False, first_bad + more)
    if not weights.complete:
        missing = len(weights.unreadable)
        what = f"{missing} tensors unreadable" if missing else "the weights are not all readable"
        return Check(name, False, f"not fully checked: {what}; {checked} readable tensors are finite")
    return Check(name, True, f"{checked} tensors, {_count(values)} values checked{skip_note}")


def _check_scanned(weights: _Weights, scanned: EngineScan) -> Check:
    name = "all tensors finite"
    floating = [t for t, info in weights.tensors.items() if DTYPE_BY_CODE.get(info.dtype, None) is not None
                and DTYPE_BY_CODE[info.dtype].floating]
    if scanned.nonfinite:
        first = min(scanned.nonfinite)
        bad = scanned.nonfinite[first]
        plural = "value" if bad.count == 1 else "values"
        numel = weights.tensors[first].numel if first in weights.tensors else "?"
        more = len(scanned.nonfinite) - 1
        return Check(name, False, f"{first}: {bad.count} non-finite {plural} of {numel} (first: {bad.first_value} at "
                                  f"flat index {bad.first_index})" + (f"; {more} more tensors have some" if more else ""))
    if scanned.tensors < len(floating):
        return Check(name, False, f"not fully checked: the merge scanned {scanned.tensors} of {len(floating)} tensors")
    return Check(name, True, f"{scanned.tensors} tensors, {_count(scanned.values)} values checked as they were "
                             "computed")


class _Reader:
    """Row ranges of one file's tensors, read through the safetensors library.

    The library memory-maps the file and returns views of the mapping, so reading costs no anonymous
    memory; but the pages read count in this process's RSS for as long as the file is open. The file
    is therefore closed and reopened after every `remap_bytes` read, which keeps RSS bounded however
    large the shard (reopening parses the header again: a millisecond or so)."""

    def __init__(self, path: Path, remap_bytes: int):
        self.path, self.remap_bytes = path, remap_bytes
        self._file: Any = None
        self._read = 0

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self._close()

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.__exit__(None, None, None)

    def _slice(self, name: str, nbytes: int) -> Any:
        if self._file is None or self._read >= self.remap_bytes:
            self._close()
            self._file = safe_open(self.path, framework="pt")
            self._file.__enter__()
            self._read = 0
        self._read += nbytes
        return self._file.get_slice(name)

    def rows(self, name: str, a: int, b: int, nbytes: int) -> torch.Tensor:
        """Rows [a, b) of tensor `name` (its only element for a 0-d tensor), flattened."""
        sl = self._slice(name, nbytes)
        return (sl[a:b] if sl.get_shape() else sl[...]).reshape(-1)


def _scan_tensor(reader: _Reader, name: str, t: _Tensor, itemsize: int, chunk_bytes: int, count: bool) -> str | None:
    """None if every value is finite; else a description of the non-finite values.

    Reads whole rows, as many as fit in chunk_bytes (a row larger than that alone), so memory stays
    flat however large the tensor.
    """
    numel = t.numel
    if numel == 0:
        return None
    rows = t.shape[0] if t.shape else 1
    row = numel // rows  # elements per row
    step = max(1, chunk_bytes // (row * itemsize))
    bad = 0
    first: tuple[int, float] | None = None
    for a in range(0, rows, step):
        b = min(rows, a + step)
        x = reader.rows(name, a, b, (b - a) * row * itemsize)
        if x.numel() != (b - a) * row:
            raise ValueError(f"rows [{a}, {b}) of {name} came back as {x.numel()} values, not {(b - a) * row}")
        # aminmax propagates NaN and ±inf and is ~40x faster than isfinite(x).all(); the exact
        # isfinite pass runs only on a chunk already known to be bad.
        lo_v, hi_v = torch.aminmax(x)
        if not (torch.isfinite(lo_v) and torch.isfinite(hi_v)):
            if not count:
                return "non-finite values"
            nonfinite = ~torch.isfinite(x)
            bad += int(nonfinite.sum())
            if first is None:
                i = int(nonfinite.nonzero()[0, 0])
                first = (a * row + i, float(x[i]))
        del x
    if not bad:
        return None
    assert first is not None
    plural = "value" if bad == 1 else "values"
    return f"{bad} non-finite {plural} of {numel} (first: {first[1]} at flat index {first[0]})"


# --------------------------------------------------------------------------------------------------
# 4. config matches the weights


def _embedding_rows(weights: _Weights) -> tuple[str | None, int | None, str | None, int | None]:
    embed = role_tensor(weights.tensors, EMBEDDING)
    head = role_tensor(weights.tensors, OUTPUT_HEAD)
    return embed, _rows(weights, embed), head, _rows(weights, head)


def _rows(weights: _Weights, name: str | None) -> int | None:
    shape = weights.tensors[name].shape if name else ()
    return shape[0] if shape else None


def _check_config(folder: Path, weights: _Weights) -> tuple[Check, int | None]:
    """config.json as transformers reads it: its text model's `vocab_size` and `tie_word_embeddings`
    against the stored embeddings (a key the file leaves out takes the model class's default, which this
    check cannot know: it is then not compared)."""
    name = "config matches the weights"
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Check(name, False, f"config.json does not load: {_one_line(e)}"), None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vocab = text.get("vocab_size", config.get("vocab_size"))
    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    if vocab is not None and (not isinstance(vocab, int) or isinstance(vocab, bool)):
        return Check(name, False, f"config has no integer vocab_size (got {vocab!r})"), None
    embed, embed_rows, head, head_rows = _embedding_rows(weights)
    problems = []
    if embed is None:
        if weights.complete:
            problems.append(f"no input embedding tensor (a name like {EMBEDDING.llama_name})")
    elif vocab is not None and embed_rows != vocab:
        problems.append(f"vocab_size {vocab} but {embed} has {embed_rows} rows")
    if head is not None and vocab is not None and head_rows != vocab:
        problems.append(f"vocab_size {vocab} but {head} has {head_rows} rows")
    if tied is True and head is not None:
        problems.append(f"tie_word_embeddings is true but {head} is stored; transformers would ignore it")
    if tied is False and head is None and weights.complete:
        problems.append("tie_word_embeddings is false but there is no lm_head tensor;"
                        " transformers would initialise a random one")
    if problems:
        return Check(name, False, summarize(problems, _SHOWN)), vocab
    if vocab is None:
        return Check(name, True, "vocab_size not set in config.json (the model class's default applies)"), None
    parts = [f"vocab_size {vocab} = {embed} rows"] if embed else [f"vocab_size {vocab}"]
    parts.append(f"= {head} rows" if head else "(tied, no lm_head)")
    return Check(name, True, " ".join(parts)), vocab


# --------------------------------------------------------------------------------------------------
# 5. tokenizer fits the vocabulary


def _check_tokenizer(folder: Path, weights: _Weights, vocab_size: int | None) -> tuple[Check, Any]:
    name = "tokenizer fits the vocabulary"
    try:
        tok = read_tokenizer(folder)
    except TokenizerUnreadable as e:
        return Check(name, False, f"tokenizer does not load: {_one_line(e)}"), None
    # The highest id + 1 is what indexes the embeddings (ids may have gaps).
    ids = len(tok.tokens)
    embed, embed_rows, _, _ = _embedding_rows(weights)
    bounds = [(b, what) for b, what in ((embed_rows, f"{embed} rows"), (vocab_size, "vocab_size")) if b]
    if not bounds:
        return Check(name, False, f"{ids} token ids but no vocab_size or embedding rows to compare"), tok
    bound, what = min(bounds)
    if ids > bound:
        return Check(name, False, f"{ids} token ids but {what} is {bound}: ids >= {bound} would index"
                                  " past the embeddings"), tok
    return Check(name, True, f"{ids} token ids <= {what} {bound}"), tok


# --------------------------------------------------------------------------------------------------
# 6. chat template renders


def _template(folder: Path) -> str | None:
    """The template transformers loads: chat_template.jinja, else chat_template.json's or
    tokenizer_config.json's field (of named templates, "default" or the only one)."""
    if (folder / CHAT_TEMPLATE_FILE).is_file():
        return (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    for fname in (CHAT_TEMPLATE_JSON_FILE, TOKENIZER_CONFIG_FILE):
        try:
            value = json.loads((folder / fname).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, list):
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or (next(iter(named.values())) if len(named) == 1 else None)
        if isinstance(value, str) and value:
            return value
    return None


def _check_chat_template(folder: Path, tok: Any) -> tuple[Check, str | None]:
    name = "chat template renders"
    if tok is None:
        return Check(name, False, "not checked: the tokenizer did not load"), None
    template = _template(folder)
    if not template:
        return Check(name, False, "the tokenizer has no chat template (chat_template.jinja or"
                                  " tokenizer_config.json)"), None
    user = {"role": "user", "content": SAMPLE_USER}
    note = "with a system message"
    try:
        text = chat_templates.render(template, [{"role": "system", "content": SAMPLE_SYSTEM}, user], tok.named)
    except Exception as e:  # noqa: BLE001  (templates raise whatever jinja raises)
        note = f"without a system message (the template rejects it: {_one_line(e)})"
        try:
            text = chat_templates.render(template, [user], tok.named)
        except Exception as e2:  # noqa: BLE001
            return Check(name, False, f"the template fails: {_one_line(e2)}"), None
    if not isinstance(text, str) or SAMPLE_USER not in text:
        return Check(name, False, f"the rendered text does not contain the user message: {text!r:.80}"), None
    return Check(name, True, f"{len(text)} chars {note}"), text


# --------------------------------------------------------------------------------------------------
# 7. generation stops at end of turn


def _check_generation_eos(folder: Path, tok: Any) -> Check:
    name = "generation stops at end of turn"
    path = folder / GENERATION_CONFIG_FILE
    if not path.is_file():
        return Check(name, False, "no generation_config.json: generate() would fall back to config.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Check(name, False, f"generation_config.json is unreadable: {_one_line(e)}")
    eos = doc.get("eos_token_id") if isinstance(doc, dict) else None
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if not eos_ids:
        return Check(name, False, "generation_config.json has no eos_token_id")
    if tok is None:
        return Check(name, False, f"not checked: eos_token_id {eos}, but the tokenizer did not load")
    token = tok.eos_token
    tid = tok.tokens.index(token) if token in tok.tokens else None
    if tid is None:
        return Check(name, False, f"eos_token_id {eos}, but the tokenizer has no eos token")
    if tid not in eos_ids:
        return Check(name, False, f"eos_token_id {eos} does not include the tokenizer's eos"
                                  f" {token} ({tid}): generation would not stop at end of turn")
    return Check(name, True, f"eos_token_id {eos} includes {token} ({tid})")


# --------------------------------------------------------------------------------------------------
# Formatting


def _one_line(e: object, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return str(n)


