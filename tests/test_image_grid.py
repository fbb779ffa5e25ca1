from pathlib import Path

import pytest
import torch
from PIL import Image

from corl.cli import main
from corl.image_grid import model_rows
from corl.modules.logging_media import CAPTION_LINES, LINE_HEIGHT

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/demo/s1.yaml")


def test_every_model_draws_the_same_prompts_under_the_same_random_draws():
    prompts, images, scene = model_rows(CONFIG, "tiny", [], prompts=2, samples=3, seed=5, device="cpu")
    again = model_rows(CONFIG, "tiny", [], prompts=2, samples=3, seed=5, device="cpu")
    other = model_rows(CONFIG, "tiny", ["--model.seed", "1"], prompts=2, samples=3, seed=5, device="cpu")
    assert images.shape[:2] == scene.shape == (2, 3) and len(prompts) == 2
    assert again[0] == other[0] == prompts, "the first held-out prompts, whatever the model"
    assert torch.equal(again[1], images) and torch.equal(again[2], scene)
    assert not torch.equal(other[1], images), "other weights, other images under the same draws"
    assert not torch.equal(images[0, 0], images[0, 1]), "a prompt's samples are separate draws"


def test_grid_writes_a_row_per_prompt_and_model(tmp_path, capsys):
    out = tmp_path / "grid.png"
    main(["grid", "a=tiny", "b=tiny", "-c", CONFIG, "--prompts", "2", "--samples", "2", "--device", "cpu",
          "--out", str(out)])
    width, height = Image.open(out).size
    rows = 2 * 2
    assert height == rows * (CAPTION_LINES * LINE_HEIGHT + 4 + 64 + 4)  # caption band, then 64 px images padded 2
    assert width == 2 * (64 + 2) + 2
    assert "2 prompts x 2 models x 2 images" in capsys.readouterr().out


def test_grid_refuses_an_empty_grid(tmp_path):
    with pytest.raises(SystemExit, match="--prompts and --samples must be at least 1"):
        main(["grid", "tiny", "-c", CONFIG, "--samples", "0", "--out", str(tmp_path / "g.png")])


def test_a_config_without_the_scene_reward_draws_without_scores(tmp_path, capsys):
    matching_only = ["--model.image_rewards", '[{"class_path": "corl.modules.rewards.TextImageMatchingReward"}]']
    prompts, images, scene = model_rows(CONFIG, "tiny", matching_only, prompts=2, samples=2, seed=0, device="cpu")
    assert scene is None and images.shape[:2] == (2, 2)
    main(["grid", "tiny", "-c", CONFIG, *matching_only, "--prompts", "1", "--samples", "2", "--device", "cpu",
          "--out", str(tmp_path / "g.png")])
    assert "scene" not in capsys.readouterr().out and (tmp_path / "g.png").is_file()
