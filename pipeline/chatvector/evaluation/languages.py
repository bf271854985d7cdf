"""Which language a response is in: py3langid's classifier (its model ships inside the wheel, so nothing is
downloaded at run time; the same text always gets the same label), plus a script check for Chinese.

py3langid says "zh" for Chinese in either script (and "yue"/"wuu" for Cantonese/Wu, which are folded into
"zh" here: a Taiwanese or Hong Kong answer is sometimes labelled so). A Chinese text is then "zh-Hant" or
"zh-Hans" by the characters it holds (`chinese_script`), or stays "zh" when it holds no character that differs
between the two scripts. Text without a letter (empty, only punctuation, digits or markup) is "und".
"""

from __future__ import annotations

import difflib
import functools

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


def detect_language(text: str) -> str:
    """The language of `text`: a py3langid label, "zh-Hant"/"zh-Hans"/"zh" for Chinese, "und" without letters."""
    if not any(ch.isalpha() for ch in text):
        return UNDETERMINED
    label, _ = _identifier().classify(text)
    if label == "zxx":
        return UNDETERMINED
    if label in CHINESE_LABELS:
        script = chinese_script(text)
        return f"zh-{script}" if script else "zh"
    return label


def in_language(detected: str, target: str) -> bool:
    """Whether a response detected as `detected` is in `target` ("zh" accepts Chinese in either script)."""
    return detected == target or (target == "zh" and detected.startswith("zh"))
