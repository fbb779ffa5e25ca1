import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from corl.data.readers import DataError, ExampleFiles, data_files, decode_image
from corl.data.schema import Example

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]


def png(colour=(255, 0, 0), size=(4, 3), mode="RGB") -> bytes:
    image = Image.new("RGB", size, colour).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row(i: int, image) -> dict:
    return {
        "prompt": f"caption {i}",
        "real_image": image,
        "qa_problem": f"question {i}?",
        "qa_solution": f"<answer>{i}</answer>",
        "qa_type": "MC" if i % 2 else "counting",
    }


def write_jsonl(path: Path, rows: list, blank_lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in rows]
    path.write_text(("\n\n" if blank_lines else "\n").join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


HF_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("real_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("qa_problem", pa.string()),
        ("qa_solution", pa.string()),
        ("qa_type", pa.string()),
    ]
)


def check(triplet: Example, i: int, colour, size=(4, 3)) -> None:
    assert isinstance(triplet, Example)
    assert triplet.prompt == f"caption {i}"
    assert triplet.qa_problem == f"question {i}?"
    assert triplet.qa_solution == f"<answer>{i}</answer>"
    assert triplet.qa_type == ("MC" if i % 2 else "counting")
    assert triplet.real_image.mode == "RGB"
    assert triplet.real_image.size == size
    assert triplet.real_image.getpixel((0, 0)) == colour


# --------------------------------------------------------------------------------------------- reading


def test_parquet_with_raw_png_bytes(tmp_path):
    file = write_parquet(tmp_path / "train.parquet", [row(i, png(COLOURS[i])) for i in range(3)])
    data = ExampleFiles(file)
    assert len(data) == 3
    for i in range(3):
        check(data[i], i, COLOURS[i])


def test_parquet_with_hf_image_dicts(tmp_path):
    rows = [row(i, {"bytes": png(COLOURS[i]), "path": None}) for i in range(3)]
    file = write_parquet(tmp_path / "train.parquet", rows, schema=HF_SCHEMA)
    assert pq.read_table(file).schema.field("real_image").type == HF_SCHEMA.field("real_image").type
    data = ExampleFiles(str(file))  # a str path works as well as a Path
    assert len(data) == 3
    for i in range(3):
        check(data[i], i, COLOURS[i])


def test_jsonl_with_paths_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    for i in range(3):
        (folder / "images" / f"{i}.png").write_bytes(png(COLOURS[i]))
    file = write_jsonl(folder / "data.jsonl", [row(i, f"images/{i}.png") for i in range(3)])
    monkeypatch.chdir(tmp_path)  # paths are relative to the file, not to the working directory
    data = ExampleFiles(file)
    assert len(data) == 3
    for i in range(3):
        check(data[i], i, COLOURS[i])


def test_jsonl_with_absolute_paths_and_hf_path_dicts(tmp_path):
    image = tmp_path / "elsewhere" / "x.png"
    image.parent.mkdir()
    image.write_bytes(png(COLOURS[0], size=(5, 6)))
    (tmp_path / "y.png").write_bytes(png(COLOURS[1], size=(5, 6)))
    rows = [row(0, str(image)), row(1, {"bytes": None, "path": "y.png"})]
    data = ExampleFiles(write_jsonl(tmp_path / "data.jsonl", rows))
    check(data[0], 0, COLOURS[0], size=(5, 6))
    check(data[1], 1, COLOURS[1], size=(5, 6))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_images_are_converted_to_rgb(tmp_path, mode):
    file = write_parquet(tmp_path / "a.parquet", [row(0, png((204, 204, 204), mode=mode))])
    image = ExampleFiles(file)[0].real_image
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (204, 204, 204)


def test_folder_reads_all_data_files_sorted_and_recursively(tmp_path):
    write_parquet(tmp_path / "b.parquet", [row(1, png(COLOURS[1])), row(2, png(COLOURS[2]))])
    sub = tmp_path / "a_sub"
    sub.mkdir()
    (sub / "0.png").write_bytes(png(COLOURS[0]))
    write_jsonl(sub / "part.jsonl", [row(0, "0.png")])  # relative to its own folder, not the root
    write_jsonl(tmp_path / "c.jsonl", [row(3, {"bytes": None, "path": "a_sub/0.png"})])
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "folder.jsonl").mkdir()  # a folder named like a data file is not a data file

    files = data_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a_sub/part.jsonl", "b.parquet", "c.jsonl"]
    data = ExampleFiles(tmp_path)
    assert len(data) == 4
    for i in range(3):
        check(data[i], i, COLOURS[i])
    check(data[3], 3, COLOURS[0])


def test_data_files_of_a_single_file(tmp_path):
    file = write_jsonl(tmp_path / "one.jsonl", [row(0, "x.png")])
    assert data_files(file) == [file]


def test_columns_mapping(tmp_path):
    rows = [
        {"caption": f"caption {i}", "image": png(COLOURS[i]), "question": f"question {i}?",
         "answer": f"<answer>{i}</answer>", "qa_type": "MC" if i % 2 else "counting", "extra": 1}
        for i in range(2)
    ]
    file = write_parquet(tmp_path / "renamed.parquet", rows)
    mapping = {"prompt": "caption", "real_image": "image", "qa_problem": "question", "qa_solution": "answer"}
    data = ExampleFiles(file, columns=mapping)  # qa_type keeps its own name
    assert len(data) == 2
    for i in range(2):
        check(data[i], i, COLOURS[i])
    with pytest.raises(DataError, match=r"renamed\.parquet: no column\(s\) \[.*'prompt'.*data\.columns"):
        ExampleFiles(file)  # without the mapping our names are missing from the file


def test_non_string_values_become_strings(tmp_path):
    r = {**row(0, png()), "qa_solution": 2, "qa_type": "counting"}
    triplet = ExampleFiles(write_parquet(tmp_path / "n.parquet", [r]))[0]
    assert triplet.qa_solution == "2"


def test_blank_lines_and_utf8_in_jsonl(tmp_path):
    (tmp_path / "i.png").write_bytes(png())
    rows = [{**row(i, "i.png"), "prompt": f"un café {i} — ✓"} for i in range(3)]
    data = ExampleFiles(write_jsonl(tmp_path / "u.jsonl", rows, blank_lines=True))
    assert len(data) == 3
    assert [data[i].prompt for i in range(3)] == [f"un café {i} — ✓" for i in range(3)]


def test_empty_data_file_gives_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert len(ExampleFiles(tmp_path / "empty.jsonl")) == 0


def test_decode_image_accepts_every_form(tmp_path):
    data = png(COLOURS[2])
    (tmp_path / "p.png").write_bytes(data)
    forms = (data, bytearray(data), {"bytes": data, "path": None}, {"bytes": None, "path": "p.png"}, "p.png")
    for value in (*forms, str(tmp_path / "p.png")):
        image = decode_image(value, tmp_path)
        assert image.mode == "RGB" and image.getpixel((0, 0)) == COLOURS[2]
    for bad in (None, 3, "", {"bytes": None, "path": None}):
        with pytest.raises(ValueError):
            decode_image(bad, tmp_path)


# --------------------------------------------------------------------------------------------- errors


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_column_names_file_and_row(tmp_path):
    rows = [row(0, png()), {k: v for k, v in row(1, png()).items() if k != "qa_type"}, row(2, png())]
    file = write_parquet(tmp_path / "missing.parquet", rows)
    with pytest.raises(DataError) as err:
        ExampleFiles(file)
    message = str(err.value)
    assert "missing.parquet" in message
    assert "row 1" in message
    assert "qa_type" in message


def test_null_value_counts_as_missing_in_jsonl(tmp_path):
    rows = [row(0, "a.png"), row(1, "a.png"), row(2, "a.png"), {**row(3, "a.png"), "qa_solution": None}]
    file = write_jsonl(tmp_path / "nulls.jsonl", rows, blank_lines=True)
    with pytest.raises(DataError, match=r"nulls\.jsonl, row 3\b.*qa_solution"):
        ExampleFiles(file)


def test_solution_with_an_empty_answer_block_names_file_and_row(tmp_path):
    rows = [row(0, "a.png"), {**row(1, "a.png"), "qa_solution": "<think>hm</think><answer> </answer>"}]
    file = write_jsonl(tmp_path / "blank.jsonl", rows)
    with pytest.raises(DataError, match=r"blank\.jsonl, row 1\b.*qa_solution.*empty <answer>"):
        ExampleFiles(file)
    assert len(ExampleFiles(file, skip_bad_rows=True)) == 1


def test_missing_mapped_column_names_the_files_column(tmp_path):
    file = write_jsonl(tmp_path / "m.jsonl", [row(0, "a.png")])
    with pytest.raises(DataError, match=r"m\.jsonl: no column\(s\) \['picture'\].*real_image: <your column>"):
        ExampleFiles(file, columns={"real_image": "picture"})


@pytest.mark.parametrize("hf_dicts", [False, True])
def test_undecodable_image_bytes_fail_on_getitem_with_file_and_row(tmp_path, hf_dicts):
    images = [png(), b"this is not an image", b"\x89PNG\r\n\x1a\n truncated"]
    if hf_dicts:
        images = [{"bytes": image, "path": None} for image in images]
    file = write_parquet(tmp_path / "broken.parquet", [row(i, image) for i, image in enumerate(images)],
                         schema=HF_SCHEMA if hf_dicts else None)
    data = ExampleFiles(file)  # rows are complete, so reading them succeeds
    assert len(data) == 3
    check(data[0], 0, (255, 0, 0))
    for index in (1, 2):
        with pytest.raises(DataError) as err:
            data[index]
        message = str(err.value)
        assert "broken.parquet" in message
        assert f"row {index}" in message
        assert "real_image" in message


def test_missing_image_file_fails_on_getitem_with_file_and_row(tmp_path):
    data = ExampleFiles(write_jsonl(tmp_path / "paths.jsonl", [row(0, "nowhere.png")]))
    with pytest.raises(DataError, match=r"paths\.jsonl, row 0\b"):
        data[0]


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope"):
        data_files(missing)
    with pytest.raises(DataError, match="nope"):
        ExampleFiles(missing)
    with pytest.raises(DataError, match="nope.parquet"):
        ExampleFiles(tmp_path / "nope.parquet")


def test_folder_without_data_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=str(tmp_path.name)):
        ExampleFiles(tmp_path)
    empty = tmp_path / "sub"
    with pytest.raises(DataError, match="sub"):
        data_files(empty)


def test_unsupported_file_type(tmp_path):
    file = tmp_path / "data.csv"
    file.write_text("prompt\n")
    with pytest.raises(DataError, match=r"data\.csv"):
        ExampleFiles(file)


def test_invalid_json_line_names_file_and_row(tmp_path):
    file = write_jsonl(tmp_path / "bad.jsonl", [row(0, "a.png"), row(1, "a.png"), '{"prompt": "unterminated'])
    with pytest.raises(DataError) as err:
        ExampleFiles(file)
    message = str(err.value)
    assert "bad.jsonl" in message
    assert "row 2" in message
    assert "invalid JSON" in message


def test_invalid_json_row_number_skips_blank_lines(tmp_path):
    file = write_jsonl(tmp_path / "gaps.jsonl", [row(0, "a.png"), "not json"], blank_lines=True)
    with pytest.raises(DataError, match=r"gaps\.jsonl, row 1\b"):
        ExampleFiles(file)


def test_json_line_that_is_not_an_object(tmp_path):
    file = write_jsonl(tmp_path / "list.jsonl", [row(0, "a.png"), [1, 2, 3]])
    with pytest.raises(DataError, match=r"list\.jsonl, row 1\b.*object"):
        ExampleFiles(file)


def test_error_in_second_file_of_a_folder_names_that_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [row(0, "x.png")])
    write_jsonl(tmp_path / "b.jsonl", [row(0, "x.png"), {"prompt": "only a prompt"}])
    with pytest.raises(DataError) as err:
        ExampleFiles(tmp_path)
    assert "b.jsonl" in str(err.value) and "a.jsonl" not in str(err.value)
    assert "row 1" in str(err.value)
