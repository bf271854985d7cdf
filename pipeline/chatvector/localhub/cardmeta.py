"""Model-card metadata: the YAML block between `---` fences at the top of README.md.

Used for `POST /api/validate-yaml` (so a bad card is refused before a commit, as on the Hub) and for
`cardData` in repo info.
"""

from __future__ import annotations

from typing import Any

import yaml

RELATIONS = ("adapter", "merge", "quantized", "finetune")
_STR_OR_LIST = ("language", "base_model", "tags", "datasets", "metrics")


def split_front_matter(text: str) -> str | None:
    """The YAML text of the front matter, or None when the document has none."""
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


def validate_card(text: str) -> list[str]:
    """Errors in a README's metadata, as the Hub's validate-yaml endpoint reports them."""
    block = split_front_matter(text)
    if block is None:
        return []
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return [f"Invalid YAML in the metadata block: {str(err).splitlines()[0]}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["The metadata block must be a YAML mapping"]
    errors = []
    for key in _STR_OR_LIST:
        value = data.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("license", "library_name", "pipeline_tag", "base_model_relation"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    relation = data.get("base_model_relation")
    if isinstance(relation, str) and relation not in RELATIONS:
        errors.append(f'"base_model_relation" must be one of {", ".join(RELATIONS)}')
    if relation is not None and not data.get("base_model"):
        errors.append('"base_model_relation" needs "base_model"')
    return errors
