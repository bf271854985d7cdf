"""Making the plan: `make_plan` pins every source to a commit, reads configs, tokenizers, chat templates and
safetensors headers, checks everything that can be checked from them, and decides what the run will do.

Every problem is collected, not raised at the first: one run lists them all, in recipe-file order, each
naming the recipe field and the fix (with the closest token, revision or pattern where one is near).
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chatvector import __version__
from chatvector.conventions import (
    CHAT_TEMPLATE_FILE,
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TIKTOKEN_PATTERN,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILES,
    WEIGHTS_INDEX_FILE,
    is_vocab_axis,
    module_name,
    shard_filenames,
    summarize,
)
from chatvector.errors import FieldError, HubError, PlanError, Problem
from chatvector.plan import chat_templates
from chatvector.plan.checkpoint import ChatTemplate, Checkpoint, load_checkpoint
from chatvector.plan.plan import (
    CardPlan,
    InputFile,
    ModulePlan,
    OutputPlan,
    Plan,
    RowCopy,
    SourcePlan,
    SupportFile,
    TensorPlan,
    VectorPlan,
    fingerprint,
)
from chatvector.plan.sources import resolve_source
from chatvector.recipe.recipe import Recipe, Source

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)
BASE_TAGS = ("chat-vector", "merge")


class _Problems:
    """The problems found so far, located in the recipe where they concern a field."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.items: list[Problem] = []

    def add(self, field_path: str | None, message: str) -> None:
        self.items.append(self.recipe.problem(field_path, message))

    def extend(self, problems) -> None:
        self.items.extend(problems)


def make_plan(recipe: Recipe, api: "HfApi") -> Plan:
    """Resolve and check everything the merge needs, from metadata alone; raises PlanError listing every problem."""
    problems = _Problems(recipe)
    checkpoints = _load_checkpoints(recipe, api, problems)
    _check_card(recipe, problems)
    cp = checkpoints.get("cp")
    if cp is None:
        raise PlanError(problems.items)
    problems.extend(recipe.check_layers(cp.num_layers))
    _check_family(recipe, checkpoints, problems)
    special = _special_rows(recipe, checkpoints, problems)
    chat = checkpoints.get(recipe.vectors[0].path_of("chat"))
    template = _chat_template(recipe, checkpoints, problems)
    eos_token, eos_ids = _end_of_turn(recipe, chat, cp, problems) if chat else (None, ())
    if template is not None:
        _check_template_renders(recipe, template, chat, cp, problems)
    if len(checkpoints) < len(recipe.sources()):  # a source failed: what follows compares all of them
        raise PlanError(problems.items)
    shared_rows = _check_vocabulary(checkpoints, problems)
    tensors, mismatches = _plan_tensors(recipe, checkpoints, shared_rows, special)
    if mismatches:
        problems.add(None, "tensors do not match: " + summarize(mismatches))
    modules = _check_module_rules(recipe, cp, tensors, problems)
    if problems.items:
        raise PlanError(problems.items)
    sources = {role: _source_plan(c, tensors) for role, c in checkpoints.items()}
    output = _output_plan(recipe, cp, tensors, template, eos_token, eos_ids)
    card = _card_plan(recipe, sources)
    plan = Plan(
        tool_version=__version__,
        recipe_path=str(recipe.path),
        recipe_name=recipe.display_name,
        recipe_sha256=recipe.normalized_sha256,
        sources=sources,
        vectors=tuple(VectorPlan(v.path_of("base"), v.path_of("chat"), v.weight) for v in recipe.vectors),
        num_layers=cp.num_layers,
        default=recipe.coefficients.default,
        layer_values=tuple(recipe.coefficients.layer_values(cp.num_layers)),
        modules=modules,
        tensors=tuple(tensors),
        output=output,
        card=card,
        fingerprint={},
        shared_tokens=shared_rows,
        ignored=tuple(sorted({(name, f"only in {role}") for role, c in checkpoints.items()
                              for name in c.tensors.keys() - cp.tensors.keys()})),
        notes=tuple(_notes(cp, shared_rows)),
        warnings=tuple(_license_warnings(card, sources)),
        recipe=recipe,
    )
    plan.fingerprint = fingerprint(plan)
    return plan


def _load_checkpoints(recipe: Recipe, api: "HfApi", problems: _Problems) -> dict[str, Checkpoint]:
    """Every source resolved and read; a source named twice (a base shared by two vectors) is read once."""
    checkpoints: dict[str, Checkpoint] = {}
    seen: dict[Source, Checkpoint | None] = {}
    for role, source in recipe.sources():
        if source in seen:
            earlier = seen[source]
            if earlier is not None:  # else its problem is reported once
                checkpoints[role] = replace(earlier, resolved=replace(earlier.resolved, role=role))
            continue
        seen[source] = None
        try:
            resolved = resolve_source(api, role, source)
            checkpoints[role] = seen[source] = load_checkpoint(api, resolved,
                                                               trust_remote_code=recipe.trust_remote_code)
        except FieldError as err:  # FieldErrors: several at once (a source's bad files), one line each
            for field_path, message in getattr(err, "items", None) or [(err.field, err.message)]:
                problems.add(field_path, message)
        except HubError as err:  # the Hub as a whole (unreachable, the token refused): nothing else will work
            problems.add(None, str(err))
            raise PlanError(problems.items) from None
    return checkpoints


def _check_card(recipe: Recipe, problems: _Problems) -> None:
    """Card metadata by the Hub's rules, before anything is merged (the Hub refuses bad metadata at commit)."""
    from chatvector.hub.cardrules import duplicate_tags, language_problem, license_problem

    card = recipe.card
    if card.license is not None:
        message = license_problem(card.license)
        if message:
            problems.add("card.license", message)
        if card.license == "other" and not card.license_name:
            problems.add("card.license", "license: other needs card.license_name (a short id for the license) and "
                                         "card.license_link (where its text is)")
    for key in ("license_name", "license_link"):
        if getattr(card, key) and card.license != "other":
            problems.add(f"card.{key}", f"{key} goes with `license: other`; a Hub license id needs no {key}")
    for i, code in enumerate(card.language):
        message = language_problem(code)
        if message:
            problems.add(f"card.language[{i}]" if len(card.language) > 1 or _is_list(recipe, "card.language")
                         else "card.language", message)
    for index, tag, first in duplicate_tags(card.tags):
        problems.add(f"card.tags[{index}]", f"duplicate tag '{tag}' (the Hub compares tags ignoring case: "
                                            f"'{first}' is already listed)")


def _is_list(recipe: Recipe, field_path: str) -> bool:
    from chatvector.recipe.yamlsource import parse_path

    return parse_path(field_path) + (0,) in recipe.field_lines


def _check_family(recipe: Recipe, checkpoints: dict[str, Checkpoint], problems: _Problems) -> None:
    cp = checkpoints["cp"]
    for role, c in checkpoints.items():
        if c.model_type != cp.model_type:
            problems.add(role, f"{c.label} is a {c.model_type} model but cp ({cp.label}) is a {cp.model_type} "
                               "model; a chat vector only transfers within one architecture family")
        elif c.num_layers != cp.num_layers:
            problems.add(role, f"{c.label} has {c.num_layers} layers but cp ({cp.label}) has {cp.num_layers}; "
                               "base, chat and cp must be the same model size")


def _check_vocabulary(checkpoints: dict[str, Checkpoint], problems: _Problems) -> int:
    """The number of leading token ids that cp, every base and every chat share (same strings).

    Only ids that have an embedding row in both checkpoints are compared: a tokenizer may list more tokens
    than its model has rows (Qwen2's adds `<|endoftext|>` on load), and such ids index no row."""
    cp = checkpoints["cp"]
    if cp.embedding_rows is not None and cp.vocab_size > cp.embedding_rows:  # verification would refuse it
        problems.add(cp.resolved.field, f"cp's tokenizer ({cp.label}) has {cp.vocab_size} token ids but its embeddings "
                                        f"have {cp.embedding_rows} rows: ids from {cp.embedding_rows} on would index "
                                        "past them in the output; use a cp whose tokenizer fits its model")
    for role, c in checkpoints.items():
        if role == "cp":
            continue
        for i in range(min(c.aligned_ids, cp.aligned_ids)):
            if c.tokens[i] != cp.tokens[i]:
                problems.add(role, f"vocabularies do not line up: token {i} is {c.tokens[i]!r} in {role} ({c.label}) "
                                   f"but {cp.tokens[i]!r} in cp ({cp.label}); cp's vocabulary must start with "
                                   "base's tokens in the same order")
                break
    return min(c.aligned_ids for c in checkpoints.values())


def _closest_tokens(token: str, checkpoint: Checkpoint) -> str:
    """" (did you mean '<|eot_id|>'?)" from the tokenizer's special tokens, else its whole vocabulary."""
    for pool in (checkpoint.special_tokens, [t for t in checkpoint.tokens if t is not None]):
        close = difflib.get_close_matches(token, pool, n=2, cutoff=0.6)
        if close:
            return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return ""


def _special_rows(recipe: Recipe, checkpoints: dict[str, Checkpoint], problems: _Problems) -> tuple[RowCopy, ...]:
    """Rows copied from the (first) chat model for `special_tokens`, looked up by token string."""
    cp = checkpoints["cp"]
    chat = checkpoints.get(recipe.vectors[0].path_of("chat"))
    rows = []
    for i, token in enumerate(recipe.special_tokens):
        cp_id = cp.token_id(token)
        chat_id = chat.token_id(token) if chat else None
        if cp_id is None:
            problems.add(f"special_tokens[{i}]", f"token {token!r} is not in cp's tokenizer ({cp.label})"
                                                 + _closest_tokens(token, cp))
        elif chat is not None and chat_id is None:
            problems.add(f"special_tokens[{i}]", f"token {token!r} is not in the chat model's tokenizer "
                                                 f"({chat.label})" + _closest_tokens(token, chat))
        elif chat is not None:
            rows.append(RowCopy(token, cp_id, chat_id))
    return tuple(rows)


def _chat_template(recipe: Recipe, checkpoints: dict[str, Checkpoint], problems: _Problems) -> ChatTemplate | None:
    """The output's template: the chat model's (default), cp's, or a file; parsed here."""
    import jinja2

    choice = recipe.output.chat_template
    if choice in ("chat", "cp"):
        role = recipe.vectors[0].path_of("chat") if choice == "chat" else "cp"
        source = checkpoints.get(role)
        if source is None:
            return None  # its own problem is reported
        if source.chat_template is None:
            problems.add("output.chat_template", f"the {choice} model ({source.label}) has no chat template; name "
                                                 "a template file instead")
            return None
        template = source.chat_template
    else:
        template = ChatTemplate(choice.read_text(encoding="utf-8"), in_config=False)
    texts = [template.value] if isinstance(template.value, str) else [t.get("template", "") for t in template.value]
    for text in texts:
        try:
            chat_templates.parse(text)
        except jinja2.TemplateSyntaxError as err:
            problems.add("output.chat_template", f"the chat template does not parse (line {err.lineno}): "
                                                 f"{err.message}")
            return None
    return template


def _check_template_renders(recipe: Recipe, template: ChatTemplate, chat: Checkpoint | None, cp: Checkpoint,
                            problems: _Problems) -> None:
    """Render a sample conversation as the output's tokenizer will (cp's special tokens, the chat model's
    end of turn); every special token of the chat model that the prompt then contains must be one of cp's
    special tokens, or prompts would split into pieces the model never saw."""
    named = dict(cp.named_tokens)
    if chat is not None and chat.eos_token:
        named["eos_token"] = chat.eos_token
    try:
        rendered = chat_templates.render_sample(template.default_text(), named)
    except Exception as err:  # noqa: BLE001 - templates raise whatever jinja raises
        text = str(err).strip()
        problems.add("output.chat_template", "the chat template does not render a sample conversation: "
                                             f"{text.splitlines()[0] if text else type(err).__name__}")
        return
    # A special token must be one of cp's added tokens: as plain vocabulary it would still be split by the
    # pre-tokenizer before it could match.
    in_cp = set(cp.special_tokens)
    missing = sorted(t for t in set(chat.special_tokens if chat else ()) if len(t) > 1 and t in rendered
                     and t not in in_cp)
    if missing:
        problems.add("output.chat_template", f"the chat template writes {', '.join(map(repr, missing))}, which "
                                             f"cp's tokenizer ({cp.label}) does not have as special tokens: prompts would "
                                             "be split into pieces the model never saw")


def _end_of_turn(recipe: Recipe, chat: Checkpoint, cp: Checkpoint, problems: _Problems) -> tuple[str | None, tuple]:
    """The chat model's end-of-turn token and its generation eos ids, mapped to cp's ids by token string."""
    ids = (chat.generation_config or {}).get("eos_token_id")
    chat_ids = [ids] if isinstance(ids, int) else [i for i in (ids or []) if isinstance(i, int)]
    eos_token = chat.eos_token
    if not chat_ids and eos_token is not None and chat.token_id(eos_token) is not None:
        chat_ids = [chat.token_id(eos_token)]
    role = recipe.vectors[0].path_of("chat")
    cp_ids, missing = [], []
    for i in chat_ids:
        token = chat.tokens[i] if 0 <= i < len(chat.tokens) else None
        if token is None:
            problems.add(role, f"the chat model's generation_config.json names eos token id {i}, which its "
                               f"tokenizer ({chat.label}) does not have")
        elif cp.token_id(token) is None:
            missing.append(token)
        else:
            cp_ids.append(cp.token_id(token))
    if eos_token is not None and cp.token_id(eos_token) is None and eos_token not in missing:
        missing.append(eos_token)
    for token in missing:
        problems.add(role, f"the chat model's end-of-turn token {token!r} is not in cp's tokenizer ({cp.label}): "
                           "generation could not stop at the end of a turn" + _closest_tokens(token, cp))
    return eos_token, tuple(dict.fromkeys(cp_ids))


def _plan_tensors(recipe: Recipe, checkpoints: dict[str, Checkpoint], shared_rows: int,
                  special: tuple[RowCopy, ...]) -> tuple[list[TensorPlan], list[str]]:
    tensors, mismatches = [], []
    for name in checkpoints["cp"].tensors:
        tensors.append(_plan_tensor(recipe, checkpoints, name, shared_rows, special, mismatches))
    return tensors, mismatches


def _plan_tensor(recipe: Recipe, checkpoints: dict[str, Checkpoint], name: str, shared_rows: int,
                 special: tuple[RowCopy, ...], problems: list[str]) -> TensorPlan:
    cp = checkpoints["cp"]
    meta = cp.tensors[name]
    out_dtype = recipe.output.dtype or meta.dtype
    value, reason = recipe.coefficients.explain(name, cp.num_layers)
    lambdas = tuple(v.weight * value for v in recipe.vectors)
    is_vocab = is_vocab_axis(name, meta.shape)
    missing, mismatched = [], {}
    rows = [meta.shape[0]] if is_vocab else []
    for vector in recipe.vectors:
        for key in ("base", "chat"):
            role = vector.path_of(key)
            other = checkpoints[role].tensors.get(name)
            if other is None:
                missing.append(role)
            elif is_vocab and other.shape[1:] == meta.shape[1:]:
                rows.append(other.shape[0])
            elif other.shape != meta.shape:
                mismatched.setdefault(str(list(other.shape)), []).append(role)
    if mismatched:
        problems.append(f"{name}: shape {list(meta.shape)} in cp but "
                        + ", ".join(f"{shape} in {' and '.join(roles)}" for shape, roles in mismatched.items()))
    base = TensorPlan(name, meta.shape, meta.dtype, out_dtype, lambdas, reason, {"cp": meta.file})
    if missing:
        return replace(base, lambdas=tuple(0.0 for _ in lambdas), kept=f"not in {', '.join(missing)}")
    delta_rows = None
    if is_vocab and len(rows) > 1:
        same_vocab = len({c.vocab_size for c in checkpoints.values()}) == 1
        # Padding rows past the tokenizer (same in every model) merge like any row; otherwise only the
        # token ids every model shares get the delta.
        delta_rows = min(rows) if same_vocab else min(min(rows), shared_rows)
        if all(r == meta.shape[0] for r in rows):  # every model has cp's rows: merge the whole tensor
            delta_rows = None
    copies = special if is_vocab else ()
    chat_role = recipe.vectors[0].path_of("chat")
    for rc in copies:
        chat_rows = checkpoints[chat_role].tensors[name].shape[0]
        if rc.cp_row >= meta.shape[0] or rc.chat_row >= chat_rows:
            problems.append(f"{name}: special token {rc.token!r} has no row ({rc.cp_row} in cp, {rc.chat_row} in chat)")
    if not any(lambdas) and not copies:
        return replace(base, kept=f"coefficient 0 ({reason})")
    files = {"cp": meta.file}
    for vector, lam in zip(recipe.vectors, lambdas):
        if lam != 0:
            for key in ("base", "chat"):
                role = vector.path_of(key)
                files[role] = checkpoints[role].tensors[name].file
    if copies:
        files[chat_role] = checkpoints[chat_role].tensors[name].file
    return replace(base, files=files, delta_rows=delta_rows if any(lambdas) else None, row_copies=copies)


def _check_module_rules(recipe: Recipe, cp: Checkpoint, tensors: list[TensorPlan],
                        problems: _Problems) -> tuple[ModulePlan, ...]:
    """A rule that matches no tensor, or never decides one because earlier rules match all it matches, is a
    mistake (a typo like `layernrom` would silently give the norms the full vector)."""
    modules = []
    names = list(cp.tensors)
    for i, rule in enumerate(recipe.coefficients.modules):
        matched = [n for n in names if rule.pattern.search(n)]
        decides = sum(1 for t in tensors if t.reason.startswith(f"module rule {i} "))
        where = f"coefficients.modules[{i}].match"
        if not matched:
            parts = sorted({p for n in names for p in re.split(r"[._]", n) if p and not p.isdigit()})
            close = difflib.get_close_matches(rule.match, parts, n=1, cutoff=0.6)
            hint = (" (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)") if close else \
                f" (tensor names look like {names[len(names) // 2]!r})" if names else ""
            problems.add(where, f"'{rule.match}' matches no tensor of cp ({cp.label}){hint}")
        elif decides == 0:
            earlier = [j for j, r in enumerate(recipe.coefficients.modules[:i]) if any(r.pattern.search(n)
                                                                                        for n in matched)]
            shown = ", ".join(f"{j} ('{recipe.coefficients.modules[j].match}')" for j in earlier)
            problems.add(where, f"'{rule.match}' never decides a coefficient: every tensor it matches is matched "
                                f"first by rule{'s' if len(earlier) > 1 else ''} {shown} (the first match wins); "
                                "move it up or remove it")
        modules.append(ModulePlan(rule.match, rule.value, decides))
    return tuple(modules)


def _source_plan(c: Checkpoint, tensors: list[TensorPlan]) -> SourcePlan:
    r = c.resolved
    used = {t.files[c.role] for t in tensors if c.role in t.files}
    names = sorted(used | set(c.metadata_files))
    files = {}
    for name in names:
        listing = r.files.get(name)
        if listing is not None:
            files[name] = InputFile(listing.size, listing.identity)
    return SourcePlan(
        role=c.role, repo_id=r.source.repo_id, path=str(r.source.path) if r.is_local else None,
        revision=r.source.revision if not r.is_local else None, sha=r.sha, architecture=c.architecture,
        model_type=c.model_type, layers=c.num_layers, vocab_size=c.vocab_size, embedding_rows=c.embedding_rows,
        dtype=c.dtype, tied=c.tied, license=c.license, weight_files=tuple(c.weight_files),
        weight_bytes=c.weight_bytes, files=files,
    )


def _output_plan(recipe: Recipe, cp: Checkpoint, tensors: list[TensorPlan], template: ChatTemplate,
                 eos_token: str | None, eos_ids: tuple[int, ...]) -> OutputPlan:
    dtype = recipe.output.dtype or cp.dtype
    groups = greedy_shards([t.out_bytes for t in tensors], recipe.output.shard_size)
    shards = tuple(tuple(tensors[i].name for i in group) for group in groups)
    names = shard_filenames(len(shards))
    choice = recipe.output.chat_template
    return OutputPlan(
        dtype=dtype, shard_size=recipe.output.shard_size, shards=shards,
        files=tuple(names + ([WEIGHTS_INDEX_FILE] if len(names) > 1 else [])),
        total_bytes=sum(t.out_bytes for t in tensors),
        chat_template_source=choice if isinstance(choice, str) else choice.name,
        chat_template_stored_in=template.stored_in, eos_token=eos_token, eos_ids=eos_ids,
        support_files=tuple(_support_files(recipe, cp, dtype, template, eos_token, list(eos_ids))),
    )


def greedy_shards(sizes: list[int], shard_size: int) -> list[list[int]]:
    """Indices of each weight file, in order: a file takes tensors until the next would push it past
    `shard_size` bytes. A tensor is never split; one larger than `shard_size` gets a file of its own."""
    shards: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, n in enumerate(sizes):
        if current and size + n > shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(i)
        size += n
        if size > shard_size:
            shards.append(current)
            current, size = [], 0
    if current or not shards:
        shards.append(current)
    return shards


def _support_files(recipe: Recipe, cp: Checkpoint, dtype: str, template: ChatTemplate, eos_token: str | None,
                   eos_ids: list[int]) -> list[SupportFile]:
    """config, generation config and cp's tokenizer files, with the chat model's template and end of turn."""
    import fnmatch

    eos_value = (eos_ids[0] if len(eos_ids) == 1 else eos_ids) if eos_ids else None
    config_set: dict[str, Any] = {"dtype": dtype}
    if "torch_dtype" in cp.config:  # transformers 4.x name for the same setting
        config_set["torch_dtype"] = dtype
    if eos_value is not None and "eos_token_id" in cp.config:  # agree with generation_config.json
        config_set["eos_token_id"] = eos_value
    files = [SupportFile(CONFIG_FILE, copy_from=CONFIG_FILE, set=config_set)]
    listing = cp.resolved.files
    copied = [n for n in TOKENIZER_FILES if n in listing] + sorted(n for n in listing
                                                                   if fnmatch.fnmatch(n, TIKTOKEN_PATTERN))
    in_config = template.stored_in == TOKENIZER_CONFIG_FILE
    for name in copied:
        if name == TOKENIZER_CONFIG_FILE:
            changes: dict[str, Any] = {"eos_token": eos_token} if eos_token is not None else {}
            if in_config:
                changes["chat_template"] = template.value
            # one template only: a stale copy in the config field would shadow chat_template.jinja
            files.append(SupportFile(name, copy_from=name, set=changes, unset=() if in_config else ("chat_template",)))
        elif name == SPECIAL_TOKENS_MAP_FILE and eos_token is not None:
            files.append(SupportFile(name, copy_from=name, set={"eos_token": eos_token}))
        else:
            files.append(SupportFile(name, copy_from=name))
    if TOKENIZER_CONFIG_FILE not in copied and (in_config or eos_token is not None):
        changes = {"eos_token": eos_token} if eos_token is not None else {}
        if in_config:
            changes["chat_template"] = template.value
        files.append(SupportFile(TOKENIZER_CONFIG_FILE, set=changes))
    if not in_config:
        files.append(SupportFile(CHAT_TEMPLATE_FILE, text=template.value))
    generation = dict(cp.generation_config or {"_from_model_config": True})
    if "bos_token_id" not in generation and isinstance(cp.config.get("bos_token_id"), int):
        generation["bos_token_id"] = cp.config["bos_token_id"]
    if eos_value is not None:
        generation["eos_token_id"] = eos_value
    files.append(SupportFile(GENERATION_CONFIG_FILE, set=generation))
    return files


def _card_plan(recipe: Recipe, sources: dict[str, SourcePlan]) -> CardPlan:
    from chatvector.hub.cardrules import dedupe_tags

    own = recipe.card.license
    license_, origin = (own, "recipe") if own else ((sources["cp"].license, "cp") if sources["cp"].license
                                                     else (None, None))
    roles = ["cp"] + [role for v in recipe.vectors for role in (v.path_of("chat"), v.path_of("base"))]
    base_models = tuple(dict.fromkeys(sources[r].repo_id for r in roles if sources[r].repo_id))
    return CardPlan(license_, origin, recipe.card.license_name, recipe.card.license_link,
                    tuple(recipe.card.language), tuple(dedupe_tags([*BASE_TAGS, *recipe.card.tags])), base_models)


def _license_warnings(card: CardPlan, sources: dict[str, SourcePlan]) -> list[str]:
    """A merge derives from every source: say so when the output's license is not the sources' license."""
    licensed = {role: s.license for role, s in sources.items() if s.license}
    differing = {role: lic for role, lic in licensed.items() if lic != card.license}
    if not differing:
        return []
    shown = ", ".join(f"{role}: {lic}" for role, lic in differing.items())
    if card.license is None:
        return [f"the output has no license, but its sources are licensed ({shown}); set card.license"]
    return [f"the output's license {card.license} differs from its sources' licenses ({shown}): a merge is a "
            "derivative of every source; check that their terms allow this license"]


def _notes(cp: Checkpoint, shared_rows: int) -> list[str]:
    notes = []
    if cp.vocab_size > shared_rows and cp.embedding_rows and cp.embedding_rows > shared_rows:
        last = min(cp.vocab_size, cp.embedding_rows) - 1
        notes.append(f"cp adds {last + 1 - shared_rows} tokens (ids {shared_rows}..{last}); their "
                     f"{_vocabulary_modules(cp)} rows keep cp's values")
    if cp.tied:
        notes.append(f"cp ties its output head to {module_name(cp.embedding_tensor)} ({cp.embedding_tensor}); "
                     "the output stays tied")
    return notes


def _vocabulary_modules(cp: Checkpoint) -> str:
    """"embed_in and embed_out": the modules whose rows are the vocabulary, by the model's own names."""
    names = [n for n in (cp.embedding_tensor, None if cp.tied else cp.head_tensor) if n]
    return " and ".join(module_name(n) for n in names) or "vocabulary"
