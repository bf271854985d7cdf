"""Recipes: loading, defaults, normalisation, locations, and one message per mistake."""

import hashlib
from pathlib import Path

import pytest

from chatvector.errors import RecipeError
from chatvector.recipe.coefficients import Coefficients, Gradient, LayerList, LayerRange, LayerRanges, ModuleRule
from chatvector.recipe.recipe import (
    DEFAULT_SHARD_SIZE,
    Card,
    MergeSettings,
    Output,
    Source,
    Target,
    Vector,
    check_repo_id,
    check_revision,
    load_recipe,
    parse_recipe,
    parse_shard_size,
)
from chatvector.recipe.yamlsource import format_path, parse_path

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "tests" / "invalid_recipes").glob("*.yaml"))
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))

FULL = """\
name: Llama-3-Open-Ko-8B-Chat          # optional display name
base: {repo_id: meta-llama/Meta-Llama-3-8B, revision: main}
chat: {repo_id: meta-llama/Meta-Llama-3-8B-Instruct}
cp:   {repo_id: beomi/Llama-3-Open-Ko-8B}
coefficients:
  default: 1.0
  layers: {"0-3": 0.5, "31": 0.8}
  modules:
    - {match: "norm", value: 0.0}
    - {match: "embed_tokens|lm_head", value: 1.0}
special_tokens: ["<|eot_id|>"]
output: {dtype: bfloat16, shard_size: 5GB}
target: {repo_id: my-org/Llama-3-Open-Ko-8B-Chat, private: false}
card: {license: llama3, language: [ko, en], tags: [korean]}
"""

MINIMAL = """\
base: {repo_id: meta-llama/Meta-Llama-3-8B}
chat: {repo_id: meta-llama/Meta-Llama-3-8B-Instruct}
cp: {repo_id: beomi/Llama-3-Open-Ko-8B}
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    return str(info.value).splitlines()


# ---- valid recipes


def test_full_recipe_loads_into_typed_objects(tmp_path):
    recipe = load_recipe(write(tmp_path, FULL))
    llama, instruct = "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"
    assert recipe.name == "Llama-3-Open-Ko-8B-Chat"
    assert recipe.vectors == (Vector(Source(repo_id=llama), Source(repo_id=instruct), 1.0),)
    assert recipe.cp == Source(repo_id="beomi/Llama-3-Open-Ko-8B", revision="main")
    assert recipe.coefficients == Coefficients(
        default=1.0,
        layers=LayerRanges((LayerRange(0, 3, 0.5, "0-3"), LayerRange(31, 31, 0.8, "31"))),
        modules=(ModuleRule("norm", 0.0), ModuleRule("embed_tokens|lm_head", 1.0)),
    )
    assert recipe.special_tokens == ("<|eot_id|>",)
    assert recipe.output == Output(dtype="bfloat16", shard_size=5_000_000_000, chat_template="chat")
    assert recipe.target == Target("my-org/Llama-3-Open-Ko-8B-Chat", private=False)
    assert recipe.card == Card(license="llama3", language=("ko", "en"), tags=("korean",))
    assert recipe.merge == MergeSettings(device="auto")
    assert recipe.trust_remote_code is False and recipe.commit_message is None


def test_minimal_recipe_gets_every_default(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.name is None and recipe.display_name == "recipe"
    assert recipe.coefficients == Coefficients(default=1.0, layers=None, modules=())
    assert recipe.special_tokens == ()
    assert recipe.output == Output(dtype=None, shard_size=DEFAULT_SHARD_SIZE, chat_template="chat")
    assert recipe.output.shard_size == 5 * 10**9
    assert recipe.target is None
    assert recipe.card == Card(license=None, language=(), tags=(), extra={}, template=None)
    assert recipe.merge.device == "auto"
    assert recipe.trust_remote_code is False
    assert recipe.commit_message is None
    assert all(source.revision == "main" for _, source in recipe.sources())


def test_recipe_keeps_its_text_path_and_hash(tmp_path):
    path = write(tmp_path, FULL)
    recipe = load_recipe(path)
    assert recipe.path == path
    assert recipe.text == FULL
    assert recipe.sha256 == hashlib.sha256(FULL.encode()).hexdigest()


def test_recipes_are_frozen(tmp_path):
    recipe = load_recipe(write(tmp_path, FULL))
    with pytest.raises(AttributeError):
        recipe.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        recipe.cp.revision = "dev"  # type: ignore[misc]


def test_top_level_base_and_chat_become_one_vector_of_weight_one(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    [vector] = recipe.vectors
    assert vector.weight == 1.0 and vector.path_of("base") == "base"
    assert [field for field, _ in recipe.sources()] == ["base", "chat", "cp"]


def test_several_vectors_keep_their_order_weights_and_field_paths(tmp_path):
    text = """\
vectors:
  - {base: {repo_id: org/base}, chat: {repo_id: org/chat}, weight: 0.7}
  - base: {repo_id: org/base}
    chat: {repo_id: org/math}
cp: {repo_id: org/cp}
"""
    recipe = load_recipe(write(tmp_path, text))
    assert [(v.chat.repo_id, v.weight) for v in recipe.vectors] == [("org/chat", 0.7), ("org/math", 1.0)]
    assert [field for field, _ in recipe.sources()] == [
        "vectors[0].base", "vectors[0].chat", "vectors[1].base", "vectors[1].chat", "cp",
    ]
    assert recipe.location("vectors[1].chat") == f"{recipe.path}:4"


def test_local_paths_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "card.md.j2").write_text("{{ name }}")
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    text = """\
base: {path: ../models/base}
chat: {path: /abs/chat}
cp: {path: cp}
output: {chat_template: chat.jinja}
card: {template: templates/card.md.j2}
"""
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.vectors[0].base.path == tmp_path / "../models/base"
    assert recipe.vectors[0].chat.path == Path("/abs/chat")
    assert recipe.cp == Source(path=tmp_path / "cp")
    assert recipe.output.chat_template == tmp_path / "chat.jinja"
    assert recipe.card.template == tmp_path / "templates" / "card.md.j2"


@pytest.mark.parametrize("source", ["chat", "cp"])
def test_chat_template_keywords(tmp_path, source):
    recipe = load_recipe(write(tmp_path, MINIMAL + f"output: {{chat_template: {source}}}\n"))
    assert recipe.output.chat_template == source


def test_all_optional_keys_are_read(tmp_path):
    text = MINIMAL + """\
trust_remote_code: true
commit_message: "Merge λ=0.7"
merge: {device: cuda}
output: {dtype: float32, shard_size: 2GiB}
card:
  language: ko
  extra: {dataset: kowiki, scores: [1, 2]}
coefficients: {gradient: [0.2, 1.0]}
"""
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.trust_remote_code is True
    assert recipe.commit_message == "Merge λ=0.7"
    assert recipe.merge == MergeSettings("cuda")
    assert recipe.output == Output(dtype="float32", shard_size=2**31)
    assert recipe.card.language == ("ko",)
    assert recipe.card.extra == {"dataset": "kowiki", "scores": [1, 2]}
    assert recipe.coefficients.layers == Gradient((0.2, 1.0))


def test_layers_as_a_list(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "coefficients: {layers: [0.1, 0.2, 1]}\n"))
    assert recipe.coefficients.layers == LayerList((0.1, 0.2, 1.0))


def test_unquoted_layer_keys_are_read_as_written(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "coefficients:\n  layers: {31: 0.8, 010: 0.2}\n"))
    assert [(r.first, r.key) for r in recipe.coefficients.layers.ranges] == [(31, "31"), (10, "010")]


def test_null_means_the_default_where_the_default_is_null(tmp_path):
    text = MINIMAL + "name: ~\ntarget: null\ncommit_message:\noutput: {dtype: null}\ncard: {license: ~}\n"
    recipe = load_recipe(write(tmp_path, text))
    assert (recipe.name, recipe.target, recipe.commit_message, recipe.output.dtype, recipe.card.license) == (None,) * 5


def test_unquoted_scalars_are_taken_as_written_where_a_string_is_expected(tmp_path):
    text = MINIMAL.replace("Instruct}", "Instruct, revision: 1.0}") + "card: {language: [no, en], license: 2.0}\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.vectors[0].chat.revision == "1.0"
    assert recipe.card.language == ("no", "en")
    assert recipe.card.license == "2.0"


def test_numbers_accept_ints_negative_values_and_exponents(tmp_path):
    text = MINIMAL + "coefficients:\n  default: -1\n  modules: [{match: x, value: 1e-3}, {match: y, value: 2.5E+1}]\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.coefficients.default == -1.0
    assert [rule.value for rule in recipe.coefficients.modules] == [0.001, 25.0]


def test_yaml_anchors_and_aliases_work(tmp_path):
    text = "base: &llama {repo_id: meta-llama/Meta-Llama-3-8B}\nchat: {repo_id: a/b}\ncp: *llama\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.cp == recipe.vectors[0].base


def test_parse_recipe_reads_text_in_memory():
    recipe = parse_recipe(MINIMAL, "recipes/ko.yaml")
    assert recipe.path == Path("recipes/ko.yaml")
    assert recipe.location("cp") == "recipes/ko.yaml:3"


# ---- locations for later stages


def test_location_points_at_the_field_or_its_nearest_parent(tmp_path):
    recipe = load_recipe(write(tmp_path, FULL))
    path = recipe.path
    assert recipe.location('coefficients.layers."0-3"') == f"{path}:7"
    assert recipe.location('coefficients.layers."40"') == f"{path}:7"
    assert recipe.location("coefficients.modules[1].match") == f"{path}:10"
    assert recipe.location("coefficients") == f"{path}:5"
    assert recipe.location("output.chat_template") == f"{path}:12"
    assert recipe.location("merge.device") == f"{path}:1"


def test_error_at_builds_a_located_recipe_error(tmp_path):
    recipe = parse_recipe(FULL, "recipe.yaml")
    err = recipe.error_at('coefficients.layers."40"', "layer 40 does not exist (the cp model has 32 layers)")
    assert isinstance(err, RecipeError)
    assert str(err) == 'recipe.yaml:7: coefficients.layers."40": layer 40 does not exist (the cp model has 32 layers)'


def test_check_layers_wraps_coefficient_problems_with_locations():
    recipe = parse_recipe(FULL, "recipe.yaml")
    assert recipe.check_layers(32) == []
    [problem] = recipe.check_layers(20)
    assert problem.line == 7
    assert problem.text == 'recipe.yaml:7: coefficients.layers."31": layer 31 does not exist (the cp model has 20 layers)'


def test_normalized_recipe_ignores_layout_comments_quoting_and_defaults(tmp_path):
    one = parse_recipe("base: {repo_id: a/b, revision: 1.0}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\n", tmp_path / "r.yaml")
    two = parse_recipe("# a comment\ncp:   {repo_id: a/d}\nchat: {repo_id: a/c, revision: main}\n"
                       "base:\n  revision: \"1.0\"\n  repo_id: a/b\ncoefficients: {default: 1}\n"
                       "commit_message: not part of the output\n", tmp_path / "r.yaml")
    assert one.normalized() == two.normalized() and one.normalized_sha256 == two.normalized_sha256
    three = parse_recipe("base: {repo_id: a/b, revision: 1.0}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\n"
                         "coefficients: {default: 0.9}\n", tmp_path / "r.yaml")
    assert three.normalized_sha256 != one.normalized_sha256


def test_normalized_recipe_counts_named_files_by_content(tmp_path):
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    text = "base: {repo_id: a/b}\nchat: {repo_id: a/c}\ncp: {repo_id: a/d}\noutput: {chat_template: t.jinja}\n"
    before = parse_recipe(text, tmp_path / "r.yaml").normalized_sha256
    (tmp_path / "t.jinja").write_text("{{ messages }}{{ eos_token }}")
    assert parse_recipe(text, tmp_path / "r.yaml").normalized_sha256 != before


def test_require_target_names_target_repo_id():
    assert parse_recipe(FULL).require_target().repo_id == "my-org/Llama-3-Open-Ko-8B-Chat"
    with pytest.raises(RecipeError, match=r"^recipe.yaml:1: target.repo_id: no target repository"):
        parse_recipe(MINIMAL).require_target()


def test_display_name_falls_back_to_the_target_name():
    recipe = parse_recipe(MINIMAL + "target: {repo_id: org/My-Merge}\n")
    assert recipe.display_name == "My-Merge"


@pytest.mark.parametrize(
    "path",
    [("coefficients", "layers", "0-3"), ("coefficients", "modules", 1, "match"), ("vectors", 0, "base"), ("a b", "x")],
)
def test_field_paths_format_and_parse_back(path):
    assert parse_path(format_path(path)) == path


def test_field_path_format():
    assert format_path(("coefficients", "layers", "0-3")) == 'coefficients.layers."0-3"'
    assert format_path(("coefficients", "modules", 1, "match")) == "coefficients.modules[1].match"
    assert format_path(()) == ""


# ---- errors


def test_every_mistake_is_reported_at_once_in_file_order(tmp_path):
    text = """\
base: {repo_id: meta-llama/Meta-Llama-3-8B}
chat: {repo_id: meta-llama/Meta-Llama-3-8B-Instruct}
cp: {repo_id: beomi/Llama-3-Open-Ko-8B}
output: {dtype: fp8}
coefficients:
  default: .nan
  modules:
    - {match: "(", value: x}
coeficients: {}
"""
    lines = error_lines(text, tmp_path)
    name = str(tmp_path / "recipe.yaml")
    assert lines == [
        f"{name}:4: output.dtype: expected one of bfloat16, float16, float32; got 'fp8'",
        f"{name}:6: coefficients.default: expected a finite number, got .nan",
        f"{name}:8: coefficients.modules[0].match: invalid regular expression '(': "
        "missing ), unterminated subpattern at position 0",
        f"{name}:8: coefficients.modules[0].value: expected a number, got 'x'",
        f"{name}:9: coeficients: unknown key 'coeficients' (did you mean 'coefficients'?)",
    ]


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path):
    [line] = error_lines(MINIMAL + "merge: {workers: 4}\n", tmp_path)
    assert line.endswith("merge.workers: unknown key 'workers' (expected one of: device, fetch)")


def test_missing_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"nope\.yaml: no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_a_folder_is_not_a_recipe(tmp_path):
    with pytest.raises(RecipeError, match="is a folder, not a recipe file"):
        load_recipe(tmp_path)


def test_non_utf8_text_is_a_recipe_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\ncard: {license: caf\xe9}\n")
    with pytest.raises(RecipeError, match=r"latin1\.yaml:2: the recipe is not UTF-8 text"):
        load_recipe(path)


def test_error_messages_use_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL + "merge: {device: tpu}\n", "x.yaml")
    with pytest.raises(RecipeError, match=r"^x\.yaml:4: merge\.device: "):
        load_recipe("x.yaml")


def test_a_recursive_alias_is_reported_not_followed(tmp_path):
    lines = error_lines(MINIMAL + "card: {extra: &loop {self: *loop}}\n", tmp_path)
    assert any("a YAML alias refers to itself" in line for line in lines)


@pytest.mark.parametrize("recipe", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_recipe_reports_the_expected_error(recipe):
    first_line = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# expect: "), f"{recipe.name} must start with '# expect: <message>'"
    expected = first_line.removeprefix("# expect: ")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(recipe))


def test_the_invalid_corpus_is_large_enough():
    assert len(INVALID) >= 30


@pytest.mark.parametrize("recipe", SHIPPED, ids=[path.name for path in SHIPPED])
def test_shipped_recipes_load(recipe):
    assert load_recipe(recipe).vectors


# ---- shared checks


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1.5GB", 1_500_000_000),
        ("100KiB", 102_400),
        ("10 mb", 10**7),
        ("1TB", 10**12),
        ("4096", 4096),
        ("7B", 7),
        (123456, 123456),
    ],
)
def test_parse_shard_size(text, size):
    assert parse_shard_size(text) == size


@pytest.mark.parametrize("text", ["5XB", "GB", "-1GB", "", "5 G B", 1.5, True, None, 0, -3, "0MB"])
def test_parse_shard_size_rejects(text):
    with pytest.raises(ValueError):
        parse_shard_size(text)


@pytest.mark.parametrize(
    "repo_id", ["meta-llama/Meta-Llama-3-8B", "beomi/Llama-3-Open-Ko-8B", "a/b", "org_1/model.v2", "Org/x_y-z.1"]
)
def test_valid_repo_ids(repo_id):
    assert check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id",
    ["gpt2", "a/b/c", "/model", "org/", "my org/x", "org/-x", "org/x.", "org/a--b", "org/a..b", "org/ü", "org/x.git",
     "org/" + "x" * 97],
)
def test_invalid_repo_ids(repo_id):
    with pytest.raises(ValueError):
        check_repo_id(repo_id)


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "refs/pr/1", "release/2024-05", "0123456789abcdef0123456789abcdef01234567", "cafe", "20240101"]
)
def test_valid_revisions(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("abc1234", "looks like a shortened commit hash"),
        ("0123456789abcdef0123456789abcdef0123456", "looks like a shortened commit hash"),
        ("feature..x", "not a valid branch"),
        ("my branch", "not a valid branch"),
        ("-x", "not a valid branch"),
        ("x.lock", "not a valid branch"),
        ("a:b", "not a valid branch"),
        ("branch/", "not a valid branch"),
    ],
)
def test_invalid_revisions(revision, message):
    with pytest.raises(ValueError, match=message):
        check_revision(revision)


def test_the_readme_documents_every_top_level_key():
    readme = (ROOT / "recipes" / "README.md").read_text(encoding="utf-8")
    for key in ["name", "base", "chat", "vectors", "cp", "coefficients.default", "coefficients.layers",
                "coefficients.gradient", "coefficients.modules", "special_tokens", "output.dtype",
                "output.shard_size", "output.chat_template", "target.repo_id", "target.private", "card.license",
                "card.language", "card.tags", "card.extra", "card.template", "merge.device", "trust_remote_code",
                "commit_message"]:
        assert f"| `{key}` |" in readme, key
    assert "chatvector plan recipes/x.yaml" in readme
    assert "| λ | 0.2 | 0.4 | 0.6 | 0.8 | 1.0 |" in readme
    assert "| λ | 0.0 | 0.5 | 1.0 | 0.75 | 0.5 |" in readme


def test_error_at_the_top_level_has_no_field_path():
    assert str(parse_recipe("\n" + MINIMAL).error_at("", "no layers")) == "recipe.yaml:2: no layers"
