"""The ``corl`` CLI: every shipped YAML parses, the demo config trains and writes TensorBoard events."""

import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar.layout_pb2 import Layout

from corl.cli import entry, main
from corl.data.datamodule import ExampleDataModule
from corl.data.readers import DataError
from corl.errors import UsageError
from corl.modules.corl_module import CoRLModule
from corl.modules.sft_module import SFTModule

ADD_ONS = [Path(__file__).resolve().parents[1] / "configs" / "fsdp.yaml"]  # layered on a stage's config
CONFIGS = sorted(set(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml")) - set(ADD_ONS))
SFT_CONFIGS = [c for c in CONFIGS if c.name == "sft.yaml"]  # corl sft: the SFT module
RL_CONFIGS = [c for c in CONFIGS if c not in SFT_CONFIGS]
STAGES = [c for c in RL_CONFIGS if c.parent.name == "configs"]
PAPER = [c for c in CONFIGS if c.parent.name != "demo"]  # the paper's stages, its Cold-SFT and its pilot study
PILOT = [c for c in CONFIGS if c.parent.name == "pilot"]


class ParseOnly(LightningCLI):
    """Parses and type-checks a config against the signatures without building anything."""

    def instantiate_classes(self) -> None:
        pass


@pytest.mark.parametrize("config", RL_CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_config_parses(config):
    cli = ParseOnly(CoRLModule, ExampleDataModule, args=["-c", str(config)], run=False, auto_configure_optimizers=False)
    model = cli.config.model
    assert model.image_rewards or model.text_rewards


@pytest.mark.parametrize("config", SFT_CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_sft_config_parses(config):
    cli = ParseOnly(SFTModule, ExampleDataModule, args=["-c", str(config)], run=False, auto_configure_optimizers=False)
    assert cli.config.model.image_weight > 0 and cli.config.model.text_weight > 0
    assert cli.config.data.kind == "triplet"


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.name)
def test_fsdp_add_on_parses_over_every_stage(stage):
    args = ["-c", str(stage), "-c", str(ADD_ONS[0])]
    cli = ParseOnly(CoRLModule, ExampleDataModule, args=args, run=False, auto_configure_optimizers=False)
    assert cli.config.trainer.strategy.class_path == "corl.strategies.FullyShardedStrategy"
    assert cli.config.trainer.precision == "bf16-mixed"
    assert cli.config.model.activation_checkpointing and cli.config.model.sharding.param_dtype == "bfloat16"
    assert cli.config.model.image_rewards or cli.config.model.text_rewards  # the stage's own settings stay


def parse(config):
    module = SFTModule if config in SFT_CONFIGS else CoRLModule
    return ParseOnly(module, ExampleDataModule, args=["-c", str(config)], run=False,
                     auto_configure_optimizers=False).config


@pytest.mark.parametrize("config", PAPER, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_paper_configs_read_the_authors_layout_and_average_per_output(config):
    model = parse(config).model
    assert model.system_prompt == "none" and model.instruction == "authors"  # as the authors trained
    if config not in SFT_CONFIGS:
        assert model.aggregation == "sequence"  # Eq. 2 / 6: each output's token mean, then the mean over outputs
    assert "\n  system_prompt: none\n" in config.read_text()  # said in the file, not left to a default


def test_the_default_aggregation_and_prompt_layout_are_the_papers():
    settings = inspect.signature(CoRLModule).parameters
    assert settings["aggregation"].default == "sequence"
    assert settings["system_prompt"].default == "none" and settings["instruction"].default == "authors"


@pytest.mark.parametrize("config", PILOT, ids=lambda p: p.name)
def test_pilot_configs_reward_images_with_clip_on_x2x_rft_16k(config):
    cfg = parse(config)
    assert cfg.data.source.endswith("x2x_rft_16k") and cfg.data.kind == "triplet"
    assert [r.class_path for r in cfg.model.image_rewards or []] in ([], ["corl.modules.rewards.ClipScoreReward"])
    assert {p.stem for p in PILOT} == {"sep_t2i", "sep_mm2t", "cycle", "unified"}  # the four paradigms


def test_make_merges_as_the_paper_does():
    root = Path(__file__).resolve().parents[1]
    plan = subprocess.run(["make", "-n", "stage2", "pilot", "demo-mm2t"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.replace("\\\n", " ")
    merges = [line.split() for line in plan.splitlines() if " merge " in line]
    assert len(merges) == 3  # MC + OE (stage 2 and the demo), and the pilot's RL-Merging
    for words in merges:
        assert words[words.index("--method") + 1] == "gaussian" and "--base" in words


def test_configs_exist():
    root = Path(__file__).resolve().parents[1] / "configs"
    assert {root / "s1.yaml", root / "demo" / "s1.yaml", root / "sft.yaml", root / "demo" / "sft.yaml"} <= set(CONFIGS)


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["corl"])


ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_trains_and_logs_to_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative paths (checkpoints/, runs/) land here
    main([
        "fit", "-c", str(ROOT / "configs/demo/s1.yaml"),
        "--model.model", "tiny",  # the machinery on the random tiny model; the warm one is the demo's
        "--model.seed", "1",  # another seed than data.seed's: two settings, both logged
        "--trainer.max_steps", "4",
        "--model.mu", "2",  # two optimiser steps per batch: the media must still share the scalars' step axis
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.default_root_dir", str(tmp_path),
        "--model.log_media_every_n_steps", "1",
        "--model.max_completion_tokens", "8",
        "--data.batch_size", "2",
        "--trainer.val_check_interval", "1",  # held-out scores and images after each of the 2 rollouts
        "--data.val_length", "4",
        "--data.val_batch_size", "3",  # validation batches of its own size: 3 then 1
    ])
    (version,) = (tmp_path / "demo_s1").glob("version_*")
    events = EventAccumulator(str(version), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for name in ("cycle", "tim", "scene", "scene/background", "scene/count", "scene/colour", "scene/shape",
                 "accuracy", "format", "total"):
        assert f"reward/{name}/mean" in scalars and f"reward/{name}/std" in scalars
        assert len(events.Scalars(f"reward/{name}/mean")) == 2
    for name in ("cycle", "tim", "scene", "accuracy", "format"):
        assert events.Scalars(f"time/reward/{name}")[0].value >= 0
    for tag in ("advantage/std", "image/kl", "text/kl", "image/clip_fraction", "text/completion_length_mean",
                "time/rollout", "time/rewards", "time/update", "throughput/rollout_tokens_per_s", "lr"):
        assert tag in scalars, tag
    assert events.Scalars("throughput/rollout_tokens_per_s")[0].value > 0
    assert "samples/images" in events.Tags()["images"]
    assert [e.step for e in events.Images("samples/images")] == [e.step for e in events.Scalars("reward/cycle/mean")]
    grid = events.Images("samples/images")[0]
    assert grid.width > grid.height  # a row per example: the real image then G samples
    assert any("samples/completions" in tag for tag in events.Tags()["tensors"])
    held_out = events.Images("val/images")  # the same held-out prompts and draws at every check
    assert [e.step for e in held_out] == [e.step for e in events.Scalars("val/scene")] and len(held_out) == 2
    assert held_out[0].width == 3 * (64 + 2) + 2, "one row: the first batch's three prompts, an image each"
    prompts = [e.tensor_proto.string_val[0] for e in events.Tensors("val/image_prompts/text_summary")]
    assert len(prompts) == 2 and prompts[0] == prompts[1] and prompts[0].startswith(b"1. ")
    completions = events.Tensors("samples/completions/text_summary")[0].tensor_proto.string_val[0].decode()
    assert completions.startswith("| question | ground truth | completion | rewards |")
    assert "accuracy " in completions.splitlines()[2] and "format " in completions.splitlines()[2]
    layout = Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    first = layout.category[0]
    assert first.title.startswith("rewards") and first.chart[0].multiline.tag == ["^reward/cycle/mean$", "^val/cycle$"]
    assert (tmp_path / "checkpoints/demo/s1/last.ckpt").is_file(), "stage 2 starts from this checkpoint"


def test_demo_config_trains_lora_adapters_that_export_and_resume(tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import JanusForConditionalGeneration

    from corl.modules.tiny import build_tiny_janus

    monkeypatch.chdir(tmp_path)
    fit = ["fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny", "--model.lora.r", "8",
           "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path),
           "--trainer.val_check_interval", "null",
           "--data.val_source", "null", "--model.max_completion_tokens", "8", "--data.batch_size", "2",
           "--model.mu", "1"]  # one optimiser step per rollout, so max_steps 3 is one more rollout
    main([*fit, "--trainer.max_steps", "2"])
    ckpt = tmp_path / "checkpoints/demo/s1/last.ckpt"
    main(["export", str(ckpt), "merged"])
    merged = JanusForConditionalGeneration.from_pretrained(tmp_path / "merged")
    base = build_tiny_janus(seed=0)[0]
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name]), "the trained adapters are merged in"
    main(["export", str(ckpt), "adapters", "--adapters-only"])
    assert PeftModel.from_pretrained(base, tmp_path / "adapters").peft_config["default"].r == 8
    main([*fit, "--trainer.max_steps", "3", "--ckpt_path", str(ckpt)])  # a LoRA run resumes
    assert torch.load(ckpt, weights_only=False)["global_step"] == 3


def test_real_config_fails_clearly_without_weights(tmp_path):
    missing = tmp_path / "no-such-Janus"
    with pytest.raises(UsageError, match="no Janus weights at .*no-such-Janus"):
        main(["fit", "-c", "configs/s1.yaml", "--model.model", str(missing), "--trainer.accelerator", "cpu",
              "--trainer.devices", "1", "--trainer.strategy", "auto"])


CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]


def test_the_preflight_lists_everything_missing_at_once_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CORL_SPICE_CACHE", str(tmp_path / "spice"))
    monkeypatch.setattr("corl.modules.loading.on_hub", lambda name: False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(SystemExit) as exit_:
        main(["check", "-c", str(ROOT / "configs/s2_t2i.yaml")])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    for expected in (
        "model.model: no Janus weights at checkpoints/Janus-Pro-1B",
        "`hf download deepseek-community/Janus-Pro-1B --local-dir checkpoints/Janus-Pro-1B`",
        "model.init_from: no checkpoint or model folder at checkpoints/s1/last.ckpt",
        "data.source: no data at data/x2x_rft_16k: `hf download mm-vl/x2x_rft_16k --repo-type dataset "
        "--local-dir data/x2x_rft_16k`",
        "LPIPS vgg trunk weights not found", "captioner folder checkpoints/blip-large does not exist",
        "SPICE: CoreNLP", "trainer: accelerator gpu with 8 device(s), but this machine has 0 CUDA GPU(s)",
    ):
        assert expected in out, expected
    with pytest.raises(UsageError, match=r"needs 9 thing\(s\)"):  # corl fit stops on the same list, at once
        main(["fit", "-c", str(ROOT / "configs/s2_t2i.yaml")])
    with pytest.raises(SystemExit) as exit_:
        main(["check", "-c", str(ROOT / "configs/demo/s1.yaml")])
    assert exit_.value.code == 0 and "has everything it needs" in capsys.readouterr().out


def test_real_config_refuses_a_missing_lpips_trunk_before_training(tmp_path, monkeypatch):
    # Real reward settings on the tiny model: the missing VGG trunk stops the run before it starts, with advice.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CORL_SPICE_CACHE", str(tmp_path / "spice"))
    with pytest.raises(UsageError, match="LPIPS vgg trunk weights not found .* set trunk_path"):
        main(["fit", "-c", "configs/s1.yaml", "--model.model", "tiny", "--data.source", "procedural",
              "--data.num_workers", "0", *CPU, "--trainer.precision", "32", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_help_lists_every_command_and_only_those_that_do_something(capsys):
    main(["--help"])
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "sft", "check", "evaluate", "grid", "export", "merge", "generate", "prompt",
                      "warm"]
    for command in ("test", "predict"):
        with pytest.raises(UsageError, match=f"unknown command '{command}'"):
            main([command])
    with pytest.raises(UsageError, match="unknown command 'fitt' \\(did you mean 'fit'\\?\\)"):
        main(["fitt"])


def run_entry(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["corl", *argv])
    with pytest.raises(SystemExit) as exit_:
        entry()
    return str(exit_.value.code)


def test_errors_are_a_line_or_two_and_the_traceback_comes_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = run_entry(monkeypatch, "fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.grop_size", "4")
    assert message == ("corl: error: unrecognized arguments: --model.grop_size 4 (--model.grop_size: did you mean "
                       "--model.group_size?); `corl fit --help` lists every option")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n')
    bad = ["export", str(tmp_path / "nothing.ckpt"), str(tmp_path / "out")]
    message = run_entry(monkeypatch, *bad)
    assert message.splitlines() == [f"corl: error: no checkpoint at {tmp_path / 'nothing.ckpt'}",
                                    "(the full traceback: add --debug, or set CORL_DEBUG=1)"]
    monkeypatch.setattr(sys, "argv", ["corl", *bad, "--debug"])
    with pytest.raises(FileNotFoundError):
        entry()
    monkeypatch.setenv("CORL_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["corl", *bad])
    with pytest.raises(FileNotFoundError):
        entry()


def test_the_progress_bar_counts_optimiser_steps_as_max_steps_does(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny", "--trainer.max_steps", "4",
          "--model.mu", "2", "--data.batch_size", "2", "--model.max_completion_tokens", "4", "--trainer.logger",
          "false", "--model.log_media_every_n_steps", "0", "--trainer.val_check_interval", "null"])
    captured = capsys.readouterr()
    bar = (captured.out + captured.err).replace("\r", "\n")
    assert "step (epoch 0): 100%" in bar and "| 4/4 [" in bar, "2 rollouts of mu = 2 steps: 4 of max_steps 4"
    assert "/-2" not in bar and "2/2 [" not in bar


def test_a_data_set_smaller_than_the_validation_interval_says_which_setting(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "-c", str(ROOT / "configs/demo/s1.yaml"), "--model.model", "tiny", "--data.length", "4",
           "--data.batch_size", "2", "--trainer.enable_progress_bar", "false", "--model.max_completion_tokens", "4",
           "--trainer.logger", "false", "--trainer.max_steps", "2", "--model.log_media_every_n_steps", "0"]
    with pytest.raises(DataError, match=r"2 rollout\(s\) per epoch \(4 examples, data.batch_size 2\), fewer than "
                       r"trainer.val_check_interval = 9: set --trainer.val_check_interval 2 or less"):
        main(fit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*fit, "--data.val_source", "null"])  # no held-out data: no interval to reach
    assert (tmp_path / "checkpoints/demo/s1/last.ckpt").is_file()
    noise = [str(w.message) for w in caught if "args parameter" in str(w.message)]
    noise += [r.getMessage() for r in caplog.records if "Tip" in r.getMessage()]
    assert not noise, "no Lightning adverts or warnings about how corl calls it"


def test_the_tools_start_without_lightning():
    # corl export / merge / evaluate --scores / --help import Lightning only when a command needs it: a
    # fresh interpreter, because this one has long imported it.
    probe = "import sys; import corl.cli, corl.tools; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
