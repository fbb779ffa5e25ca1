"""``corl prompt``: what the model reads under a config, as text and ids, before any training."""

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from corl.cli import main
from corl.modules.tiny import build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_MC = (
    "What is the man holding?\nA. an umbrella\nB. a kite\nC. a phone\nD. a cup\n\n"
    "Answer the question based on the image and your world knowledge.\n\nPlease write your thinking process inside "
    "<think> </think> tags, and provide your final answer (option letter, e.g., A/B/C/D) inside <answer> </answer> "
    "tags.\nYour response MUST strictly follow this format: <think> ... </think><answer>option letter</answer>"
)
SYSTEM = "You are a helpful language and vision assistant."


def run_json(capsys, *args) -> dict:
    main(["prompt", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_the_paper_config_reads_no_system_prompt_and_one_instruction(capsys):
    shown = run_json(capsys, "-c", str(ROOT / "configs/s1.yaml"), "--model.model", "tiny",
                     "--question", AUTHORS_MC, "--qa-type", "MC", "--prompt", "a red circle")
    text = shown["understanding"]["text"]
    assert text.startswith("<|User|>: <begin_of_image>") and SYSTEM not in text
    assert text.endswith("<end_of_image>\n" + AUTHORS_MC + "\n\n<|Assistant|>:")
    assert text.count("Answer the question based on the image") == 1 and text.count("Please write your thinking") == 1
    assert text.count("<image_placeholder>") == 64  # never shortened in --json
    tokenizer = build_tiny_tokenizer()
    assert shown["understanding"]["ids"] == tokenizer(text)["input_ids"]  # BOS first, added by the tokenizer
    assert shown["understanding"]["ids"][0] == tokenizer.bos_token_id
    assert shown["generation"]["text"] == "<|User|>: a red circle\n\n<|Assistant|>:<begin_of_image>"
    assert shown["generation"]["ids"] == tokenizer(shown["generation"]["text"])["input_ids"]


def test_a_bare_question_gets_the_configs_instruction_and_overrides_reach_the_config(capsys):
    shown = run_json(capsys, "-c", str(ROOT / "configs/s2_oe.yaml"), "--model.model", "tiny",
                     "--model.system_prompt", "default", "--question", "What colour is the bus?", "--qa-type", "color")
    text = shown["understanding"]["text"]
    assert text.startswith(SYSTEM) and "\n\n<|User|>: " in text
    assert "What colour is the bus?\n\nAnswer the question based on the image and your world knowledge." in text
    assert "(only 1\u20133 words)" in text


def test_the_demo_config_reads_what_its_warm_start_was_taught(capsys):
    shown = run_json(capsys, "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny")
    text = shown["understanding"]["text"]
    assert text.startswith(SYSTEM)  # the processor's default, as the warm start
    assert "\nAnswer the question based on the image and your knowledge. Please write" in text  # the poster's


def test_texts_come_from_a_data_row(capsys, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (0, 0, 255)).save(buffer, format="PNG")
    rows = [{"prompt": f"a caption {i}", "real_image": {"bytes": buffer.getvalue(), "path": None},
             "qa_problem": f"Question {i}?", "qa_solution": "<answer>A</answer>", "qa_type": "MC"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    shown = run_json(capsys, "-c", str(ROOT / "configs/s1.yaml"), "--model.model", "tiny",
                     "--data", str(tmp_path / "train.parquet"), "--row", "2")
    assert "<end_of_image>\nQuestion 2?\n\nAnswer the question" in shown["understanding"]["text"]
    assert shown["generation"]["text"].startswith("<|User|>: a caption 2\n\n")


def test_the_plain_output_shortens_the_image_run_and_says_what_it_shows(capsys):
    main(["prompt", "-c", str(ROOT / "configs/s1.yaml"), "--model.model", "tiny", "--question", AUTHORS_MC])
    out = capsys.readouterr().out
    assert "<image_placeholder>×64<end_of_image>" in out and "<image_placeholder><image_placeholder>" not in out
    assert "system_prompt 'none'" in out and "used verbatim" in out
    assert "generation:" in out and "tokens" in out
