import logging
import threading

import pytest
from math_verify import grader, parser

from corl.modules.rewards.math_answers import (
    MAX_MATH_CHARS,
    canonical_unit,
    latex_of,
    looks_mathematical,
    math_equal,
    read_math,
    split_unit,
    unbox,
)

# --------------------------------------------------------------------------------------------- by value


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("2√2", "2\\sqrt{2}"),
        ("2√2", "√8"),
        ("2\\sqrt2", "\\sqrt{8}"),  # malformed LaTeX that the shared normalisation repairs
        ("√(2)/2", "\\frac{\\sqrt{2}}{2}"),
        ("√3/2", "\\frac{\\sqrt{3}}{2}"),
        ("10π", "10\\pi"),
        ("πr²", "\\pi r^2"),
        ("1/2", "0.5"),
        ("\\frac12", "0.5"),
        ("$\\frac{1}{2}$", "1/2"),
        ("$\\frac{1}{2}$.", "1/2"),
        ("-0.25", "-1/4"),
        ("−3", "-3"),  # unicode minus
        ("30°", "30"),
        ("30°", "30^\\circ"),
        ("30^{\\circ}", "30 degrees"),
        ("5 cm", "5"),  # a unit on one side only is fine
        ("5", "5 cm"),
        ("5 cm²", "5 \\text{cm}^2"),
        ("5 square centimeters", "5 cm^2"),
        ("4 min", "4 minutes"),
        ("5m", "5"),
        ("x = 3", "3"),
        ("3", "x=3"),
        ("1,000", "1000"),
        ("12,345,678", "12345678"),
        ("\\boxed{5}", "5"),
        ("\\boxed{5 cm}", "5"),
        ("$\\boxed{\\frac{1}{2}}$", "0.5"),
        ("x + 1", "$1 + x$"),
        ("2 × 3", "6"),
        ("(2, 3)", "(2,3)"),
        ("3.0", "3"),
        ("50%", "50"),  # "%" is read as a unit
    ],
)
def test_equal_values(answer, truth):
    assert math_equal(answer, truth) is True


@pytest.mark.parametrize(
    "answer, truth",
    [
        # partial parses: a grader reading only the leading number would credit these
        ("2√2", "2"),
        ("2", "2√2"),
        ("2\\sqrt{2}", "2"),
        ("10π", "10"),
        ("10", "10π"),
        ("3√3 cm", "3 cm"),
        # units on both sides must agree
        ("5 m", "5 cm"),
        ("10 mm", "1 cm"),  # no conversion between units: the unit written must match
        ("5 cm", "5 cm^2"),
        # a minus sign is kept
        ("-3", "3"),
        ("3", "−3"),
        # symbols the text normalisation would drop
        ("2^3", "23"),
        ("1/3", "0.5"),
        ("x = 3", "4"),
        ("1,2", "12"),  # a list, not a thousands separator
        ("0.5", "50%"),  # "%" is a unit, not a factor of 1/100
        ("3.14", "π"),
        ("2\\pi h", "2\\pi"),  # h after \pi is a variable, not hours
    ],
)
def test_different_values(answer, truth):
    assert math_equal(answer, truth) is False


@pytest.mark.parametrize(
    "answer",
    [
        "cat",
        "3 apples",  # a word: left to word matching
        "two",
        "x",  # no digit, root, fraction or pi
        "3:45",  # a clock time: as ratios 3:45 and 1:15 would be equal
        "3 4",  # latex2sympy would add juxtaposed numbers: 7
        "1.5.2",  # a version number, which latex2sympy reads as 1.5 * 0.2
        "3–5",  # an en dash is a range, not a minus
        "5 cm by 3 cm",
        "2√",  # unreadable: latex2sympy raises
        "1 + " * 40 + "1",  # longer than MAX_MATH_CHARS
        "",
    ],
)
def test_not_math_is_none(answer):
    assert read_math(answer) is None
    assert math_equal(answer, "3") is None
    assert math_equal("3", answer) is None


def test_the_whole_value_is_read():
    # math-verify's default extractors read only the leading number of "2√2", which would equal "2"
    (value, _), unit = read_math("2√2")
    assert str(value) == "2*sqrt(2)"
    assert unit is None


def test_overlong_answers_are_not_read():
    longest = "1" * MAX_MATH_CHARS
    assert read_math(longest) is not None
    assert read_math(longest + "1") is None


def test_grading_works_outside_the_main_thread():
    # with math-verify's signal timeouts on, parse and verify raise outside the main thread
    read_math.cache_clear()
    results = []
    worker = threading.Thread(target=lambda: results.append(math_equal("7√2", "√98")))
    worker.start()
    worker.join()
    assert results == [True]


def test_no_timeout_warnings_are_logged(monkeypatch, caplog):
    monkeypatch.setattr(parser, "TIMEOUT_WARNING_SHOWN", False)
    monkeypatch.setattr(grader, "TIMEOUT_WARNING_SHOWN", False)
    read_math.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert math_equal("11/4", "2.75") is True
    assert not [r for r in caplog.records if r.name.startswith("math_verify")]


def test_cache_is_bounded():
    assert read_math.cache_info().maxsize is not None


# --------------------------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    "text, latex",
    [
        ("2√2", "2\\sqrt{2}"),
        ("√(x+1)", "\\sqrt{x+1}"),
        ("√x", "\\sqrt{x}"),
        ("√{3}", "\\sqrt{3}"),
        ("10π", "10\\pi"),
        ("30°", "30^\\circ"),
        ("x² + y³", "x^2 + y^3"),
        ("6 ÷ 2 × 3", "6 \\div 2 \\times 3"),
        ("−3", "-3"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("$$1$$", "1"),
        ("\\(1\\)", "1"),
        ("5.", "5"),
        ("1,000,000", "1000000"),
        ("1,2", "1,2"),
        ("5\\,\\text{cm}", "5 cm"),
        ("\\boxed{5}", "5"),
    ],
)
def test_latex_of(text, latex):
    assert latex_of(text) == latex


def test_unbox_only_a_box_around_the_whole_text():
    assert unbox("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert unbox("\\boxed{1} + \\boxed{2}") == "\\boxed{1} + \\boxed{2}"
    assert unbox("\\boxed{5") == "\\boxed{5"
    assert unbox("5") == "5"


@pytest.mark.parametrize(
    "latex, value, unit",
    [
        ("5 cm", "5", "cm"),
        ("5cm", "5", "cm"),
        ("5 centimetres", "5", "cm"),
        ("5 cm^2", "5", "cm^2"),
        ("5 cm^{2}", "5", "cm^2"),
        ("5 sq cm", "5", "cm^2"),
        ("5 cubic meters", "5", "m^3"),
        ("30^\\circ", "30", "deg"),
        ("30^{\\circ}", "30", "deg"),
        ("30 degrees", "30", "deg"),
        ("25^\\circ C", "25", "degc"),
        ("7 square units", "7", "unit^2"),
        ("50\\%", "50", "%"),
        ("10\\pi cm", "10\\pi", "cm"),
        ("\\sqrt{2} m", "\\sqrt{2}", "m"),
        ("x = 3 kg", "x = 3", "kg"),
        ("5 s", "5", "s"),
        ("1990s", "1990s", None),  # a decade, not seconds
        ("2\\pi h", "2\\pi h", None),
        ("3 apples", "3 apples", None),
        ("5", "5", None),
    ],
)
def test_split_unit(latex, value, unit):
    assert split_unit(latex) == (value, unit)


def test_canonical_unit_spellings_agree():
    assert canonical_unit("cm^{2}") == canonical_unit("square centimeters") == canonical_unit("CM^2") == "cm^2"
    assert canonical_unit("^\\circ") == canonical_unit("degrees") == canonical_unit("\\degree") == "deg"
    assert canonical_unit("hours") == canonical_unit("hr") == "h"
    assert canonical_unit("m") != canonical_unit("cm")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("3", True),
        ("x + 1", True),
        ("\\frac{a}{b}", True),
        ("\\sqrt{x}", True),
        ("\\pi", True),
        ("2\\sqrt2", True),
        ("x", False),
        ("cat", False),
        ("3 apples", False),
        ("\\text{apples} 3", False),
        ("3:4", False),
        ("3 4", False),
        ("1.5.2", False),
    ],
)
def test_looks_mathematical(value, expected):
    assert looks_mathematical(value) is expected
