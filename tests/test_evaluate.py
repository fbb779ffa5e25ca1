import json
import re
from pathlib import Path

import pytest

from corl.checkpoints import export
from corl.cli import main
from corl.evaluate import model_specs, table
from corl.modules.tiny import build_tiny_janus

ROOT = Path(__file__).resolve().parents[1]


def test_model_specs_are_named():
    assert model_specs(["tiny", "s1=checkpoints/demo/s1/last.ckpt", "exports/demo/t2i", "runs/x/last.ckpt",
                        "base=tiny-warm"]) == [
        ("tiny", "tiny"), ("s1", "checkpoints/demo/s1/last.ckpt"), ("t2i", "exports/demo/t2i"),
        ("last", "runs/x/last.ckpt"), ("base", "tiny-warm")]
    lightning = "checkpoints/x/epoch=0-step=80.ckpt"  # Lightning's own checkpoint names hold "="
    assert model_specs([f"r40={lightning}", lightning]) == [("r40", lightning), ("epoch=0-step=80", lightning)]


def test_the_same_model_gets_the_same_scores_on_the_same_held_out_examples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval.json"
    main(["evaluate", "base=tiny", "again=tiny", "-c", str(ROOT / "configs/demo/s1.yaml"), "--examples", "3",
          "--batch-size", "2", "--device", "cpu", "--json", str(out)])
    results = json.loads(out.read_text())
    assert list(results) == ["base", "again"]
    scene_parts = ["scene/background", "scene/count", "scene/colour", "scene/shape"]  # GenEval's categories
    assert list(results["base"]) == ["cycle", "tim", "scene", *scene_parts, "accuracy", "format"]
    assert results["base"] == results["again"], "greedy answers and seeded images: reproducible"
    assert all(0.0 <= value <= 1.0 for value in results["base"].values())
    assert table(results) in capsys.readouterr().out


def test_a_deepseek_folder_is_scored_as_the_model_it_was_exported_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, processor = build_tiny_janus(seed=0)  # what model: tiny builds
    export(model, processor, tmp_path / "ds", "deepseek")
    out = tmp_path / "eval.json"
    main(["evaluate", "tiny", f"ds={tmp_path / 'ds'}", "-c", str(ROOT / "configs/demo/s2_mcq.yaml"), "--model.model",
          "tiny", "--examples", "2", "--batch-size", "2", "--device", "cpu", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["ds"] == results["tiny"]


def test_sampled_answers_are_scored_beside_the_greedy_ones_and_reproducibly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval.json"
    main(["evaluate", "a=tiny", "b=tiny", "-c", str(ROOT / "configs/demo/s2_mcq.yaml"), "--examples", "4",
          "--batch-size", "2", "--device", "cpu", "--sampled-answers", "--json", str(out),
          "--model.max_completion_tokens", "6"])  # an option for the config
    results = json.loads(out.read_text())
    assert set(results["a"]) == {"accuracy", "format", "accuracy_sampled", "format_sampled"}
    assert results["a"] == results["b"]


def test_rewards_option_scores_only_the_named_rewards_and_the_same_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["-c", str(ROOT / "configs/demo/s1.yaml"), "--examples", "3", "--batch-size", "3", "--device", "cpu"]
    main(["evaluate", "all=tiny", *config, "--json", str(tmp_path / "all.json")])
    main(["evaluate", "some=tiny", *config, "--rewards", "scene", "format", "--json", str(tmp_path / "some.json")])
    every = json.loads((tmp_path / "all.json").read_text())["all"]
    some = json.loads((tmp_path / "some.json").read_text())["some"]
    assert list(some) == ["scene", "scene/background", "scene/count", "scene/colour", "scene/shape", "format"]
    assert some == {name: every[name] for name in some}, "the same draws, whatever else is scored"


def test_rewards_option_names_the_unknown_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"clip not among the config's rewards \(cycle, tim, scene, accuracy"):
        main(["evaluate", "tiny", "-c", str(ROOT / "configs/demo/s1.yaml"), "--examples", "1", "--device", "cpu",
              "--rewards", "scene", "clip"])


def test_models_scored_in_worker_processes_get_the_scores_they_get_one_at_a_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["-c", str(ROOT / "configs/demo/s2_mcq.yaml"), "--examples", "2", "--batch-size", "2", "--device", "cpu",
              "--model.max_completion_tokens", "6"]
    main(["evaluate", "a=tiny", "b=tiny", *config, "--json", str(tmp_path / "serial.json")])
    main(["evaluate", "a=tiny", "b=tiny", *config, "--jobs", "2", "--json", str(tmp_path / "jobs.json")])
    serial, jobs = (json.loads((tmp_path / name).read_text()) for name in ("serial.json", "jobs.json"))
    assert list(jobs) == ["a", "b"] and jobs == serial


def test_jobs_must_be_positive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--jobs must be at least 1, got 0"):
        main(["evaluate", "tiny", "-c", str(ROOT / "configs/demo/s1.yaml"), "--device", "cpu", "--jobs", "0"])


def test_scores_of_earlier_runs_are_gathered_in_the_order_named_and_not_scored_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["-c", str(ROOT / "configs/demo/s2_mcq.yaml"), "--examples", "2", "--batch-size", "2", "--device", "cpu",
              "--model.max_completion_tokens", "6"]
    main(["evaluate", "a=tiny", *config, "--json", str(tmp_path / "a.json")])
    (tmp_path / "b.json").write_text(json.dumps({"b": {"accuracy": 0.25, "format": 0.5}}))  # "b" cannot be scored
    main(["evaluate", "b=no/such/model", "a=tiny", "c=tiny", *config, "--scores", str(tmp_path / "a.json"),
          str(tmp_path / "b.json"), "--json", str(tmp_path / "all.json")])
    gathered, first = (json.loads((tmp_path / name).read_text()) for name in ("all.json", "a.json"))
    assert list(gathered) == ["b", "a", "c"]
    assert gathered["b"] == {"accuracy": 0.25, "format": 0.5} and gathered["a"] == first["a"]
    assert gathered["c"] == first["a"], "a model not in the files is scored, on the same examples and draws"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("{", "not JSON"),
    ('{"a": 0.5}', "not {model: {reward: mean}}"),
    ('{"a": {"format": 0.5}}', "a has no accuracy score"),
])
def test_scores_files_that_cannot_be_used_are_named(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    scores = tmp_path / "earlier.json"
    if content is not None:
        scores.write_text(content)
    with pytest.raises(SystemExit, match=re.escape(f"--scores {scores}: {message}")):
        main(["evaluate", "a=tiny", "-c", str(ROOT / "configs/demo/s2_mcq.yaml"), "--device", "cpu",
              "--rewards", "accuracy", "format", "--scores", str(scores)])
