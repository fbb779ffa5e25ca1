"""The public CoRL data sets' layout: Hugging Face parquet shards, images as bytes in {bytes, path} structs."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from corl.data.datamodule import ExampleDataModule
from corl.data.readers import DataError, ExampleFiles
from corl.data.schema import collate_examples


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_struct(data):
    return {"bytes": data, "path": None}


def write_shards(folder, rows, shards=2, row_group_size=2):
    """rows split into `shards` files named like a Hub data set's parquet export."""
    (folder / "data").mkdir(parents=True)
    per = (len(rows) + shards - 1) // shards
    for index in range(shards):
        part = rows[index * per : (index + 1) * per]
        table = pa.Table.from_pylist(part)
        pq.write_table(table, folder / "data" / f"train-{index:05d}-of-{shards:05d}.parquet",
                       row_group_size=row_group_size)
    return folder


def triplets(n):
    return [{"prompt": f"prompt {i}", "real_image": image_struct(png((i * 20, 0, 0))), "qa_problem": f"q{i}",
             "qa_solution": f"<answer>{i}</answer>", "qa_type": "MC" if i % 2 else "counting", "extra": i}
            for i in range(n)]


def test_stage1_triplet_shards_stream_row_group_by_row_group(tmp_path):
    data = ExampleFiles(write_shards(tmp_path, triplets(7)), kind="triplet")
    assert len(data) == 7
    example = data[5]
    assert example.prompt == "prompt 5" and example.qa_type == "MC" and example.real_image.getpixel((0, 0))[0] == 100
    group = data._group_cache[2]
    assert len(group) <= 2, "only one row group of one shard is held"
    assert [data[i].prompt for i in range(7)] == [f"prompt {i}" for i in range(7)]  # shard order kept


def test_stage2_t2i_layout_needs_only_prompt_and_image(tmp_path):
    rows = [{"prompt": f"p{i}", "real_image": image_struct(png("blue"))} for i in range(4)]
    data = ExampleFiles(write_shards(tmp_path, rows), kind="t2i")
    example = data[3]
    assert example.prompt == "p3" and example.qa_problem is None
    # a whole file without the column: the two settings that fix it, not "row 0"
    with pytest.raises(DataError, match=r"no column\(s\) \['qa_problem', 'qa_solution', 'qa_type'\] in its first "
                       r"row \(it has \['prompt', 'real_image'\]\)\. Name yours with data.columns \(\{qa_problem: "
                       r"<your column>.*or give every row a value with data.defaults"):
        ExampleFiles(tmp_path, kind="triplet")


def test_stage2_qa_layout_with_mapped_columns_and_a_default_type(tmp_path):
    rows = [{"image": image_struct(png("green")), "problem": f"What? {i}", "solution": "<answer>A</answer>"}
            for i in range(3)]
    data = ExampleFiles(write_shards(tmp_path, rows, shards=1), kind="qa",
                        columns={"real_image": "image", "qa_problem": "problem", "qa_solution": "solution"},
                        defaults={"qa_type": "MC"})
    example = data[2]
    assert (example.qa_problem, example.qa_solution, example.qa_type) == ("What? 2", "<answer>A</answer>", "MC")
    assert example.prompt is None


def test_bad_rows_name_file_and_row_or_are_skipped_and_counted(tmp_path):
    rows = triplets(6)
    rows[1]["prompt"] = None  # a missing field
    rows[4]["real_image"] = image_struct(b"not a png")  # an undecodable image
    folder = write_shards(tmp_path, rows, shards=2)
    with pytest.raises(DataError, match=r"train-00000-of-00002\.parquet, row 1: missing column.*prompt"):
        ExampleFiles(folder)
    data = ExampleFiles(folder, skip_bad_rows=True)
    assert len(data) == 5 and data.skipped == 1
    # Row 4 overall (index 3) has the undecodable image: reading it passes on to the next row.
    assert data[3].prompt == data[4].prompt == rows[5]["prompt"] and data[3].skipped == 1 and data[4].skipped == 0
    rows[1]["prompt"] = "complete again"
    strict = ExampleFiles(write_shards(tmp_path / "strict", rows, shards=2))
    with pytest.raises(DataError, match=r"train-00001-of-00002\.parquet, row 1: cannot read column 'real_image'"):
        strict[4]
    batch = collate_examples([data[i] for i in range(5)])
    assert len(batch) == 5 and batch.skipped == 1  # full batches keep the ranks of a distributed run in step


def test_a_set_without_one_readable_image_is_an_error(tmp_path):
    rows = triplets(2)
    for row in rows:
        row["real_image"] = image_struct(b"broken")
    data = ExampleFiles(write_shards(tmp_path, rows, shards=1), skip_bad_rows=True)
    with pytest.raises(DataError, match="no row .* has a readable image"):
        data[0]


def test_skipped_rows_reach_the_logs(tmp_path, quiet_trainer):
    from corl.modules.corl_module import CoRLModule
    from corl.modules.rewards import TextReward

    rows = triplets(8)
    rows[0]["qa_problem"] = None
    rows[2]["real_image"] = image_struct(b"broken")
    folder = write_shards(tmp_path, rows, shards=1)
    module = CoRLModule(model="tiny", group_size=2, max_completion_tokens=4, log_media_every_n_steps=0,
                        text_rewards=[TextReward("format")])
    trainer, metrics = quiet_trainer(3)
    trainer.fit(module, ExampleDataModule(source=str(folder), batch_size=2, shuffle=False, skip_bad_rows=True))
    assert metrics.values("data/skipped_rows")[-1] == 2  # one at opening, one while reading
    assert torch.isfinite(torch.tensor(metrics.values("loss/total"))).all()
