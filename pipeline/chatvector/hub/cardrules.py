"""The Hub's rules for model-card metadata (the YAML block between `---` fences at the top of README.md).

One module for both sides: the pipeline checks a card with it before publishing, and the local Hub's
`POST /api/validate-yaml` refuses a bad card with it, as the real Hub does, so a card the pipeline accepts
is a card the Hub accepts. Messages name the key at fault and, where one is close, the value meant.

Light on purpose: PyYAML and the standard library at import time; pycountry (the ISO 639 tables) is loaded
on the first language check.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

# The Hub's license ids. Source: huggingface/hub-docs docs/hub/repositories-licenses.md (the "License
# identifier (to use in repo card)" column), plus the Llama ids the Hub added since: llama3, llama3.1,
# llama3.2, llama3.3, llama4.
LICENSES: tuple[str, ...] = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
)
RELATIONS: tuple[str, ...] = ("adapter", "merge", "quantized", "finetune")
# Values the Hub accepts in `language` besides ISO 639 codes.
SPECIAL_LANGUAGES: tuple[str, ...] = ("code", "multilingual")
MISSING_METADATA = ("empty or missing yaml metadata in repo card "
                    "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)")

_STR_OR_LIST = ("language", "base_model", "tags", "datasets", "metrics")
_STRINGS = ("license", "license_name", "license_link", "library_name", "pipeline_tag", "base_model_relation")
_BCP47 = re.compile(r"^([A-Za-z]{2,3})[-_][A-Za-z0-9-_]+$")


# -- the front matter ----------------------------------------------------------------------------------
def split_front_matter(text: str) -> str | None:
    """The YAML text of the front matter, or None when the document has none. Blank lines may come before it, as
    huggingface_hub's parser (REGEX_YAML_BLOCK) and the Hub allow."""
    text = text.lstrip()
    if not text.startswith("---"):
        return None
    lines = text.splitlines()
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "\n".join(lines[1:i])
    return None


def parse_card_data(text: str) -> dict[str, Any] | None:
    """cardData for repo info; None when there is no parsable mapping."""
    block = split_front_matter(text)
    if block is None:
        return None
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# -- single values -------------------------------------------------------------------------------------
def _did_you_mean(options: Sequence[str]) -> str:
    quoted = [f"'{o}'" for o in options]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"did you mean {listed}?"


def license_problem(value: str) -> str | None:
    """None when VALUE is a Hub license id; else one clause saying what is wrong and what was likely meant."""
    if not isinstance(value, str):
        return f"{value!r} is not a Hub license id (it must be a string)"
    if value in LICENSES:
        return None
    lowered = value.strip().lower()
    if lowered in LICENSES:
        return f"'{value}' is not a Hub license id ({_did_you_mean([lowered])})"
    close = difflib.get_close_matches(lowered, LICENSES, n=3, cutoff=0.75)
    if close:
        return f"'{value}' is not a Hub license id ({_did_you_mean(close)})"
    return (f"'{value}' is not a Hub license id (for a license the Hub does not list, use license: other "
            "with license_name: <an id for it> and license_link: <its URL>)")


@functools.cache
def _iso639() -> tuple[frozenset[str], frozenset[str], dict[str, str]]:
    """(two-letter codes, three-letter codes, lower-cased language name → its shortest code)."""
    import pycountry  # loads its JSON tables on first use only

    two, three, names = set(), set(), {}
    for lang in pycountry.languages:
        code = getattr(lang, "alpha_2", None) or lang.alpha_3
        if hasattr(lang, "alpha_2"):
            two.add(lang.alpha_2)
        three.add(lang.alpha_3)
        if hasattr(lang, "bibliographic"):  # ISO 639-2/B: 'chi' beside 639-2/T 'zho'
            three.add(lang.bibliographic)
        for attr in ("name", "common_name", "inverted_name"):
            name = getattr(lang, attr, None)
            if name:
                names.setdefault(name.lower(), code)
    for family in pycountry.language_families:  # ISO 639-2 collective codes ('sla', 'afa', ...)
        three.add(family.alpha_3)
    return frozenset(two), frozenset(three), names


def language_problem(code: str) -> str | None:
    """None when CODE is what the Hub accepts in `language` (an ISO 639-1/2/3 code in lower case, or
    'code'/'multilingual'); else one clause with the code likely meant."""
    if not isinstance(code, str):
        return f"{code!r} is not an ISO 639 code (it must be a string)"
    two, three, names = _iso639()
    valid = lambda c: c in two or c in three or c in SPECIAL_LANGUAGES  # noqa: E731
    if valid(code):
        return None
    lowered = code.strip().lower()
    if lowered != code and valid(lowered):
        return f"'{code}' must be in lower case ({_did_you_mean([lowered])})"
    bcp47 = _BCP47.match(code.strip())
    if bcp47 and valid(bcp47.group(1).lower()):
        return (f"'{code}' is a BCP-47 tag, not an ISO 639 code ({_did_you_mean([bcp47.group(1).lower()])} "
                "BCP-47 tags go in language_bcp47)")
    if lowered in names:
        return f"'{code}' is a language name, not an ISO 639 code ({_did_you_mean([names[lowered]])})"
    hint = "an ISO 639-1, 639-2 or 639-3 code in lower case, such as 'en', 'ko' or 'zho', or 'multilingual'"
    if len(lowered) <= 3 and lowered.isalpha():
        close = difflib.get_close_matches(lowered, sorted(two), n=3, cutoff=0.5)
    else:
        close = [names[n] for n in difflib.get_close_matches(lowered, list(names), n=3, cutoff=0.75)]
        close = list(dict.fromkeys(close))
    if close:
        return f"'{code}' is not an ISO 639 code ({_did_you_mean(close)})"
    return f"'{code}' is not an ISO 639 code (use {hint})"


def duplicate_tags(tags: Sequence[str]) -> list[tuple[int, str, str]]:
    """(index, tag, the earlier tag it repeats) for every tag that repeats an earlier one, ignoring case."""
    first: dict[str, str] = {}
    out = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            continue
        key = tag.casefold()
        if key in first:
            out.append((i, tag, first[key]))
        else:
            first[key] = tag
    return out


def dedupe_tags(tags: Sequence[str]) -> list[str]:
    """TAGS without repeats (ignoring case), each kept in its first spelling, in order."""
    repeats = {i for i, _, _ in duplicate_tags(tags)}
    return [t for i, t in enumerate(tags) if i not in repeats]


# -- a whole metadata mapping --------------------------------------------------------------------------
def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []


def metadata_problems(data: Mapping, *, repo_type: str = "model") -> list[str]:
    """Every problem of a README metadata mapping by the Hub's rules, one message each, naming the key."""
    problems = []
    for key in _STR_OR_LIST:
        value = data.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            problems.append(f'"{key}" must be a string or a list of strings')
    for key in _STRINGS:
        if key in data and not isinstance(data[key], str):
            if key == "license" and repo_type == "dataset" and isinstance(data[key], list):
                continue  # a dataset may list several licenses
            problems.append(f'"{key}" must be a string')

    licenses = _as_list(data.get("license"))
    for value in licenses:
        if isinstance(value, str) and (problem := license_problem(value)):
            problems.append(f'"license": {problem}')
    if "other" in licenses and not (isinstance(data.get("license_name"), str) and data["license_name"].strip()):
        problems.append('"license" is "other", so "license_name" must give the license an id '
                        '(and "license_link" its URL)')

    languages = data.get("language")
    if isinstance(languages, (str, list)):
        for i, code in enumerate(_as_list(languages)):
            if isinstance(code, str) and (problem := language_problem(code)):
                where = "language" if isinstance(languages, str) else f"language[{i}]"
                problems.append(f'"{where}": {problem}')

    tags = data.get("tags")
    if isinstance(tags, list):
        for i, tag, earlier in duplicate_tags(tags):
            problems.append(f'"tags[{i}]": \'{tag}\' repeats \'{earlier}\' (tags are compared ignoring case)')

    relation = data.get("base_model_relation")
    if isinstance(relation, str) and relation not in RELATIONS:
        problems.append(f'"base_model_relation" must be one of {", ".join(RELATIONS)}')
    if relation is not None and not data.get("base_model"):
        problems.append('"base_model_relation" needs "base_model"')

    if "model-index" in data:
        problems.extend(_model_index_problems(data["model-index"]))
    return problems


def _model_index_problems(index: Any) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be a list of mappings, each with a "name" and a list of "results"']
    problems = []
    for i, entry in enumerate(index):
        if not isinstance(entry, dict):
            problems.append(f'"model-index[{i}]" must be a mapping with a "name" and a list of "results"')
            continue
        if not isinstance(entry.get("name"), str):
            problems.append(f'"model-index[{i}].name" must be a string')
        results = entry.get("results")
        if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) for r in results)):
            problems.append(f'"model-index[{i}].results" must be a list of mappings')
            continue
        for j, result in enumerate(results or []):
            problems.extend(_result_problems(result, f"model-index[{i}].results[{j}]"))
    return problems


# What the Hub requires of one model-index result (hub-docs, model-cards.md "Evaluation Results"): the keys
# each mapping must hold as strings; a metric also needs a value.
_RESULT_REQUIRED = {"task": ("type",), "dataset": ("type", "name")}


def _result_problems(result: Mapping, where: str) -> list[str]:
    problems = []
    for key, required in _RESULT_REQUIRED.items():
        part = result.get(key)
        if not isinstance(part, dict):
            problems.append(f'"{where}.{key}" must be a mapping with {" and ".join(repr(r) for r in required)}')
            continue
        problems.extend(f'"{where}.{key}.{r}" must be a string' for r in required if not isinstance(part.get(r), str))
    metrics = result.get("metrics")
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, dict) for m in metrics)):
        problems.append(f'"{where}.metrics" must be a list of mappings, each with a "type" and a "value"')
        return problems
    for k, metric in enumerate(metrics):
        if not isinstance(metric.get("type"), str):
            problems.append(f'"{where}.metrics[{k}].type" must be a string')
        if metric.get("value") is None:
            problems.append(f'"{where}.metrics[{k}].value" is required')
    return problems


def validate_card(text: str, *, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README text, as the Hub's `POST /api/validate-yaml` reports them.

    A card without a metadata block, or with an empty one, gets a warning, not an error (as on the Hub).
    """
    block = split_front_matter(text)
    if block is None:
        return [], [MISSING_METADATA]
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the metadata block: {str(err).splitlines()[0]}"], []
    if data is None:
        return [], [MISSING_METADATA]
    if not isinstance(data, dict):
        return ["The metadata block must be a YAML mapping"], []
    return metadata_problems(data, repo_type=repo_type), []


def hub_error_text(problem: str) -> str:
    """PROBLEM worded as the Hub's validate-yaml words an error (the client lists them as `- {message}`):
    `Error: ` first, and a license that is no Hub id as its schema validator says it, with every id."""
    if problem.startswith('"license": '):
        return f'Error: "license" must be one of [{", ".join(LICENSES)}]'
    return f"Error: {problem}"


def card_errors(text: str) -> list[str]:
    """The errors of `validate_card` alone: what makes the Hub refuse the card."""
    return validate_card(text)[0]
