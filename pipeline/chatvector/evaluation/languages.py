"""Which language a response is in: py3langid's classifier (its model ships inside the wheel, so nothing is
downloaded at run time; the same text always gets the same label), plus a script check for Chinese.

py3langid says "zh" for Chinese in either script (and "yue"/"wuu" for Cantonese/Wu, which are folded into
"zh" here: a Taiwanese or Hong Kong answer is sometimes labelled so). A Chinese text is then "zh-Hant" or
"zh-Hans" by the characters it holds (`chinese_script`), or stays "zh" when it holds no character that differs
between the two scripts. Text without a letter (empty, only punctuation, digits or markup) is "und".

An answer is judged by parts, so that one that drifts from the target language into another is not counted as
the language it starts in (the classifier, given the whole text, names its larger part). Code (``` blocks and
`inline` spans) is left out: it is no language. The rest is cut at sentence ends and line breaks; a piece
shorter than MIN_SEGMENT_LETTERS letters is joined with the next (a few words are too little to classify), and
each part is classified. Letters are weighed by what they carry: a Hangul syllable, kana or CJK ideograph
counts as WIDE_LETTER_WEIGHT Latin letters (a Korean or Chinese sentence is about a third as many characters as
its English translation). When the parts of one language hold at least MAIN_LANGUAGE_SHARE of the weight, the
answer is in that language (a quoted English title in a Korean answer does not make it mixed); otherwise it is
mixed, labelled with its languages joined by "+" from the largest share down ("ko+en"), and such a label is in
no target language.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections import Counter

from chatvector.evaluation.hanzi import chinese_script

# py3langid 0.4's labels (ISO 639 codes; "zxx": no linguistic content). A test compares them with the library's.
LANGID_LABELS = (
    "af", "am", "ar", "as", "az", "be", "bg", "bn", "br", "bs", "ca", "cs", "cy", "da", "de", "el", "en", "eo",
    "es", "et", "eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl", "gu", "ha", "he", "hi", "hr", "ht", "hu", "hy",
    "id", "ig", "is", "it", "ja", "jv", "ka", "kk", "km", "kn", "ko", "ku", "ky", "la", "lg", "ln", "lo", "lt",
    "lv", "mg", "mk", "ml", "mn", "mr", "ms", "my", "ne", "nl", "no", "om", "or", "pa", "pl", "ps", "pt", "qu",
    "ro", "ru", "sa", "si", "sk", "sl", "so", "sq", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "ug", "uk",
    "ur", "uz", "vi", "xh", "yo", "zh", "zu", "zxx", "ace", "bcl", "dz", "ext", "gcf", "gom", "grc", "gug", "hbo",
    "kik", "nso", "pcm", "rw", "se", "sn", "st", "an", "ary", "crh", "fo", "fuv", "gcr", "guw", "kab", "lb", "lij",
    "ltg", "uzs", "wa", "sdh", "arz", "ba", "mt", "nn", "oc", "tg", "tk", "tt", "vec", "vo", "wuu", "yue",
)
CHINESE_LABELS = ("zh", "yue", "wuu")  # folded into "zh", then told apart by script
SCRIPTS = {"zh-Hant": "Hant", "zh-Hans": "Hans"}
UNDETERMINED = "und"
MIXED_SEPARATOR = "+"  # "ko+en": parts in Korean and in English, neither holding MAIN_LANGUAGE_SHARE
MIN_SEGMENT_LETTERS = 16  # (weighted) a shorter sentence is classified together with the next
MAIN_LANGUAGE_SHARE = 0.8  # of the weighted letters, for an answer to be in one language
WIDE_LETTER_WEIGHT = 3  # a Hangul syllable, kana or CJK ideograph, in Latin letters
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)  # fenced blocks (maybe cut off) and inline spans
# Sentence ends: . ! ? followed by a space (not "3.14"), the CJK full-width marks anywhere, and line breaks.
_SEGMENT_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
# Country or locale codes people write for a language, suggested (not taken) when they are given.
_COUNTRY_CODES = {"kr": "ko", "kor": "ko", "jp": "ja", "jpn": "ja", "cn": "zh-Hans", "zh-cn": "zh-Hans",
                  "zh-sg": "zh-Hans", "tw": "zh-Hant", "zh-tw": "zh-Hant", "zh-hk": "zh-Hant", "hk": "zh-Hant"}
# Every target a prompt set can name: the classifier's languages, and Chinese by script.
LANGUAGES = tuple(sorted({*LANGID_LABELS, *SCRIPTS} - {"zxx", "yue", "wuu"}))


def canonical_language(code: object) -> str:
    """"ko", "zh-Hant", ... for a target language as a user writes it (`KO`, `zh_hant`); ValueError otherwise."""
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"expected a language code such as ko, ja or zh-Hant, got {code!r}")
    text = code.strip().replace("_", "-")
    by_lower = {c.lower(): c for c in LANGUAGES}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    close = _COUNTRY_CODES.get(text.lower()) or next(iter(difflib.get_close_matches(text.lower(), list(by_lower), n=1,
                                                                                    cutoff=0.6)), None)
    hint = f" (did you mean '{by_lower.get(close, close)}'?)" if close else ""
    raise ValueError(f"unknown language code '{code}'{hint}: give an ISO 639-1 code the language identifier knows "
                     "(ko, ja, en, ...) or zh-Hant / zh-Hans")


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)  # raw scores: only the best label is used


def _letters(text: str) -> int:
    """The letters of `text`, a wide (East Asian) one counting WIDE_LETTER_WEIGHT."""
    return sum(WIDE_LETTER_WEIGHT if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text if ch.isalpha())


def _without_code(text: str) -> str:
    """`text` with code blocks turned into line breaks and inline code into spaces (code is no language)."""
    return _CODE.sub(lambda m: "\n" if m.group().startswith("```") else " ", text)


def segments(text: str) -> list[str]:
    """`text` without code, cut at sentence ends and line breaks, short pieces joined so that each holds at
    least MIN_SEGMENT_LETTERS (weighted) letters (the last piece short of that joins the one before it)."""
    parts, pending = [], ""
    for piece in _SEGMENT_BREAK.split(_without_code(text)):
        pending = f"{pending} {piece}" if pending else piece
        if _letters(pending) >= MIN_SEGMENT_LETTERS:
            parts.append(pending)
            pending = ""
    if pending.strip():
        if parts:
            parts[-1] = f"{parts[-1]} {pending}"
        else:
            parts.append(pending)
    return parts


def _classify(text: str) -> str:
    """py3langid's label, Chinese folded into "zh", "und" without letters or linguistic content."""
    if not any(ch.isalpha() for ch in text):
        return UNDETERMINED
    label, _ = _identifier().classify(text)
    if label == "zxx":
        return UNDETERMINED
    return "zh" if label in CHINESE_LABELS else label


def language_shares(text: str) -> dict[str, float]:
    """Each language's share of the letters of `text`'s classified segments, largest first ({} without letters)."""
    letters = Counter()
    for part in segments(text):
        label = _classify(part)
        if label != UNDETERMINED:
            letters[label] += _letters(part)
    total = sum(letters.values())
    ranked = sorted(letters.items(), key=lambda item: (-item[1], item[0]))
    return {label: count / total for label, count in ranked}


def detect_language(text: str) -> str:
    """The language of `text`: a py3langid label, "zh-Hant"/"zh-Hans"/"zh" for Chinese, "und" without letters,
    or languages joined by "+" ("ko+en") when no one of them holds MAIN_LANGUAGE_SHARE of its letters."""
    shares = language_shares(text)
    if not shares:
        return UNDETERMINED
    main, share = next(iter(shares.items()))
    if share < MAIN_LANGUAGE_SHARE:
        return MIXED_SEPARATOR.join(shares)
    if main == "zh":
        script = chinese_script(text)
        return f"zh-{script}" if script else "zh"
    return main


def in_language(detected: str, target: str) -> bool:
    """Whether a response detected as `detected` is in `target` ("zh" accepts Chinese in either script; a mixed
    label such as "zh+en" is in no language)."""
    return detected == target or (target == "zh" and detected in ("zh", *(f"zh-{s}" for s in SCRIPTS.values())))
