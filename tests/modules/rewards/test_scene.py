import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw, ImageFilter

from corl.data.procedural import BACKGROUNDS, COLOURS, SHAPES, make_scene
from corl.modules.rewards import GeneratedImages, SceneReward
from corl.modules.rewards.scene import label_components, parse_caption, scene_checks


def draw_scene(objects, background, size):
    """The procedural layout redrawn: ``objects[i]`` (colour, shape) in slot i of len(objects); None leaves it empty."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    cell = size // len(objects)
    margin = max(1, cell // 8)
    for slot, drawn in enumerate(objects):
        if drawn is None:
            continue
        colour, shape = drawn
        x0, y0, x1, y1 = slot * cell + margin, size // 4, (slot + 1) * cell - margin, size // 4 + cell - 2 * margin
        if shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=COLOURS[colour])
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=COLOURS[colour])
    return image


def pixels(image):
    return TF.pil_to_tensor(image).float().div(127.5).sub(1.0)  # [3, H, W] in [-1, 1]


def score(images, prompts, **kwargs):
    return SceneReward(**kwargs)(GeneratedImages(images, [None] * len(prompts), prompts, torch.zeros(len(prompts), 4)))


def failed(image, prompt):
    return {name for name, passed in scene_checks(np.asarray(image), prompt).items() if not passed}


def other(options, value, salt):
    """An option other than ``value``, varied by ``salt``."""
    rest = [o for o in options if o != value]
    return rest[salt % len(rest)]


def test_parse_caption():
    assert parse_caption("a red circle, a blue square and an orange triangle on a white background") == (
        [("red", "circle"), ("blue", "square"), ("orange", "triangle")], "white"
    )
    assert parse_caption("a red circle and a red square on a gray background") == (
        [("red", "circle"), ("red", "square")], "gray"
    )
    assert parse_caption("  An Orange triangle on a black background. ") == ([("orange", "triangle")], "black")
    for prompt in ["", "a cat on a mat", "a red hexagon on a white background", "a pink circle on a white background",
                   "a red circle on a green background", "a red circle, a blue square on a white background",
                   "red circle on a white background", "a red circle on a white background with a dog"]:
        assert parse_caption(prompt) is None, prompt


def test_the_layout_helper_draws_the_procedural_scenes():
    for index in range(30):
        scene = make_scene(0, index, image_size=64)
        objects, background = parse_caption(scene.prompt)
        assert np.array_equal(np.asarray(draw_scene(objects, background, 64)), np.asarray(scene.real_image))


@pytest.mark.parametrize("size", [64, 32])
def test_real_scenes_score_one(size):
    scenes = [make_scene(3, i, image_size=size) for i in range(200)]
    values = score(torch.stack([pixels(s.real_image) for s in scenes]), [s.prompt for s in scenes])
    assert values.shape == (200,) and values.dtype == torch.float32
    assert (values == 1.0).float().mean() >= 0.95 and values.min() >= 0.75


def test_blurred_noisy_scenes_still_score_one():
    """Decoded images are soft and their colours approximate."""
    rng = np.random.default_rng(0)
    values = []
    for index in range(100):
        scene = make_scene(4, index, image_size=64)
        soft = np.asarray(scene.real_image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
        noisy = np.clip(soft + rng.normal(0, 10, soft.shape), 0, 255)
        checks = scene_checks(noisy, scene.prompt)
        values.append(sum(checks.values()) / len(checks))
    assert np.mean(np.array(values) == 1.0) >= 0.95 and min(values) >= 0.75


@pytest.mark.parametrize("blur", [1.5, 2.0])
def test_blurred_edges_are_no_extra_blobs(blur):
    """A blurred edge blends into other palette colours (yellow on black reads orange) in thin fringes."""
    for colour, shape, background in itertools.product(COLOURS, SHAPES, BACKGROUNDS):
        image = draw_scene([(colour, shape)], background, 64).filter(ImageFilter.GaussianBlur(blur))
        assert failed(image, f"a {colour} {shape} on a {background} background") == set(), (colour, shape, background)


@pytest.mark.parametrize("size", [64, 32])
def test_each_edit_loses_exactly_its_checks(size):
    for index in range(40):
        prompt = make_scene(5, index, image_size=size).prompt
        objects, background = parse_caption(prompt)
        assert failed(draw_scene(objects, background, size), prompt) == set()

        recoloured_background = other(BACKGROUNDS, background, index)
        assert failed(draw_scene(objects, recoloured_background, size), prompt) == {"background"}

        i = index % len(objects)
        colour, shape = objects[i]
        edit = list(objects)
        edit[i] = None
        assert failed(draw_scene(edit, background, size), prompt) == {"count", f"colour[{i}]", f"shape[{i}]"}
        edit[i] = (other(COLOURS, colour, index), shape)
        assert failed(draw_scene(edit, background, size), prompt) == {f"colour[{i}]"}
        for wrong in SHAPES:
            if wrong != shape:
                edit[i] = (colour, wrong)
                assert failed(draw_scene(edit, background, size), prompt) == {f"shape[{i}]"}, (prompt, wrong)


def test_colours_are_bound_to_their_shapes():
    prompt = "a red circle and a blue square on a white background"
    assert failed(draw_scene([("red", "circle"), ("blue", "square")], "white", 64), prompt) == set()
    # Each object keeps its colour or its shape, not both; the pairing follows the slots on a tie.
    assert failed(draw_scene([("red", "square"), ("blue", "circle")], "white", 64), prompt) == {"shape[0]", "shape[1]"}
    swapped = draw_scene([("blue", "circle"), ("red", "square")], "white", 64)
    assert failed(swapped, prompt) == {"colour[0]", "colour[1]"}
    values = score(pixels(swapped)[None], [prompt])
    torch.testing.assert_close(values, torch.tensor([4 / 6]))  # background, count and 2 of 4 object checks


def test_a_repeated_colour_needs_a_blob_each():
    prompt = "a red circle and a red square on a black background"
    assert failed(draw_scene([("red", "circle"), ("red", "square")], "black", 64), prompt) == set()
    one_red = draw_scene([("red", "circle"), None], "black", 64)
    assert failed(one_red, prompt) == {"count", "colour[1]", "shape[1]"}


def test_colours_off_the_palette_are_no_colour():
    prompt = "a blue square on a white background"
    image = np.array(draw_scene([("blue", "square")], "white", 64))
    image[(image == COLOURS["blue"]).all(-1)] = (40, 200, 200)  # cyan: >120 from blue, its nearest palette colour
    assert failed(image, prompt) == {"count", "colour[0]", "shape[0]"}
    image[(image == (40, 200, 200)).all(-1)] = (60, 100, 180)  # an approximate blue still is blue
    assert failed(image, prompt) == set()


def test_noise_and_blank_images_score_low():
    scenes = [make_scene(6, i, image_size=64) for i in range(32)]
    prompts = [s.prompt for s in scenes]
    noise = torch.rand(32, 3, 64, 64) * 2 - 1
    blank = torch.stack([pixels(Image.new("RGB", (64, 64), BACKGROUNDS[parse_caption(p)[1]])) for p in prompts])
    assert score(noise, prompts).max() < 0.4
    blank_values = score(blank, prompts)
    assert blank_values.max() < 0.4 and blank_values.min() > 0  # the background itself is right


def test_unparsable_prompts_score_nan_and_the_rest_are_scored():
    scene = make_scene(0, 1, image_size=32)
    images = pixels(scene.real_image)[None].expand(2, -1, -1, -1)
    values = score(images, ["a photo of a dog", scene.prompt])
    assert math.isnan(values[0]) and values[1] == 1.0
    assert scene_checks(np.asarray(scene.real_image), "a photo of a dog") is None


def test_defaults_and_name():
    reward = SceneReward(weight=0.5)
    assert reward.name == "scene" and reward.weight == 0.5
    assert SceneReward(name="geneval").name == "geneval"


def test_components_are_four_connected_regions_of_one_class():
    classes = np.array([
        [0, 0, 9, 1, 1],
        [9, 0, 9, 9, 1],
        [0, 0, 9, 1, 9],
        [9, 2, 2, 9, 1],
    ])
    labels = label_components(classes, classes < 9)
    foreground = classes < 9
    # the 0s form one C-shaped region; the 1s three (diagonal contact does not join); the 2s one
    assert len(np.unique(labels[foreground])) == 5
    assert labels[0, 0] == labels[2, 0] == labels[2, 1]
    assert labels[2, 3] != labels[1, 4] and labels[3, 4] != labels[2, 3]
    assert labels[3, 1] == labels[3, 2] != labels[2, 1]  # touching regions of different classes stay apart


def test_parts_are_the_share_of_each_kind_of_check_passed():
    prompt = "a red circle and a blue square on a white background"
    right = draw_scene([("red", "circle"), ("blue", "square")], "white", 64)
    green_square = draw_scene([("red", "circle"), ("green", "square")], "white", 64)
    on_black = draw_scene([("red", "circle"), ("blue", "square")], "black", 64)
    images = torch.stack([pixels(image) for image in (right, green_square, on_black, right)])
    prompts = [prompt] * 3 + ["a cat on a mat"]
    scored = SceneReward().scored(GeneratedImages(images, [None] * 4, prompts, torch.zeros(4, 4)))
    values, parts = scored.values, scored.parts
    torch.testing.assert_close(values[:3], torch.tensor([1.0, 5 / 6, 5 / 6]))
    expected = {"background": [1.0, 1.0, 0.0], "count": [1.0, 1.0, 1.0], "colour": [1.0, 0.5, 1.0],
                "shape": [1.0, 1.0, 1.0]}
    assert set(parts) == set(expected)
    for kind, want in expected.items():
        torch.testing.assert_close(parts[kind][:3], torch.tensor(want), msg=kind)
        assert parts[kind][3].isnan(), kind  # an unparsable prompt has no checks
    assert values[3].isnan()
    torch.testing.assert_close(SceneReward()(GeneratedImages(images, [None] * 4, prompts, torch.zeros(4, 4))), values,
                               equal_nan=True)
