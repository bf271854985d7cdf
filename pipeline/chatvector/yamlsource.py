"""YAML that remembers where each value came from.

`load_yaml(text)` returns plain Python data (dicts, lists, scalars) plus, for every value, the line it
sits on, keyed by its *path*: a tuple of mapping keys (str) and list indices (int), e.g.
`("coefficients", "modules", 1, "match")`. Mapping keys are always the key's source text, so `31:` and
`"31":` are the same key and YAML 1.1 never turns a key like `no` into False.

Unlike `yaml.safe_load`, duplicate keys are reported instead of silently keeping the last one. Problems
inside the document (duplicate keys, unknown tags, merge keys) are collected in `Document.problems`;
only a syntax error stops loading (`YamlSyntaxError`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

FieldPath = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_PART = re.compile(r'\.?(?:"((?:[^"\\]|\\.)*)"|\[(\d+)\]|([^.\["]+))')
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def format_path(path: FieldPath) -> str:
    """`("coefficients", "layers", "0-3")` -> `coefficients.layers."0-3"`; list items as `modules[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _IDENTIFIER.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            text += f".{name}" if text else name
    return text


def parse_path(text: str) -> FieldPath:
    """The inverse of `format_path`; unquoted parts that are not identifiers are taken as keys too."""
    parts: list[str | int] = []
    for match in _PATH_PART.finditer(text):
        quoted, index, bare = match.groups()
        if index is not None:
            parts.append(int(index))
        elif quoted is not None:
            parts.append(json.loads(f'"{quoted}"'))
        else:
            parts.append(bare)
    return tuple(parts)


@dataclass(frozen=True)
class Problem:
    """Something wrong inside a well-formed YAML document."""

    path: FieldPath
    line: int
    message: str


class YamlSyntaxError(Exception):
    """The text is not YAML; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class Document:
    data: object
    lines: dict[FieldPath, int] = field(default_factory=dict)
    """The line of each value: a mapping entry's key line, a list item's first line."""
    plain_text: dict[FieldPath, str] = field(default_factory=dict)
    """The source text of every unquoted scalar, for fields that want a string (`revision: 1.0`)."""
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor that exists (1 when none does)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def load_yaml(text: str) -> Document | None:
    """Parse one YAML document; None when it holds nothing (empty or only comments)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (column {mark.column + 1})" if mark else ""
        detail = "; ".join(part for part in (err.problem, err.context) if part)
        raise YamlSyntaxError(mark.line + 1 if mark else 1, f"invalid YAML: {detail}{where}") from None
    except yaml.YAMLError as err:  # a reader error: a control character, say
        raise YamlSyntaxError(getattr(err, "line", 0) + 1, f"invalid YAML: {err}") from None
    if root is None:
        return None
    doc = Document(data=None)
    doc.lines[()] = root.start_mark.line + 1
    doc.data = _Converter(doc).convert(root, ())
    return doc


class _Converter:
    def __init__(self, doc: Document):
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()  # nodes being converted, to stop recursive aliases

    def problem(self, path: FieldPath, node: Node, message: str) -> None:
        self.doc.problems.append(Problem(path, node.start_mark.line + 1, message))

    def convert(self, node: Node, path: FieldPath) -> object:
        if id(node) in self.active:
            self.problem(path, node, "a YAML alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            if not isinstance(node, ScalarNode) and node.tag not in _COLLECTION_TAGS:
                self.problem(path, node, f"unsupported YAML tag '{node.tag}'")
                return None
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            if isinstance(node, SequenceNode):
                return self.sequence(node, path)
            return self.scalar(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[str, object]:
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(path, key_node, "a key must be a plain string, not a list or mapping")
                continue
            if key_node.tag == _MERGE_TAG:
                self.problem(path, key_node, "YAML merge keys ('<<') are not supported; write the keys out")
                continue
            key = key_node.value
            key_path = path + (key,)
            if key in result:
                first = self.doc.lines[key_path]
                self.problem(key_path, key_node, f"duplicate key '{key}' (first given on line {first})")
                continue
            self.doc.lines[key_path] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, key_path)
        return result

    def sequence(self, node: SequenceNode, path: FieldPath) -> list[object]:
        items = []
        for index, item in enumerate(node.value):
            self.doc.lines[path + (index,)] = item.start_mark.line + 1
            items.append(self.convert(item, path + (index,)))
        return items

    def scalar(self, node: ScalarNode, path: FieldPath) -> object:
        if node.style is None:
            self.doc.plain_text[path] = node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as err:
            self.problem(path, node, f"cannot read this value: {err.problem}")
            return None


class Invalid:
    """The type of `INVALID`: what a `FieldReader` method returns after recording a problem."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID = Invalid()


def describe(value: object) -> str:
    """A bad value as a message quotes it: 'high', 3, .nan, null, true, a list [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return ".nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, dict)):
        kind = "a list" if isinstance(value, list) else "a mapping"
        text = json.dumps(value, ensure_ascii=False, default=str)
        return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"
    text = repr(str(value))
    return text if len(text) <= 60 else text[:56] + "...'"


class FieldReader:
    """Reads typed values out of a `Document`, recording a `Problem` (and returning INVALID) for each
    bad one, so that one pass reports every mistake. Relative file paths resolve against `base_dir`."""

    def __init__(self, doc: Document, base_dir: Path):
        self.doc = doc
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def error(self, path: FieldPath, message: str) -> Invalid:
        self.problems.append(Problem(path, self.doc.line(path), message))
        return INVALID

    def expected(self, path: FieldPath, what: str, value: object) -> Invalid:
        return self.error(path, f"expected {what}, got {describe(value)}")

    def mapping(
        self,
        value: object,
        path: FieldPath,
        keys: Collection[str],
        required: Collection[str] = (),
        hints: Mapping[str, str] | None = None,
        what: str = "a mapping",
    ) -> dict[str, object] | Invalid:
        """Check `value` is a mapping whose keys are all in `keys` and include `required`.

        An unknown key gets a "did you mean" suggestion, or the text `hints[key]` when there is one."""
        if not isinstance(value, dict):
            return self.expected(path, what, value)
        for key in value:
            if key in keys:
                continue
            if hints and key in hints:
                self.error(path + (key,), hints[key])
                continue
            close = difflib.get_close_matches(key, list(keys), n=1)
            advice = f"did you mean '{close[0]}'?" if close else "expected one of: " + ", ".join(keys)
            self.error(path + (key,), f"unknown key '{key}' ({advice})")
        for key in required:
            if key not in value:
                self.error(path + (key,), "required key is missing")
        return value

    def string(self, value: object, path: FieldPath) -> str | Invalid:
        """A non-empty string. An unquoted scalar that YAML reads as a number, boolean or date
        (`revision: 1.0`, `language: [no]`) is taken as its source text."""
        if value is not None and not isinstance(value, (str, list, dict)) and path in self.doc.plain_text:
            value = self.doc.plain_text[path]
        if not isinstance(value, str):
            return self.expected(path, "a string", value)
        if not value.strip():
            return self.error(path, "must not be empty")
        return value

    def strings(self, value: object, path: FieldPath, one_is_enough: bool = False) -> tuple[str, ...] | Invalid:
        """A list of strings; a single string too when `one_is_enough`."""
        if one_is_enough and not isinstance(value, list):
            text = self.string(value, path)
            return text if text is INVALID else (text,)
        if not isinstance(value, list):
            return self.expected(path, "a list of strings", value)
        items = [self.string(item, path + (index,)) for index, item in enumerate(value)]
        return INVALID if any(item is INVALID for item in items) else tuple(items)

    def number(self, value: object, path: FieldPath) -> float | Invalid:
        """A finite int or float. An unquoted `1e-3` (a string to YAML 1.1) counts as a number."""
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                return self.expected(path, "a number", value)
            if path not in self.doc.plain_text:
                return self.error(path, f"expected a number, got the quoted string {describe(value)} (remove the quotes)")
            value = parsed
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.expected(path, "a number", value)
        if not math.isfinite(value):
            return self.expected(path, "a finite number", value)
        return float(value)

    def boolean(self, value: object, path: FieldPath) -> bool | Invalid:
        if isinstance(value, bool):
            return value
        return self.expected(path, "true or false", value)

    def choice(self, value: object, path: FieldPath, choices: Sequence[str]) -> str | Invalid:
        text = self.string(value, path)
        if text is INVALID or text in choices:
            return text
        close = difflib.get_close_matches(text, choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return self.error(path, f"expected one of {', '.join(choices)}; got {describe(text)}{hint}")

    def converted(self, value: object, path: FieldPath, convert: Callable[[object], object]) -> object:
        """`convert(value)`, with a ValueError's message recorded as the problem."""
        try:
            return convert(value)
        except ValueError as err:
            return self.error(path, str(err))

    def file(self, value: object, path: FieldPath) -> Path | Invalid:
        """An existing file, relative to the recipe's folder."""
        text = self.string(value, path)
        if text is INVALID:
            return text
        resolved = self.base_dir / Path(text).expanduser()
        if not resolved.is_file():
            return self.error(path, f"file not found: '{text}' (looked for {resolved}; paths are relative to the recipe's folder)")
        return resolved
