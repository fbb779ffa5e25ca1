"""A procedural data set of simple scenes (coloured shapes on a canvas) that needs no download.

Every example is a pure function of ``(seed, index)``, so the set has any length, is identical on
every rank and machine, and its captions and questions have answers that can be checked exactly.

Solutions carry their reasoning, ``<think>The image shows {caption}. …</think><answer>…</answer>``:
what a cold-start SFT teaches (the caption trains the model to look at every object) and what the
RL format reward checks. Multiple-choice questions list all six colours in one fixed order, so a
model answers them by telling the colour, not by looking an option's letter up in the question: a
small model trained for a few minutes learns the first and not the second (measured: text-only SFT
of the demo's tiny Janus stays at chance on shuffled options and reaches 0.68 on fixed ones).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from corl.data.schema import Example, columns_of

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
NUMBER_WORDS = ("zero", "one", "two", "three")
LETTERS = "ABCDEF"  # one per colour: the options are all the colours, in the order of COLOURS


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _caption(objects: list[tuple[str, str]], background: str) -> str:
    parts = [_with_article(f"{colour} {shape}") for colour, shape in objects]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{listed} on a {background} background"


def make_scene(seed: int, index: int, image_size: int = 64, questions: str = "any") -> Example:
    """Example ``index`` of the set with this ``seed``: an image, its caption and one question.

    ``questions`` is ``any`` (MC or open-ended, half each), ``mc`` or ``oe``.
    """
    if questions not in ("any", "mc", "oe"):
        raise ValueError(f"questions must be 'any', 'mc' or 'oe', got {questions!r}")
    rng = random.Random(seed * 1_000_003 + index)
    count = rng.randint(1, 3)
    shapes = rng.sample(SHAPES, count)  # distinct shapes, so "the circle" is unambiguous
    objects = [(rng.choice(list(COLOURS)), shape) for shape in shapes]
    background = rng.choice(list(BACKGROUNDS))
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    cell = image_size // count
    for slot, (colour, shape) in enumerate(objects):
        margin = max(1, cell // 8)
        box = (slot * cell + margin, image_size // 4, (slot + 1) * cell - margin, image_size // 4 + cell - 2 * margin)
        _draw_shape(draw, shape, box, COLOURS[colour])

    caption = _caption(objects, background)
    reasoning = f"The image shows {caption}."
    draw_mc = rng.random() < 0.5  # drawn in every case, so the rest of the scene does not depend on it
    if questions == "mc" or (questions == "any" and draw_mc):
        colour, shape = rng.choice(objects)
        listed = " ".join(f"{letter}. {option}" for letter, option in zip(LETTERS, COLOURS))
        problem = f"What colour is the {shape}? Options: {listed}"
        reasoning += f" The {shape} is {colour}."
        answer, qa_type = LETTERS[list(COLOURS).index(colour)], "MC"
    elif rng.random() < 0.5:
        problem = "How many shapes are in the image?"
        answer, qa_type = NUMBER_WORDS[count], "counting"
    else:
        colour, shape = rng.choice(objects)
        same = sum(c == colour for c, _ in objects)
        if same == 1:
            problem = f"Which shape is {colour}?"
            answer, qa_type = shape, "attribute"
        else:  # several shapes share this colour, so "which shape" has no single answer: count them
            problem = f"How many {colour} shapes are in the image?"
            answer, qa_type = NUMBER_WORDS[same], "counting"
    solution = f"<think>{reasoning}</think><answer>{answer}</answer>"
    return Example(image, caption, problem, solution, qa_type)


class ProceduralExamples(Dataset):
    """``length`` procedural examples of one kind; example ``i`` is always the same for the same seed.

    Args:
        length: number of examples.
        seed: which set.
        image_size: side of the images in pixels.
        kind: ``triplet``, ``t2i`` or ``qa``; columns the kind lacks are None.
        questions: ``any``, ``mc`` (multiple choice only) or ``oe`` (open-ended only).
    """

    def __init__(
        self, length: int = 256, seed: int = 0, image_size: int = 64, kind: str = "triplet", questions: str = "any"
    ) -> None:
        self.length, self.seed, self.image_size, self.questions = length, seed, image_size, questions
        self.columns = columns_of(kind)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.length:
            raise IndexError(index)
        scene = make_scene(self.seed, index, self.image_size, self.questions)
        return Example(**{name: getattr(scene, name) for name in self.columns})


def vocabulary_corpus() -> Iterator[str]:
    """A fixed text corpus of what the tiny tokenizer will encode: instructions, questions, reasoned solutions.

    The byte-level BPE is trained on it, so the procedural texts as prompts and completions write them
    (``<think>``, "The image shows", the colours) become few tokens: shorter rollouts and forwards.
    """
    from corl.data.templates import DESCRIBE, MC_INSTRUCTION, OE_INSTRUCTION, question_prompt

    yield MC_INSTRUCTION
    yield OE_INSTRUCTION
    yield DESCRIBE
    for index in range(400):
        scene = make_scene(seed=12345, index=index, image_size=8)
        yield f"{scene.prompt}\n{question_prompt(scene.qa_problem, scene.qa_type, 'poster')}\n{scene.qa_solution}"
