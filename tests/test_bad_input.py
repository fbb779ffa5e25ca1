"""Bad input stops with a message that names the file and row, or the setting: never a deep traceback."""

import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from corl.cli import main
from corl.data.readers import DataError, ExampleFiles
from corl.modules.corl_module import CoRLModule
from corl.modules.lora import LoRA
from corl.modules.rewards import TextReward
from corl.modules.rewards.consistency import ImageConsistencyReward

ROOT = Path(__file__).resolve().parents[1]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = {"prompt": "a red square", "qa_problem": "What colour is it?", "qa_solution": "<answer>red</answer>",
        "qa_type": "open", "real_image": "square.png"}

BAD_ROWS = [  # (what, row 1 of the file, the message)
    ("wrong type", {**GOOD, "prompt": ["a", "list"]}, "column 'prompt' must be text, got list"),
    ("a dict", {**GOOD, "qa_solution": {"answer": 3}}, "column 'qa_solution' must be text, got dict"),
    ("empty string", {**GOOD, "qa_problem": "   "}, "column 'qa_problem' is empty"),
    ("huge question", {**GOOD, "qa_problem": "why? " * 20_000},
     "column 'qa_problem' has 100,000 characters, more than data.max_text_chars = 20,000"),
    ("missing column", {k: v for k, v in GOOD.items() if k != "qa_type"}, r"missing column\(s\) \['qa_type'\]"),
]


@pytest.mark.parametrize(("what", "row", "message"), BAD_ROWS, ids=[case[0] for case in BAD_ROWS])
def test_malformed_jsonl_rows_name_the_file_and_row(tmp_path, what, row, message):
    (tmp_path / "square.png").write_bytes(png())
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}, row 1: ") + message + ".*data.skip_bad_rows: true"):
        ExampleFiles(path, "triplet")
    assert len(ExampleFiles(path, "triplet", skip_bad_rows=True)) == 1  # or skipped and counted


def test_non_utf8_text_names_the_file_and_row(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}, row 1: invalid JSON") + ".*utf-8"):
        ExampleFiles(path, "triplet")


def test_truncated_image_bytes_name_the_file_and_row(tmp_path):
    path = tmp_path / "train.parquet"
    rows = [{**GOOD, "real_image": {"bytes": png()}}, {**GOOD, "real_image": {"bytes": png()[:40]}}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    files = ExampleFiles(path, "triplet")
    assert files[0].real_image.size == (8, 8)
    with pytest.raises(DataError, match=re.escape(f"{path}, row 1: cannot read column 'real_image'") +
                       ".*data.skip_bad_rows: true skips such rows"):
        files[1]


def small(**kwargs):
    return CoRLModule(**{"model": "tiny", "text_rewards": [TextReward("format")], **kwargs})


BAD_SETTINGS = [
    ({"group_size": 1}, "model.group_size is 1: group-scaled advantages"),
    ({"micro_batch_size": 0}, "model.micro_batch_size must be at least 1, got 0"),
    ({"lr": -1e-6}, "model.lr must be positive, got -1e-06"),
    ({"lr": "fast"}, "model.lr must be a number, got 'fast'"),
    ({"mu": 0}, "model.mu must be at least 1"),
    ({"beta": -0.1}, "model.beta must not be negative"),
    ({"aggregation": "mean"}, r"model.aggregation must be one of \('token', 'sequence', 'constant'\), got 'mean'"),
    ({"lora": LoRA(r=0)}, "model.lora.r must be a whole number of at least 1, got 0"),
    ({"lora": LoRA(target_modules=["out_proj"])}, r"model.lora.target_modules: \['out_proj'\]"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS, ids=[next(iter(s)) for s, _ in BAD_SETTINGS])
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        small(**settings)


def test_a_validation_batch_of_no_examples_names_the_setting():
    from corl.data.datamodule import ExampleDataModule

    with pytest.raises(DataError, match=r"data.val_batch_size must be at least 1 \(or null: data.batch_size\), got 0"):
        ExampleDataModule(val_batch_size=0)
    assert ExampleDataModule(batch_size=3, val_source="procedural", val_length=4).val_dataloader().batch_size == 3


def test_rewards_refuse_unknown_names_and_weights_that_are_not_numbers():
    with pytest.raises(ValueError, match="unknown text reward 'acuracy'"):
        TextReward("acuracy")
    with pytest.raises(ValueError, match="the weight of reward 'accuracy' must be a number, got 'abc'"):
        TextReward("accuracy", weight="abc")
    with pytest.raises(ValueError, match="the weight of reward 'consistency' must be a number, got None"):
        ImageConsistencyReward(weight=None)


def test_bad_lora_settings_stop_the_cli_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="model.lora.dropout must lie in"):
        main(["fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny", "--model.lora.dropout", "1.5",
              "--trainer.logger",
              "false", "--trainer.callbacks", "null"])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_zero_steps_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="trainer.max_steps is 0: nothing would be trained"):
        main(["fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny", "--trainer.max_steps", "0",
              "--trainer.logger", "false",
              "--trainer.callbacks", "null"])
