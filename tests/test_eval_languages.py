"""An answer's language is judged by parts: one that mixes the target language with another is not in the target
language (chatvector.evaluation.languages), and the fidelity score and the gate count it so."""

from __future__ import annotations

import pytest

from chatvector.evaluation import EvalResult, Requirements, Response, check_gate, detect_language, in_language
from chatvector.evaluation.languages import _identifier, language_shares, segments

KOREAN = "오늘 날씨가 정말 좋네요. 산책하기 좋은 날입니다. 공원에 가서 꽃을 구경하고 싶어요."
ENGLISH = "The weather today is really nice. It is a good day for a walk. I would like to see the flowers."
HALF_AND_HALF = "오늘 날씨가 정말 좋네요. 산책하기 좋은 날입니다. The weather today is really nice. It is a good day for a walk."


def _result(texts: list[str], language: str = "ko") -> EvalResult:
    responses = tuple(Response(prompt="p", response=t, language=detect_language(t), ended_with_eot=True)
                      for t in texts)
    return EvalResult(model="m", revision=None, language=language, prompts_source="shipped:ko", max_new_tokens=64,
                      seed=0, device="cpu", responses=responses)


def test_half_korean_half_english_is_mixed_not_korean():
    whole, _ = _identifier().classify(HALF_AND_HALF)
    assert whole == "ko"  # the classifier given the whole text: what counted this answer as Korean before
    assert set(language_shares(HALF_AND_HALF)) == {"ko", "en"}
    assert detect_language(HALF_AND_HALF) in ("ko+en", "en+ko")
    assert not in_language(detect_language(HALF_AND_HALF), "ko")
    assert not in_language(detect_language(HALF_AND_HALF), "en")


def test_an_answer_that_drifts_into_english_on_a_new_line_is_mixed():
    drifting = f"{KOREAN}\n{ENGLISH} It keeps going in English for a while, as a merge with too high a λ does."
    assert detect_language(drifting) == "en+ko"


def test_single_language_answers_keep_their_label():
    assert detect_language(KOREAN) == "ko"
    assert detect_language(ENGLISH) == "en"
    assert detect_language("日本の首都は東京です。東京には多くの観光地があります。浅草寺や東京タワーが有名です。") == "ja"
    assert detect_language("這是一個簡單的問題。請你用中文回答，謝謝。") == "zh-Hant"
    assert detect_language("") == detect_language(" 42 !") == "und"


def test_a_quoted_title_or_code_does_not_make_a_korean_answer_mixed():
    quoted = ("제가 가장 좋아하는 책은 'The Little Prince'입니다. 어린 왕자는 어른들에게도 많은 것을 가르쳐 줍니다. "
              "여러 번 읽어도 새로운 의미를 발견하게 됩니다.")
    assert detect_language(quoted) == "ko"
    code = ("파이썬에서 리스트를 정렬하려면 `sorted` 함수를 사용하세요.\n```python\nnumbers = [3, 1, 2]\n"
            "print(sorted(numbers))  # prints the sorted list\n```\n이렇게 하면 정렬된 새 리스트가 반환됩니다. "
            "원래 리스트는 바뀌지 않습니다.")
    assert detect_language(code) == "ko"
    assert all("print" not in part for part in segments(code))  # code is no language


def test_segments_cut_at_sentence_ends_and_lines_and_join_short_pieces():
    assert segments("Pi is 3.14 and e is 2.72 today. Yes.\nNo! Maybe?") == ["Pi is 3.14 and e is 2.72 today. Yes. No! Maybe?"]
    assert segments("First sentence is long enough. Second one is long enough too.") == [
        "First sentence is long enough.", "Second one is long enough too."]
    # a Hangul syllable weighs 3 letters: "네." alone is too short, "네. 정말 좋습니다." is not
    assert segments("네.\n정말 좋습니다.\n그렇게 하겠습니다.") == ["네. 정말 좋습니다.", "그렇게 하겠습니다."]
    assert segments("这是一个问题。那是一个答案。") == ["这是一个问题。", "那是一个答案。"]


@pytest.mark.parametrize(("detected", "target", "expected"), [
    ("zh-Hant", "zh", True), ("zh", "zh", True), ("zh+en", "zh", False), ("zh-Hant", "zh-Hant", True),
    ("zh-Hans", "zh-Hant", False), ("ko+en", "ko", False), ("ko", "ko", True),
])
def test_a_mixed_label_is_in_no_language(detected, target, expected):
    assert in_language(detected, target) is expected


def test_fidelity_and_the_gate_count_a_mixed_answer_as_off_target():
    result = _result([KOREAN, KOREAN, KOREAN, HALF_AND_HALF])
    assert result.fidelity == 0.75
    (line,) = check_gate(result, Requirements(fidelity=0.9))
    assert line.startswith("fidelity 0.75 < 0.9 required (eval.require.fidelity): 1 of 4 responses were not in ko "
                           "(detected: ")
    assert line.endswith(f"{detect_language(HALF_AND_HALF)})")
