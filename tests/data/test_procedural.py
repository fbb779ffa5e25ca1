import re

import numpy as np
import pytest
from PIL import Image

from corl.data.procedural import BACKGROUNDS, COLOURS, NUMBER_WORDS, SHAPES, ProceduralExamples, make_scene
from corl.data.schema import Example
from corl.modules.rewards.text import accuracy_reward, extract_answer, mcq_accuracy_reward, oe_accuracy_reward

CAPTION = re.compile(r"^(?P<objects>.+) on a (?P<background>\w+) background$")
OBJECT = re.compile(r"^an? (?P<colour>\w+) (?P<shape>\w+)$")
MC_QUESTION = re.compile(
    r"^What colour is the (?P<shape>\w+)\? Options: A\. (\w+) B\. (\w+) C\. (\w+) D\. (\w+) E\. (\w+) F\. (\w+)$"
)
SCENES = [make_scene(seed=7, index=i) for i in range(200)]


def parse_caption(caption: str) -> tuple[list[tuple[str, str]], str]:
    """(colour, shape) of every object the caption names, and the background colour."""
    m = CAPTION.match(caption)
    assert m, caption
    parts = m["objects"].replace(" and ", ", ").split(", ")
    objects = []
    for part in parts:
        o = OBJECT.match(part)
        assert o, (part, caption)
        objects.append((o["colour"], o["shape"]))
    return objects, m["background"]


def drawn_objects(image: Image.Image, background: str) -> list[tuple[str, str]]:
    """(colour, shape) of every object in the image, read from its pixels, left to right.

    Objects sit side by side with background between them; a shape is told by how much of its
    bounding box it fills: a square all of it, a circle about pi/4, a triangle about half.
    """
    pixels = np.asarray(image)
    foreground = (pixels != np.array(BACKGROUNDS[background], dtype=np.uint8)).any(-1)
    on = np.concatenate([[False], foreground.any(0), [False]]).astype(int)
    starts, ends = np.where(np.diff(on) == 1)[0], np.where(np.diff(on) == -1)[0]
    names = {rgb: name for name, rgb in COLOURS.items()}
    objects = []
    for x0, x1 in zip(starts, ends):
        mask = foreground[:, x0:x1]
        ys = np.where(mask.any(1))[0]
        fill = mask[ys[0] : ys[-1] + 1].mean()
        colours = {tuple(int(v) for v in rgb) for rgb in pixels[:, x0:x1][mask]}
        assert len(colours) == 1, f"one flat colour per object, got {colours}"
        shape = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
        objects.append((names[colours.pop()], shape))
    return objects


# --------------------------------------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_examples():
    for index in (0, 1, 17, 199):
        a, b = make_scene(seed=7, index=index), make_scene(seed=7, index=index)
        texts = (a.prompt, a.qa_problem, a.qa_solution, a.qa_type)
        assert texts == (b.prompt, b.qa_problem, b.qa_solution, b.qa_type)
        assert a.real_image.tobytes() == b.real_image.tobytes()


def test_dataset_matches_make_scene_and_repeats():
    data = ProceduralExamples(length=10, seed=7, image_size=32)
    for index in range(10):
        a, b, ref = data[index], data[index], make_scene(7, index, 32)
        assert isinstance(a, Example)
        assert a.prompt == b.prompt == ref.prompt
        assert a.qa_solution == b.qa_solution == ref.qa_solution
        assert a.real_image.tobytes() == b.real_image.tobytes() == ref.real_image.tobytes()


def test_different_seeds_differ():
    def signature(seed):
        scenes = [make_scene(seed, i, 32) for i in range(20)]
        return [(s.prompt, s.qa_problem, s.qa_solution, s.real_image.tobytes()) for s in scenes]

    assert signature(0) != signature(1)
    # not just one example: most of them differ
    same = sum(a == b for a, b in zip(signature(0), signature(1)))
    assert same < 10


def test_different_indices_differ():
    assert len({s.prompt + s.qa_problem for s in SCENES}) > 100


# --------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("size", [8, 32, 64, 96])
def test_image_size_and_mode(size):
    for index in range(5):
        image = make_scene(seed=0, index=index, image_size=size).real_image
        assert image.mode == "RGB"
        assert image.size == (size, size)


def test_default_image_size_is_64():
    assert make_scene(0, 0).real_image.size == (64, 64)
    assert ProceduralExamples(length=1)[0].real_image.size == (64, 64)


@pytest.mark.parametrize("size", [32, 64])
def test_caption_names_every_drawn_object_and_the_background(size):
    for index in range(100):
        scene = make_scene(seed=3, index=index, image_size=size)
        objects, background = parse_caption(scene.prompt)
        assert background in BACKGROUNDS
        assert 1 <= len(objects) <= 3
        assert all(colour in COLOURS and shape in SHAPES for colour, shape in objects)
        assert len({shape for _, shape in objects}) == len(objects), "shapes are distinct"
        corner = scene.real_image.getpixel((0, 0))
        assert corner == BACKGROUNDS[background]
        assert sorted(drawn_objects(scene.real_image, background)) == sorted(objects), scene.prompt


def test_all_colours_shapes_and_backgrounds_occur():
    objects = [o for s in SCENES for o in parse_caption(s.prompt)[0]]
    assert {c for c, _ in objects} == set(COLOURS)
    assert {s for _, s in objects} == set(SHAPES)
    assert {parse_caption(s.prompt)[1] for s in SCENES} == set(BACKGROUNDS)
    assert {len(parse_caption(s.prompt)[0]) for s in SCENES} == {1, 2, 3}


def test_captions_use_the_right_article():
    captions = " ".join(s.prompt for s in SCENES)
    assert "an orange" in captions and "a orange" not in captions
    assert re.search(r"\ban (?![aeiou])", captions) is None  # "an" only before a vowel


# --------------------------------------------------------------------------------------------- questions


def test_question_types_all_occur():
    assert {s.qa_type for s in SCENES} == {"MC", "counting", "attribute"}


def test_solutions_reason_from_the_caption_then_answer():
    for scene in SCENES:
        m = re.fullmatch(r"<think>The image shows (.+?)\.(?: The (\w+) is (\w+)\.)?</think><answer>[^<>]+</answer>",
                         scene.qa_solution)
        assert m, scene.qa_solution
        assert m[1] == scene.prompt, "the reasoning starts from the scene's caption"
        assert (m[2] is not None) == (scene.qa_type == "MC"), "MC solutions name the asked shape's colour"
        if m[2] is not None:
            objects, _ = parse_caption(scene.prompt)
            assert (m[3], m[2]) in objects


def test_mc_questions_list_every_colour_in_one_order_and_one_correct_letter():
    mc = [s for s in SCENES if s.qa_type == "MC"]
    assert len(mc) > 50
    for scene in mc:
        m = MC_QUESTION.match(scene.qa_problem)
        assert m, scene.qa_problem
        options = dict(zip("ABCDEF", m.groups()[1:]))
        assert list(options.values()) == list(COLOURS), "every colour, always in the same order"
        objects, _ = parse_caption(scene.prompt)
        colour_of = {shape: colour for colour, shape in objects}
        asked = m["shape"]
        assert asked in colour_of, "the question asks about a drawn shape"
        correct = [letter for letter, text in options.items() if text == colour_of[asked]]
        assert len(correct) == 1
        assert extract_answer(scene.qa_solution) == correct[0]
    assert {extract_answer(s.qa_solution) for s in mc} == set("ABCDEF"), "every colour is asked about"


def test_counting_answers_equal_the_number_of_shapes():
    counting = [s for s in SCENES if s.qa_type == "counting"]
    assert any(s.qa_problem == "How many shapes are in the image?" for s in counting)
    for scene in counting:
        objects, _ = parse_caption(scene.prompt)
        answer = extract_answer(scene.qa_solution)
        assert answer in NUMBER_WORDS
        m = re.fullmatch(r"How many (?:(\w+) )?shapes are in the image\?", scene.qa_problem)
        assert m, scene.qa_problem
        expected = len(objects) if m[1] is None else sum(colour == m[1] for colour, _ in objects)
        assert expected >= 1
        assert NUMBER_WORDS.index(answer) == expected


def test_attribute_answers_name_the_only_shape_of_that_colour():
    attribute = [s for s in SCENES if s.qa_type == "attribute"]
    assert len(attribute) > 20
    for scene in attribute:
        m = re.fullmatch(r"Which shape is (\w+)\?", scene.qa_problem)
        assert m, scene.qa_problem
        objects, _ = parse_caption(scene.prompt)
        matching = [shape for colour, shape in objects if colour == m[1]]
        assert matching == [extract_answer(scene.qa_solution)], "exactly one shape has the asked colour"


# --------------------------------------------------------------------------------------------- rewards


def test_ground_truth_of_first_200_examples_scores_one():
    for seed in (0, 7):
        scenes = [make_scene(seed, i, 8) for i in range(200)]
        columns = {
            "qa_solution": [s.qa_solution for s in scenes],
            "qa_problem": [s.qa_problem for s in scenes],
            "qa_type": [s.qa_type for s in scenes],
            "prompt": [s.prompt for s in scenes],
        }
        completions = [f"<think>{s.prompt}</think>{s.qa_solution}" for s in scenes]
        assert accuracy_reward(completions, **columns) == [1.0] * 200
        mc = [i for i, s in enumerate(scenes) if s.qa_type == "MC"]
        assert mcq_accuracy_reward(
            [completions[i] for i in mc],
            qa_solution=[scenes[i].qa_solution for i in mc],
            qa_problem=[scenes[i].qa_problem for i in mc],
        ) == [1.0] * len(mc)
        oe = [i for i, s in enumerate(scenes) if s.qa_type != "MC"]
        assert oe_accuracy_reward(
            [completions[i] for i in oe], qa_solution=[scenes[i].qa_solution for i in oe]
        ) == [1.0] * len(oe)


def test_rewards_verify_procedural_answers_in_other_forms():
    for scene in SCENES:
        objects, _ = parse_caption(scene.prompt)
        truth = extract_answer(scene.qa_solution)
        if scene.qa_type == "MC":
            asked = MC_QUESTION.match(scene.qa_problem)["shape"]
            right = [c for c, s in objects if s == asked][0]
            forms, wrong = [right, f"The answer is {truth}", f"({truth})"], "F" if truth != "F" else "E"
        elif scene.qa_type == "counting":
            forms, wrong = [str(NUMBER_WORDS.index(truth)), truth.capitalize() + "."], "4"
        else:
            forms, wrong = [f"The {truth}", truth.upper()], "hexagon"
        completions = [f"<answer>{f}</answer>" for f in [*forms, wrong]]
        n = len(completions)
        scores = accuracy_reward(
            completions, qa_solution=[scene.qa_solution] * n, qa_type=[scene.qa_type] * n,
            qa_problem=[scene.qa_problem] * n,
        )
        assert scores == [1.0] * len(forms) + [0.0], (scene, completions)


# --------------------------------------------------------------------------------------------- dataset


def test_length_and_index_error():
    data = ProceduralExamples(length=5, seed=1, image_size=16)
    assert len(data) == 5
    assert data[4].real_image.size == (16, 16)
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(IndexError):
        data[-1]
    assert len(ProceduralExamples(length=0)) == 0
    with pytest.raises(IndexError):
        ProceduralExamples(length=0)[0]


def test_iteration_stops_at_length():
    data = ProceduralExamples(length=3, seed=2, image_size=8)
    items = list(data)  # the sequence protocol stops at the first IndexError
    assert [s.prompt for s in items] == [make_scene(2, i, 8).prompt for i in range(3)]
