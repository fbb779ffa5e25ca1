"""Instruction templates for understanding questions, worded as in the CoRL poster."""

from __future__ import annotations

import re

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

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


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


def question_prompt(question: str, qa_type: str) -> str:
    """The user turn for an understanding rollout: the question, then the matching instruction."""
    instruction = MC_INSTRUCTION if is_multiple_choice(qa_type) else OE_INSTRUCTION
    return f"{question.strip()}\n{instruction}"
