"""Verifiable text rewards in the TRL convention: ``fn(completions, **columns) -> list[float]``.

``columns`` are the example's dataset columns, one entry per completion (``qa_solution``,
``qa_type``, ``qa_problem``...). Unknown columns are ignored so every reward can be called the same way.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction
from typing import Any, Sequence

from corl.data.templates import extract_answer, solution_answer
from corl.modules.rewards.math_answers import math_equal

_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"  # any text that opens or closes no tag
_FORMAT = re.compile(rf"\s*<think>{_NO_TAG}</think>\s*<answer>{_NO_TAG}</answer>\s*", re.S)
_OPTION_LINE = re.compile(r"(?:^|\s)\(?([A-Z])[.):]\s*(.+?)(?=\s+\(?[A-Z][.):]\s|\n|$)", re.M)
_LETTER_FORMS = (
    re.compile(r"^\(?([A-Za-z])\)?[.:)]?$"),  # B  B.  (B)  B)  B:  and a lone "b", which can only be a letter
    # the words in any case, the letter upper case only: "the answer is a cat" does not pick option A
    re.compile(r"^(?i:the\s+)?(?i:correct\s+)?(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([A-Z])\)?[.:)]?(?:\s|$)"),
    re.compile(r"^\(?([A-Z])[.:)]\s+\S"),  # "B. the text of option B"
)
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_ARTICLES = {"a", "an", "the"}
# "A" opening the answer or an option's text ("B. A dog") is an article, not option A; "A or B" is not
_ARTICLE_A = re.compile(r"(^|\(?\b[A-Z][.:)]\s*)A\s+(?!(?:or|and|nor|vs)\b)(?=[a-z])")
OE_MATCHES = ("exact", "soft")


def format_reward(completions: Sequence[str], **columns: Any) -> list[float]:
    """1.0 for exactly one ``<think>`` block followed by exactly one ``<answer>`` block, else 0.0."""
    return [1.0 if _FORMAT.fullmatch(c) else 0.0 for c in completions]


def _answer_or_fallback(completion: str, lenient: bool) -> str | None:
    answer = extract_answer(completion)
    if answer is None and lenient:
        answer = completion.strip()
    return answer


def _options(problem: str) -> dict[str, str]:
    """Option letter -> option text, read from a question such as ``Options: A. x B. y``."""
    return {m.group(1): m.group(2).strip() for m in _OPTION_LINE.finditer(problem or "")}


def _letter(answer: str) -> str | None:
    answer = answer.strip()
    for form in _LETTER_FORMS:
        m = form.match(answer)
        if m:
            return m.group(1).upper()
    return None


def _named_letters(answer: str) -> set[str]:
    """Every standalone capital letter the answer names; more than one means a hedge.

    An article "A" that opens the answer or an option's text is skipped, so "B. A dog" names only B.
    """
    answer = _ARTICLE_A.sub(r"\1", answer.strip())
    return set(re.findall(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])", answer))


def mcq_choice(answer: str, options: dict[str, str]) -> str | None:
    """The single option an answer picks (by letter or by the option's text), else None."""
    if len(_named_letters(answer) & (set(options) or set(string.ascii_uppercase))) > 1:
        return None  # "A or B" names several options: a hedge scores nothing
    letter = _letter(answer)
    if letter is not None:
        return letter
    norm = normalize_answer(answer)
    matches = [k for k, text in options.items() if normalize_answer(text) == norm]
    return matches[0] if len(matches) == 1 else None


def mcq_accuracy_reward(
    completions: Sequence[str],
    qa_solution: Sequence[str],
    qa_problem: Sequence[str] | None = None,
    lenient: bool = False,
    **columns: Any,
) -> list[float]:
    """1.0 when the answer picks the correct option (letter in its common spellings, or its text).

    Args:
        completions: the model's outputs.
        qa_solution: ground truth per completion; its ``<answer>`` block is used if present.
        qa_problem: the question text, to read option texts from (optional).
        lenient: when no ``<answer>`` block exists, grade the whole completion instead of scoring 0.
        **columns: other dataset columns, ignored.
    """
    problems = qa_problem if qa_problem is not None else [""] * len(completions)
    scores = []
    for completion, solution, problem in zip(completions, qa_solution, problems, strict=True):
        options = _options(problem)
        truth = mcq_choice(solution_answer(solution), options)
        answer = _answer_or_fallback(completion, lenient)
        scores.append(1.0 if answer is not None and truth is not None and mcq_choice(answer, options) == truth else 0.0)
    return scores


def _fraction(text: str) -> str | None:
    r"""Canonical form of a simple or LaTeX fraction or a number, so 1/2, \frac{1}{2}, 0.5 agree."""
    text = text.replace(" ", "")
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", text) or re.fullmatch(r"(-?\d+)/(-?\d+)", text)
    try:
        value = Fraction(int(m.group(1)), int(m.group(2))) if m else Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return str(value)


def normalize_answer(text: str) -> str:
    """Lower case, no math delimiters, punctuation or articles, number words as digits, fractions canonical.

    A hyphen between letters is a space ("ice-cream" is "ice cream"); a minus before a number is kept.
    """
    text = text.strip().replace("$", "")
    text = re.sub(r"\\(?:text|mathrm)\{([^}]*)\}", r"\1", text)
    text = re.sub(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(-?\d+)\s*\}", r"\1/\2", text)  # also inside a sentence
    number = _fraction(text)
    if number is not None:
        return number
    text = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", text.lower())
    text = "".join(ch for ch in text if ch not in string.punctuation or ch in "/.-")
    text = text.strip(".")
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    words = [_fraction(w) or w for w in words]
    return " ".join(words)


def answers_match(answer: str, truth: str) -> bool:
    """Whether an open-ended answer is right: by value when both sides are math, else by normalised text.

    Math decides alone when it can read both sides, because the text normalisation drops symbols that
    carry value ("2^3" would become "23").
    """
    same_value = math_equal(answer, truth)
    if same_value is not None:
        return same_value
    return normalize_answer(answer) == normalize_answer(truth)


def word_jaccard(answer: str, truth: str) -> float:
    """``|A ∩ B| / |A ∪ B|`` of the two normalised answers' word sets; 0.0 when either has no words."""
    answer_words, truth_words = set(normalize_answer(answer).split()), set(normalize_answer(truth).split())
    if not answer_words or not truth_words:
        return 0.0
    return len(answer_words & truth_words) / len(answer_words | truth_words)


def oe_score(answer: str, truth: str, oe_match: str = "exact") -> float:
    """1.0 for a matching answer; otherwise 0.0, or its word overlap with the truth under ``"soft"``."""
    if answers_match(answer, truth):
        return 1.0
    return word_jaccard(answer, truth) if oe_match == "soft" else 0.0


def _check_oe_match(oe_match: str) -> None:
    if oe_match not in OE_MATCHES:
        raise ValueError(f"oe_match must be one of {OE_MATCHES}, got {oe_match!r}")


def oe_accuracy_reward(
    completions: Sequence[str],
    qa_solution: Sequence[str],
    lenient: bool = False,
    oe_match: str = "exact",
    **columns: Any,
) -> list[float]:
    """Open-ended accuracy: math answers compared by value, others by normalised text (``answers_match``).

    Args:
        completions: the model's outputs.
        qa_solution: ground truth per completion; its ``<answer>`` block is used if present.
        lenient: when no ``<answer>`` block exists, grade the whole completion instead of scoring 0.
        oe_match: ``"exact"`` scores 1 or 0. ``"soft"`` is the CoRL authors' partial credit: a wrong
            answer scores the word Jaccard ``|A ∩ B| / |A ∪ B|`` of its normalised words with the truth's
            ("red ball" for "red" scores 0.5), which rewards near misses but also padded answers.
        **columns: other dataset columns, ignored.
    """
    _check_oe_match(oe_match)
    scores = []
    for completion, solution in zip(completions, qa_solution, strict=True):
        answer = _answer_or_fallback(completion, lenient)
        truth = solution_answer(solution)
        scores.append(0.0 if answer is None else oe_score(answer, truth, oe_match))
    return scores


def accuracy_reward(
    completions: Sequence[str],
    qa_solution: Sequence[str],
    qa_type: Sequence[str],
    qa_problem: Sequence[str] | None = None,
    lenient: bool = False,
    oe_match: str = "exact",
    **columns: Any,
) -> list[float]:
    """Dispatch per item on ``qa_type``: ``"MC"`` is multiple choice, anything else open-ended.

    Args:
        completions: the model's outputs.
        qa_solution: ground truth per completion; its ``<answer>`` block is used if present.
        qa_type: ``"MC"`` (any case) for multiple choice; any other value is open-ended.
        qa_problem: the question text, to read option texts from (optional).
        lenient: when no ``<answer>`` block exists, grade the whole completion instead of scoring 0.
        oe_match: ``"exact"`` or ``"soft"`` partial credit for open-ended items (see ``oe_accuracy_reward``).
        **columns: other dataset columns, ignored.
    """
    _check_oe_match(oe_match)
    problems = qa_problem if qa_problem is not None else [""] * len(completions)
    scores = []
    for completion, solution, kind, problem in zip(completions, qa_solution, qa_type, problems, strict=True):
        if str(kind).strip().upper() == "MC":
            scores += mcq_accuracy_reward([completion], [solution], [problem], lenient=lenient)
        else:
            scores += oe_accuracy_reward([completion], [solution], lenient=lenient, oe_match=oe_match)
    return scores
