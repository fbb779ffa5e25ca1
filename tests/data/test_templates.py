"""The instruction around a question: never doubled, in the authors' wording and layout by default."""

import pytest

from corl.data.templates import asks_for_answer_tags, instruction_templates, question_prompt

AUTHORS_MC = (
    "\n\nAnswer the question based on the image and your world knowledge.\n\nPlease write your thinking process inside "
    "<think> </think> tags, and provide your final answer (option letter, e.g., A/B/C/D) inside <answer> </answer> "
    "tags.\nYour response MUST strictly follow this format: <think> ... </think><answer>option letter</answer>"
)
AUTHORS_OE = (
    "\n\nAnswer the question based on the image and your world knowledge.\n\nPlease write your thinking process inside "
    "<think> </think> tags, and provide your final answer (only 1\u20133 words) inside <answer> </answer> tags.\n"
    "Your response MUST strictly follow this format: <think> ... </think><answer>concise answer</answer>"
)
# Questions as the public sets write them: the authors' instruction is already part of qa_problem.
PUBLIC = [
    ("What is the man holding?\nA. an umbrella\nB. a kite\nC. a phone\nD. a cup" + AUTHORS_MC, "MC"),
    ("What colour is the bus?" + AUTHORS_OE, "color"),
    ("As shown in the figure, AB is the diameter of circle O. Find the angle ACB in degrees." + AUTHORS_OE, "math"),
    # another wording that still asks for the tags, as other data sets do
    ("How many dogs are there? Think in <think></think> and answer inside <ANSWER> </ANSWER>.", "counting"),
]
BARE = [("What colour is the circle? Options: A. red B. blue C. green D. orange", "MC"),
        ("How many shapes are there?", "count")]


@pytest.mark.parametrize("question,qa_type", PUBLIC)
@pytest.mark.parametrize("instruction", ["authors", "poster", "none"])
def test_a_question_that_asks_for_answer_tags_is_used_verbatim(question, qa_type, instruction):
    assert asks_for_answer_tags(question)
    assert question_prompt(question, qa_type, instruction) == question
    assert question_prompt(question, qa_type, instruction).count("<answer>") == question.count("<answer>")


def test_a_bare_question_gets_the_authors_instruction_in_their_layout():
    mc, count = BARE
    # question, blank line, instruction, blank line, the format request, line break, the format line
    assert question_prompt(*mc) == mc[0] + AUTHORS_MC
    assert question_prompt(*count) == count[0] + AUTHORS_OE
    assert question_prompt("  " + count[0] + "\n", "count") == count[0] + AUTHORS_OE  # the question stripped
    assert not asks_for_answer_tags(mc[0])


def test_the_wording_is_a_setting():
    question, qa_type = BARE[0]
    poster = question_prompt(question, qa_type, "poster")
    assert poster.startswith(question + "\nAnswer the question based on the image and your knowledge. ")
    assert poster.endswith("<think> ...</think> <answer>option letter</answer>")
    assert question_prompt(question, qa_type, "none") == question
    own = {"MC": "Q: {question}\nReply with <answer>X</answer>.", "OE": "Q: {question}\nReply briefly."}
    assert question_prompt(question, "MC", own) == f"Q: {question}\nReply with <answer>X</answer>."
    assert question_prompt("Which shape?", "shape", own) == "Q: Which shape?\nReply briefly."


@pytest.mark.parametrize("setting,message", [
    ("paper", "must be one of"),
    ({"MC": "{question} in tags"}, "exactly the keys MC and OE"),
    ({"MC": "no placeholder", "OE": "{question}"}, "MC instruction template"),
])
def test_a_bad_instruction_setting_names_what_is_wrong(setting, message):
    with pytest.raises(ValueError, match=message):
        instruction_templates(setting)
