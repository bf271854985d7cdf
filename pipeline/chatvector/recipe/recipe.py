"""Recipes: YAML files that say what to merge and where to publish it, loaded into frozen dataclasses.

    recipe = load_recipe("recipes/ko.yaml")     # raises RecipeError listing every mistake, with lines
    recipe.vectors[0].chat.repo_id, recipe.coefficients.value_for("model.norm.weight", 32)
    raise recipe.error_at("coefficients.layers.\"40\"", "layer 40 does not exist")

The dataclasses hold every default; `recipes/README.md` documents the format for users.

Recipes are bounded, each bound refused with one line naming the file, line and field: the file is at most
`MAX_RECIPE_BYTES`; the YAML's nesting, value count and alias expansion are bounded by
`chatvector.recipe.yamlsource` (`MAX_DEPTH`, `MAX_VALUES`, `MAX_TEXT`: an alias bomb is refused, not expanded);
lists by the `MAX_*` counts below; strings by `MAX_STRING` characters (paths `MAX_PATH`, `name`
`MAX_NAME`, `commit_message` `MAX_COMMIT_MESSAGE`). Text that lands in the model card's title, tables or
metadata (`name`, the `card` strings, tags, languages) is one line without control characters; the card
escapes it as well (`chatvector.card.card`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from os import PathLike
from pathlib import Path

from chatvector.errors import Problem as PlanProblem
from chatvector.errors import RecipeError
from chatvector.evaluation.languages import canonical_language
from chatvector.evaluation.spec import (  # the `eval:` section's types (EvalSpec is exposed from here too)
    METRICS,
    EvalSpec,
    LmEvalSpec,
    Requirements,
    check_max_new_tokens,
    check_seed,
    check_threshold,
    missing_data,
)
from chatvector.recipe.coefficients import (
    Coefficients,
    Gradient,
    LayerList,
    LayerRange,
    LayerRanges,
    LayerSpec,
    ModuleRule,
    parse_layer_key,
)
from chatvector.recipe.yamlsource import (
    INVALID,
    MAX_PATH,
    MAX_STRING,
    FieldPath,
    FieldReader,
    Invalid,
    Problem,
    YamlLimitError,
    YamlSyntaxError,
    format_path,
    load_yaml,
    parse_path,
)

DTYPES = ("bfloat16", "float16", "float32")
DEVICES = ("auto", "cuda", "cpu")
FETCH_MODES = ("auto", "snapshot", "stream")  # how Hub inputs are read: see chatvector.fetch.mode
CHAT_TEMPLATE_SOURCES = ("chat", "cp")
DEFAULT_REVISION = "main"
DEFAULT_SHARD_SIZE = 5 * 10**9

# Bounds (see the module docstring; recipes/README.md lists them for users)
MAX_RECIPE_BYTES = 10**6  # 1 MB
MAX_RULES = 1_000  # module rules; layer entries (a map's ranges or a list's values); gradient anchors
MAX_VECTORS = 100
MAX_SPECIAL_TOKENS = 1_000
MAX_CARD_LIST = 100  # card.tags, card.language
MAX_NAME = 200  # characters of `name`
MAX_COMMIT_MESSAGE = 10_000  # characters
MAX_LINK = 2_000  # characters of card.license_link
MAX_REPORTED = 100  # problems listed; the rest are counted

# ---------------------------------------------------------------------------------------------------
# The typed recipe


@dataclass(frozen=True)
class Source:
    """A checkpoint: a Hub repository at a revision, or a local folder (exactly one of the two)."""

    repo_id: str | None = None
    path: Path | None = None  # resolved against the recipe's folder
    revision: str = DEFAULT_REVISION  # used with repo_id only

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class Vector:
    """One chat vector, chat − base, added with λ = weight × coefficient(tensor)."""

    base: Source
    chat: Source
    weight: float = 1.0
    field_path: str = field(default="", compare=False)  # "" for top-level base/chat, else "vectors[i]"

    def path_of(self, key: str) -> str:
        """The field path of one of this vector's keys: "base" or "vectors[1].base"."""
        return f"{self.field_path}.{key}" if self.field_path else key


@dataclass(frozen=True)
class Output:
    dtype: str | None = None  # one of DTYPES; None keeps the cp model's dtype
    shard_size: int = DEFAULT_SHARD_SIZE  # bytes
    chat_template: str | Path = "chat"  # "chat", "cp", or a template file (resolved)


@dataclass(frozen=True)
class Target:
    repo_id: str
    private: bool = False
    revision: str = "main"  # the branch publish commits to (created from the default branch when missing)


@dataclass(frozen=True)
class Card:
    license: str | None = None  # a Hub license id; checked against the Hub's list by the plan
    license_name: str | None = None  # with `license: other`: the license's short name
    license_link: str | None = None  # with `license: other`: where its text is (URL or a file in the repo)
    language: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, hash=False)  # free mapping for the card template
    template: Path | None = None  # a Jinja template file (resolved); None: the project's default


@dataclass(frozen=True)
class MergeSettings:
    device: str = "auto"  # one of DEVICES
    fetch: str = "auto"  # one of FETCH_MODES


@dataclass(frozen=True)
class SweepSettings:
    """`chatvector sweep`'s default factors (`--lambdas` overrides them): each scales the whole λ schedule."""

    lambdas: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Recipe:
    vectors: tuple[Vector, ...]
    cp: Source
    name: str | None = None
    coefficients: Coefficients = field(default_factory=Coefficients)
    special_tokens: tuple[str, ...] = ()
    output: Output = field(default_factory=Output)
    target: Target | None = None
    card: Card = field(default_factory=Card)
    merge: MergeSettings = field(default_factory=MergeSettings)
    sweep: SweepSettings = field(default_factory=SweepSettings)  # not in the fingerprint: a merge ignores it
    eval: EvalSpec | None = None  # how to evaluate the output (chatvector.evaluation); not in the fingerprint (publish.unchanged compares it)
    trust_remote_code: bool = False
    commit_message: str | None = None
    commit_description: str | None = None  # `publish --commit-description` (not read from the file; not in the output)
    path: Path = Path("recipe.yaml")  # the recipe file, as the user named it
    text: str = field(default="", repr=False)  # the raw YAML, for provenance and the card
    field_lines: dict[FieldPath, int] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def sha256(self) -> str:
        """The hash of the recipe file's text, as written (for the record; `fingerprint` is what counts)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def normalized(self) -> dict:
        """What the recipe says, canonically: comments, layout, quoting, key order and defaults written out
        or left out do not matter (`revision: 1.0` and `"1.0"` are the same recipe). Files it names (a chat
        template, a card template) count by their content; local source folders by their path relative to
        the recipe (their files count in the plan's fingerprint). Settings that cannot change the output
        (`commit_message`, `merge.device`, `merge.fetch`) are left out."""
        folder = self.path.parent

        def source(s: Source) -> dict:
            if s.path is not None:
                return {"path": Path(os.path.relpath(s.path, folder)).as_posix()}
            return {"repo_id": s.repo_id, "revision": s.revision}

        def file_content(value: object) -> object:
            return {"file_sha256": hashlib.sha256(Path(value).read_bytes()).hexdigest()} \
                if isinstance(value, Path) else value

        return {
            "name": self.name,
            "vectors": [{"base": source(v.base), "chat": source(v.chat), "weight": v.weight} for v in self.vectors],
            "cp": source(self.cp),
            "coefficients": self.coefficients.normalized(),
            "special_tokens": list(self.special_tokens),
            "output": {"dtype": self.output.dtype, "shard_size": self.output.shard_size,
                       "chat_template": file_content(self.output.chat_template)},
            # (not target.revision: the branch does not change the output, and a merge of that branch into main
            # then finds main unchanged)
            "target": {"repo_id": self.target.repo_id, "private": self.target.private} if self.target else None,
            "card": {"license": self.card.license, "license_name": self.card.license_name,
                     "license_link": self.card.license_link, "language": list(self.card.language),
                     "tags": list(self.card.tags), "extra": self.card.extra,
                     "template": file_content(self.card.template)},
            "trust_remote_code": self.trust_remote_code,
        }

    @property
    def normalized_sha256(self) -> str:
        """The hash of `normalized()`: equal for recipes that say the same thing."""
        canonical = json.dumps(self.normalized(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def display_name(self) -> str:
        """`name`, else the target repository's name, else the recipe file's stem."""
        if self.name:
            return self.name
        return self.target.repo_id.split("/")[-1] if self.target else self.path.stem

    def sources(self) -> list[tuple[str, Source]]:
        """Every checkpoint with its field path: [("base", ...), ("chat", ...), ("cp", ...)]."""
        pairs = [(vector.path_of(key), getattr(vector, key)) for vector in self.vectors for key in ("base", "chat")]
        return pairs + [("cp", self.cp)]

    def location(self, field_path: str) -> str:
        """"recipes/x.yaml:12" for a dotted field path; the nearest enclosing field's line when the
        field itself is not written in the file (a default)."""
        path = parse_path(field_path)
        while path not in self.field_lines and path:
            path = path[:-1]
        return f"{self.path}:{self.field_lines.get(path, 1)}"

    def problem(self, field_path: str | None, message: str) -> PlanProblem:
        """A plan problem located in the recipe: "recipes/x.yaml:12: special_tokens[1]: message". A field the
        file does not write (a default) is named without a line and listed after the located problems; a
        problem with no field (None) is the message alone."""
        if field_path is None:
            return PlanProblem(message)
        path = parse_path(field_path)
        while path not in self.field_lines and path:
            path = path[:-1]
        if not path:
            return PlanProblem(f"{self.path}: {field_path}: {message}")
        line = self.field_lines[path]
        return PlanProblem(f"{self.path}:{line}: {field_path}: {message}", line)

    def error_at(self, field_path: str, message: str) -> RecipeError:
        """A RecipeError reading "recipes/x.yaml:12: coefficients.layers."40": message"."""
        where = self.location(field_path)
        return RecipeError(f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}")

    def require_target(self) -> Target:
        if self.target is None:
            raise self.error_at("target.repo_id", "no target repository: add `target: {repo_id: org/name}`")
        return self.target

    def check_layers(self, num_layers: int) -> list[PlanProblem]:
        """Every layer setting a cp model with `num_layers` layers cannot meet, located."""
        return [self.problem(where, message) for where, message in self.coefficients.check_layers(num_layers)]


# ---------------------------------------------------------------------------------------------------
# Checks shared with other stages (each raises ValueError with a one-line reason)

_REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHORT_COMMIT = re.compile(r"(?=.*[0-9])(?=.*[a-f])[0-9a-f]{7,39}")
_BAD_REF = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|//|^[/.-]|[/.]$|\.lock$")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def check_repo_id(repo_id: str) -> str:
    """A Hub repository id, `namespace/name`."""
    rules = "letters, digits, '-', '_' and '.', not at either end; no '--' or '..'"
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"expected a Hub repository id 'namespace/name' ({rules}), got '{repo_id}'")
    if len(repo_id.split("/")[1]) > 96 or repo_id.endswith(".git"):
        raise ValueError(f"'{repo_id}': a repository name has at most 96 characters and does not end in .git")
    return repo_id


def check_revision(revision: str) -> str:
    """A branch, a tag or a full 40-hex commit hash."""
    if _COMMIT.fullmatch(revision):
        return revision
    if _SHORT_COMMIT.fullmatch(revision):
        raise ValueError(f"'{revision}' looks like a shortened commit hash; give all 40 hex digits")
    if _BAD_REF.search(revision):
        raise ValueError(f"'{revision}' is not a valid branch, tag or commit hash")
    return revision


def check_branch(branch: str) -> str:
    """A branch to commit to: a valid ref name that is neither a commit hash nor a pull request's ref."""
    if _COMMIT.fullmatch(branch) or _SHORT_COMMIT.fullmatch(branch):
        raise ValueError(f"'{branch}' looks like a commit hash; give a branch name (e.g. main, dev)")
    if branch.startswith("refs/pr/"):
        raise ValueError(f"'{branch}' is a pull request's ref; use --create-pr to open a pull request")
    if _BAD_REF.search(branch) or branch.startswith("refs/"):
        raise ValueError(f"'{branch}' is not a valid branch name (letters, digits, '-', '_', '.', '/')")
    return branch


def parse_shard_size(value: object) -> int:
    """Bytes from an int or a string like "5GB", "500MB", "2GiB" (GB = 10^9 bytes, GiB = 2^30)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        size = round(Fraction(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])
    else:
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        raise ValueError(f'expected a size like "5GB", "500MB", "2GiB" or a number of bytes, got {shown}')
    if size <= 0:
        raise ValueError(f"a shard size must be positive, got {value!r}")
    return size


# ---------------------------------------------------------------------------------------------------
# Loading


def load_recipe(path: str | PathLike[str]) -> Recipe:
    """Read, validate and normalise a recipe file. Raises RecipeError listing every problem, one a line,
    each as "FILE:LINE: FIELD.PATH: message", in file order."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_RECIPE_BYTES + 1)  # a bounded read: a huge file or /dev/zero is not read whole
            size = os.fstat(file.fileno()).st_size if len(data) > MAX_RECIPE_BYTES else len(data)
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a folder, not a recipe file") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe: {err.strerror}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(_too_big(path, size))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: the recipe is not UTF-8 text") from None
    return parse_recipe(text, path)


def parse_recipe(text: str, path: str | PathLike[str] = "recipe.yaml") -> Recipe:
    """`load_recipe` for text already in memory; `path` names it in messages and anchors relative paths."""
    path = Path(path)
    if len(text) > MAX_RECIPE_BYTES // 4 and len(encoded := text.encode("utf-8")) > MAX_RECIPE_BYTES:
        raise RecipeError(_too_big(path, len(encoded)))
    try:
        doc = load_yaml(text)
    except YamlLimitError as err:
        raise RecipeError(_format(path, Problem(err.path, err.line, err.message))) from None
    except YamlSyntaxError as err:
        raise RecipeError(f"{path}:{err.line}: {err.message}") from None
    if doc is None:
        raise RecipeError(f"{path}:1: the recipe is empty; it needs at least base, chat and cp")
    reader = FieldReader(doc, path.parent)
    fields = _top_level(reader, doc.data)
    problems = sorted(doc.problems + reader.problems, key=lambda problem: problem.line)
    if problems:
        lines = [_format(path, problem) for problem in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            lines.append(f"{path}: ... and {len(problems) - MAX_REPORTED} more problems")
        raise RecipeError("\n".join(lines))
    return Recipe(**fields, path=path, text=text, field_lines=doc.lines)


def _too_big(path: Path, size: int) -> str:
    """"recipe.yaml: the file is 2.5 MB; recipes are at most 1 MB" (bytes when MB would round to the limit)."""
    shown = f"{size / 10**6:.1f} MB" if size / 10**6 >= 1.05 else f"{size} bytes"
    return f"{path}: the file is {shown}; recipes are at most {MAX_RECIPE_BYTES // 10**6} MB"


def _format(path: Path, problem: Problem) -> str:
    where = f"{path}:{problem.line}"
    return f"{where}: {format_path(problem.path)}: {problem.message}" if problem.path else f"{where}: {problem.message}"


# ---------------------------------------------------------------------------------------------------
# One reader per section: (reader, value, field path) -> the typed value, or INVALID after an error

Read = Callable[[FieldReader, object, FieldPath], object]
TOP_LEVEL_ONLY = {"trust_remote_code": "trust_remote_code is accepted only at the top level of the recipe"}


def _read_fields(r: FieldReader, mapping: dict, path: FieldPath, readers: dict[str, Read]) -> dict[str, object]:
    """The valid, known fields of `mapping`, read by `readers`: keyword arguments for a dataclass."""
    values = {key: readers[key](r, value, path + (key,)) for key, value in mapping.items() if key in readers}
    return {key: value for key, value in values.items() if value is not INVALID}


def _section(cls: type, readers: dict[str, Read], required: tuple[str, ...] = ()) -> Read:
    """A reader for a mapping whose keys are `cls`'s fields."""

    def read(r: FieldReader, value: object, path: FieldPath) -> object:
        mapping = r.mapping(value, path, readers, required, TOP_LEVEL_ONLY)
        if mapping is INVALID:
            return INVALID
        fields = _read_fields(r, mapping, path, readers)
        return cls(**fields) if all(key in fields for key in required) else INVALID

    return read


def _optional(read: Read) -> Read:
    """`read`, with null accepted as "not set" (for fields whose default is None)."""
    return lambda r, value, path: None if value is None else read(r, value, path)


def _choice(choices: tuple[str, ...]) -> Read:
    return lambda r, value, path: r.choice(value, path, choices)


def _line(max_length: int = MAX_STRING) -> Read:
    """One line of text without control characters (see FieldReader.line)."""
    return lambda r, value, path: r.line(value, path, max_length)


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _license_link(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    """An http(s) URL or a file in the repository (`LICENSE`): the Hub shows it as a link."""
    text = r.line(value, path, MAX_LINK)
    if text is INVALID:
        return text
    scheme = _URL_SCHEME.match(text)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return r.error(path, f"expected an http(s) URL or a file in the repository (such as LICENSE), "
                             f"got a {scheme.group(1)}: link")
    return text


def _at_most(r: FieldReader, value: list | dict, path: FieldPath, limit: int, what: str) -> bool:
    """False, after recording a problem, when `value` has more than `limit` entries."""
    if len(value) <= limit:
        return True
    r.error(path, f"{len(value)} {what}; at most {limit} are allowed")
    return False


def _repo_id(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    text = r.string(value, path)
    return text if text is INVALID else r.converted(text, path, check_repo_id)


def _revision(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    text = r.string(value, path)
    return text if text is INVALID else r.converted(text, path, check_revision)


def _branch(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    text = r.string(value, path)
    return text if text is INVALID else r.converted(text, path, check_branch)


def _folder(r: FieldReader, value: object, path: FieldPath) -> Path | Invalid:
    text = r.string(value, path, MAX_PATH)  # not checked for existence: fetching reports a missing folder
    return text if text is INVALID else r.base_dir / Path(text).expanduser()


def _source(r: FieldReader, value: object, path: FieldPath) -> Source | Invalid:
    readers = {"repo_id": _repo_id, "revision": _revision, "path": _folder}
    what = "a mapping like {repo_id: org/name} or {path: ./folder}"
    mapping = r.mapping(value, path, readers, hints=TOP_LEVEL_ONLY, what=what)
    if mapping is INVALID:
        return INVALID
    if ("repo_id" in mapping) == ("path" in mapping):
        which = "not both" if "path" in mapping else "one is required"
        return r.error(path, f"give either repo_id (a Hub repository) or path (a local folder), {which}")
    if "path" in mapping and "revision" in mapping:
        return r.error(path + ("revision",), "revision goes with repo_id; a local path has no revisions")
    fields = _read_fields(r, mapping, path, readers)
    return Source(**fields) if len(fields) == len(mapping) else INVALID


def _vector(r: FieldReader, value: object, path: FieldPath) -> Vector | Invalid:
    readers = {"base": _source, "chat": _source, "weight": FieldReader.number}
    vector = _section(Vector, readers, required=("base", "chat"))(r, value, path)
    return vector if vector is INVALID else Vector(vector.base, vector.chat, vector.weight, format_path(path))


def _vectors(r: FieldReader, value: object, path: FieldPath) -> tuple[Vector, ...] | Invalid:
    if not isinstance(value, list) or not value:
        return r.expected(path, "a non-empty list of {base, chat, weight} mappings", value)
    if not _at_most(r, value, path, MAX_VECTORS, "vectors"):
        return INVALID
    vectors = [_vector(r, item, path + (index,)) for index, item in enumerate(value)]
    return INVALID if any(vector is INVALID for vector in vectors) else tuple(vectors)


def _special_tokens(r: FieldReader, value: object, path: FieldPath) -> tuple[str, ...] | Invalid:
    if isinstance(value, list) and not _at_most(r, value, path, MAX_SPECIAL_TOKENS, "special tokens"):
        return INVALID
    tokens = r.strings(value, path)
    if tokens is INVALID:
        return INVALID
    for index, token in enumerate(tokens):
        if token in tokens[:index]:
            return r.error(path + (index,), f"duplicate token '{token}'")
    return tokens


def _shard_size(r: FieldReader, value: object, path: FieldPath) -> int | Invalid:
    return r.converted(value, path, parse_shard_size)


def _free_mapping(r: FieldReader, value: object, path: FieldPath) -> dict | Invalid:
    return value if isinstance(value, dict) else r.expected(path, "a mapping", value)


def _chat_template(r: FieldReader, value: object, path: FieldPath) -> str | Path | Invalid:
    if value in CHAT_TEMPLATE_SOURCES:
        return value
    return r.file(value, path)


# ---- coefficients


def _layer_ranges(r: FieldReader, value: dict, path: FieldPath) -> LayerRanges | Invalid:
    ranges: list[LayerRange] = []
    problems_before = len(r.problems)
    for key, item in value.items():
        number = r.number(item, path + (key,))
        bounds = r.converted(key, path + (key,), parse_layer_key)
        if number is INVALID or bounds is INVALID:
            continue
        entry = LayerRange(bounds[0], bounds[1], number, key)
        for earlier in ranges:
            first, last = max(entry.first, earlier.first), min(entry.last, earlier.last)
            if first <= last:
                shared = f"layer {first}" if first == last else f"layers {first}-{last}"
                r.error(path + (key,), f'overlaps "{earlier.key}" ({shared}); set each layer once')
        ranges.append(entry)
    return LayerRanges(tuple(ranges)) if len(r.problems) == problems_before else INVALID


def _numbers(r: FieldReader, value: list, path: FieldPath) -> tuple[float, ...] | Invalid:
    numbers = [r.number(item, path + (index,)) for index, item in enumerate(value)]
    return INVALID if any(number is INVALID for number in numbers) else tuple(numbers)


def _layers(r: FieldReader, value: object, path: FieldPath) -> LayerSpec | Invalid:
    if isinstance(value, (dict, list)) and not _at_most(r, value, path, MAX_RULES, "layer entries"):
        return INVALID
    if isinstance(value, dict):
        misplaced = [k for k in value if k in ("gradient", "default", "modules")]
        for key in misplaced:  # a sibling of layers written under it
            r.error(path + (key,), f"'{key}' is not a layer range: it goes directly under coefficients "
                                   f"(coefficients.{key}: ...), beside layers, not inside it")
        return INVALID if misplaced else _layer_ranges(r, value, path)
    if isinstance(value, list) and value:
        numbers = _numbers(r, value, path)
        return numbers if numbers is INVALID else LayerList(numbers)
    what = 'a map of layer ranges like {"0-3": 0.5} or a list with one value per layer'
    return r.expected(path, what, value)


def _gradient(r: FieldReader, value: object, path: FieldPath) -> Gradient | Invalid:
    if not isinstance(value, list) or len(value) < 2:
        return r.expected(path, "a list of at least 2 numbers", value)
    if not _at_most(r, value, path, MAX_RULES, "gradient anchors"):
        return INVALID
    numbers = _numbers(r, value, path)
    return numbers if numbers is INVALID else Gradient(numbers)


def _regex(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    text = r.string(value, path)
    if text is INVALID:
        return text
    try:
        re.compile(text)
    except re.error as err:
        return r.error(path, f"invalid regular expression '{text}': {err}")
    return text


_module_rule = _section(ModuleRule, {"match": _regex, "value": FieldReader.number}, required=("match", "value"))


def _modules(r: FieldReader, value: object, path: FieldPath) -> tuple[ModuleRule, ...] | Invalid:
    if not isinstance(value, list):
        return r.expected(path, "a list of {match, value} rules (the first match wins)", value)
    if not _at_most(r, value, path, MAX_RULES, "module rules"):
        return INVALID
    rules = [_module_rule(r, item, path + (index,)) for index, item in enumerate(value)]
    return INVALID if any(rule is INVALID for rule in rules) else tuple(rules)


def _coefficients(r: FieldReader, value: object, path: FieldPath) -> Coefficients | Invalid:
    readers = {"default": FieldReader.number, "layers": _layers, "gradient": _gradient, "modules": _modules}
    mapping = r.mapping(value, path, readers, hints=TOP_LEVEL_ONLY)
    if mapping is INVALID:
        return INVALID
    if "layers" in mapping and "gradient" in mapping:
        r.error(path + ("gradient",), "give either layers or gradient, not both")
    fields = _read_fields(r, mapping, path, readers)
    if "gradient" in fields:
        fields["layers"] = fields.pop("gradient")
    return Coefficients(**fields)


# ---- sweep: the λ factors `chatvector sweep` writes a variant for


def _sweep_lambdas(r: FieldReader, value: object, path: FieldPath) -> tuple[float, ...] | Invalid:
    from chatvector.recipe.sweep_factors import EXAMPLE, MAX_FACTORS, factor_problems

    if not isinstance(value, list) or not value:
        return r.expected(path, f"a non-empty list of factors like [{EXAMPLE.replace(',', ', ')}]", value)
    if not _at_most(r, value, path, MAX_FACTORS, "factors (a sweep writes one model each)"):
        return INVALID
    numbers = _numbers(r, value, path)
    if numbers is INVALID:
        return INVALID
    problems = factor_problems(numbers)
    for index, message in problems:
        r.error(path if index is None else path + (index,), message)
    return INVALID if problems else numbers


# ---- eval: what the evaluation measures and requires (chatvector.evaluation)


def _checked(check: Callable[[object], object]) -> Read:
    """A value `check` accepts as it is (ints: YAML's own ints, not floats or quoted text)."""
    return lambda r, value, path: r.converted(value, path, check)


def _threshold(metric: str) -> Read:
    def read(r: FieldReader, value: object, path: FieldPath) -> float | Invalid:
        number = r.number(value, path)
        return number if number is INVALID else r.converted(number, path, lambda v: check_threshold(metric, v))

    return read


def _lm_eval_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of examples per task, at least 1, got {value!r}")
    return value


def _lm_eval_tasks(r: FieldReader, value: object, path: FieldPath) -> tuple[str, ...] | Invalid:
    if value == []:
        return r.error(path, "give at least one lm-evaluation-harness task (e.g. [kobest_boolq])")
    return r.strings(value, path, single_line=True, max_items=MAX_CARD_LIST)


def _language(r: FieldReader, value: object, path: FieldPath) -> str | Invalid:
    text = r.string(value, path)  # (`language: no` is Norwegian, not false)
    return text if text is INVALID else r.converted(text, path, canonical_language)


def _eval(r: FieldReader, value: object, path: FieldPath) -> EvalSpec | Invalid:
    readers = {
        "language": _language,
        "prompts": _optional(FieldReader.file),
        "text": _optional(FieldReader.file),
        "max_new_tokens": _checked(check_max_new_tokens),
        "seed": _checked(check_seed),
        "perplexity": FieldReader.boolean,
        "require": _section(Requirements, {metric: _optional(_threshold(metric)) for metric in METRICS}),
        "lm_eval": _optional(_section(LmEvalSpec, {"tasks": _lm_eval_tasks, "limit": _optional(_checked(_lm_eval_limit))},
                                      ("tasks",))),
    }
    before = len(r.problems)
    spec = _section(EvalSpec, readers, required=("language",))(r, value, path)
    if spec is INVALID or len(r.problems) > before:  # (a bad prompts file is not a missing one)
        return INVALID
    missing = missing_data(spec.language, spec.prompts, spec.text, spec.perplexity)
    for key, message in missing:
        fix = "eval.prompts: FILE" if key == "prompts" else "eval.text: FILE, or eval.perplexity: false"
        r.error(path + ("language",), f"{message} ({fix})")
    return INVALID if missing else spec


# ---- the top level

_TOP_LEVEL: dict[str, Read] = {
    "name": _optional(_line(MAX_NAME)),
    "base": _source,
    "chat": _source,
    "vectors": _vectors,
    "cp": _source,
    "coefficients": _coefficients,
    "special_tokens": _special_tokens,
    "output": _section(
        Output,
        {"dtype": _optional(_choice(DTYPES)), "shard_size": _shard_size, "chat_template": _chat_template},
    ),
    "target": _optional(_section(Target, {"repo_id": _repo_id, "private": FieldReader.boolean, "revision": _branch},
                                  ("repo_id",))),
    "card": _section(
        Card,
        {
            "license": _optional(_line()),
            "license_name": _optional(_line()),
            "license_link": _optional(_license_link),
            "language": lambda r, value, path: r.strings(value, path, one_is_enough=True, single_line=True,
                                                         max_items=MAX_CARD_LIST),
            "tags": lambda r, value, path: r.strings(value, path, single_line=True, max_items=MAX_CARD_LIST),
            "extra": _free_mapping,
            "template": _optional(FieldReader.file),
        },
    ),
    "merge": _section(MergeSettings, {"device": _choice(DEVICES), "fetch": _choice(FETCH_MODES)}),
    "sweep": _section(SweepSettings, {"lambdas": _sweep_lambdas}),
    "eval": _optional(_eval),
    "trust_remote_code": FieldReader.boolean,
    "commit_message": _optional(lambda r, value, path: r.string(value, path, MAX_COMMIT_MESSAGE)),
}


def _top_level(r: FieldReader, value: object) -> dict[str, object]:
    """Keyword arguments for Recipe (complete only when `r` recorded no problem)."""
    what = "a mapping of recipe keys (base, chat, cp, coefficients, ...)"
    mapping = r.mapping(value, (), _TOP_LEVEL, required=("cp",), what=what)
    if mapping is INVALID:
        return {}
    if "vectors" in mapping and ("base" in mapping or "chat" in mapping):
        r.error(("vectors",), "give either vectors or top-level base and chat, not both")
    elif "vectors" not in mapping:
        for key in ("base", "chat"):
            if key not in mapping:
                r.error((key,), "required key is missing (give base and chat, or a list of vectors)")
    fields = _read_fields(r, mapping, (), _TOP_LEVEL)
    base, chat = fields.pop("base", None), fields.pop("chat", None)
    if base is not None and chat is not None:
        fields["vectors"] = (Vector(base, chat),)
    return fields
