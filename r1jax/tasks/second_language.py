"""A second "language" for the reasoning text: the English steps spelled in Greek letters.

R1-Zero's chains of thought mixed languages; the fix (the language-consistency reward) is only
measurable when the base model knows two ways to write the same reasoning. The embedded world's
minority language is English transliterated letter by letter into the Greek script ('wait, let me
check' -> 'ςαιτ, λετ με ψηεψκ'): the two vocabularies are disjoint (no word of one is a word of
the other, and `rewards.language` counts them as different scripts, 'latin' vs 'greek'), the
steps say exactly the same thing, and the map is invertible, so `to_latin` turns a Greek chain
of thought back into English that `rewards.aha` can scan for reflection. Greek text is lower case;
digits, punctuation and spaces are kept.
"""
from __future__ import annotations

SCRIPT = "greek"
"""The minority language's script, as `rewards.language.language_share` names it."""
NATIVE = "latin"
_LATIN = "abcdefghijklmnopqrstuvwxyz"
_GREEK = "αβψδεφγηιξκλμνοπθρστυωςχζϝ"  # ς (final sigma) writes w, ϝ (digamma) z: 26 distinct letters
TO_GREEK = dict(zip(_LATIN, _GREEK))
TO_LATIN = {g: l for l, g in TO_GREEK.items()}


def to_greek(text: str) -> str:
  """`text` with every Latin letter (either case) replaced by its Greek letter."""
  return "".join(TO_GREEK.get(c.lower(), c) if c.isascii() else c for c in text)


def to_latin(text: str) -> str:
  """The inverse of `to_greek` on its image (lower-cased English); other characters unchanged."""
  return "".join(TO_LATIN.get(c, c) for c in text)


def render(text: str, lang: str) -> str:
  """`text` in `lang`: 'en' (unchanged) or 'el' (Greek letters)."""
  if lang == "en":
    return text
  if lang == "el":
    return to_greek(text)
  raise ValueError(f"reasoning language {lang!r} is not one of ('en', 'el')")
