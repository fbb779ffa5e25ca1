"""What TensorBoard shows by eye: captioned image rows and a completions table a person can read."""

import torch

from corl.data.schema import ExampleBatch
from corl.modules.logging_media import CAPTION_LINES, LINE_HEIGHT, captioned_rows, completions_table


def test_each_image_row_carries_its_prompt():
    rows = [torch.zeros(3, 3, 16, 16), torch.zeros(3, 3, 16, 16)]
    grid = captioned_rows(rows, ["a red circle above a blue square", "a green triangle"])
    band = CAPTION_LINES * LINE_HEIGHT + 4
    row_height = 16 + 2 * 2  # make_grid's padding above and below
    assert grid.shape == (3, 2 * (band + row_height), 3 * 16 + 4 * 2)
    first, second = grid[:, :band], grid[:, band + row_height : 2 * band + row_height]
    assert (first < 0.5).any(), "the prompt is written in the band above its row"
    assert not torch.equal(first, second), "each row its own prompt"
    assert torch.equal(captioned_rows(rows[:1], ["x"])[:, band:], grid[:, band : band + row_height])


def test_the_completions_table_has_the_ground_truth_and_one_readable_rewards_column():
    batch = ExampleBatch(prompt=["p0", "p1"], real_image=[None, None],
                         qa_problem=["Which colour? | A or B", "How many?"],
                         qa_solution=["<answer>B</answer>", "<answer>3</answer>"], qa_type=["MC", "counting"])
    rewards = {"accuracy": torch.tensor([1.0, 0.0, 0.0, 1.0]), "format": torch.tensor([0.5, 1.0, 1.0, 1.0]),
               "text": torch.tensor([9.0, 9.0, 9.0, 9.0])}
    table = completions_table(batch, ["<answer>B</answer>", "x", "<answer>2</answer>", "y"], rewards, 2, 2)
    assert table.splitlines() == [
        "| question | ground truth | completion | rewards |", "|---|---|---|---|",
        "| Which colour? \\| A or B | B | <answer>B</answer> | accuracy 1.00, format 0.50 |",
        "| How many? | 3 | <answer>2</answer> | accuracy 0.00, format 1.00 |",
    ]
