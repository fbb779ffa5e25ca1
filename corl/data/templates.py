"""Instruction templates for understanding questions, and the parts of a solution the rewards read.

The public understanding data (``mm-vl/x2x_rft_22k``, ``mcot_r1_mcq_66k``, ``mcot_r1_vqa_66k``) writes its
questions with the authors' instruction already in them ("…Please write your thinking process inside
<think> </think> tags, and provide your final answer … inside <answer> </answer> tags…"). Such a question
is used verbatim; only a bare question (the procedural set's, or a user's own data) gets an instruction
appended, so the model never reads the instruction twice in two wordings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The authors' wording and layout (mm-vl/ULM-R1, rewards/r_utils.py, MCQ_PROMPT / VQA_PROMPT): the question,
# a blank line, the instruction, a blank line, the format request, a line break, the format line.
_AUTHORS_HEAD = "{question}\n\nAnswer the question based on the image and your world knowledge.\n\n"
AUTHORS = {
    "MC": _AUTHORS_HEAD + "Please write your thinking process inside <think> </think> tags, and provide your final "
    "answer (option letter, e.g., A/B/C/D) inside <answer> </answer> tags.\nYour response MUST strictly follow this "
    "format: <think> ... </think><answer>option letter</answer>",
    "OE": _AUTHORS_HEAD + "Please write your thinking process inside <think> </think> tags, and provide your final "
    "answer (only 1\u20133 words) inside <answer> </answer> tags.\nYour response MUST strictly follow this format: "
    "<think> ... </think><answer>concise answer</answer>",
}
# The CoRL poster's wording, on the line after the question (the demo's warm start was taught with it).
MC_INSTRUCTION = (
    "Answer the question based on the image and your knowledge. Please write your thinking process inside "
    "<think> </think> tags, and provide your final answer (option letter, e.g., A/B/C/D) inside <answer> </answer> "
    "tags. Your response MUST strictly follow this format: <think> ...</think> <answer>option letter</answer>"
)
OE_INSTRUCTION = (
    "Answer the question based on the image and your knowledge. Please write your thinking process inside "
    "<think> </think> tags, and provide your final answer (only 1-3 words) inside <answer> </answer> tags. "
    "Your response MUST strictly follow this format: <think> ...</think> <answer>concise answer</answer>"
)
POSTER = {"MC": "{question}\n" + MC_INSTRUCTION, "OE": "{question}\n" + OE_INSTRUCTION}
INSTRUCTIONS: dict[str, dict[str, str] | None] = {"authors": AUTHORS, "poster": POSTER, "none": None}
Instruction = str | Mapping[str, str]  # a name in INSTRUCTIONS, or {"MC": template, "OE": template} with {question}

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)

DESCRIBE = "Describe this image in one sentence."  # what the self-captioner asks the policy


def is_multiple_choice(qa_type: str) -> bool:
    """``qa_type`` "MC" marks a multiple-choice question; every other value is open-ended."""
    return str(qa_type).strip().upper() == "MC"


def sft_completion(qa_solution: str, caption: str | None = None) -> str:
    """The target answer of a supervised (cold-start) example, in the format the RL rewards check.

    The data's own ``<think>…</think><answer>…</answer>`` when it has one; otherwise its answer in
    ``<answer>`` tags behind a reasoning step made from the image's caption where the example has
    one (triplets: the prompt describes the real image), else behind an empty reasoning step.
    """
    solution = qa_solution.strip()
    if "<think>" in solution and "<answer>" in solution:
        return solution
    thought = f"The image shows {caption.strip().rstrip('.')}." if caption else ""
    return f"<think>{thought}</think><answer>{solution_answer(solution)}</answer>"


def prose_completion(qa_solution: str, caption: str | None = None) -> str:
    """``sft_completion``'s reasoning and answer as plain prose, without the tags the format reward checks.

    What a model that never saw the format writes; a cold start taught some of these leaves the
    format for RL to teach without teaching the reasoning any less.
    """
    completion = sft_completion(qa_solution, caption)
    thought = re.search(r"<think>(.*?)</think>", completion, re.S).group(1).strip()
    return f"{thought} The answer is {solution_answer(completion)}.".strip()


def extract_answer(completion: str) -> str | None:
    """The text inside the last ``<answer>…</answer>`` block, or None when there is none."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def solution_answer(qa_solution: str) -> str:
    """The answer of a solution: the text of its last ``<answer>`` block, else the whole solution."""
    answer = extract_answer(qa_solution)
    return qa_solution.strip() if answer is None else answer


def instruction_templates(instruction: Instruction) -> dict[str, str] | None:
    """The MC and OE templates of a wording (None for ``none``); a setting that cannot work is an error naming it."""
    if isinstance(instruction, str):
        if instruction not in INSTRUCTIONS:
            raise ValueError(f"instruction must be one of {sorted(INSTRUCTIONS)} or a mapping "
                             f"{{MC: template, OE: template}}, got {instruction!r}")
        return INSTRUCTIONS[instruction]
    templates = dict(instruction)
    if sorted(templates) != ["MC", "OE"]:
        raise ValueError(f"an instruction mapping needs exactly the keys MC and OE, got {sorted(templates)}")
    for kind, template in templates.items():
        if not isinstance(template, str) or "{question}" not in template:
            raise ValueError(f"the {kind} instruction template must be a string with {{question}} in it, "
                             f"got {template!r}")
    return templates


def asks_for_answer_tags(question: str) -> bool:
    """Whether a question carries its own answer-format instruction: it asks for ``<answer>`` tags."""
    return "<answer>" in question.lower()


def question_prompt(question: str, qa_type: str, instruction: Instruction = "authors") -> str:
    """The user turn for an understanding rollout.

    A question that already asks for ``<answer>`` tags (the public data's) is used as it is; a bare one gets
    the ``instruction`` wording for its kind (multiple choice or open-ended) around it.
    """
    templates = instruction_templates(instruction)
    if templates is None or asks_for_answer_tags(question):
        return question
    return templates["MC" if is_multiple_choice(qa_type) else "OE"].replace("{question}", question.strip())
