import json
from pathlib import Path

import pytest

from corl.cli import main
from corl.evaluate import model_specs, table

ROOT = Path(__file__).resolve().parents[1]


def test_model_specs_are_named():
    assert model_specs(["tiny", "s1=checkpoints/demo/s1/last.ckpt", "exports/demo/t2i", "runs/x/last.ckpt",
                        "base=tiny-warm"]) == [
        ("tiny", "tiny"), ("s1", "checkpoints/demo/s1/last.ckpt"), ("t2i", "exports/demo/t2i"),
        ("last", "runs/x/last.ckpt"), ("base", "tiny-warm")]


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
