"""One spelling for every way of typing a name: case, accents, ``ё``/``е``, Cyrillic or Latin.

``fold("Юлия") == fold("yulia") == fold("Julia") == fold("iuliia")``. The directory looks names
up by their folded form and the config check refuses two names that fold alike, so whatever a
supervisor types on whichever keyboard reaches one entry, or is refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

# Russian (and the few extra Ukrainian/Belarusian letters) to Latin, in the everyday style of
# names in Latin letters: "Юрий Щукин" -> "yuriy shchukin", "Наталья" -> "natalya".
CYRILLIC: Final[Mapping[str, str]] = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip
# Latin letters that Unicode decomposition does not reduce to ASCII
LATIN: Final[Mapping[str, str]] = {
    "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
    "ı": "i",
}  # fmt: skip

_TO_LATIN: Final = str.maketrans({**CYRILLIC, **LATIN})

# The ways one Russian sound is written in Latin letters, each reduced to one mark; in this
# order, longest first (upper-case letters are marks: the text is lower-case by then).
# ш and щ are one, as are "ye"/"e" and "ia"/"ya"/"iya": people write them either way.
_SOUNDS: Final[tuple[tuple[str, str], ...]] = (
    ("shch", "S"),  # щ
    ("sch", "S"),
    ("sh", "S"),  # ш
    ("zh", "Z"),  # ж
    ("kh", "h"),  # х: "Khabib", "Habib"
    ("tch", "C"),  # ч: "Tchaikovsky"
    ("ch", "C"),
    ("ck", "k"),
    ("ph", "f"),
    ("c", "k"),  # "Victor" is "Виктор"
    ("q", "k"),
    ("x", "ks"),  # "Alexey" is "Алексей"
    ("w", "v"),  # "Wladimir"
    ("ts", "c"),  # ц: "Tsoy"
    ("tz", "c"),
    ("j", "y"),  # "Julia", "Sergej"
    ("yo", "e"),  # ё: "Fyodor" is "Фёдор"
    ("ye", "e"),  # е: "Yelena" is "Елена"
    ("ie", "e"),  # "Soloviev" is "Соловьёв"
    ("iu", "U"),  # ю: "Iuliia", "Yulia"
    ("yu", "U"),
    ("iya", "A"),  # я: "Mariya", "Maria", "Мария"
    ("ii", "i"),  # "Iuliia", "Evgenii"
    ("ya", "A"),
    ("ia", "A"),
)
# й is "i" or "y" in Latin where it ends a syllable ("Sergei", "Sergey", "Aigul", "Aygul",
# "Evgenii", "Evgeny"), so there "y" is "i"; elsewhere "y" stays: "Йван" is not "Иван",
# and ы is "y" ("Krylov")
_SYLLABLE_END_Y: Final = re.compile(r"y(?![a-z])|(?<=[aeiouAU])y(?![aeiouAU])")
_PLAIN: Final = re.compile(r"[a-z0-9_.\- ]*")


@lru_cache(maxsize=1 << 16)  # names share their words: "Анна", "Иванов"
def fold(word: str) -> str:
    """The skeleton of ``word``: equal for spellings of one name in either script."""
    text = unicodedata.normalize("NFC", word).casefold()
    if not _PLAIN.fullmatch(text):
        text = text.translate(_TO_LATIN)
        if not text.isascii():
            # "é" -> "e", "ӓ" -> "a"; marks of other scripts go too, their letters stay
            text = "".join(
                c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
            ).translate(_TO_LATIN)
    for spelled, sound in _SOUNDS:
        if spelled in text:
            text = text.replace(spelled, sound)
    if "y" in text:
        text = _SYLLABLE_END_Y.sub("i", text).replace("ii", "i")
    return text
