"""Weights after training: compatibility checks, export round trip, the stage-1 -> stage-2 chain, generate."""

import json
import math

import lightning as L
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, JanusForConditionalGeneration

from corl.checkpoint_io import AtomicCheckpointIO
from corl.checkpoints import check_compatible, export, read_checkpoint
from corl.cli import main
from corl.data.datamodule import ExampleDataModule
from corl.merging import gaussian_merge
from corl.models import load_model
from corl.modules.collect import tasks_at
from corl.modules.corl_module import CoRLModule
from corl.modules.lora import LoRA
from corl.modules.rewards import ImageReward, TextReward
from corl.modules.tiny import build_tiny_janus


def test_mismatched_models_are_refused():
    a = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="different model sizes"):
        check_compatible([a, {"w": torch.zeros(2, 4)}], ["a", "b"])
    with pytest.raises(ValueError, match="missing"):
        check_compatible([a, {"v": torch.zeros(2, 3)}], ["a", "b"])


class Noise(ImageReward):
    default_name = "noise"

    def __call__(self, samples):
        return torch.rand(len(samples))


def noise_text(completions, **columns):
    return torch.rand(len(completions)).tolist()


def fit(make_trainer, module, tmp_path, name, steps=2, **data):
    callback = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / name, save_last=True)
    trainer, _ = make_trainer(steps, [callback], enable_checkpointing=True)
    trainer.fit(module, ExampleDataModule(batch_size=2, length=32, **data))
    return trainer, tmp_path / name / "last.ckpt"


def small(**kwargs):
    return CoRLModule(**{"model": "tiny", "group_size": 2, "max_completion_tokens": 6, "lr": 1e-2,
                         "log_media_every_n_steps": 0, **kwargs})


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, quiet_trainer):
    L.seed_everything(0)
    module = small(image_rewards=[Noise()], text_rewards=[TextReward(noise_text)])
    _, ckpt = fit(quiet_trainer, module, tmp_path_factory.mktemp("s1"), "s1")
    return ckpt, {k: v.clone() for k, v in module.policy.model.state_dict().items()}


def test_stage2_starts_from_stage1_weights_with_a_fresh_optimiser(stage1, tmp_path, quiet_trainer):
    ckpt, final = stage1
    fresh = small(text_rewards=[TextReward("format")])
    assert any(not torch.equal(fresh.policy.model.state_dict()[k], final[k]) for k in final), "stage 1 trained"
    s2 = small(text_rewards=[TextReward(noise_text)], init_from=str(ckpt), beta=0.02)
    for k, v in s2.policy.model.state_dict().items():
        assert torch.equal(v, final[k]), k
    reference = {k: v.clone() for k, v in s2.reference.state_dict().items()}
    for k, v in reference.items():  # the KL reference is the model stage 2 started from
        assert torch.equal(v, final[k.replace("llm.", "model.language_model.", 1)]), k
    assert not any(p.requires_grad for p in s2.reference.parameters())
    trainer, _ = fit(quiet_trainer, s2, tmp_path, "s2", kind="qa")
    assert trainer.global_step == 2  # counted from zero, not from stage 1's step
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), "checkpoints are written atomically"
    for k, v in s2.reference.state_dict().items():
        assert torch.equal(v, reference[k]), "the reference stays frozen"
    changed = [k for k, v in s2.policy.llm.state_dict().items() if not torch.equal(v, reference[f"llm.{k}"])]
    assert changed, "the policy moved away from the reference"
    state = torch.load(tmp_path / "s2" / "last.ckpt", weights_only=False)["optimizer_states"][0]["state"]
    assert all(int(s["step"]) == 2 for s in state.values())  # AdamW started fresh: 2 steps, not 4


@pytest.mark.filterwarnings("ignore")
def test_stage2_starts_from_the_sharded_checkpoint_of_an_fsdp_run(stage1, tmp_path):
    from torch.distributed.checkpoint import save

    ckpt, final = stage1
    # An FSDP run's checkpoint, laid out as Lightning's ModelParallelStrategy writes it: the tensors
    # (weights and optimiser state) in shards with an index, everything else in meta.pt.
    whole = torch.load(ckpt, weights_only=False)
    folder = tmp_path / "last.ckpt"
    save({"state_dict": whole.pop("state_dict"), "optimizer_0": whole.pop("optimizer_states")[0]},
         checkpoint_id=folder, no_dist=True)
    torch.save(whole, folder / "meta.pt")
    state, hparams = read_checkpoint(folder)
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in final)
    assert hparams["group_size"] == 2
    s2 = small(text_rewards=[TextReward(noise_text)], init_from=str(folder))
    assert all(torch.equal(v, final[k]) for k, v in s2.policy.model.state_dict().items())


def test_single_task_steps_sample_only_their_task(stage1, tmp_path, monkeypatch, quiet_trainer):
    ckpt, _ = stage1

    def forbidden(*args, **kwargs):
        raise AssertionError("this task must not be rolled out")

    t2i = small(image_rewards=[Noise()], init_from=str(ckpt))
    monkeypatch.setattr(t2i.policy, "sample_texts", forbidden)
    fit(quiet_trainer, t2i, tmp_path, "t2i", steps=1, kind="t2i")
    mcq = small(text_rewards=[TextReward("accuracy")], init_from=str(ckpt))
    monkeypatch.setattr(mcq.policy, "sample_images", forbidden)
    fit(quiet_trainer, mcq, tmp_path, "mcq", steps=1, kind="qa", questions="mc")


def test_rl_cycle_alternates_tasks():
    module = small(image_rewards=[Noise()], text_rewards=[TextReward("format")], alternate_every=2)
    alternating = [tasks_at(step, module.tasks(), module.hparams.alternate_every) for step in range(5)]
    assert alternating == [("image",), ("image",), ("text",), ("text",), ("image",)]
    both = small(image_rewards=[Noise()], text_rewards=[TextReward("format")])
    assert tasks_at(3, both.tasks(), both.hparams.alternate_every) == ("image", "text")
    from corl.data.procedural import ProceduralExamples
    from corl.data.schema import collate_examples

    batch = collate_examples([ProceduralExamples(2)[i] for i in range(2)])
    evaluation = module.rollout(batch, evaluation=True)  # validation scores both tasks, whatever the schedule
    assert evaluation.image is not None and evaluation.text is not None
    assert evaluation.text.completion_ids.shape[0] == 2


def test_export_round_trip(stage1, tmp_path):
    ckpt, final = stage1
    main(["export", str(ckpt), str(tmp_path / "out")])
    loaded = JanusForConditionalGeneration.from_pretrained(tmp_path / "out")
    state, hparams = read_checkpoint(ckpt)
    assert hparams["model"] == "tiny"
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, final[k]), k
    module = small(text_rewards=[TextReward("format")], init_from=str(ckpt))
    ids = torch.tensor([[0, 6, 33, 4, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, module.policy.model(input_ids=ids).logits)


def test_a_deepseek_export_exported_again_is_the_direct_export(stage1, tmp_path):
    ckpt, _ = stage1
    main(["export", str(ckpt), str(tmp_path / "ds"), "--format", "deepseek"])
    main(["export", str(tmp_path / "ds"), str(tmp_path / "again")])
    main(["export", str(ckpt), str(tmp_path / "direct")])
    again, direct = (load_file(tmp_path / name / "model.safetensors") for name in ("again", "direct"))
    assert sorted(again) == sorted(direct) and all(torch.equal(again[k], direct[k]) for k in direct)
    main(["export", str(tmp_path / "ds"), str(tmp_path / "ds2"), "--format", "deepseek", "--dtype", "bfloat16"])
    assert json.loads((tmp_path / "ds2" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with pytest.raises(SystemExit, match="--format applies to whole models"):
        main(["export", str(ckpt), str(tmp_path / "x"), "--adapters-only", "--format", "deepseek"])


def test_merge_and_generate_take_and_write_deepseek_folders(stage1, tmp_path):
    ckpt, final = stage1
    main(["export", str(ckpt), str(tmp_path / "ds"), "--format", "deepseek"])
    main(["merge", str(ckpt), str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--method", "linear",
          "--format", "deepseek"])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "multi_modality"
    merged = load_model(tmp_path / "m")[0].state_dict()
    for k, v in merged.items():
        torch.testing.assert_close(v, final[k])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    for model in (ckpt, tmp_path / "ds"):  # the same seed, the same weights: the same images
        main(["generate", str(model), str(prompts), str(tmp_path / model.name), "--samples", "1", "--device", "cpu"])
    ours, theirs = (Image.open(tmp_path / name / "00000" / "samples" / "0000.png") for name in (ckpt.name, "ds"))
    assert list(ours.getdata()) == list(theirs.getdata())


def test_exported_folder_generates_with_transformers_generate(stage1, tmp_path):
    # What an evaluation suite does with the export: transformers' own processor and generate.
    ckpt, _ = stage1
    main(["export", str(ckpt), str(tmp_path / "out")])
    model = JanusForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert processor.use_default_system_prompt and processor.tokenizer("a")["input_ids"][0] == 0  # BOS added
    # The one-line workaround of docs/commands.md: transformers 5.24 drops generation_kwargs on load.
    model.generation_config.generation_kwargs = {"boi_token_id": processor.tokenizer.convert_tokens_to_ids(
        processor.image_start_token)}
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "a red circle"}]}],
                                         add_generation_prompt=True)
    inputs = processor(text=chat, generation_mode="image", return_tensors="pt")
    torch.manual_seed(0)
    tokens = model.generate(**inputs, generation_mode="image", do_sample=True, guidance_scale=2.0)
    assert tokens.shape == (1, model.config.vision_config.num_image_tokens)
    assert model.decode_image_tokens(tokens).shape == (1, 64, 64, 3)  # channels last, for postprocess
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape is red?"}]}]
    chat = processor.apply_chat_template(question, add_generation_prompt=True)
    inputs = processor(text=chat, images=[Image.new("RGB", (80, 60), "red")], generation_mode="text",
                       return_tensors="pt")
    answer = model.generate(**inputs, generation_mode="text", max_new_tokens=4, do_sample=False)
    assert answer.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(processor.decode(answer[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), str)


def test_merge_command_writes_a_loadable_average(stage1, tmp_path):
    ckpt, final = stage1
    main(["export", str(ckpt), str(tmp_path / "a")])
    main(["merge", str(ckpt), str(tmp_path / "a"), "--out", str(tmp_path / "m"), "--method", "linear",
          "--weights", "0.5", "0.5"])
    merged = JanusForConditionalGeneration.from_pretrained(tmp_path / "m")
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(v, final[k])  # the average of two equal models is that model


def test_merge_command_is_the_papers_gaussian_merge_from_the_runs_start(stage1, tmp_path):
    ckpt, final = stage1
    start = small(text_rewards=[TextReward("format")])  # the same architecture, other weights: the runs' start
    export(start.policy.model, start.policy.processor, tmp_path / "start")
    main(["export", str(ckpt), str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="needs --base"):
        main(["merge", str(ckpt), str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    main(["merge", str(ckpt), str(tmp_path / "a"), "--base", str(tmp_path / "start"), "--out", str(tmp_path / "m")])
    merged = JanusForConditionalGeneration.from_pretrained(tmp_path / "m").state_dict()
    expected = gaussian_merge(start.policy.model.state_dict(), [final, final])
    for k, v in merged.items():
        torch.testing.assert_close(v, expected[k])
    assert any(not torch.equal(merged[k], final[k]) for k in final), "outliers counted twice move off the models"


def test_generate_writes_the_geneval_layout(stage1, tmp_path):
    ckpt, _ = stage1
    prompts = tmp_path / "metadata.jsonl"
    rows = [{"tag": "single_object", "prompt": "a red circle"}, {"tag": "colors", "prompt": "a blue square"},
            {"tag": "position", "prompt": "a yellow square"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["generate", str(ckpt), str(prompts), str(tmp_path / "out"), "--samples", "3", "--device", "cpu",
          "--batch-prompts", "2"])  # 2 + 1 prompts: an uneven last batch
    for index, row in enumerate(rows):
        folder = tmp_path / "out" / f"{index:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == row
        samples = sorted((folder / "samples").iterdir())
        assert [p.name for p in samples] == ["0000.png", "0001.png", "0002.png"]
        assert Image.open(samples[0]).size == (64, 64)


def test_generate_writes_dpg_benchs_grids_and_wises_images(stage1, tmp_path):
    ckpt, _ = stage1
    (tmp_path / "dpg").mkdir()
    for name, prompt in (("a_red", "a red circle"), ("b_blue", "a blue square")):
        (tmp_path / "dpg" / f"{name}.txt").write_text(prompt + "\n")
    main(["generate", str(ckpt), str(tmp_path / "dpg"), str(tmp_path / "dpg_out"), "--device", "cpu"])
    assert sorted(p.name for p in (tmp_path / "dpg_out").iterdir()) == ["a_red.png", "b_blue.png"]
    assert Image.open(tmp_path / "dpg_out" / "a_red.png").size == (128, 128)  # 4 samples of 64 px, 2 x 2
    with pytest.raises(SystemExit, match="not a square"):
        main(["generate", str(ckpt), str(tmp_path / "dpg"), str(tmp_path / "x"), "--samples", "3"])
    wise = [{"prompt_id": 7, "Prompt": "a yellow square", "Explanation": "-", "Subcategory": "x"},
            {"prompt_id": 12, "Prompt": "a red circle", "Explanation": "-", "Subcategory": "x"}]
    (tmp_path / "wise.json").write_text(json.dumps(wise))
    with pytest.raises(SystemExit, match="one image per prompt"):
        main(["generate", str(ckpt), str(tmp_path / "wise.json"), str(tmp_path / "x")])
    main(["generate", str(ckpt), str(tmp_path / "wise.json"), str(tmp_path / "wise_out"), "--samples", "1",
          "--device", "cpu"])
    assert sorted(p.name for p in (tmp_path / "wise_out").iterdir()) == ["12.png", "7.png"]


def test_validation_scores_a_held_out_split_greedily(quiet_trainer):
    L.seed_everything(0)
    module = small(image_rewards=[Noise()], text_rewards=[TextReward("accuracy"), TextReward("format")])
    data = ExampleDataModule(batch_size=2, length=32, val_source="procedural", val_length=4)
    data.setup()
    train_prompts = {data.dataset[i].prompt + data.dataset[i].qa_problem for i in range(32)}
    assert not any(data.val_dataset[i].prompt + data.val_dataset[i].qa_problem in train_prompts for i in range(4))
    trainer, _ = quiet_trainer(2, val_check_interval=2, limit_val_batches=2)
    trainer.fit(module, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"val/accuracy", "val/format", "val/noise"} <= set(metrics)
    first = trainer.validate(module, data, verbose=False)[0]
    again = trainer.validate(module, data, verbose=False)[0]
    assert first["val/accuracy"] == again["val/accuracy"] and first["val/format"] == again["val/format"]


class Unscorable(ImageReward):
    default_name = "unscorable"

    def __call__(self, samples):
        return torch.full((len(samples),), float("nan"))


def test_validation_logs_every_reward_even_when_nothing_was_scored(quiet_trainer):
    # Ranks must sync the same keys: a reward that scored nothing is logged with weight 0 (NaN alone).
    module = small(image_rewards=[Noise(), Unscorable()], text_rewards=[TextReward("format")])
    trainer, _ = quiet_trainer(1, limit_val_batches=2)
    scores = trainer.validate(module, ExampleDataModule(batch_size=2, val_source="procedural", val_length=4),
                              verbose=False)[0]
    assert set(scores) == {"val/noise", "val/unscorable", "val/format"}
    assert math.isnan(scores["val/unscorable"]) and 0.0 <= scores["val/noise"] <= 1.0


def test_last_ckpt_holds_the_final_step_between_periodic_saves(tmp_path, quiet_trainer):
    L.seed_everything(0)
    module = small(text_rewards=[TextReward(noise_text)])
    callback = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2)
    trainer, _ = quiet_trainer(3, [callback], enable_checkpointing=True)
    trainer.fit(module, ExampleDataModule(batch_size=2, length=32))
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 3  # not the save at step 2


# ------------------------------------------------------------------------------------------------ LoRA
def is_adapter(key):
    return ".lora_A." in key or ".lora_B." in key


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, quiet_trainer):
    """Two steps of a LoRA run with the KL reference (beta > 0): its checkpoint, its module, its starting state."""
    L.seed_everything(0)
    module = small(image_rewards=[Noise()], text_rewards=[TextReward(noise_text)], lora=LoRA(r=4, alpha=8.0),
                   beta=0.02)
    start = {k: v.clone() for k, v in module.policy.model.state_dict().items()}
    _, ckpt = fit(quiet_trainer, module, tmp_path_factory.mktemp("lora"), "lora")
    return ckpt, module, start


def test_lora_trains_only_the_adapters_and_the_reference_is_no_copy(lora_run):
    _, module, start = lora_run
    final = module.policy.model.state_dict()
    assert final.keys() == start.keys()
    adapters = [k for k in final if is_adapter(k)]
    assert len(adapters) == 2 * 7 * 2  # 2 layers x 7 projections x (A, B)
    for key, value in final.items():
        if is_adapter(key):  # B starts at 0, so A moves from the second step on
            assert not torch.equal(value, start[key]), f"{key} was trained"
        else:
            assert torch.equal(value, start[key]), f"{key} is a base weight and stays frozen"
    optimised = {id(p) for group in module.optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for n, p in module.policy.named_parameters() if is_adapter(n)}
    # beta > 0, yet no second copy of the weights: the module holds the base model and the adapters only.
    plain = sum(p.numel() for p in build_tiny_janus(seed=0)[0].parameters())
    lora = sum(p.numel() for n, p in module.named_parameters() if is_adapter(n))
    assert sum(p.numel() for p in module.parameters()) == plain + lora
    assert not any(k.startswith("reference.") for k in module.state_dict())


def test_lora_checkpoint_holds_the_adapters_and_its_settings(lora_run):
    ckpt, module, _ = lora_run
    saved = torch.load(ckpt, weights_only=False)
    assert saved["hyper_parameters"]["lora"] == LoRA(r=4, alpha=8.0)
    trained = module.policy.model.state_dict()
    for key, value in trained.items():
        if is_adapter(key):
            assert torch.equal(saved["state_dict"][f"policy.model.{key}"], value), key


def test_lora_export_is_the_base_plus_the_scaled_product(lora_run, tmp_path):
    ckpt, _, start = lora_run
    main(["export", str(ckpt), str(tmp_path / "out")])
    exported = JanusForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    assert exported.keys() == build_tiny_janus(seed=0)[0].state_dict().keys(), "the keys of a full export"
    raw = torch.load(ckpt, weights_only=False)["state_dict"]
    layer = "policy.model.model.language_model.layers.1.self_attn.q_proj"
    a, b = raw[f"{layer}.lora_A.default.weight"], raw[f"{layer}.lora_B.default.weight"]  # [4, 64], [64, 4]
    by_hand = raw[f"{layer}.base_layer.weight"] + (8.0 / 4) * b @ a  # W + alpha / r * B A
    torch.testing.assert_close(exported["model.language_model.layers.1.self_attn.q_proj.weight"], by_hand)
    assert not torch.allclose(by_hand, start["model.language_model.layers.1.self_attn.q_proj.base_layer.weight"])
    assert torch.equal(exported["lm_head.weight"], start["lm_head.weight"])  # nothing but the projections moved
    assert torch.equal(exported["model.vision_model.encoder.layers.0.self_attn.q_proj.weight"],
                       start["model.vision_model.encoder.layers.0.self_attn.q_proj.weight"])


def test_lora_adapters_only_export_loads_in_peft_with_the_merged_models_logits(lora_run, tmp_path):
    from peft import PeftModel

    ckpt, module, _ = lora_run
    main(["export", str(ckpt), str(tmp_path / "adapters"), "--adapters-only"])
    assert {p.name for p in (tmp_path / "adapters").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    main(["export", str(ckpt), str(tmp_path / "merged")])
    merged = JanusForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    peft_model = PeftModel.from_pretrained(build_tiny_janus(seed=0)[0], tmp_path / "adapters").eval()
    loaded = {k: v for k, v in peft_model.state_dict().items() if is_adapter(k)}
    trained = {k: v for k, v in module.policy.model.state_dict().items() if is_adapter(k)}
    assert len(loaded) == len(trained)
    for key, value in trained.items():  # peft put every adapter where it was trained
        assert torch.equal(loaded[f"base_model.model.{key}"], value), key
    ids = torch.tensor([[0, 6, 33, 4, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(module.policy.model(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   atol=1e-5, rtol=0)


def test_adapters_only_export_of_a_full_run_is_refused(stage1, tmp_path):
    ckpt, _ = stage1
    with pytest.raises(SystemExit, match="was not trained with model.lora"):
        main(["export", str(ckpt), str(tmp_path / "out"), "--adapters-only"])


def test_an_adapter_folder_is_not_taken_for_a_model(lora_run, tmp_path):
    ckpt, _, _ = lora_run
    main(["export", str(ckpt), str(tmp_path / "adapters"), "--adapters-only"])
    with pytest.raises(FileNotFoundError, match="is a peft adapter folder"):
        small(text_rewards=[TextReward("format")], init_from=str(tmp_path / "adapters"))


def test_a_lora_checkpoint_starts_the_next_stage_merged(lora_run, tmp_path):
    ckpt, _, _ = lora_run
    merged, _ = read_checkpoint(ckpt)
    full = small(text_rewards=[TextReward("format")], init_from=str(ckpt))
    assert full.policy.model.state_dict().keys() == merged.keys()
    assert all(torch.equal(v, merged[k]) for k, v in full.policy.model.state_dict().items())
    # New adapters on the merged model: the KL reference is the merged model, as it is the start.
    again = small(text_rewards=[TextReward("format")], init_from=str(ckpt), lora=LoRA(r=2), beta=0.02)
    base = again.policy.model.state_dict()
    assert torch.equal(base["model.language_model.layers.0.mlp.up_proj.base_layer.weight"],
                       merged["model.language_model.layers.0.mlp.up_proj.weight"])
    # corl merge reads LoRA runs merged too
    main(["merge", str(ckpt), str(ckpt), "--out", str(tmp_path / "m"), "--method", "linear"])
    average = JanusForConditionalGeneration.from_pretrained(tmp_path / "m").state_dict()
    assert all(torch.allclose(v, merged[k]) for k, v in average.items())


def test_resuming_with_other_lora_settings_is_refused(lora_run, stage1, tmp_path):
    from torch.distributed.checkpoint import save

    from corl.strategies import FullyShardedStrategy

    _, module, _ = lora_run
    with pytest.raises(ValueError, match=r"trained with model.lora = None, this run has model.lora = LoRA\(r=4"):
        module.on_load_checkpoint({"hyper_parameters": {"model": "tiny"}})
    cli_saved = {"lora": {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": LoRA().target_modules}}
    module.on_load_checkpoint({"hyper_parameters": cli_saved})  # LightningCLI saves the settings as a dict: the same
    # A folder of shards is loaded by the strategy, before on_load_checkpoint: it checks first.
    whole = torch.load(stage1[0], weights_only=False)
    folder = tmp_path / "last.ckpt"
    save({"state_dict": whole.pop("state_dict")}, checkpoint_id=folder, no_dist=True)
    torch.save(whole, folder / "meta.pt")
    strategy = FullyShardedStrategy()
    strategy._lightning_module = module
    with pytest.raises(ValueError, match=r"trained with model.lora = None, this run has model.lora = LoRA\(r=4"):
        strategy.load_checkpoint(folder)
