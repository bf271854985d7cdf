"""YAML that remembers where each value came from.

`load_yaml(text)` returns plain Python data (dicts, lists, scalars) plus, for every value, the line it
sits on, keyed by its *path*: a tuple of mapping keys (str) and list indices (int), e.g.
`("coefficients", "modules", 1, "match")`. Mapping keys are always the key's source text, so `31:` and
`"31":` are the same key and YAML 1.1 never turns a key like `no` into False.

Unlike `yaml.safe_load`, duplicate keys are reported instead of silently keeping the last one. Problems
inside the document (duplicate keys, unknown tags, merge keys) are collected in `Document.problems`;
only a syntax error stops loading (`YamlSyntaxError`), or a document past the bounds below
(`YamlLimitError`, which names the field where the bound was crossed):

- `MAX_DEPTH` levels of nested mappings and lists (deeper input would exhaust Python's stack);
- `MAX_VALUES` values (scalars, mappings and lists, keys included), counting a value each time an alias
  repeats it, and `MAX_TEXT` characters of scalar text, aliases expanded the same way. An alias costs
  nothing to write but its expansion is what every later stage holds, hashes and renders, so a "billion
  laughs" alias bomb is refused after at most `MAX_VALUES` values instead of taking all memory.

The source text itself is bounded by the caller (a recipe is at most 1 MB: `chatvector.recipe.recipe`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
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

MAX_DEPTH = 32  # levels of nested mappings and lists
MAX_VALUES = 20_000  # values in the document, each alias counted as often as it is used (pure-Python
# PyYAML composes ~15k values a second: this bounds the time a hostile 1 MB recipe costs to about a second)
MAX_TEXT = 2_000_000  # characters of scalar text, aliases expanded
MAX_STRING = 1_000  # characters in a string field unless the field allows more (FieldReader.string)
MAX_PATH = 4_096  # characters in a file or folder path
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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


class YamlLimitError(YamlSyntaxError):
    """The document is past one of the module's bounds; `path` is the field where it was crossed."""

    def __init__(self, path: FieldPath, line: int, message: str):
        super().__init__(line, message)
        self.path = path


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
    """Parse one YAML document; None when it holds nothing (empty or only comments).

    Raises YamlSyntaxError for text that is not YAML and YamlLimitError past the module's bounds."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (column {mark.column + 1})" if mark else ""
        detail = "; ".join(part for part in (err.problem, err.context) if part)
        raise YamlSyntaxError(mark.line + 1 if mark else 1, f"invalid YAML: {detail}{where}") from None
    except yaml.YAMLError as err:  # a reader error: a control character, say
        raise YamlSyntaxError(getattr(err, "line", 0) + 1, f"invalid YAML: {err}") from None
    finally:
        loader.dispose()
    if root is None:
        return None
    _check_expansion(root, loader)
    doc = Document(data=None)
    doc.lines[()] = root.start_mark.line + 1
    doc.data = _Converter(doc, loader.alias_lines).convert(root, ())
    return doc


def _children(node: Node) -> list[tuple[str | int, tuple[int, int] | None, int, Node]]:
    """What the converter visits under `node`, in order: (path part, alias key (None for a mapping key),
    line, child); list items, and each mapping key then its value."""
    if isinstance(node, SequenceNode):
        return [(index, (id(node), index), item.start_mark.line + 1, item) for index, item in enumerate(node.value)]
    if not isinstance(node, MappingNode):
        return []
    entries = []
    for key, value in node.value:
        part, line = key.value if isinstance(key, ScalarNode) else "?", key.start_mark.line + 1
        entries += [(part, None, line, key), (part, (id(node), id(key)), line, value)]
    return entries


def _check_expansion(root: Node, loader: _BoundedLoader) -> None:
    """Refuse, before converting anything, a document whose aliases expand past MAX_VALUES or MAX_TEXT.

    Each node's expanded size is computed once (saturating), so an alias bomb costs time in the size of
    its text, not of its expansion. The problem names the first alias (in document order) whose expansion
    crosses the bound. The converter counts as well: this is the fast path, not the only guard."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def size(node: Node) -> tuple[int, int]:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:  # a recursive alias: the converter reports it
            return 1, 0
        active.add(id(node))
        values, text = 1, len(node.value) if isinstance(node, ScalarNode) else 0
        for *_, child in _children(node):
            child_values, child_text = size(child)
            values, text = min(values + child_values, MAX_VALUES + 1), min(text + child_text, MAX_TEXT + 1)
        active.discard(id(node))
        sizes[id(node)] = values, text
        return values, text

    values, text = size(root)
    if values <= MAX_VALUES and text <= MAX_TEXT:
        return
    # Walk down to where the running count crosses the bound, as the converter would meet it.
    node, path, values, text = root, (), 1, 0
    while True:
        for part, alias_key, line, child in _children(node):
            child_values, child_text = size(child)
            if values + child_values <= MAX_VALUES and text + child_text <= MAX_TEXT:
                values, text = values + child_values, text + child_text
                continue
            here = path + (part,)
            if alias_key in loader.alias_uses or not _children(child):
                what = f"{MAX_VALUES} values" if values + child_values > MAX_VALUES else f"{MAX_TEXT} characters of text"
                raise YamlLimitError(here, loader.alias_lines.get(alias_key, line),
                                     f"YAML aliases expand the document to more than {what}; a recipe holds at most "
                                     f"{what}, an alias counted each time it is used")
            node, path, values, text = child, (path if alias_key is None else here), values + 1, text
            break
        else:  # the estimate counted what the walk cannot find (a recursive alias): the converter decides
            return


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing at most MAX_VALUES nodes nested at most MAX_DEPTH deep; it notes the
    line of each alias written as a list item (the composer hands back the anchored node, with its marks)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.nodes = 0
        self.path: list[str | int] = []  # the field being composed
        self.alias_lines: dict[tuple[int, int], int] = {}  # (id(list node), index) -> line of the alias
        self.alias_uses: set[tuple[int, int]] = set()  # (id(parent), list index or id(key node)) of each alias

    def compose_node(self, parent: Node | None, index: object) -> Node:
        part = index.value if isinstance(index, ScalarNode) else "?" if isinstance(index, Node) else index
        if self.check_event(yaml.AliasEvent):
            if isinstance(parent, SequenceNode) and isinstance(index, int):
                self.alias_lines[(id(parent), index)] = self.peek_event().start_mark.line + 1
            if index is not None:
                self.alias_uses.add((id(parent), index if isinstance(index, int) else id(index)))
            return super().compose_node(parent, index)
        here = tuple(self.path) + (() if part is None else (part,))
        line = self.peek_event().start_mark.line + 1
        self.nodes += 1
        if self.nodes > MAX_VALUES:
            raise YamlLimitError(here, line, f"the document holds more than {MAX_VALUES} values; "
                                             f"a recipe holds at most {MAX_VALUES}")
        if len(self.path) >= MAX_DEPTH and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            raise YamlLimitError(here[:3], line, f"nested more than {MAX_DEPTH} levels deep; "  # the field, not 32 parts
                                                 f"a recipe nests mappings and lists at most {MAX_DEPTH} deep")
        if parent is None:  # the root
            return super().compose_node(parent, index)
        self.path.append("?" if part is None else part)  # a complex key's children sit under a placeholder
        try:
            return super().compose_node(parent, index)
        finally:
            self.path.pop()


class _Converter:
    def __init__(self, doc: Document, alias_lines: dict[tuple[int, int], int] | None = None):
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()  # nodes being converted, to stop recursive aliases
        self.alias_lines = alias_lines or {}
        self.seen: set[int] = set()  # nodes converted once: meeting one again is an alias
        self.aliases: list[FieldPath] = []  # the aliases being expanded, outermost first
        self.values = 0
        self.text = 0

    def problem(self, path: FieldPath, node: Node, message: str) -> None:
        self.doc.problems.append(Problem(path, node.start_mark.line + 1, message))

    def count(self, node: Node, path: FieldPath) -> None:
        """Count one more value (and its text); past MAX_VALUES or MAX_TEXT, stop at the outermost alias."""
        self.values += 1
        if isinstance(node, ScalarNode):
            self.text += len(node.value)
        if self.values <= MAX_VALUES and self.text <= MAX_TEXT:
            return
        where = self.aliases[0] if self.aliases else path
        what = f"{MAX_VALUES} values" if self.values > MAX_VALUES else f"{MAX_TEXT} characters of text"
        cause = "YAML aliases expand the document" if self.aliases else "the document holds"
        raise YamlLimitError(where, self.doc.line(where),
                             f"{cause} to more than {what}; a recipe holds at most {what}, "
                             "an alias counted each time it is used")

    def convert(self, node: Node, path: FieldPath) -> object:
        if id(node) in self.active:
            self.problem(path, node, "a YAML alias refers to itself")
            return None
        alias = id(node) in self.seen
        self.seen.add(id(node))
        if alias:
            self.aliases.append(path)
        self.count(node, path)
        if len(path) > MAX_DEPTH and not isinstance(node, ScalarNode):  # aliases nest what they repeat
            where = (self.aliases[0] if self.aliases else path)[:3]
            raise YamlLimitError(where, self.doc.line(where), f"YAML aliases nest values more than {MAX_DEPTH} "
                                 f"levels deep; a recipe nests mappings and lists at most {MAX_DEPTH} deep")
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
            if alias:
                self.aliases.pop()

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
            self.count(key_node, key_path)
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
            self.doc.lines[path + (index,)] = self.alias_lines.get((id(node), index), item.start_mark.line + 1)
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

    def string(self, value: object, path: FieldPath, max_length: int = MAX_STRING) -> str | Invalid:
        """A non-empty string of at most `max_length` characters. An unquoted scalar that YAML reads as a
        number, boolean or date (`revision: 1.0`, `language: [no]`) is taken as its source text."""
        if value is not None and not isinstance(value, (str, list, dict)) and path in self.doc.plain_text:
            value = self.doc.plain_text[path]
        if not isinstance(value, str):
            return self.expected(path, "a string", value)
        if not value.strip():
            return self.error(path, "must not be empty")
        if len(value) > max_length:
            return self.error(path, f"too long: {len(value)} characters (at most {max_length})")
        return value

    def line(self, value: object, path: FieldPath, max_length: int = MAX_STRING) -> str | Invalid:
        """`string`, on one line and without control characters (nor Unicode bidi controls): for text shown
        as a title, a table cell or card metadata (a name, a tag, a license id)."""
        text = self.string(value, path, max_length)
        if text is INVALID:
            return text
        for char in text:
            if char in _LINE_BREAKS:
                return self.error(path, "must be a single line of text (it holds a line break)")
            if char in _BIDI_CONTROLS or unicodedata.category(char) == "Cc":
                return self.error(path, f"must not hold control characters (it holds U+{ord(char):04X})")
        return text

    def strings(
        self,
        value: object,
        path: FieldPath,
        one_is_enough: bool = False,
        single_line: bool = False,
        max_items: int | None = None,
    ) -> tuple[str, ...] | Invalid:
        """A list of strings (of `line`s when `single_line`; at most `max_items`); a single string too when
        `one_is_enough`."""
        item = self.line if single_line else self.string
        if one_is_enough and not isinstance(value, list):
            text = item(value, path)
            return text if text is INVALID else (text,)
        if not isinstance(value, list):
            return self.expected(path, "a list of strings", value)
        if max_items is not None and len(value) > max_items:
            return self.error(path, f"{len(value)} items; at most {max_items} are allowed")
        items = [item(entry, path + (index,)) for index, entry in enumerate(value)]
        return INVALID if any(entry is INVALID for entry in items) else tuple(items)

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
        text = self.string(value, path, MAX_PATH)
        if text is INVALID:
            return text
        resolved = self.base_dir / Path(text).expanduser()
        if not resolved.is_file():
            return self.error(path, f"file not found: '{text}' (looked for {resolved}; paths are relative to the recipe's folder)")
        return resolved
