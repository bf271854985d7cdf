"""Hostile strings in a recipe (or in Hub data) cannot inject HTML, Markdown or metadata into the model card,
and recipes are bounded: size, YAML nesting and alias expansion, list lengths, string lengths.

Cards are rendered through the real path: `render_card` from the provenance a publish writes (the shape
tests/card/test_card.py uses), and once end to end with `chatvector publish --dry-run`. Each card is then rendered
to HTML with a CommonMark + tables renderer (markdown-it-py, with its own link sanitising switched off so
that nothing is hidden) and compared, element by element, with the card of a harmless recipe.
"""

from __future__ import annotations

import collections
import html
import json
import re
import time
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK, metadata_load

from chatvector.card.card import render_card
from chatvector.cli import main
from chatvector.errors import RecipeError, VerificationError
from chatvector.recipe import yamlsource
from chatvector.recipe.recipe import MAX_RECIPE_BYTES, load_recipe, parse_recipe
from tests.card.test_card import RECIPE_TEXT, _input, sample_provenance

markdown_it = pytest.importorskip("markdown_it")

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "</h1><h1>pwned",
    "<!-- hidden",
    "```\ncode\n```".replace("\n", " "),
    "a `b` c",
    "a | b | c",
    "[x](javascript:alert(1))",
    "![x](https://evil.example/x.png)",
    "<https://evil.example>",
    "**bold** _em_ ~~strike~~ *x*",
    r"$\href{javascript:alert(1)}{x}$",
    "# heading",
    "- item",
    "1. item",
    "---",
    "&#60;script&#62;alert(1)&lt;/script&gt;",
    "back\\slash \\* \\`",
    'quotes " and \' <a href="x">',
    "snake_case_name __init__",
]


class _Elements(HTMLParser):
    """Every element with its attributes, and the text of each h1."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.h1: list[str] = []
        self._in_h1 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "h1":
            self._in_h1 = True
            self.h1.append("")

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1[-1] += data

    def counts(self) -> collections.Counter:
        return collections.Counter(tag for tag, _ in self.elements)


def to_html(card: str) -> str:
    renderer = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    renderer.validateLink = lambda url: True  # show every link as written: the card must not rely on this
    return renderer.render(body_of(card))


def front_matter(card: str) -> str:
    match = REGEX_YAML_BLOCK.search(card)
    assert match, "no metadata block"
    return match.group(2)


def body_of(card: str) -> str:
    match = REGEX_YAML_BLOCK.search(card)
    return card[match.end():]


def assert_one_metadata_block(card: str, tmp_path: Path, expected: dict) -> None:
    """Exactly one YAML block, at the top, that parses to `expected` with both of huggingface_hub's readers;
    the body has no `---` line outside code blocks (no second block, no rule from user input)."""
    assert card.startswith("---\n")
    readme = tmp_path / "README.md"
    readme.write_text(card, encoding="utf-8")
    assert metadata_load(readme) == ModelCard(card).data.to_dict() == expected
    fence = None
    for line in body_of(card).splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
        elif fence is not None and stripped == fence:
            fence = None
        elif fence is None:
            assert stripped.rstrip("-") != "" or "-" not in stripped, f"a '---' line in the body: {line!r}"


def with_name(name: str) -> tuple[dict, str]:
    provenance = sample_provenance()
    provenance["recipe"]["name"] = name
    return provenance, RECIPE_TEXT.replace("name: Tiny-Llama-Chat", f"name: {json.dumps(name)}")


BASELINE = _Elements(to_html(render_card(*with_name("Tiny-Llama-Chat"))))


def assert_no_active_content(elements: _Elements) -> None:
    for tag, attrs in elements.elements:
        assert tag not in ("script", "iframe", "object", "embed", "style", "svg", "math"), tag
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key, value)
            if key in ("href", "src"):
                assert not (value or "").strip().lower().startswith(("javascript:", "data:", "vbscript:")), value


# --------------------------------------------------------------------------------------------------
# The name, wherever it lands


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_renders_as_its_own_text_and_adds_no_element(name, tmp_path):
    card = render_card(*with_name(name))
    assert_one_metadata_block(card, tmp_path, ModelCard(render_card(*with_name("x"))).data.to_dict())
    elements = _Elements(to_html(card))
    assert_no_active_content(elements)
    assert elements.counts() == BASELINE.counts()  # no tag, link, image, code span or emphasis of its own
    assert elements.h1 == [name]  # the title shows exactly the name
    paragraph = to_html(card).split("<p>", 1)[1]
    assert html.unescape(paragraph).startswith(f"{name} is a ")
    prose = body_of(card).split("## How to reproduce")[0]  # before the recipe's own code block
    for raw in ("<script", "<img", "</h1>", "<!--", "<a href"):
        if raw in name:
            assert raw not in prose


def test_a_name_holding_newlines_and_fences_cannot_add_front_matter(tmp_path):
    """The recipe refuses such a name (tests/invalid_recipes/name_*.yaml); the card holds even without that."""
    name = "Tiny\n---\nlicense: evil\n---\n<script>x</script>\r\n---"
    card = render_card(*with_name(name))
    expected = ModelCard(render_card(*with_name("x"))).data.to_dict()
    assert_one_metadata_block(card, tmp_path, expected)
    assert "evil" not in front_matter(card)
    elements = _Elements(to_html(card))
    assert elements.counts() == BASELINE.counts()
    assert elements.h1 == [name.replace("\r\n", " ").replace("\n", " ")]


def test_the_recipe_rejects_a_multiline_name_before_anything_else(tmp_path):
    text = RECIPE_TEXT.replace("name: Tiny-Llama-Chat", 'name: "Tiny\\n---\\nlicense: evil"')
    with pytest.raises(RecipeError, match=r"^recipe\.yaml:2: name: must be a single line of text"):
        parse_recipe(text)


# --------------------------------------------------------------------------------------------------
# Metadata: tags and languages go through the YAML dumper


def test_tags_that_look_like_yaml_stay_strings_in_one_block(tmp_path):
    tags = ["chat-vector", "merge", "a: b", "# not a comment", "'quoted'", '"dq"', "- item", "{a: b}", "[x]",
            "&anchor", "*alias", "!tag", "yes", "null", "1.0", "---", "...", "<script>x</script>", "x | y"]
    provenance = sample_provenance()
    provenance["card"]["tags"] = tags
    card = render_card(provenance, RECIPE_TEXT)
    expected = ModelCard(render_card(sample_provenance(), RECIPE_TEXT)).data.to_dict() | {"tags": tags}
    assert_one_metadata_block(card, tmp_path, expected)


def test_a_metadata_value_with_a_fence_line_is_refused_not_published():
    provenance = sample_provenance()
    provenance["card"]["tags"] = ["chat-vector", "merge", "a\n---\nlicense: evil"]
    with pytest.raises(VerificationError, match="exactly one '---' block at the top"):
        render_card(provenance, RECIPE_TEXT)


def test_card_extra_never_reaches_the_metadata():
    provenance = sample_provenance()
    provenance["card"]["extra"] = {"license": "evil", "note": "x\n---\nlicense: evil\n---"}
    card = render_card(provenance, RECIPE_TEXT)
    assert "evil" not in front_matter(card) and ModelCard(card).data.license == "mit"


# --------------------------------------------------------------------------------------------------
# Tables, code spans, links and Hub data


def test_hostile_table_cells_keep_every_table_shape():
    provenance = sample_provenance()
    provenance["coefficients"]["modules"] = [{"match": r"a|b\|c", "value": 0.0}, {"match": "`x``|`", "value": 0.5},
                                             {"match": "</td><script>", "value": 1.0}]
    provenance["special_tokens"] = [{"token": "<|x|>\n| y |", "cp_row": 1, "chat_row": 2}]
    provenance["inputs"]["chat"]["revision"] = "v1)|<b>"
    provenance["inputs"]["chat"]["sha"] = None  # the revision lands in the link target too
    provenance["inputs"]["cp"] = _input(None, None, path="/x/`my|cp`")
    provenance["inputs"]["cp"]["files"] = {"a|b`.bin": "ab" * 32, "<img src=x onerror=y>": "cd" * 32}
    provenance["verification"]["checks"].append(
        {"name": "[x](javascript:alert(1)) | a", "ok": False, "detail": "<script>\n| | |\n---"})
    provenance["card"]["warnings"] = ["cp's license `<b>x</b>` [y](javascript:z)"]
    provenance["inputs"]["chat"]["license"] = "</code><script>"
    card = render_card(provenance, RECIPE_TEXT)
    rendered = to_html(card)
    elements = _Elements(rendered)
    assert_no_active_content(elements)
    assert "<b>" not in rendered and "<img src=x" not in rendered
    # every row of every table has as many cells as its header
    for table in rendered.split("<table>")[1:]:
        table = table.split("</table>")[0]
        header = len(re.findall(r"<th[ >]", table.split("</thead>")[0]))
        rows = table.split("<tbody>")[1].split("</tr>")[:-1]
        assert rows and all(len(re.findall(r"<td[ >]", row)) == header for row in rows), table
    assert r"| `a\|b\\|c` | 0.0 |" in card  # GFM unescapes \| in cells: the code shows a|b\|c


@pytest.mark.parametrize("target", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "\x01javascript:alert(1)", "&#106;avascript:alert(1)", "javascript&colon;alert(1)", "data:text/html,x",
    "vbscript:x",
])
def test_user_template_links_cannot_become_scripts(target, tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text('# {{ name }}\n\n[docs]({{ extra.link | url }}) <img alt="{{ extra.link | attr }}" src="x.png">\n')
    provenance = sample_provenance()
    provenance["card"]["extra"] = {"link": target}
    elements = _Elements(to_html(render_card(provenance, RECIPE_TEXT, template)))
    assert_no_active_content(elements)
    hrefs = [attrs["href"] for tag, attrs in elements.elements if tag == "a"]
    assert len(hrefs) == 1 and not re.match(r"\s*(javascript|data|vbscript)\s*:", html.unescape(hrefs[0]), re.I)


def test_url_filter_keeps_http_links_and_relative_files_whole(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text("# x\n\n[a]({{ extra.a | url }}) [b]({{ extra.b | url }}) ![c]({{ extra.c | url }})\n")
    provenance = sample_provenance()
    provenance["card"]["extra"] = {"a": "https://example.org/wiki/A_(b)?q=1&r=2#s", "b": "LICENSE", "c": "my chart.svg"}
    card = render_card(provenance, RECIPE_TEXT, template)
    assert "[a](https://example.org/wiki/A_%28b%29?q=1&r=2#s) [b](LICENSE) ![c](my%20chart.svg)" in card


# --------------------------------------------------------------------------------------------------
# User templates: escaped by default, placed by filters, raw only when asked


def test_user_template_values_are_escaped_by_default(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text(
        "# {{ name }}\n\n"
        "Team: {{ extra.team }}\n\n"
        "| key | value |\n|---|---|\n| note | {{ extra.note | cell }} |\n| code | {{ extra.note | code_cell }} |\n\n"
        '<p title="{{ extra.note | attr }}">{{ extra.tags | join(", ") | e }}</p>\n\n'
        "{{ recipe_text | code_block('yaml') }}\n"
    )
    provenance = sample_provenance()
    provenance["card"]["extra"] = {
        "team": "<script>alert(1)</script> [x](javascript:y) `z`",
        "note": '" onmouseover="alert(1) | </td></tr></table><script>\n---',
        "tags": ["<b>", "*x*"],
    }
    recipe = RECIPE_TEXT + 'commit_message: "```\\n<script>```"\n'
    card = render_card(provenance, recipe, template)
    elements = _Elements(to_html(card))
    assert_no_active_content(elements)
    assert [tag for tag, _ in elements.elements] == [
        "h1", "p", "table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td", "br", "tr", "td", "td", "code",
        "p", "pre", "code"]
    assert "Team: &lt;script&gt;alert(1)&lt;/script&gt; \\[x\\](javascript:y) \\`z\\`" in card
    assert '&gt;, *x*</p>' in card  # `e` (HTML escaping) is the filter for text inside an HTML block
    assert "````yaml\n" + recipe + "````" in card  # verbatim, in a fence longer than its backtick runs


def test_safe_writes_a_value_raw_only_when_the_template_asks(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text("# {{ name }}\n\n{{ extra.html | safe }} {{ extra.html }}\n")
    provenance = sample_provenance()
    provenance["card"]["extra"] = {"html": "<em>hi</em>"}
    assert "<em>hi</em> &lt;em&gt;hi&lt;/em&gt;" in render_card(provenance, RECIPE_TEXT, template)


# --------------------------------------------------------------------------------------------------
# End to end: publish --dry-run of a recipe full of markup


def test_publish_dry_run_card_of_a_hostile_recipe(tmp_path, monkeypatch):
    from chatvector.testing.tinymodels import TripletSpec, write_triplet

    write_triplet(tmp_path / "m", TripletSpec(arch="qwen2"))
    name = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) | `a` **b** $c$"
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(
        f"name: {json.dumps(name)}\n"
        "base: {path: m/base}\nchat: {path: m/chat}\ncp: {path: m/cp}\n"
        'coefficients: {default: 0.5, modules: [{match: "norm|</td><script>", value: 0.0}]}\n'
        "target: {repo_id: alice/hostile-card}\n"
        "card:\n  license: mit\n  tags: ['a: b', '# c', '<script>', 'x | y']\n"
        "  extra: {note: \"x\\n---\\nlicense: evil\"}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["publish", str(recipe), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    metadata = ModelCard(card).data.to_dict()
    assert metadata["license"] == "mit" and {"a: b", "# c", "<script>", "x | y"} <= set(metadata["tags"])
    assert_one_metadata_block(card, tmp_path, metadata)
    elements = _Elements(to_html(card))
    assert_no_active_content(elements)
    assert elements.h1 == [name]
    assert not any(tag == "img" and attrs.get("src") == "x" for tag, attrs in elements.elements)
    import yaml

    shown = card.split("## How to reproduce")[1].split("```yaml\n")[1].split("\n```")[0]
    written = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    written.update(base={"path": "base"}, chat={"path": "chat"}, cp={"path": "cp"})  # local folders: last part only
    assert yaml.safe_load(shown) == written  # the same recipe, inert in its code block


# --------------------------------------------------------------------------------------------------
# Recipe bounds that a file in tests/invalid_recipes cannot show


MINIMAL = "base: {repo_id: a/b}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\n"
BOMB = MINIMAL + "card:\n  extra:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"    {c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))
BOMB_ERROR = ("recipe.yaml:10: card.extra.e[1]: YAML aliases expand the document to more than 20000 values; "
              "a recipe holds at most 20000 values, an alias counted each time it is used")


def test_a_recipe_over_1_mb_is_refused_unread(tmp_path, hub, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(MINIMAL + "# padding\n" * 120_000)  # 1.2 MB of comments
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: the file is 1.2 MB; recipes are at most 1 MB"
    mark = len(hub.requests)
    assert main(["plan", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {path}: the file is 1.2 MB; recipes are at most 1 MB"]
    assert list(hub.requests)[mark:] == []
    path.write_text(MINIMAL + "#" * (MAX_RECIPE_BYTES - len(MINIMAL) + 1))
    with pytest.raises(RecipeError, match=r": the file is 1000001 bytes; recipes are at most 1 MB$"):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"^x\.yaml: the file is 1\.2 MB; recipes are at most 1 MB$"):
        parse_recipe("#" * 1_200_000, "x.yaml")


def test_an_alias_bomb_is_refused_fast_in_bounded_memory():
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(RecipeError) as info:
        parse_recipe(BOMB)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(info.value) == BOMB_ERROR
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)


def test_the_converter_refuses_an_alias_bomb_by_itself(monkeypatch):
    """The expansion check before converting is the fast path; the converter counts too."""
    monkeypatch.setattr(yamlsource, "_check_expansion", lambda root, loader: None)
    with pytest.raises(RecipeError) as info:
        parse_recipe(BOMB)
    assert str(info.value) == BOMB_ERROR


def test_aliases_within_the_bounds_still_work():
    text = MINIMAL.replace("base: {repo_id: a/b}", "base: &src {repo_id: a/b}") + "vectors_note: *src\n"
    with pytest.raises(RecipeError, match="unknown key 'vectors_note'"):
        parse_recipe(text)  # the alias itself is fine; the key is not a recipe key
    recipe = parse_recipe(MINIMAL + "card:\n  extra:\n    a: &a [1, 2, 3]\n    b: [*a, *a, *a]\n")
    assert recipe.card.extra == {"a": [1, 2, 3], "b": [[1, 2, 3]] * 3}


def test_too_many_values_without_aliases_is_refused_while_composing(monkeypatch):
    assert yamlsource.MAX_VALUES == 20_000
    monkeypatch.setattr(yamlsource, "MAX_VALUES", 500)  # the same check, with less text to scan
    text = MINIMAL + "card:\n  extra:\n    x: [" + "0, " * 501 + "]\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert re.fullmatch(r"recipe\.yaml:6: card\.extra\.x\[\d+\]: the document holds more than 500 values; "
                        r"a recipe holds at most 500", str(info.value))


def test_a_long_list_of_problems_is_cut_short():
    text = MINIMAL + "".join(f"unknown_{i}: 1\n" for i in range(150))
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    lines = str(info.value).splitlines()
    assert len(lines) == 101 and lines[-1] == "recipe.yaml: ... and 50 more problems"
