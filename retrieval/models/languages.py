"""The language of a query, for text towers that must be told it: NLLB-CLIP reads a FLORES-200 code before the
sentence (as it was trained, and as Immich feeds it), taken from `--lang`, else the locale, else English.

Only a few hundred bytes of table: the languages people search photos in most, by ISO 639-1 code; any FLORES-200
code (`deu_Latn`) is taken as it is.
"""

from __future__ import annotations

import os
import re

from clipdex.retrieval.errors import UsageError

ENGLISH = "eng_Latn"
_FLORES = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
FLORES_200 = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl",
    "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn", "es": "spa_Latn", "et": "est_Latn",
    "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn",
    "gu": "guj_Gujr", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "mk": "mkd_Cyrl",
    "ml": "mal_Mlym", "mr": "mar_Deva", "ms": "zsm_Latn", "my": "mya_Mymr", "nb": "nob_Latn", "ne": "npi_Deva",
    "nl": "nld_Latn", "nn": "nno_Latn", "no": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "sq": "als_Latn",
    "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai",
    "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn",
    "zh": "zho_Hans", "zh-tw": "zho_Hant", "zh-hk": "zho_Hant", "zh-hant": "zho_Hant",
}


def flores_code(language: str) -> str | None:
    """The FLORES-200 code of `language` (`de`, `de-DE`, `de_DE.UTF-8`, `zh-TW` or `deu_Latn`), or None."""
    if _FLORES.fullmatch(language):
        return language
    tag = language.split(".")[0].split("@")[0].replace("_", "-").lower()
    return FLORES_200.get(tag) or FLORES_200.get(tag.split("-")[0])


def query_language(asked: str | None) -> str:
    """The code a query is read in: `--lang` when given (unknown: a usage error), else the locale's language when
    the table knows it, else English."""
    if asked is not None:
        found = flores_code(asked.strip()) if asked.strip() else None
        if found is None:
            raise UsageError(f"unknown language {asked!r} for --lang: give an ISO 639-1 code (de, ja, zh-TW) or a "
                             f"FLORES-200 code (deu_Latn)")
        return found
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            return flores_code(value) or ENGLISH
    return ENGLISH
