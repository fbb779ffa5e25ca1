import pytest

from corl.data.templates import sft_completion
from corl.modules.rewards.base import TextReward
from corl.modules.rewards.text import (
    accuracy_reward,
    answers_match,
    extract_answer,
    format_reward,
    mcq_accuracy_reward,
    mcq_choice,
    normalize_answer,
    oe_accuracy_reward,
    oe_score,
    word_jaccard,
)

QUESTION = "What colour is the circle? Options: A. red B. blue C. green D. yellow"


def wrap(answer: str) -> str:
    return f"<think>the circle looks blue</think><answer>{answer}</answer>"


def mcq(answer_block: str, solution: str = "<answer>B</answer>", problem: str = QUESTION, **kwargs) -> float:
    (score,) = mcq_accuracy_reward([answer_block], qa_solution=[solution], qa_problem=[problem], **kwargs)
    return score


def oe(answer_block: str, solution: str, **kwargs) -> float:
    (score,) = oe_accuracy_reward([answer_block], qa_solution=[solution], **kwargs)
    return score


# --------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "completion",
    [
        "<think>reasoning</think><answer>B</answer>",
        "<think>reasoning</think> <answer>B</answer>",
        "  \n<think>\nstep one\nstep two\n</think>\n\n<answer>\nB\n</answer>\n  ",
        "\t<think>multi\n\nline</think>\t\n<answer>two cats</answer>",
        "<think></think><answer></answer>",
    ],
)
def test_format_accepts_one_think_then_one_answer(completion):
    assert format_reward([completion]) == [1.0]


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "   ",
        "<answer>B</answer>",  # no think block
        "<think>reasoning</think>",  # no answer block
        "<answer>B</answer><think>reasoning</think>",  # answer before think
        "<think>r</think><answer>B</answer><answer>C</answer>",  # two answer blocks
        "<think>r</think><think>r</think><answer>B</answer>",  # two think blocks
        "<think>a <think>b</think> c</think><answer>B</answer>",  # nested think
        "<think>r <answer>B</answer></think><answer>B</answer>",  # answer nested in think
        "<think>r</think><answer>B <answer>C</answer></answer>",  # nested answer
        "Sure! <think>r</think><answer>B</answer>",  # text before
        "<think>r</think><answer>B</answer> Hope this helps.",  # text after
        "<think>r</think> so <answer>B</answer>",  # text between
        "<think>r<answer>B</answer>",  # unclosed think
        "<think>r</think><answer>B",  # unclosed answer
    ],
)
def test_format_rejects_anything_else(completion):
    assert format_reward([completion]) == [0.0]


def test_format_scores_each_completion_and_ignores_columns():
    good, bad = "<think>x</think><answer>y</answer>", "<answer>y</answer>"
    scores = format_reward([good, bad, good], qa_solution=["a"] * 3, qa_type=["MC"] * 3, whatever=[1, 2, 3])
    assert scores == [1.0, 0.0, 1.0]
    assert all(isinstance(s, float) for s in scores)


def test_extract_answer_takes_the_last_block_stripped():
    assert extract_answer("<answer> A </answer> then <answer>\n B \n</answer>") == "B"
    assert extract_answer("no block here") is None


# --------------------------------------------------------------------------------------------- MC


@pytest.mark.parametrize(
    "answer",
    [
        "B",
        "B.",
        "(B)",
        "B)",
        "B:",
        " B ",
        "The answer is B",
        "the answer is (B).",
        "The correct answer is B.",
        "Answer: B",
        "Option B",
        "option (B)",
        "B. blue",
        "blue",
        "Blue",
        "BLUE.",
        "the blue",
    ],
)
def test_mcq_accepts_the_correct_option_in_common_spellings(answer):
    assert mcq(wrap(answer)) == 1.0


@pytest.mark.parametrize(
    "answer",
    [
        "A",
        "C.",
        "(D)",
        "The answer is A",
        "Option C",
        "red",
        "yellow",
        "purple",  # not an option at all
        "",
        "A or B",  # hedges name several options
        "B or A",
        "B and C",
        "A/B",
        "(A) or (B)",
        "A, B, C or D",
    ],
)
def test_mcq_rejects_wrong_options_and_hedges(answer):
    assert mcq(wrap(answer)) == 0.0


def test_mcq_plain_letter_ground_truth():
    assert mcq(wrap("B"), solution="B") == 1.0
    assert mcq(wrap("blue"), solution="B") == 1.0
    assert mcq(wrap("C"), solution="B") == 0.0


def test_mcq_lowercase_article_is_not_a_letter():
    # "a" in "the answer is a blue circle" is an article, not option A: the (wrong) answer must not pick A
    assert mcq(wrap("The answer is a blue circle"), solution="<answer>A</answer>") == 0.0
    assert mcq(wrap("The answer is A"), solution="<answer>A</answer>") == 1.0


ANIMALS = "Which animal is on the sofa? Options: A. A cat B. A dog C. The bird D. an owl"


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("A. A cat", "A"),  # the article "A" opening the option text is not a second letter
        ("B. A dog", "B"),
        ("(B) A dog", "B"),
        ("B) A dog", "B"),
        ("The answer is B. A dog", "B"),
        ("A dog", "B"),  # the option's text, article and all
        ("a dog", "B"),
        ("the bird", "C"),
        ("b", "B"),  # a lone lower-case letter is that option
        ("(b)", "B"),
        ("a", "A"),
        ("d.", "D"),
    ],
)
def test_mcq_options_that_open_with_an_article(answer, truth):
    assert mcq(wrap(answer), solution=truth, problem=ANIMALS) == 1.0
    wrong = "C" if truth != "C" else "D"
    assert mcq(wrap(answer), solution=wrong, problem=ANIMALS) == 0.0


@pytest.mark.parametrize(
    "answer",
    ["A or B", "A and B", "B or A", "(A) or (B)", "B. A dog or C. The bird", "A, B", "a or b", "A dog or a cat"],
)
def test_mcq_hedges_with_article_options_still_score_zero(answer):
    assert mcq(wrap(answer), solution="A", problem=ANIMALS) == 0.0
    assert mcq(wrap(answer), solution="B", problem=ANIMALS) == 0.0


def test_mcq_choice_reads_the_letter_not_the_article():
    options = {"A": "A cat", "B": "A dog"}
    assert mcq_choice("B. A dog", options) == "B"
    assert mcq_choice("A. A cat", options) == "A"
    assert mcq_choice("A or B", options) is None
    assert mcq_choice("b", {}) == "B"  # no options read: a lone letter still counts


def test_mcq_without_answer_block_scores_zero_unless_lenient():
    completion = "I think the circle is blue, so the answer is B"
    for text in ("B", "The answer is B", "(B)"):
        assert mcq(text) == 0.0
        assert mcq(text, lenient=True) == 1.0
    assert mcq(completion) == 0.0
    assert mcq("A", lenient=True) == 0.0
    # an answer block present is graded even when lenient, the rest of the completion is not
    assert mcq("B <answer>A</answer>", lenient=True) == 0.0


def test_mcq_uses_last_answer_block():
    assert mcq("<answer>A</answer> wait, no: <answer>B</answer>") == 1.0


def test_mcq_options_on_separate_lines():
    problem = "What colour is the square?\nA. red\nB. light blue\nC. green\nD. yellow"
    assert mcq(wrap("light blue"), problem=problem) == 1.0
    assert mcq(wrap("B"), problem=problem) == 1.0
    assert mcq(wrap("blue"), problem=problem) == 0.0  # not the option's text
    assert mcq(wrap("red"), problem=problem) == 0.0


def test_mcq_without_problem_grades_letters_only():
    completions = [wrap("B"), wrap("blue"), wrap("A or B")]
    scores = mcq_accuracy_reward(completions, qa_solution=["<answer>B</answer>"] * 3)
    assert scores == [1.0, 0.0, 0.0]


def test_mcq_one_float_per_completion_and_ignores_columns():
    completions = [wrap("B"), wrap("A"), "B", wrap("blue")]
    scores = mcq_accuracy_reward(
        completions,
        qa_solution=["<answer>B</answer>"] * 4,
        qa_problem=[QUESTION] * 4,
        prompt=["caption"] * 4,
        qa_type=["MC"] * 4,
        unknown_column=[object()] * 4,
    )
    assert scores == [1.0, 0.0, 0.0, 1.0]
    assert all(type(s) is float for s in scores)


def test_mcq_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        mcq_accuracy_reward([wrap("B"), wrap("B")], qa_solution=["B"], qa_problem=[QUESTION, QUESTION])


# --------------------------------------------------------------------------------------------- OE


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("cat", "cat"),
        ("Cat", "cat"),
        ("CAT.", "cat"),
        ("cat!", "Cat"),
        ("the cat", "cat"),
        ("A cat", "the cat"),
        ("an apple", "apple"),
        ("two", "2"),
        ("2", "two"),
        ("Two.", "<answer>2</answer>"),
        ("two cats", "2 cats"),
        ("three", "3.0"),
        ("1/2", "0.5"),
        ("1 / 2", "1/2"),
        ("2/4", "1/2"),
        ("\\frac{1}{2}", "1/2"),
        ("\\dfrac{1}{2}", "0.5"),
        ("\\tfrac{1}{2}", "1/2"),
        ("$\\frac{1}{2}$", "0.5"),
        ("$\\frac{1}{2}$.", "1/2"),
        ("$2$", "two"),
        ("$x + 1$", "x + 1"),
        ("-0.25", "-1/4"),
        ("1,000", "1000"),
        ("\\text{circle}", "circle"),
        ("Red circle", "the red circle"),
    ],
)
def test_oe_normalised_exact_match(answer, truth):
    assert oe(wrap(answer), truth) == 1.0


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("dog", "cat"),
        ("cats", "cat"),
        ("black cat", "cat"),
        ("three", "2"),
        ("1/3", "0.5"),
        ("\\frac{1}{3}", "1/2"),
        ("$3$", "2"),
        ("", "cat"),
        ("red circle", "blue circle"),
        ("2 cats", "2 dogs"),
    ],
)
def test_oe_mismatches_score_zero(answer, truth):
    assert oe(wrap(answer), truth) == 0.0


@pytest.mark.parametrize(
    "answer, truth",
    [
        # math-VQA answers compared by value
        ("2√2", "2\\sqrt{2}"),
        ("2√2", "√8"),
        ("$2\\sqrt{2}$", "2√2"),
        ("10π", "10\\pi"),
        ("1/2", "0.5"),
        ("30°", "30"),
        ("30°", "30^\\circ"),
        ("30", "30^{\\circ}"),
        ("5 cm", "5"),
        ("5", "5 cm"),
        ("5 cm²", "5 cm^2"),
        ("x = 3", "3"),
        ("1,000", "1000"),
        ("\\boxed{5}", "5"),
        ("$\\frac{1}{2}$", "1/2"),
        ("\\frac{\\sqrt{3}}{2}", "√3/2"),
        ("2^3", "8"),
        ("$x + 1$", "1 + x"),
        # words keep the normalised text match
        ("3 apples", "3 apples"),
        ("two apples", "2 apples"),
        ("ice-cream", "ice cream"),
        ("Ice cream", "ice-cream"),
        ("T-shirt", "t shirt"),
    ],
)
def test_oe_math_and_words_match(answer, truth):
    assert oe(wrap(answer), truth) == 1.0
    assert answers_match(answer, truth)


@pytest.mark.parametrize(
    "answer, truth",
    [
        ("2√2", "2"),  # a grader reading only the leading number would credit these
        ("10π", "10"),
        ("2\\sqrt{2}", "2"),
        ("5 m", "5 cm"),  # both have units, different
        ("-3", "3"),  # the minus sign is kept
        ("−3", "3"),
        ("2^3", "23"),  # the text normalisation alone would drop the "^"
        ("3 apples", "3"),  # "apples" is a word: not math, and not the same text
        ("cat", "3"),
        ("x = 3", "x = 4"),
        ("3:45", "1:15"),  # clock times are compared as text, not as ratios
        ("ice-cream", "ice"),
    ],
)
def test_oe_math_traps_score_zero(answer, truth):
    assert oe(wrap(answer), truth) == 0.0
    assert not answers_match(answer, truth)


def test_normalize_answer_hyphens():
    assert normalize_answer("Ice-Cream") == "ice cream"
    assert normalize_answer("-3") == "-3"
    assert normalize_answer("a well-known cat") == "well known cat"
    assert normalize_answer("covid-19") == "covid-19"  # a hyphen next to a digit is kept


# --------------------------------------------------------------------------------------------- OE soft


@pytest.mark.parametrize(
    "answer, truth, score",
    [
        ("red ball", "red", 1 / 2),  # {red} / {red, ball}
        ("big red ball", "small red ball", 2 / 4),  # {red, ball} / {big, small, red, ball}
        ("the red ball", "a red cube", 1 / 3),  # articles dropped: {red} / {red, ball, cube}
        ("a red ball on the sofa", "red ball", 2 / 4),  # {red, ball} / {red, ball, on, sofa}
        ("5 m", "5 cm", 1 / 3),  # wrong unit: {5} / {5, m, cm}
        ("two cats", "2 cats", 1.0),  # a match scores 1, not its overlap
        ("2√2", "√8", 1.0),  # a math match scores 1 although no word is shared
        ("2√2", "2", 0.0),  # one word each, different
        ("dog", "cat", 0.0),
        ("", "cat", 0.0),  # no words in the answer
        ("the", "cat", 0.0),  # only an article: no words after normalisation
    ],
)
def test_oe_soft_match_by_hand(answer, truth, score):
    assert oe(wrap(answer), truth, oe_match="soft") == pytest.approx(score)
    assert oe_score(answer, truth, "soft") == pytest.approx(score)
    assert oe(wrap(answer), truth) == (1.0 if score == 1.0 else 0.0)  # exact is the default


def test_word_jaccard_is_over_sets_of_normalised_words():
    assert word_jaccard("Red, red BALL!", "red ball") == 1.0  # repeated words and case do not count
    assert word_jaccard("two dogs", "2 cats") == pytest.approx(1 / 3)  # {2} / {2, dogs, cats}
    assert word_jaccard("", "") == 0.0


def test_oe_soft_without_answer_block_scores_zero():
    assert oe("red ball", "red", oe_match="soft") == 0.0
    assert oe("red ball", "red", oe_match="soft", lenient=True) == 0.5


def test_soft_match_is_for_open_ended_items_only():
    # "B or C" for truth B: soft OE would give 1/3 ({b} / {b, or, c}); as MC it is a hedge and scores 0
    columns = {"qa_solution": ["B", "red"], "qa_type": ["MC", "OE"], "qa_problem": [QUESTION, "What colour?"]}
    scores = accuracy_reward([wrap("B or C"), wrap("red ball")], oe_match="soft", **columns)
    assert scores == [0.0, 0.5]
    assert accuracy_reward([wrap("B or C"), wrap("red ball")], **columns) == [0.0, 0.0]


@pytest.mark.parametrize("reward", [oe_accuracy_reward, accuracy_reward])
@pytest.mark.parametrize("value", ["fuzzy", "Soft", "", None])
def test_unknown_oe_match_names_the_setting(reward, value):
    with pytest.raises(ValueError, match="oe_match"):
        reward([], qa_solution=[], qa_type=[], oe_match=value)


def test_oe_match_from_yaml_kwargs_reaches_the_reward():
    columns = {"qa_solution": ["red"], "qa_type": ["OE"]}
    assert TextReward("accuracy", kwargs={"oe_match": "soft"})([wrap("red ball")], **columns).tolist() == [0.5]
    assert TextReward("oe_accuracy", kwargs={"oe_match": "soft"})([wrap("red ball")], **columns).tolist() == [0.5]
    assert TextReward("accuracy")([wrap("red ball")], **columns).tolist() == [0.0]


def test_oe_without_answer_block_scores_zero_unless_lenient():
    assert oe("cat", "<answer>cat</answer>") == 0.0
    assert oe("  The cat. ", "<answer>cat</answer>", lenient=True) == 1.0
    assert oe("I see a cat", "<answer>cat</answer>", lenient=True) == 0.0
    assert oe("<think>cat</think>", "cat") == 0.0


def test_oe_one_float_per_completion_and_ignores_columns():
    scores = oe_accuracy_reward(
        [wrap("two"), wrap("3"), "2"],
        qa_solution=["<answer>2</answer>"] * 3,
        qa_problem=["How many?"] * 3,
        qa_type=["counting"] * 3,
        extra=[None] * 3,
    )
    assert scores == [1.0, 0.0, 0.0]
    assert all(type(s) is float for s in scores)


def test_normalize_answer_canonical_forms():
    assert normalize_answer("The Two Cats!") == "2 cats"
    assert normalize_answer("\\dfrac{2}{4}") == normalize_answer("0.5") == normalize_answer("1/2")
    assert normalize_answer("$\\frac{1}{2}$") == "1/2"


# --------------------------------------------------------------------------------------------- dispatch


def test_accuracy_dispatches_per_item():
    # Item 0 is MC and answers with the option text: 1 under MC grading, 0 under OE grading against "B".
    # Item 1 is OE and answers "two" for "2": 1 under OE grading, 0 under MC grading (no option letter).
    completions = [wrap("blue"), wrap("two")]
    columns = {
        "qa_solution": ["<answer>B</answer>", "<answer>2</answer>"],
        "qa_problem": [QUESTION, "How many shapes are in the image?"],
    }
    assert oe_accuracy_reward(completions, **columns)[0] == 0.0  # the MC item would fail as OE
    assert mcq_accuracy_reward(completions, **columns)[1] == 0.0  # the OE item would fail as MC
    assert accuracy_reward(completions, qa_type=["MC", "counting"], **columns) == [1.0, 1.0]


@pytest.mark.parametrize("kind", ["MC", "mc", "Mc", " MC ", "MC\n"])
def test_accuracy_mc_type_any_case_and_whitespace(kind):
    columns = {"qa_solution": ["<answer>B</answer>"], "qa_type": [kind], "qa_problem": [QUESTION]}
    assert accuracy_reward([wrap("blue")], **columns) == [1.0]


@pytest.mark.parametrize("kind", ["OE", "counting", "attribute", "", "MCQ", "multiple choice"])
def test_accuracy_other_types_are_open_ended(kind):
    # graded as OE: the option text does not match the letter, the letter itself does
    args = {"qa_solution": ["<answer>B</answer>"] * 2, "qa_type": [kind] * 2, "qa_problem": [QUESTION] * 2}
    assert accuracy_reward([wrap("blue"), wrap("b")], **args) == [0.0, 1.0]


def test_accuracy_mixed_batch_without_problem_column_and_extra_columns():
    completions = [wrap("(B)"), wrap("The cat"), wrap("A"), wrap("3"), "B"]
    scores = accuracy_reward(
        completions,
        qa_solution=["<answer>B</answer>", "<answer>cat</answer>", "<answer>B</answer>", "three", "B"],
        qa_type=["MC", "OE", "MC", "counting", "MC"],
        prompt=["p"] * 5,
        real_image=[None] * 5,
    )
    assert scores == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert len(scores) == len(completions)


def test_accuracy_lenient_is_passed_to_both_graders():
    completions = ["The answer is B", "the cat"]
    columns = {"qa_solution": ["B", "cat"], "qa_type": ["MC", "OE"], "qa_problem": [QUESTION, "What animal?"]}
    assert accuracy_reward(completions, **columns) == [0.0, 0.0]
    assert accuracy_reward(completions, lenient=True, **columns) == [1.0, 1.0]


def test_rewards_on_empty_batch():
    assert format_reward([]) == []
    assert mcq_accuracy_reward([], qa_solution=[]) == []
    assert oe_accuracy_reward([], qa_solution=[]) == []
    assert accuracy_reward([], qa_solution=[], qa_type=[]) == []


@pytest.mark.parametrize("solution", [
    "B", "  B \n", "<answer> B </answer>", "<think>it is blue</think><answer>B</answer>",
    "<answer>C</answer> corrected: <answer>B</answer>",
])
def test_the_sft_target_of_a_solution_is_graded_right(solution):
    # The rewards read the truth as the SFT reads its target (solution_answer), so what a cold start is
    # taught scores full accuracy, whatever form the data's solution takes.
    target = sft_completion(solution, caption="a blue circle")
    assert mcq(target, solution=solution) == 1.0
    assert oe(target, solution) == 1.0
    scores = accuracy_reward([target] * 2, qa_solution=[solution] * 2, qa_type=["MC", "color"],
                             qa_problem=[QUESTION] * 2)
    assert scores == [1.0, 1.0]
