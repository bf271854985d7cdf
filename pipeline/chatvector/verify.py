"""The checks a merged model folder must pass before anything is published.

`verify_model_folder` runs every check, even after one fails, and returns a `VerificationReport`;
`report.raise_for_failures()` turns failures into one `VerificationError`. Each check reads only what
it needs: headers for the layout, a streaming pass for the values, then config, tokenizer, chat
template and generation config as transformers would load them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from chatvector.errors import MergeError, VerificationError
from chatvector.merge.safetensors_io import Header, InputFile, TensorInfo, read_header
from chatvector.units import human_bytes

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SAMPLE_SYSTEM = "You are a helpful assistant."
SAMPLE_USER = "Hello! Who are you?"

# safetensors dtype code -> the name a plan uses.
DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                  "tok_embeddings.weight")
LM_HEAD_SUFFIXES = ("lm_head.weight", "embed_out.weight")
_SHOWN = 3  # problems spelled out in a one-line detail; the rest are counted


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


def verify_model_folder(
    folder: Path,
    expected: dict[str, tuple[tuple[int, ...], str]] | None = None,
    *,
    chunk_bytes: int = 64 << 20,
) -> VerificationReport:
    """Run every check on `folder`; never raises for a bad folder (see `raise_for_failures`).

    expected: the plan, {tensor name: (shape, "bfloat16" | "float16" | "float32")}; without it the
    "shapes and dtypes as planned" check is left out. chunk_bytes: the most bytes of one tensor held
    at a time while checking values.
    """
    folder = Path(folder)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    t0 = time.perf_counter()
    weights = _read_weights(folder)
    checks = [weights.check]
    if expected is not None:
        checks.append(_check_planned(weights, expected))
    checks.append(_check_finite(weights, chunk_bytes))
    config_check, vocab_size = _check_config(folder, weights)
    checks.append(config_check)
    tok_check, tokenizer = _check_tokenizer(folder, weights, vocab_size)
    checks.append(tok_check)
    template_check, sample = _check_chat_template(tokenizer)
    checks.append(template_check)
    checks.append(_check_generation_eos(folder, tokenizer))
    log.debug("verified %s in %.2f s", folder, time.perf_counter() - t0)
    return VerificationReport(tuple(checks), sample)


# --------------------------------------------------------------------------------------------------
# 1. weights are readable


@dataclass
class _Weights:
    check: Check
    tensors: dict[str, tuple[Header, TensorInfo]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # named by the index but not readable

    @property
    def complete(self) -> bool:
        return self.check.ok


def _read_weights(folder: Path) -> _Weights:
    name = "weights are readable"
    single, index = folder / SINGLE_FILE, folder / INDEX_FILE
    problems: list[str] = []
    out = _Weights(Check(name, True, ""))
    if single.exists():
        if index.exists():  # transformers loads model.safetensors and ignores the index
            problems.append(f"both {SINGLE_FILE} and {INDEX_FILE} exist; remove the stale one")
        weight_map = None
        files = [SINGLE_FILE]
    elif index.exists():
        try:
            doc = json.loads(index.read_text(encoding="utf-8"))
            weight_map = doc["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map is not an object of file names")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            out.check = Check(name, False, f"{INDEX_FILE} is unreadable: {_one_line(e)}")
            return out
        files = sorted(set(weight_map.values()))
        named = set(files)
        # A stale shard from an earlier run would be published alongside the good ones.
        stray = sorted(p.name for p in folder.glob("model*.safetensors") if p.name not in named)
        problems += [f"{s}: not named by the index (a stale shard?)" for s in stray]
    else:
        out.check = Check(name, False, f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}")
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
            header = read_header(path)
        except MergeError as e:
            problems.append(_one_line(str(e).replace(str(path), fname)))
            unreadable_files.add(fname)
            continue
        for tname, info in header.tensors.items():
            if tname in seen:
                problems.append(f"{tname}: in both {seen[tname]} and {fname}")
                continue
            seen[tname] = fname
            if weight_map is not None and weight_map.get(tname) != fname:
                where = f"names {weight_map[tname]}" if tname in weight_map else "does not name it"
                problems.append(f"{tname}: stored in {fname} but the index {where}")
            out.tensors[tname] = (header, info)

    if weight_map is not None:
        for tname, fname in weight_map.items():
            if fname in unreadable_files:
                out.unreadable.add(tname)
            elif seen.get(tname) is None:
                problems.append(f"{tname}: the index names {fname} but it is not there")
                out.unreadable.add(tname)

    if problems:
        out.check = Check(name, False, _summary(problems))
    else:
        nbytes = sum(info.end - info.start for _, info in out.tensors.values())
        shards = f"{len(files)} shards" if len(files) > 1 else "1 file"
        out.check = Check(name, True, f"{shards}, {len(out.tensors)} tensors, {human_bytes(nbytes)}")
    return out


# --------------------------------------------------------------------------------------------------
# 2. shapes and dtypes as planned


def _check_planned(weights: _Weights, expected: dict[str, tuple[tuple[int, ...], str]]) -> Check:
    name = "shapes and dtypes as planned"
    problems: list[str] = []
    for tname in sorted(expected):
        shape, dtype = tuple(expected[tname][0]), expected[tname][1]
        if tname not in weights.tensors:
            problems.append(f"missing: {tname}")
            continue
        info = weights.tensors[tname][1]
        got_dtype = DTYPE_NAMES.get(info.dtype, info.dtype)
        if info.shape != shape:
            problems.append(f"{tname}: shape {list(info.shape)}, expected {list(shape)}")
        if got_dtype != dtype:
            problems.append(f"{tname}: {got_dtype}, expected {dtype}")
    problems += [f"unexpected: {t}" for t in sorted(set(weights.tensors) - set(expected))]
    if problems:
        return Check(name, False, _summary(problems))
    return Check(name, True, f"{len(expected)} tensors match the plan")


# --------------------------------------------------------------------------------------------------
# 3. all tensors finite


def _check_finite(weights: _Weights, chunk_bytes: int) -> Check:
    name = "all tensors finite"
    first_bad: str | None = None
    bad_tensors = 0
    checked = values = skipped = 0
    by_file: dict[Path, list[tuple[str, TensorInfo]]] = {}
    headers: dict[Path, Header] = {}
    for tname, (header, info) in weights.tensors.items():
        by_file.setdefault(header.path, []).append((tname, info))
        headers[header.path] = header
    for path, entries in by_file.items():
        try:
            f = InputFile(headers[path])
        except MergeError as e:
            if first_bad is None:
                first_bad = _one_line(str(e).replace(str(path), path.name))
            continue
        try:
            for tname, info in sorted(entries, key=lambda e: e[1].start):  # file order: sequential reads
                if info.torch_dtype is None or not info.torch_dtype.is_floating_point:
                    skipped += 1  # integer and fp8 tensors: nothing to check or no torch dtype for it
                    continue
                found = _scan_tensor(f, info, chunk_bytes, count=first_bad is None)
                checked += 1
                values += info.numel
                if found is not None:
                    bad_tensors += 1
                    if first_bad is None:
                        first_bad = f"{tname}: {found}"
        finally:
            f.close()
    skip_note = f" ({skipped} non-float tensors skipped)" if skipped else ""
    if first_bad is not None:
        more = f"; {bad_tensors - 1} more tensors have some" if bad_tensors > 1 else ""
        return Check(name, False, first_bad + more)
    if not weights.complete:
        missing = len(weights.unreadable)
        what = f"{missing} tensors unreadable" if missing else "the weights are not all readable"
        return Check(name, False, f"not fully checked: {what}; {checked} readable tensors are finite")
    return Check(name, True, f"{checked} tensors, {_count(values)} values checked{skip_note}")


def _scan_tensor(f: InputFile, info: TensorInfo, chunk_bytes: int, count: bool) -> str | None:
    """None if every value is finite; else a description of the non-finite values.

    Reads `info` in chunks of at most chunk_bytes straight from the page cache (zero-copy mmap views),
    dropping each chunk's pages once checked, so memory stays flat however large the shard.
    """
    step = max(1, chunk_bytes // info.itemsize)
    bad = 0
    first: tuple[int, float] | None = None
    for a in range(0, info.numel, step):
        n = min(step, info.numel - a)
        lo, hi = info.start + a * info.itemsize, info.start + (a + n) * info.itemsize
        if a + n < info.numel:
            f.willneed(hi, min(info.end, hi + n * info.itemsize))
        x = f.tensor(info, a, n)
        # aminmax propagates NaN and ±inf and is ~40x faster than isfinite(x).all(); the exact
        # isfinite pass runs only on a chunk already known to be bad.
        lo_v, hi_v = torch.aminmax(x)
        if not (torch.isfinite(lo_v) and torch.isfinite(hi_v)):
            if not count:
                del x
                return "non-finite values"
            nonfinite = ~torch.isfinite(x)
            bad += int(nonfinite.sum())
            if first is None:
                i = int(nonfinite.nonzero()[0, 0])
                first = (a + i, float(x[i]))
        del x
        f.release(lo, hi)
    if not bad:
        return None
    assert first is not None
    plural = "value" if bad == 1 else "values"
    return f"{bad} non-finite {plural} of {info.numel} (first: {first[1]} at flat index {first[0]})"


# --------------------------------------------------------------------------------------------------
# 4. config matches the weights


def _find(weights: _Weights, suffixes: tuple[str, ...], exact: tuple[str, ...] = ()) -> str | None:
    dotted = tuple("." + s for s in suffixes)
    hits = [n for n in weights.tensors if n in exact or n in suffixes or n.endswith(dotted)]
    # The shortest name: the text model's, not a vision tower's.
    return min(hits, key=lambda n: (len(n), n)) if hits else None


def _embedding_rows(weights: _Weights) -> tuple[str | None, int | None, str | None, int | None]:
    embed = _find(weights, EMBED_SUFFIXES)
    head = _find(weights, LM_HEAD_SUFFIXES, exact=("output.weight",))  # InternLM2 names it "output"
    return embed, _rows(weights, embed), head, _rows(weights, head)


def _rows(weights: _Weights, name: str | None) -> int | None:
    shape = weights.tensors[name][1].shape if name else ()
    return shape[0] if shape else None


def _check_config(folder: Path, weights: _Weights) -> tuple[Check, int | None]:
    name = "config matches the weights"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001  (any failure to load is the finding)
        return Check(name, False, f"config.json does not load: {_one_line(e)}"), None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    tied = bool(getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", False)))
    if not isinstance(vocab, int):
        return Check(name, False, f"config has no integer vocab_size (got {vocab!r})"), None
    embed, embed_rows, head, head_rows = _embedding_rows(weights)
    problems = []
    if embed is None:
        if weights.complete:
            problems.append(f"no input embedding tensor (a name ending {', '.join(EMBED_SUFFIXES)})")
    elif embed_rows != vocab:
        problems.append(f"vocab_size {vocab} but {embed} has {embed_rows} rows")
    if head is not None and head_rows != vocab:
        problems.append(f"vocab_size {vocab} but {head} has {head_rows} rows")
    if tied and head is not None:
        problems.append(f"tie_word_embeddings is true but {head} is stored; transformers would ignore it")
    if not tied and head is None and weights.complete:
        problems.append("tie_word_embeddings is false but there is no lm_head tensor;"
                        " transformers would initialise a random one")
    if problems:
        return Check(name, False, _summary(problems)), vocab
    parts = [f"vocab_size {vocab} = {embed} rows"] if embed else [f"vocab_size {vocab}"]
    parts.append(f"= {head} rows" if head else "(tied, no lm_head)")
    return Check(name, True, " ".join(parts)), vocab


# --------------------------------------------------------------------------------------------------
# 5. tokenizer fits the vocabulary


def _check_tokenizer(folder: Path, weights: _Weights, vocab_size: int | None) -> tuple[Check, Any]:
    name = "tokenizer fits the vocabulary"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001
        return Check(name, False, f"tokenizer does not load: {_one_line(e)}"), None
    # len() counts tokens; the highest id is what actually indexes the embeddings (ids may have gaps).
    ids = max(len(tok), max(tok.get_vocab().values(), default=-1) + 1)
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


def _check_chat_template(tok: Any) -> tuple[Check, str | None]:
    name = "chat template renders"
    if tok is None:
        return Check(name, False, "not checked: the tokenizer did not load"), None
    if not getattr(tok, "chat_template", None):
        return Check(name, False, "the tokenizer has no chat template (chat_template.jinja or"
                                  " tokenizer_config.json)"), None
    user = {"role": "user", "content": SAMPLE_USER}
    note = "with a system message"
    try:
        text = _render(tok, [{"role": "system", "content": SAMPLE_SYSTEM}, user])
    except Exception as e:  # noqa: BLE001  (templates raise whatever jinja raises)
        note = f"without a system message (the template rejects it: {_one_line(e)})"
        try:
            text = _render(tok, [user])
        except Exception as e2:  # noqa: BLE001
            return Check(name, False, f"the template fails: {_one_line(e2)}"), None
    if not isinstance(text, str) or SAMPLE_USER not in text:
        return Check(name, False, f"the rendered text does not contain the user message: {text!r:.80}"), None
    return Check(name, True, f"{len(text)} chars {note}"), text


def _render(tok: Any, messages: list[dict[str, str]]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------------------------------
# 7. generation stops at end of turn


def _check_generation_eos(folder: Path, tok: Any) -> Check:
    name = "generation stops at end of turn"
    path = folder / "generation_config.json"
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
    tid = tok.eos_token_id
    if tid is None:
        return Check(name, False, f"eos_token_id {eos}, but the tokenizer has no eos token")
    if tid not in eos_ids:
        return Check(name, False, f"eos_token_id {eos} does not include the tokenizer's eos"
                                  f" {tok.eos_token} ({tid}): generation would not stop at end of turn")
    return Check(name, True, f"eos_token_id {eos} includes {tok.eos_token} ({tid})")


# --------------------------------------------------------------------------------------------------
# Formatting


def _one_line(e: object, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(problems: list[str]) -> str:
    text = "; ".join(problems[:_SHOWN])
    if len(problems) > _SHOWN:
        text += f"; ... and {len(problems) - _SHOWN} more"
    return text


def _count(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return str(n)


