r"""Grading mathematical open-ended answers by value with Hugging Face's ``math-verify``.

Math-VQA ground truths are written many ways (``2\sqrt{2}``, ``2√2``, ``√8``; ``30°``, ``30^\circ``;
``5 cm``; ``x = 3``), so a string match fails correct answers. ``math-verify`` compares values, but its
lenient extractors read the leading number of ``2√2`` and would credit ``2``. This module therefore only
hands ``math-verify`` an answer that ``latex2sympy`` (strict: it raises on what it cannot read) has read
whole, after turning unicode math into LaTeX and splitting off a trailing unit. Anything else is
"not math" (``None``) and is left to the caller's word matching.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import math_verify
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig

# math-verify's signal-based timeouts only work in the main thread (rewards may run elsewhere), so they are
# off; it warns once about that. Long strings are refused instead (MAX_MATH_CHARS), which bounds the work.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_MATH_CHARS = 100  # longer answers are sentences or derivations, not a value to compare

# One normalisation for the strict check and for math-verify, so both read the same text. Units are split
# off here (units=False) so that "5 m" against "5 cm" is not two bare 5s.
_NORMALIZATION = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all")
_EXTRACTION = [math_verify.LatexExtractionConfig(normalization_config=_NORMALIZATION)]

_UNICODE_LATEX = {
    "π": r"\pi ",
    "°": r"^\circ ",
    "²": "^2",
    "³": "^3",
    "×": r"\times ",
    "÷": r"\div ",
    "·": r"\cdot ",
    "−": "-",  # unicode minus: kept as a sign, "−3" is -3 (an en dash is a range, "3–5", and stays unread)
    "≤": r"\le ",
    "≥": r"\ge ",
    "≠": r"\neq ",
    "∞": r"\infty ",
}
_DELIMITERS = re.compile(r"^\$\$(.*)\$\$$|^\$(.*)\$$|^\\\((.*)\\\)$|^\\\[(.*)\\\]$", re.S)
_TEXT_WRAPPER = re.compile(r"\\(?:text|mathrm|textrm|mbox|rm)\s*\{([^{}]*)\}")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d)")

# Unit spellings -> one canonical name; plurals ("meters", "units") are added below.
_UNIT_NAMES = {
    "mm": ("millimeter", "millimetre"),
    "cm": ("centimeter", "centimetre"),
    "m": ("meter", "metre"),
    "km": ("kilometer", "kilometre"),
    "in": ("inch", "inches"),
    "ft": ("foot", "feet"),
    "mg": ("milligram",),
    "g": ("gram",),
    "kg": ("kilogram",),
    "ml": ("milliliter", "millilitre"),
    "l": ("liter", "litre"),
    "s": ("sec", "second"),
    "min": ("minute",),
    "h": ("hr", "hour"),
    "m/s": (),
    "km/h": ("kmh",),
    "mph": (),
    "unit": (),
    "deg": ("degree",),
    "%": ("percent",),
}
_UNIT_ALIASES = {
    spelling: unit
    for unit, aliases in _UNIT_NAMES.items()
    for alias in (unit, *aliases)
    for spelling in ((alias, alias + "s") if len(alias) > 2 and alias.isalpha() else (alias,))
}
_UNIT_WORDS = "|".join(re.escape(w) for w in sorted(_UNIT_ALIASES, key=len, reverse=True) if w not in ("s", "%"))
_DEGREE = r"(?:\^\s*\{?\s*\\circ\s*\}?|\\degree)"
_UNIT = re.compile(
    # the value ends in a digit, brace, bracket or \pi; after \pi only a unit of 2+ letters: "2\pi h" is a formula
    r"^(?P<value>.*?(?:\d|\}|\)|\\pi(?=\s*[A-Za-z]{2})))\s*(?P<unit>"
    rf"(?:(?:square|sq\.?|cubic)\s+)?(?:{_UNIT_WORDS})(?:\^\{{?[23]\}}?)?"  # cm, meters, cm^2, square units
    r"|(?<=\s)s"  # seconds only after a space: "1990s" is a decade
    rf"|{_DEGREE}\s*[CF]?"  # 30^\circ, 25^\circ C
    r"|\\?%"
    r")\.?$",
    re.I | re.S,
)
_MATH_SIGN = re.compile(r"\d|\\sqrt|\\frac|\\pi")
_NOT_MATH = re.compile(
    r":"  # clock times (3:45 would equal 1:15 as ratios)
    r"|\d\s+\d"  # "3 4": latex2sympy adds juxtaposed numbers
    r"|\d\.\d+\.\d"  # version numbers such as 1.5.2
)
_WORD = re.compile(r"[^\W\d_]{2,}")


def latex_of(text: str) -> str:
    r"""The answer as plain LaTeX: no ``$`` delimiters, ``\text{}`` wrappers or thousands separators.

    Unicode math becomes LaTeX that ``latex2sympy`` reads (``2√2`` -> ``2\sqrt{2}``, ``π`` -> ``\pi``,
    ``°`` -> ``^\circ``); a ``\boxed{}`` around the whole answer is removed so its unit can be split off.
    """
    text = text.strip().rstrip(".").strip()
    delimited = _DELIMITERS.match(text)
    if delimited:
        text = next(g for g in delimited.groups() if g is not None).strip()
    text = unbox(text)
    text = _TEXT_WRAPPER.sub(r" \1", text)
    text = _LATEX_SPACE.sub(" ", text)
    text = re.sub(r"√\s*\(([^()]*)\)", r"\\sqrt{\1}", text)  # √(x+1): the parentheses are the radicand
    text = re.sub(r"√\s*(\d+(?:\.\d+)?|[A-Za-z]|\\pi)", r"\\sqrt{\1}", text)  # √2, √x
    text = re.sub(r"√\s*\{", r"\\sqrt{", text)
    for char, latex in _UNICODE_LATEX.items():
        text = text.replace(char, latex)
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    return re.sub(r"\s+", " ", text).strip()


def unbox(text: str) -> str:
    r"""The inside of a ``\boxed{...}`` that spans the whole text, else the text unchanged."""
    opening = re.match(r"\\boxed\s*\{", text)
    if opening is None:
        return text
    depth = 0
    for end in range(opening.end() - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:  # the box's own closing brace: it must be the last character
            return text[opening.end() : end].strip() if end == len(text) - 1 else text
    return text


def canonical_unit(unit: str) -> str:
    """One name per unit, so ``cm²``, ``cm^{2}`` and ``square centimeters`` compare equal."""
    unit = re.sub(r"[\s{}]", "", unit.lower())
    power = ""
    prefixed = re.fullmatch(r"(square|sq\.?|cubic)(.+)", unit)
    if prefixed:
        power, unit = ("^3" if prefixed.group(1) == "cubic" else "^2"), prefixed.group(2)
    raised = re.fullmatch(r"(.+?)\^([23])", unit)
    if raised:
        power, unit = "^" + raised.group(2), raised.group(1)
    degree = re.fullmatch(r"(?:\^\\circ|\\degree)([cf]?)", unit)
    if degree:
        return "deg" + degree.group(1)
    return _UNIT_ALIASES.get(unit.lstrip("\\"), unit) + power


def split_unit(latex: str) -> tuple[str, str | None]:
    """``(value, canonical unit)`` of an answer with a trailing unit, else ``(latex, None)``."""
    found = _UNIT.match(latex)
    if found is None:
        return latex, None
    return found.group("value").strip(), canonical_unit(found.group("unit"))


def looks_mathematical(value: str) -> bool:
    r"""Whether a unit-free LaTeX value is a number or formula rather than words.

    It needs a digit, ``\sqrt``, ``\frac`` or ``\pi``, and no word of two or more letters once LaTeX
    commands are removed, so "3 apples" and "cat" are left to word matching while "x + 1" is math.
    """
    if not _MATH_SIGN.search(value) or _NOT_MATH.search(value):
        return False
    return not _WORD.search(re.sub(r"\\[A-Za-z]+", " ", value))


@lru_cache(maxsize=4096)  # ground truths repeat once per sampled completion; the size bounds memory
def read_math(text: str) -> tuple[tuple[Any, ...], str | None] | None:
    """``(math-verify parse, unit)`` of an answer read whole, or None when it is not (all of it) math.

    ``latex2sympy`` raises on any part it cannot read, so a value it accepts is the whole answer and
    math-verify cannot fall back to a leading number.
    """
    if len(text) > MAX_MATH_CHARS:
        return None
    value, unit = split_unit(latex_of(text))
    if not looks_mathematical(value):
        return None
    try:
        if latex2sympy(value, normalization_config=_NORMALIZATION) is None:
            return None
    except Exception:  # the parser raises plain Exceptions of many kinds on unreadable input
        return None
    parsed = math_verify.parse(f"${value}$", extraction_config=_EXTRACTION, parsing_timeout=None)
    if not parsed or isinstance(parsed[0], str):
        return None
    return tuple(parsed), unit


def math_equal(answer: str, truth: str) -> bool | None:
    """Whether two mathematical answers have the same value; None when either is not math.

    A unit on one side only is allowed ("5 cm" for "5"); two different units are not ("5 m" for "5 cm").
    """
    read_answer, read_truth = read_math(answer), read_math(truth)
    if read_answer is None or read_truth is None:
        return None
    (answer_value, answer_unit), (truth_value, truth_unit) = read_answer, read_truth
    if answer_unit and truth_unit and answer_unit != truth_unit:
        return False
    return math_verify.verify(list(truth_value), list(answer_value), timeout_seconds=None)
