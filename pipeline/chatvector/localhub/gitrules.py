"""Git's own rules, as the Hub applies them: `.gitattributes` (which paths are LFS), `.gitignore` (which paths
a commit drops), ref names (git check-ref-format) and paths in a repo.

Patterns follow git's wildmatch: `*` and `?` never match `/`, `[...]` is a character class (`[!...]`/`[^...]`
negated, `[:alpha:]` and the other POSIX classes), `\\` escapes, and `**` as a whole segment matches any number
of folders (`**/x`, `a/**/b`, `a/**`). A pattern without a `/` (a trailing one aside) matches the name of a
file or folder at any depth; one with a `/` is anchored at the repo root.

    GitAttributes.parse(text).is_lfs("nested/w.bin")   # `filter=lfs` is set for the path
    GitIgnore.parse(text).ignores("logs/x.txt")        # the path or a folder above it is ignored
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# -- wildmatch -------------------------------------------------------------------------------------------
_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9",
    "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z", "xdigit": "0-9A-Fa-f",
}


def _char_class(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex of the bracket expression at PATTERN[START] (a '[') and the index after it; None when it is
    not closed (the '[' is then a literal, as in git)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    i += negate
    parts: list[str] = []
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return f"(?!/)[{'^' if negate else ''}{''.join(parts)}]", i + 1
        first = False
        if c == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end != -1 and pattern[i + 2:end] in _POSIX_CLASSES:
                parts.append(_POSIX_CLASSES[pattern[i + 2:end]])
                i = end + 2
                continue
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            high = pattern[i + 2]
            if high == "\\" and i + 3 < len(pattern):
                high, i = pattern[i + 3], i + 1
            parts.append(f"{re.escape(c)}-{re.escape(high)}")
            i += 3
            continue
        parts.append(re.escape(c))
        i += 1
    return None


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_segment = j - i >= 2 and (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if whole_segment and j == n:
                out.append(".*")  # `a/**`: everything inside a
            elif whole_segment:
                out.append("(?:.*/)?")  # `**/`: zero or more folders
                j += 1
            else:
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (found := _char_class(pattern, i)) is not None:
            out.append(found[0])
            i = found[1]
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def wildmatch(pattern: str, text: str) -> bool:
    """Whether TEXT matches the git wildmatch PATTERN as a whole (`*` not crossing '/')."""
    return _compile(pattern).fullmatch(text) is not None


@dataclass(frozen=True)
class _Pattern:
    """One pattern line: anchored ones match the whole path, the others the last segment."""

    glob: str
    anchored: bool
    folder_only: bool = False  # a trailing '/': matches folders only
    negated: bool = False  # gitignore's leading '!'

    @classmethod
    def parse(cls, text: str, *, negatable: bool) -> "_Pattern | None":
        negated = negatable and text.startswith("!")
        if negated:
            text = text[1:]
        elif text.startswith("\\!") or text.startswith("\\#"):
            text = text[1:]
        folder_only = text.endswith("/")
        text = text.rstrip("/")
        if not text:
            return None
        anchored = "/" in text
        return cls(text.lstrip("/") if anchored else text, anchored, folder_only, negated)

    def matches(self, path: str, is_folder: bool) -> bool:
        if self.folder_only and not is_folder:
            return False
        return wildmatch(self.glob, path if self.anchored else path.rsplit("/", 1)[-1])


def _strip_trailing_spaces(line: str) -> str:
    """LINE without its trailing spaces, except one escaped with a backslash (git's rule)."""
    stripped = line.rstrip(" \t")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += line[len(stripped)]
    return stripped


# -- .gitattributes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GitAttributes:
    """The `filter` attribute of each pattern line, in file order (the last matching line wins)."""

    rules: tuple[tuple[_Pattern, str | None], ...] = ()  # (pattern, filter value; None: unset/unspecified)

    @classmethod
    def parse(cls, text: str) -> "GitAttributes":
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            glob, *attrs = _split_attributes(line)
            if glob.startswith("!"):  # negative patterns are forbidden in .gitattributes: git ignores them
                continue
            pattern = _Pattern.parse(glob, negatable=False)
            if pattern is None or pattern.folder_only:  # `dir/` never matches the files inside (git's rule)
                continue
            for attr in attrs:
                if attr == "filter" or attr.startswith("filter="):
                    rules.append((pattern, attr.partition("=")[2] or None))
                elif attr in ("-filter", "!filter"):
                    rules.append((pattern, None))
        return cls(tuple(rules))

    def filter_of(self, path: str) -> str | None:
        for pattern, value in reversed(self.rules):
            if pattern.matches(path, is_folder=False):
                return value
        return None

    def is_lfs(self, path: str) -> bool:
        return self.filter_of(path) == "lfs"


def _split_attributes(line: str) -> list[str]:
    """A .gitattributes line as [pattern, attribute...]; the pattern may be "quoted" (C-style escapes)."""
    if line.startswith('"'):
        end = 1
        while end < len(line) and line[end] != '"':
            end += 2 if line[end] == "\\" else 1
        quoted = line[1:end].encode("latin-1", "backslashreplace").decode("unicode_escape", "replace")
        return [quoted, *line[end + 1:].split()]
    return line.split()


# -- .gitignore ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GitIgnore:
    """The patterns of a root `.gitignore`, in file order (the last matching one wins; `!` re-includes)."""

    patterns: tuple[_Pattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "GitIgnore":
        patterns = []
        for raw in text.splitlines():
            line = _strip_trailing_spaces(raw.rstrip("\r"))
            if not line or line.startswith("#"):
                continue
            pattern = _Pattern.parse(line, negatable=True)
            if pattern is not None:
                patterns.append(pattern)
        return cls(tuple(patterns))

    def _excluded(self, path: str, is_folder: bool) -> bool:
        for pattern in reversed(self.patterns):
            if pattern.matches(path, is_folder):
                return not pattern.negated
        return False

    def ignores(self, path: str) -> bool:
        """Whether the file PATH is ignored: it matches, or a folder above it does (git never re-includes a file
        whose folder is excluded)."""
        if not self.patterns:
            return False
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self._excluded("/".join(parts[:depth]), is_folder=True):
                return True
        return self._excluded(path, is_folder=False)


# -- ref names and repo paths ----------------------------------------------------------------------------
# Characters no path, file name or ref may hold: C0 and C1 controls (CR, LF, NUL...), DEL, and the Unicode line
# and paragraph separators (some parsers split lines on them).
UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REF_FORBIDDEN = re.compile(r"[ ~^:?*\[\\]")  # besides UNSAFE_CHARS (git check-ref-format)


def ref_name_problem(name: str) -> str | None:
    """Why git refuses NAME as a branch or tag name (git check-ref-format), None when it is fine."""
    if not name:
        return "it is empty"
    bad = UNSAFE_CHARS.search(name) or _REF_FORBIDDEN.search(name)
    if bad:
        return f"the character {bad.group()!r} is not allowed"
    if name == "@":
        return "'@' alone is not a ref name"
    if "@{" in name:
        return "'@{' is not allowed"
    if ".." in name:
        return "'..' is not allowed"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it may not start or end with '/' nor hold '//'"
    if name.endswith("."):
        return "it may not end with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"a component may not start with '.' ({part!r})"
        if part.endswith(".lock"):
            return f"a component may not end with '.lock' ({part!r})"
    return None




def repo_path_problem(path: str, *, folder: bool = False) -> str | None:
    """Why the Hub refuses PATH as a path in a repo, None when it is fine. A FOLDER path may end with one '/'."""
    if folder and path.endswith("/"):
        path = path[:-1]
    if not path:
        return "a path is needed"
    bad = UNSAFE_CHARS.search(path)
    if bad:
        return f"the character {bad.group()!r} is not allowed in a path"
    # A backslash is a file-name character to git and the Hub (`folder/..\..\x` uploads), but a path read
    # with Windows separators must not start above or at the repo's root (`..\ddd`, `\x`: 422 on the Hub).
    if path.replace("\\", "/").split("/")[0] in ("", ".."):
        return "an absolute path, or one starting with '..', is not allowed"
    parts = path.split("/")
    if "" in parts:
        return "a path may not hold an empty segment ('//') nor end with '/'"
    if "." in parts or ".." in parts:
        return "a '.' or '..' segment is not allowed"
    if ".git" in parts:
        return "files under a '.git/' folder cannot be committed"
    return None
