"""The model card: README.md for the published repository, from the run's provenance and the recipe.

    text = render_card(provenance, recipe.text)                  # the project's template
    text = render_card(provenance, recipe.text, recipe.card.template)

The metadata (between the `---` fences) is built with huggingface_hub's `ModelCardData`, never by the
template, so a custom template cannot break it. The body is rendered in a sandboxed Jinja environment
with `StrictUndefined`: a misspelled variable is an error naming the template file and line, not
silently empty text. The finished text is parsed back with `huggingface_hub.ModelCard` and checked
against the metadata it was built from and the Hub's metadata rules.

Variables a template sees (all always defined; see `templates/model_card.md.j2` for their use):

    name, repo_id, private, endpoint, tool (name, version)        title, target, tool
    provenance                                                    the whole provenance dict
    formula, formula_terms, formula_note                          "out = cp + 0.8 · (chat − base)"
    sources       [{label, role, repo_id, revision, sha, url, local, path_name, files, license}]
    default, default_unused (it decides no tensor), rules_only (module rules decide every tensor),
    layer_rows [{layers, value}], layer_count, module_rules [{number (from 0), match, value}], chart_file
    special_tokens [{token, cp_row, chat_row}], vocabulary (dict or None), chat_template, dtype
    vocabulary_modules     the modules whose rows are the vocabulary, as the model names them: "`wte`" (tied),
                           "`embed_tokens` and `lm_head`"
    checks [{name, ok, detail}] (None when none were recorded), sample (or None), output (dict)
    license, license_source ("recipe", "cp" or None), license_warnings [str], metadata (the card data dict)
    recipe_text, recipe_path, recipe_sha256, recipe_fence ("```" or longer), extra (card.extra)

`chart_file` is None when there is no chart to show.

Escaping. Recipe strings (the name, tokens, regexes, revisions, file names, card.extra) and Hub data (cp's
license, tokenizer text in the checks) reach the card, so no value is written as it is: each lands through
a filter that makes it inert where it lands, and every `{{ ... }}` whose value no such filter placed is
escaped as Markdown text (the environment's `finalize`: Markdown autoescaping, in the project's template and
in a user's `card.template` alike). The filters:

    md          inline Markdown text (the default): one line (line breaks and control characters become
                spaces, bidi controls are dropped); `& < >` as HTML entities, so no tag, attribute such
                as `onerror=`, or `</h1>` can form; backslash, backtick, `* [ ] | ~ $ #`, and `_` unless
                between two letters or digits, escaped with a backslash, so no code span, emphasis,
                link, image, `[x](javascript:...)`, table pipe or math; a leading list, heading or rule
                marker escaped
    cell        text for a table cell: `md` per line, line breaks as `<br>` (alias `md_cell`)
    code        a whole inline code span (`x`), the backtick delimiter longer than any run in the text
    code_cell   `code` for a table cell: pipes escaped, which GFM tables need even inside code
    code_block  a fenced code block, e.g. `recipe_text | code_block("yaml")`: the text verbatim, the fence
                longer than any backtick run in it, so the text cannot close it
    url         a link target or image source: http(s) or a relative path, percent-encoded (spaces,
                quotes, parentheses, `<>`); any other scheme (`javascript:`, `data:`) becomes `#`
    attr        an HTML attribute value (quotes included in the escaping)
    py_str      a Python string literal (JSON-quoted; backticks as \\u0060)
    num         0.5, 1.0: shortest stable number text
    fence       a backtick fence longer than any backtick run in the text (`recipe_fence` is one)
    e           (Jinja's own) HTML escaping, for text inside an HTML block, where Markdown is not read

These return text marked safe (`markupsafe.Markup`), which `finalize` writes unchanged, as it does with
`| safe`, the explicit way for a template to write a value raw. Autoescaping user templates as well is a
choice: a template written for the previous behaviour that puts `{{ recipe_text }}` in a code block now
shows escaped text (use `code_block`) instead of letting a recipe's strings inject HTML or Markdown into
the published card. Plain HTML autoescaping (Jinja's `autoescape=True`) is not used: it leaves Markdown
links, emphasis and table pipes active.

The metadata block cannot be reached from the body or the recipe: it is dumped by `ModelCardData` (PyYAML),
never pasted, and `validate_card_text` refuses a card whose first block the Hub's parser and a line-based
one would delimit differently (a value holding a line that reads `---`). Single-line recipe fields
(`name`, tags, languages, license strings) refuse line breaks and control characters in the first place
(`chatvector.recipe.recipe`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import traceback
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from chatvector.card.pinned_recipe import pinned_recipe
from chatvector.conventions import EMBEDDING, OUTPUT_HEAD, TENSOR_ROLES, module_name, shipped
from chatvector.errors import PipelineError, RecipeError, VerificationError
from chatvector.recipe.coefficients import Coefficients, ModuleRule, layer_runs, rule_name
from chatvector.units import human_bytes

TEMPLATE_DIR = shipped("templates")  # the checkout's templates/, or the copy in the wheel
DEFAULT_TEMPLATE = TEMPLATE_DIR / "model_card.md.j2"
DEFAULT_ENDPOINT = "https://huggingface.co"
_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_VECTOR_ROLE = re.compile(r"^vectors\[(\d+)\]\.(base|chat)$")


def render_card(
    provenance: dict,
    recipe_text: str,
    template: Path | None = None,
    chart_file: str | None = "coefficients.svg",
) -> str:
    """README.md text: validated metadata between `---` fences, then the rendered template body.

    `template` None renders the project's template; a user's template that fails (undefined
    variable, syntax error, sandbox violation) raises RecipeError "FILE:LINE: message".
    `chart_file` is the per-layer λ chart's file name in the repository (see chatvector.card.chart), or None
    for no image; the card shows it only when the schedule has per-layer values.
    Raises VerificationError when the finished card does not parse back to the same metadata.
    """
    data = build_card_data(provenance)
    context = card_context(provenance, recipe_text, chart_file, data.to_dict())
    body = _render_body(context, template)
    text = f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}"
    if not text.endswith("\n"):
        text += "\n"
    validate_card_text(text, expected=data.to_dict())
    return text


def build_card_data(provenance: dict) -> ModelCardData:
    """The card metadata the plan decided: base_model (every Hub source, cp first), license, language, tags."""
    card = provenance.get("card") or {}
    base_models = list(card.get("base_models") or [])
    license_ = card.get("license")
    return ModelCardData(
        base_model=base_models or None,
        base_model_relation="merge" if base_models else None,
        license=license_,
        license_name=card.get("license_name") if license_ == "other" else None,
        license_link=card.get("license_link") if license_ == "other" else None,
        language=list(card.get("language") or []) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(card.get("tags") or []) or None,
    )


def validate_card_text(text: str, expected: dict | None = None) -> dict:
    """Parse a card with `huggingface_hub.ModelCard` and check its metadata; returns the metadata dict.

    Raises VerificationError when the text has no metadata block, does not parse, differs from
    `expected` (when given), or breaks the Hub's metadata rules (those `POST /api/validate-yaml` applies).
    """
    from chatvector.hub.cardrules import card_errors, split_front_matter  # the Hub's rules, as the local Hub's

    if not text.startswith("---\n"):
        raise VerificationError("model card: README.md must start with a '---' metadata block")
    match = REGEX_YAML_BLOCK.search(text)
    if match is None or match.group(2) != split_front_matter(text):
        raise VerificationError("model card: the metadata block must be exactly one '---' block at the top; "
                                "a line inside it reads '---'")
    try:
        parsed = ModelCard(text).data.to_dict()
    except ValueError as err:
        raise VerificationError(f"model card: the metadata block does not parse: {err}") from err
    if expected is not None and parsed != expected:
        diff = sorted(k for k in parsed.keys() | expected.keys() if parsed.get(k) != expected.get(k))
        raise VerificationError(f"model card: metadata does not round-trip through ModelCard (keys {diff})")
    errors = card_errors(text)
    if errors:
        raise VerificationError("model card: " + "; ".join(errors))
    return parsed


# ---------------------------------------------------------------------------------------------------
# The template context: everything precomputed, so templates hold layout and no logic.


def card_context(provenance: dict, recipe_text: str, chart_file: str | None, metadata: dict) -> dict[str, Any]:
    """The variables a card template sees (listed in the module docstring)."""
    p = provenance
    endpoint = ((p.get("hub") or {}).get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
    coefficients = p.get("coefficients") or {}
    default = float(coefficients.get("default", 1.0))
    layers = [float(v) for v in coefficients.get("layers") or []]
    modules = list(coefficients.get("modules") or [])
    vectors = list(p.get("vectors") or [])
    output = dict(p.get("output") or {})
    verification = p.get("verification")
    license_, license_source = _license(p)
    target = p.get("target") or {}
    recorded_range = coefficients.get("range")  # what the tensors took (older provenances: computed from the rules)
    lam_range = (float(recorded_range[0]), float(recorded_range[1])) if recorded_range else \
        _coefficient_range(coefficients, layers, modules, _tensors_outside_layers(p))
    default_unused = coefficients.get("default_decides") == 0  # module rules and layer values decide every tensor
    rules_only = default_unused and coefficients.get("layers_decide") == 0  # module rules decide every tensor
    uniform = lam_range[0] == lam_range[1] and (lam_range[0] == default or default_unused)
    formula, terms = _formula(vectors, lam_range[0] if uniform else default, None if uniform else lam_range)
    compact = len(layers) >= COMPACT_LAYERS
    shown_layers = [_round3(v) for v in layers] if compact else layers
    return {
        "provenance": p,
        "name": p["recipe"]["name"],
        "repo_id": target.get("repo_id"),
        "private": bool(target.get("private")),
        "endpoint": endpoint,
        "is_default_endpoint": endpoint == DEFAULT_ENDPOINT,
        "tool": p.get("tool") or {"name": "chatvector", "version": "unknown"},
        "formula": formula,
        "formula_terms": terms,
        "formula_note": None if uniform
        else (f"λ depends on the tensor: the schedule below sets it per layer or module, from {_num(lam_range[0])} "
              f"to {_num(lam_range[1])}, "
              + (f"for every tensor (the default coefficient {_num(default)} decides none)" if default_unused
                 else f"and the default coefficient {_num(default)} applies elsewhere")
              + ("; each vector's λ is its weight times that coefficient" if len(vectors) > 1 else "") + "."),
        "vector_count": len(vectors),
        "multi": len(vectors) > 1,
        "sources": _sources(p, endpoint),
        "default": _num(default),
        "default_unused": default_unused,
        "rules_only": rules_only,
        # layer values that decide no tensor (module rules cover all) are not shown as if they applied
        "layer_rows": [] if rules_only else _layer_runs(shown_layers, terms),
        "layer_count": len(layers),
        "layers_compact": compact,
        "gradient_anchors": _gradient_anchors(recipe_text),
        "module_rules": [{"number": number, "match": str(r["match"]), "value": _num(r["value"]),
                          "lams": [_num(float(r["value"]) * t["weight_value"]) for t in terms]}
                         for number, r in enumerate(modules)],
        "vocabulary_lines": _vocabulary_lines(p, terms),
        "vocabulary_modules": _vocabulary_modules(p),
        "attributions": _attributions(p),
        "citation": CITATION,
        "chart_file": chart_file if layers and not rules_only else None,
        "special_tokens": list(p.get("special_tokens") or []),
        "vocabulary": p.get("vocabulary"),
        "chat_template": _chat_template(output.get("chat_template")),
        "dtype": output.get("dtype"),
        "output": output,
        "total_size": human_bytes(output["total_bytes"]) if output.get("total_bytes") is not None else None,
        "checks": list((verification or {}).get("checks") or []) or None,
        "sample": None if verification is None else verification.get("sample"),
        "license": license_,
        "license_source": license_source,
        "license_warnings": list((p.get("card") or {}).get("warnings") or []),
        "metadata": metadata,
        "recipe_text": recipe_text,
        "recipe_path": (p.get("recipe") or {}).get("path"),
        "recipe_sha256": (p.get("recipe") or {}).get("sha256"),
        "recipe_fence": _fence(recipe_text),  # Markup: only backticks
        "pinned_recipe": pinned_recipe(p, recipe_text),  # None: the recipe text is not a mapping (shown as written)
        "sweep_factor": (p.get("sweep") or {}).get("factor"),
        "extra": dict((p.get("card") or {}).get("extra") or {}),
        "evaluation": _evaluation(p),
    }


_METRIC_LABELS = {
    "fidelity": "target-language fidelity: the share of responses in {language}",
    "format": "chat-format health: the share of well-formed turns (an end-of-turn token within the limit, no leaked "
              "special token, not empty)",
    "perplexity": "perplexity on a {language} text, as a multiple of cp's",
}


def _evaluation(p: dict) -> dict | None:
    """The `eval:` results the provenance holds (chatvector.publish.gate), as table rows; None when there are none."""
    e = p.get("evaluation")
    if not isinstance(e, dict) or "scores" not in e:
        return None
    scores, require = e.get("scores") or {}, e.get("require") or {}
    ppl = e.get("perplexity") or {}
    rows = []
    for metric in ("fidelity", "format", "perplexity"):
        value = scores.get("perplexity_ratio" if metric == "perplexity" else metric)
        if metric == "perplexity" and value is None and scores.get("perplexity") is None:
            continue
        if metric == "perplexity":
            shown = (f"{value:.2f}× (perplexity {ppl.get('value', 0):.2f}, cp's {ppl.get('reference_value', 0):.2f})"
                     if value is not None else f"{scores['perplexity']:.2f} (no reference)")
        else:
            shown = f"{value:.2f}"
        bound = require.get(metric)
        needed = "" if bound is None else (f"≤ {_num(bound)}" if metric == "perplexity" else f"≥ {_num(bound)}")
        ok = None if bound is None or value is None else (value <= bound if metric == "perplexity" else value >= bound)
        rows.append({"label": _METRIC_LABELS[metric].format(language=e.get("language")), "value": shown,
                     "required": needed, "ok": ok})
    sweep = e.get("sweep") or None
    if sweep:
        sweep = {**sweep, "rows": [
            {"factor": _num(v["factor"]), "range": "–".join(dict.fromkeys(_num(x) for x in v["lambda_range"])),
             "fidelity": f"{v['scores']['fidelity']:.2f}", "format": f"{v['scores']['format']:.2f}",
             "ratio": "" if v["scores"].get("perplexity_ratio") is None else f"{v['scores']['perplexity_ratio']:.2f}",
             "passed": v["passed"], "chosen": v["factor"] == sweep.get("chosen"), "branch": v.get("branch")}
            for v in sweep.get("variants") or []]}
    return {**e, "rows": rows, "sweep": sweep}


def _chat_template(value: str | None) -> str:
    """"chat", "cp", or a template file's name (the recipe gives it; its folder is the maintainer's)."""
    value = value or "chat"
    return value if value in ("chat", "cp") else Path(value).name


def _license(p: dict) -> tuple[str | None, str | None]:
    """The output's license as the plan decided it, and where it came from ("recipe", "cp" or None)."""
    card = p.get("card") or {}
    return card.get("license"), card.get("license_source") if card.get("license") else None


def _roles(p: dict) -> list[str]:
    """Input roles in card order: cp, then each vector's chat and base (each role once)."""
    return list(dict.fromkeys(["cp"] + [role for v in p.get("vectors") or [] for role in (v["chat"], v["base"])]))


def _role_label(role: str) -> str:
    """"cp", "chat", "base", or "chat₁"/"base₂" for the roles of several vectors."""
    m = _VECTOR_ROLE.match(role)
    if m:
        return f"{m.group(2)}{str(int(m.group(1)) + 1).translate(_SUBSCRIPTS)}"
    return role


def _formula(vectors: list[dict], default: float,
             lam_range: tuple[float, float] | None = None) -> tuple[str, list[dict]]:
    """"out = cp + 0.8 · (chat − base)", each vector's λ = weight × default; and the terms, one a vector.

    With a schedule that varies (`lam_range`, the coefficient's least and greatest value over the tensors),
    the headline names each λ and its range: "out = cp + λ · (chat − base), λ from 0.0 to 1.0 by tensor"."""
    terms, text = [], "out = cp"
    ranges = []
    for i, v in enumerate(vectors):
        weight = float(v.get("weight", 1.0))
        lam = weight * default
        chat, base = _role_label(v["chat"]), _role_label(v["base"])
        if lam_range is None:
            text += f" {'−' if lam < 0 else '+'} {_num(abs(lam))} · ({chat} − {base})"
        else:
            name = "λ" + (str(i + 1).translate(_SUBSCRIPTS) if len(vectors) > 1 else "")
            low, high = sorted((weight * lam_range[0], weight * lam_range[1]))
            text += f" + {name} · ({chat} − {base})"
            ranges.append(f"{name} from {_num(low)} to {_num(high)}")
        terms.append({"chat": chat, "base": base, "lam": _num(lam), "weight": _num(weight),
                      "weight_value": weight, "label": f"{chat} − {base}",
                      "chat_role": v["chat"], "base_role": v["base"]})
    if ranges:
        text += ",  " + ", ".join(ranges) + " by tensor"
    return text, terms


COMPACT_LAYERS = 32  # from this many layers, the λ table shows 3 significant digits


def _decision(p: dict, name: str, terms: list[dict]) -> tuple[list[float], str]:
    """The λ per vector the plan gave tensor `name` and the rule that decided it ("module rule 0", "default"), read
    from the provenance (`coefficients.tensors`: `TensorPlan.lambdas` and `reason`). A provenance that records none
    (written before it did): its recorded schedule, decided by `Coefficients.explain`."""
    coefficients = p.get("coefficients") or {}
    recorded = (coefficients.get("tensors") or {}).get(name)
    if recorded is not None:
        return [float(v) for v in recorded["lambdas"]], rule_name(str(recorded["reason"]))
    value, reason = _recorded_schedule(coefficients).explain(name, 0)
    return [value * t["weight_value"] for t in terms], rule_name(reason)


def _recorded_schedule(coefficients: dict) -> Coefficients:
    """The default and module rules a provenance records, as the schedule (outside the layers: what decides the
    embedding, the final norm and the head). A rule whose regex does not compile matches nothing (keeping the
    others' numbers)."""
    rules = []
    for rule in coefficients.get("modules") or []:
        try:
            rules.append(ModuleRule(str(rule["match"]), float(rule["value"])))
        except re.error:
            rules.append(ModuleRule("(?!)", float(rule["value"])))
    return Coefficients(float(coefficients.get("default", 1.0)), None, tuple(rules))


def _tensor_roles(p: dict) -> dict[str, str | None]:
    """The model's embedding, output head and final norm by their own names (provenance's `tensor_roles`); the
    head is None when tied (the output stores none). A provenance that records no names describes Llama's."""
    recorded = p.get("tensor_roles")
    names = {role.key: (recorded.get(role.key) if isinstance(recorded, dict) else role.llama_name)
             for role in TENSOR_ROLES}
    if p.get("tied_embeddings"):
        names[OUTPUT_HEAD.key] = None
    return names


def _vocabulary_modules(p: dict) -> Markup:
    roles = _tensor_roles(p)
    names = filter(None, (roles[EMBEDDING.key], roles[OUTPUT_HEAD.key]))
    return Markup(" and ".join(_code(module_name(n)) for n in names))  # tensor names come from cp's headers


def _tensors_outside_layers(p: dict) -> list[str]:
    return [name for name in _tensor_roles(p).values() if name]


def _coefficient_range(coefficients: dict, layers: list[float], modules: list[dict], outside: list[str]
                       ) -> tuple[float, float]:
    """Least and greatest coefficient over the tensors a decoder has: each layer's tensors (a module rule
    may match some of them) and those `outside` the layers (embeddings, final norm, an untied head)."""
    schedule = _recorded_schedule(coefficients)
    values = [schedule.explain(n, 0)[0] for n in outside]
    values += [float(r["value"]) for r in modules]
    values += layers or [schedule.default]
    return min(values), max(values)


def _round3(v: float) -> float:
    """Three significant digits (the compact λ table of a deep model)."""
    return float(f"{float(v):.3g}")


def _gradient_anchors(recipe_text: str) -> list[str] | None:
    """The recipe's `coefficients.gradient` anchors, as number texts; None when it has none."""
    try:
        import yaml

        doc = yaml.safe_load(recipe_text)
        anchors = doc["coefficients"]["gradient"]
        return [_num(float(a)) for a in anchors] if isinstance(anchors, list) and len(anchors) >= 2 else None
    except Exception:  # noqa: BLE001 - a recipe without a gradient (or not plain YAML) shows none
        return None


def _vocabulary_lines(p: dict, terms: list[dict]) -> list[Markup]:
    """What happened to the vocabulary rows, computed from the coefficients the engine applied to the embedding
    and the output head, named as the model names them (a rule setting λ = 0 there leaves every row as cp has
    it)."""
    vocab = p.get("vocabulary")
    kept = {str(t.get("name")): str(t.get("why") or "") for t in p.get("kept_tensors") or []}
    multi = len(terms) > 1
    vec = "the vectors are" if multi else "the vector is"
    who = "the chat models" if multi else "the chat model"
    tied = bool(p.get("tied_embeddings"))
    roles = _tensor_roles(p)
    applied, zero = [], []
    for name in filter(None, (roles[EMBEDDING.key], roles[OUTPUT_HEAD.key])):  # tied: there is no head tensor
        short = module_name(name)
        lams, reason = _decision(p, name, terms)
        is_kept = name in kept
        if is_kept or not any(lams):
            zero.append((short, reason))
        else:
            applied.append((short, lams))

    def names(items: list) -> str:
        return " and ".join(_code(short) for short, _ in items)  # tensor names come from cp's headers

    def those(items: list) -> str:
        return "those" if len(items) == 2 or tied else f"those in {names(items)}"

    def lam_text(items: list) -> str:
        values = sorted({tuple(lams) for _, lams in items})
        if len(values) != 1:
            return ""
        return " (" + ", ".join(f"{t['label']}: λ = {_num(v)}" if multi else f"λ = {_num(v)}"
                                for t, v in zip(terms, values[0])) + ")"

    lines = []
    shared = vocab.get("shared_tokens") if vocab else None
    extra = vocab.get("cp_extra_tokens") if vocab else None
    if applied:
        where = those(applied)
        if vocab:
            lines.append(f"cp and {who} share {_md_text(shared)} token rows; {vec} added to {where}"
                         f"{_md_text(lam_text(applied))}.")
        else:
            lines.append(f"The vocabularies match row for row; {vec} added to every row"
                         f"{'' if len(applied) == 2 or tied else ' of ' + names(applied)}"
                         f"{_md_text(lam_text(applied))}.")
    elif vocab:
        lines.append(f"cp and {who} share {_md_text(shared)} token rows, but no vector is added to any of them.")
    if zero:
        reasons = sorted({r for _, r in zero if r != "default"})
        why = f" (set by {', '.join(reasons)})" if reasons else ""
        lines.append(f"{names(zero)} {'take' if len(zero) > 1 else 'takes'} λ = 0{why}: "
                     f"{'no vector is' if multi else 'the vector is not'} added to "
                     f"{'their' if len(zero) > 1 else 'its'} rows, which keep cp's values.")
    if tied:
        embedding = module_name(roles[EMBEDDING.key] or EMBEDDING.llama_name)
        lines.append(f"The output head is tied to {_code(embedding)} (`tie_word_embeddings`): it reads the same "
                     f"rows, so what is said here of {_code(embedding)} holds for it, and no rule can give it a "
                     "λ of its own.")
    if vocab:
        if extra:
            lines.append(f"The {_md_text(extra)} rows only cp has (its extended vocabulary) keep cp's values.")
        else:
            lines.append("cp has no rows beyond the shared vocabulary.")
    return [Markup(line) for line in lines]


# Notices the sources' licences require a derivative to carry, keyed by the Hub's license id.
ATTRIBUTIONS = {
    "llama2": "Llama 2 is licensed under the LLAMA 2 Community License, "
              "Copyright © Meta Platforms, Inc. All Rights Reserved.",
    "llama3": "Built with Meta Llama 3",
    "llama3.1": "Built with Llama",
    "llama3.2": "Built with Llama",
    "llama3.3": "Built with Llama",
    "gemma": "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
}

CITATION = """\
@inproceedings{huang-etal-2024-chat,
    title = "Chat Vector: A Simple Approach to Equip {LLM}s with Instruction Following and Model Alignment in New Languages",
    author = "Huang, Shih-Cheng and Li, Pin-Zu and Hsu, Yu-chi and Chen, Kuang-Ming and Lin, Yu Tung and Hsiao, Shih-Kai and Tsai, Richard and Lee, Hung-yi",
    editor = "Ku, Lun-Wei and Martins, Andre and Srikumar, Vivek",
    booktitle = "Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (Volume 1: Long Papers)",
    month = aug,
    year = "2024",
    address = "Bangkok, Thailand",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2024.acl-long.590/",
    doi = "10.18653/v1/2024.acl-long.590",
    pages = "10943--10959",
    eprint = "2310.04799",
    archivePrefix = "arXiv",
}"""


def _attributions(p: dict) -> list[dict]:
    """[{license, notice, roles}]: one per licence among the sources (and the output) that asks for a notice."""
    found: dict[str, list[str]] = {}
    inputs = p.get("inputs") or {}
    for role in _roles(p):
        lic = str((inputs.get(role) or {}).get("license") or "").strip().lower()
        if lic in ATTRIBUTIONS:
            found.setdefault(lic, []).append(_role_label(role))
    out_license = str((p.get("card") or {}).get("license") or "").strip().lower()
    if out_license in ATTRIBUTIONS:
        found.setdefault(out_license, [])
    return [{"license": lic, "notice": ATTRIBUTIONS[lic], "roles": list(dict.fromkeys(roles))}
            for lic, roles in found.items()]


def _sources(p: dict, endpoint: str) -> list[dict]:
    """One row per input role, cp first: a link pinned to the commit, or a local folder."""
    inputs = p.get("inputs") or {}
    rows = []
    for role in _roles(p):
        if role not in inputs:
            continue
        src = inputs[role]
        repo_id, sha = src.get("repo_id"), src.get("sha")
        local = not repo_id
        path = src.get("path")
        rows.append({
            "role": role,
            "label": _role_label(role),
            "repo_id": repo_id,
            "revision": None if local else src.get("revision") or "main",
            "sha": sha,
            "short_sha": sha[:10] if sha else None,
            "url": None if local else f"{endpoint}/{repo_id}/tree/{sha or src.get('revision') or 'main'}",
            "local": local,
            "path_name": Path(str(path)).name if path else None,
            "files": sorted((src.get("files") or {}).items()),
            "license": src.get("license"),
        })
    return rows


def _layer_runs(values: list[float], terms: list[dict] | None = None) -> list[dict]:
    """Consecutive layers with one λ as one row: [{"layers": "0–3", "value": "0.5", "lams": [...]}, ...];
    `lams`: each vector's effective λ (weight × value)."""
    return [{"layers": str(a) if a == b else f"{a}–{b}", "value": _num(v),
             "lams": [_num(v * t["weight_value"]) for t in terms or []]} for a, b, v in layer_runs(values)]


def _num(v: float) -> str:
    """Short, stable number text: 0.8 stays 0.8, 1 becomes 1.0, 0.7 × 0.8 becomes 0.56."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    text = f"{v:.6g}"
    if text == "-0":
        text = "0"
    return text + ".0" if text.lstrip("-").isdigit() else text


# ---------------------------------------------------------------------------------------------------
# Escaping filters (see the module docstring): each returns Markup, text placed for where it lands.

_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_BIDI = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_MD_SPECIAL = re.compile(r"([\\`*\[\]|~$#])")
_LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")  # not between two alphanumerics: could be emphasis
_LEADING_MARKER = re.compile(r"^(\s*)(?:([-+=])(?=\s|$)|(\d{1,9})([.)])(?=\s|$))")
_RULE = re.compile(r"^\s*[-=](?:\s*[-=])*\s*$")  # ---, = = =: a rule or setext underline on its own
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_ENTITY = re.compile(r"&([#A-Za-z0-9]+;)")


def _plain(value: object) -> str:
    """`value` as text without control characters: each a space (line breaks too); bidi controls dropped."""
    text = str(value).replace("\r\n", "\n").translate(_BIDI)
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _md_text(value: object) -> str:
    text = _LOOSE_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", _plain(value)))
    text = html.escape(text, quote=False)
    if _RULE.match(text):
        return re.sub(r"([-=])", r"\\\1", text)
    return _LEADING_MARKER.sub(lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2)
                                                        else f"{m.group(3)}\\{m.group(4)}"), text)


def _md(value: object) -> Markup:
    """Inline Markdown text: renders as exactly the characters of `value`, on one line, with nothing active."""
    return value if isinstance(value, Markup) else Markup(_md_text(value))


def _cell(value: object) -> Markup:
    """Text for a markdown table cell: `md` per line, line breaks as <br>."""
    if isinstance(value, Markup):
        return value
    return Markup("<br>".join(_md_text(line) for line in _LINE_BREAK.split(str(value))))


def _code(value: object) -> Markup:
    """A whole inline `code span`: the text literal (line breaks as spaces), the backtick delimiter longer
    than any backtick run in it."""
    return Markup(_code_span(_plain(value)))


def _code_cell(value: object) -> Markup:
    """A whole `code span` for a table cell: backslashes stay literal, pipes are escaped (GitHub-
    flavoured tables split on unescaped pipes even inside code), line breaks become spaces, and the
    backtick delimiter is longer than any backtick run in the text."""
    return Markup(_code_span(_plain(value).replace("|", "\\|")))


def _code_span(text: str) -> str:
    tick = _fence(text, least=1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{tick}{pad}{text}{pad}{tick}"


def _code_block(value: object, lang: str = "text") -> Markup:
    """A fenced code block holding `value` verbatim; the fence is longer than any backtick run in it."""
    text = str(value).rstrip("\n")
    fence = _fence(text)
    lang = lang if re.fullmatch(r"[A-Za-z0-9_+-]{0,32}", lang) else "text"
    return Markup(f"{fence}{lang}\n{text}\n{fence}")


def _url(value: object) -> Markup:
    """A link target: an http(s) URL or a relative path, percent-encoded so that it cannot end the Markdown
    link or an HTML attribute; any other scheme (javascript:, data:, vbscript:) becomes "#"."""
    # As browsers do: drop control characters (tabs and line breaks too) anywhere, strip surrounding spaces.
    text = "".join(c for c in str(value) if unicodedata.category(c) != "Cc").translate(_BIDI).strip()
    text = _ENTITY.sub(r"%26\1", text)  # Markdown decodes entities in a link target: &#106;avascript:
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return Markup("#")
    return Markup(quote(text, safe="/:?#@!&*+,;=%~-._"))


def _attr(value: object) -> Markup:
    """An HTML attribute value (to write between double quotes)."""
    return Markup(html.escape(_plain(value), quote=True))


def _py_str(value: object) -> Markup:
    """A Python (and JSON) string literal for a code block: quoted, escaped, no backtick that could end a fence."""
    return Markup(json.dumps(str(value), ensure_ascii=False).replace("`", "\\u0060"))


def _fence(text: str, least: int = 3) -> Markup:
    """A backtick run longer than any in `text` (at least `least`), so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", str(text or ""))), default=0)
    return Markup("`" * max(least, longest + 1))


def _finalize(value: object) -> object:
    """What every `{{ ... }}` writes: placed text (Markup) as it is, anything else as Markdown text."""
    return value if isinstance(value, Markup) else _md_text(value)


# ---------------------------------------------------------------------------------------------------
# Rendering


def _environment(template_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # HTML escaping is not enough for Markdown: `finalize` escapes instead
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=lambda v: Markup(_num(v)), md=_md, cell=_cell, md_cell=_cell, code=_code,
                       code_cell=_code_cell, code_block=_code_block, url=_url, attr=_attr, py_str=_py_str,
                       fence=_fence)
    return env


def check_template_syntax(template: Path) -> None:
    """Parse a user's card template (and what it includes) without rendering: syntax errors surface early."""
    path = Path(template)
    env = _environment(path.parent)
    try:
        env.get_template(path.name)
    except jinja2.TemplateError as err:
        file, line = _template_location(err, path)
        message = err.message or str(err)
        raise RecipeError(f"{_display(file)}:{line}: {message} (card.template)") from err


def _render_body(context: dict, template: Path | None) -> str:
    path = Path(template) if template is not None else DEFAULT_TEMPLATE
    env = _environment(path.parent)
    try:
        return env.get_template(path.name).render(context)
    except Exception as err:  # a template's own error, of any type, points at its file and line
        file, line = _template_location(err, path)
        if isinstance(err, jinja2.TemplateNotFound):
            message = f"template {err.name!r} not found next to {path.name}"
        else:
            message = err.message if isinstance(err, jinja2.TemplateError) and err.message else str(err)
        if template is None:
            raise PipelineError(f"{_display(file)}:{line}: the project's card template failed: {message}") from err
        raise RecipeError(f"{_display(file)}:{line}: {message} (card.template)") from err


def _template_location(err: Exception, path: Path) -> tuple[Path, int | str]:
    """Where a template error points: a syntax error's own file and line, else the innermost traceback
    frame Jinja mapped to a template file (an included one too); line "?" when there is none."""
    if isinstance(err, jinja2.TemplateSyntaxError) and err.lineno:
        return Path(err.filename) if err.filename else path, err.lineno
    folder = path.resolve().parent
    found: tuple[Path, int | str] = (path, "?")
    for frame in traceback.extract_tb(err.__traceback__):
        file = Path(frame.filename)
        if file.suffix != ".py" and file.resolve().parent.is_relative_to(folder) and file.is_file():
            found = (file, frame.lineno or "?")
    return found


def _display(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative
