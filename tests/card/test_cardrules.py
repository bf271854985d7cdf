"""The Hub's card-metadata rules (chatvector.hub.cardrules), shared by the pipeline and the local Hub."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatvector.hub.cardrules import (
    LICENSES,
    MISSING_METADATA,
    card_errors,
    dedupe_tags,
    duplicate_tags,
    language_problem,
    license_problem,
    metadata_problems,
    parse_card_data,
    split_front_matter,
    validate_card,
)


# -- licenses ---------------------------------------------------------------------------------------------
def test_license_ids_are_the_hubs():
    assert len(LICENSES) == len(set(LICENSES)) and all(x == x.lower() for x in LICENSES)
    for lid in ("apache-2.0", "mit", "openrail++", "cc-by-nc-sa-4.0", "lppl-1.3c", "llama2", "gemma", "unknown",
                "other", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4"):
        assert lid in LICENSES and license_problem(lid) is None


@pytest.mark.parametrize("value, expected", [
    ("MIT", "'MIT' is not a Hub license id (did you mean 'mit'?)"),
    ("Apache-2.0", "'Apache-2.0' is not a Hub license id (did you mean 'apache-2.0'?)"),
    ("Apache 2.0", "'Apache 2.0' is not a Hub license id (did you mean 'apache-2.0'?)"),
    ("llama-3.1", "'llama-3.1' is not a Hub license id (did you mean 'llama3.1'"),
    ("cc-by-4", "'cc-by-4' is not a Hub license id (did you mean 'cc-by-4.0'"),
])
def test_license_problem_suggests_the_id_meant(value, expected):
    assert license_problem(value).startswith(expected)


def test_an_unknown_license_points_at_other_with_license_name():
    problem = license_problem("coqui-public-model-license")
    assert problem.startswith("'coqui-public-model-license' is not a Hub license id")
    assert "license: other" in problem and "license_name" in problem
    assert "must be a string" in license_problem(3)  # type: ignore[arg-type]


# -- languages --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["ko", "en", "kor", "zho", "chi", "yue", "sla", "multilingual", "code"])
def test_iso_639_codes_and_special_values_pass(code):
    assert language_problem(code) is None


@pytest.mark.parametrize("code, expected", [
    ("KO", "'KO' must be in lower case (did you mean 'ko'?)"),
    ("En", "'En' must be in lower case (did you mean 'en'?)"),
    ("korean", "'korean' is a language name, not an ISO 639 code (did you mean 'ko'?)"),
    ("Japanese", "'Japanese' is a language name, not an ISO 639 code (did you mean 'ja'?)"),
    ("en-US", "'en-US' is a BCP-47 tag, not an ISO 639 code (did you mean 'en'? BCP-47 tags go in language_bcp47)"),
    ("zh_TW", "'zh_TW' is a BCP-47 tag, not an ISO 639 code (did you mean 'zh'?"),
])
def test_language_problem_suggests_the_code_meant(code, expected):
    assert language_problem(code).startswith(expected)


def test_language_typos_get_close_codes_and_nonsense_gets_the_rule():
    assert "'ko'" in language_problem("koreen") and "not an ISO 639 code" in language_problem("koreen")
    assert language_problem("xx").startswith("'xx' is not an ISO 639 code (did you mean")
    assert language_problem("qqq") == ("'qqq' is not an ISO 639 code (use an ISO 639-1, 639-2 or 639-3 code in "
                                       "lower case, such as 'en', 'ko' or 'zho', or 'multilingual')")
    assert "must be a string" in language_problem(None)  # type: ignore[arg-type]


# -- tags ---------------------------------------------------------------------------------------------------
def test_duplicate_tags_are_found_ignoring_case_and_dedupe_keeps_the_first_spelling():
    tags = ["merge", "Chat-Vector", "MERGE", "ko", "chat-vector", "merge"]
    assert duplicate_tags(tags) == [(2, "MERGE", "merge"), (4, "chat-vector", "Chat-Vector"), (5, "merge", "merge")]
    assert dedupe_tags(tags) == ["merge", "Chat-Vector", "ko"]
    assert duplicate_tags([]) == [] and dedupe_tags(["a", "b"]) == ["a", "b"]


# -- whole mappings ---------------------------------------------------------------------------------------
GOOD = {
    "license": "llama3", "language": ["ko", "en"], "tags": ["merge", "chat-vector"], "library_name": "transformers",
    "pipeline_tag": "text-generation", "base_model": ["beomi/Llama-3-Open-Ko-8B", "meta-llama/Meta-Llama-3-8B"],
    "base_model_relation": "merge", "model-index": [{"name": "x", "results": []}],
}


def test_a_good_mapping_has_no_problems():
    assert metadata_problems(GOOD) == []
    assert metadata_problems({"license": "other", "license_name": "my-license", "license_link": "LICENSE"}) == []
    assert metadata_problems({"language": "ko"}) == []


@pytest.mark.parametrize("change, expected", [
    ({"tags": 3}, '"tags" must be a string or a list of strings'),
    ({"base_model": [1]}, '"base_model" must be a string or a list of strings'),
    ({"library_name": ["transformers"]}, '"library_name" must be a string'),
    ({"license": "MIT"}, '"license": \'MIT\' is not a Hub license id (did you mean \'mit\'?)'),
    ({"license": "other"}, '"license" is "other", so "license_name" must give the license an id '
                           '(and "license_link" its URL)'),
    ({"language": ["ko", "EN"]}, '"language[1]": \'EN\' must be in lower case (did you mean \'en\'?)'),
    ({"language": "Korean"}, '"language": \'Korean\' is a language name, not an ISO 639 code (did you mean \'ko\'?)'),
    ({"tags": ["merge", "Merge"]}, '"tags[1]": \'Merge\' repeats \'merge\' (tags are compared ignoring case)'),
    ({"base_model_relation": "blend"}, '"base_model_relation" must be one of adapter, merge, quantized, finetune'),
    ({"base_model": None}, '"base_model_relation" needs "base_model"'),
    ({"model-index": {"name": "x"}}, '"model-index" must be a list of mappings, each with a "name" and a list of '
                                     '"results"'),
    ({"model-index": ["x"]}, '"model-index[0]" must be a mapping with a "name" and a list of "results"'),
    ({"model-index": [{"results": []}]}, '"model-index[0].name" must be a string'),
    ({"model-index": [{"name": "x", "results": {}}]}, '"model-index[0].results" must be a list of mappings'),
])
def test_each_problem_names_its_key(change, expected):
    assert metadata_problems({**GOOD, **change}) == [expected]


def test_every_problem_is_reported_not_just_the_first():
    problems = metadata_problems({"license": "MIT", "language": "KO", "tags": ["a", "A"], "model-index": 1})
    assert [p.split(":")[0].split(" ")[0] for p in problems] == ['"license"', '"language"', '"tags[1]"',
                                                                '"model-index"']


def test_a_dataset_may_list_several_licenses():
    assert metadata_problems({"license": ["mit", "cc-by-4.0"]}, repo_type="dataset") == []
    assert metadata_problems({"license": ["mit", "MIT"]}, repo_type="dataset") == [
        '"license": \'MIT\' is not a Hub license id (did you mean \'mit\'?)']
    assert metadata_problems({"license": ["mit"]}) == ['"license" must be a string']


# -- README texts -----------------------------------------------------------------------------------------
def test_validate_card_errors_and_warnings():
    assert validate_card("---\nlicense: mit\n---\n# x\n") == ([], [])
    assert validate_card("# no metadata\n") == ([], [MISSING_METADATA])
    assert validate_card("---\n---\n# empty\n") == ([], [MISSING_METADATA])
    assert MISSING_METADATA.startswith("empty or missing yaml metadata in repo card")
    errors, warnings = validate_card("---\nlicense: [unclosed\n---\n")
    assert errors[0].startswith("Invalid YAML in the metadata block:") and warnings == []
    assert validate_card("---\n- a list\n---\n") == (["The metadata block must be a YAML mapping"], [])
    assert validate_card("---\nlicense: MIT\n---\n")[0] == [
        '"license": \'MIT\' is not a Hub license id (did you mean \'mit\'?)']
    assert card_errors("---\nbase_model_relation: merge\n---\n") == ['"base_model_relation" needs "base_model"']
    assert card_errors("# no metadata\n") == []


def test_front_matter_and_card_data():
    assert split_front_matter("---\na: 1\nb: 2\n---\nbody") == "a: 1\nb: 2"
    assert split_front_matter("no front matter") is None and split_front_matter("---\nunclosed: 1\n") is None
    assert parse_card_data("---\nlicense: mit\ntags: [a]\n---\n") == {"license": "mit", "tags": ["a"]}
    for text in ("# none", "---\n[unclosed\n---\n", "---\n- a\n---\n"):
        assert parse_card_data(text) is None


def test_the_module_is_light_and_independent_of_the_local_hub():
    code = ("import sys, chatvector.hub.cardrules as c; "
            "assert not [m for m in sys.modules if m.startswith('chatvector.localhub')]; "
            "assert 'pycountry' not in sys.modules and 'torch' not in sys.modules; "
            "c.language_problem('ko'); assert 'pycountry' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
