import lightning as L
import pytest
import torch

from corl.checkpoints import read_checkpoint
from corl.data.datamodule import ExampleDataModule
from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.data.templates import prose_completion, sft_completion, solution_answer
from corl.modules.corl_module import CoRLModule
from corl.modules.lora import LoRA
from corl.modules.rewards import TextReward
from corl.modules.sft_module import SFTModule


def test_sft_completion_keeps_reasoning_or_builds_it_from_the_caption():
    own = "<think>two shapes</think><answer>two</answer>"
    assert sft_completion(own, "a red circle") == own
    assert sft_completion("<answer>B</answer>", "a red circle on a white background.") == (
        "<think>The image shows a red circle on a white background.</think><answer>B</answer>")
    assert sft_completion("blue") == "<think></think><answer>blue</answer>"


def test_solution_answer_is_the_last_answer_block_or_the_whole_solution():
    assert solution_answer("<think>x</think><answer> B </answer>") == "B"
    assert solution_answer("<answer>a</answer> then <answer>two</answer>") == "two"
    assert solution_answer(" blue ") == "blue"


def test_prose_completion_says_the_reasoning_and_answer_without_the_tags():
    own = "<think>two shapes</think><answer>two</answer>"
    assert prose_completion(own) == "two shapes The answer is two."
    assert prose_completion("<answer>B</answer>", "a red circle") == "The image shows a red circle. The answer is B."
    assert prose_completion("blue") == "The answer is blue."
    assert TextReward("format")([prose_completion(own), own]).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_reasoned_share_of_the_answers_is_taught_in_the_format_the_rest_bare(share, monkeypatch):
    torch.manual_seed(0)
    module = SFTModule(image_weight=0.0, reasoned_share=share)
    taught = []
    answer_ids = module.policy.answer_ids
    monkeypatch.setattr(module.policy, "answer_ids", lambda answers: taught.extend(answers) or answer_ids(answers))
    b = batch(16)
    module.text_loss(b)
    reasoned = [sft_completion(s, c) for s, c in zip(b.qa_solution, b.prompt)]
    prose = [prose_completion(s, c) for s, c in zip(b.qa_solution, b.prompt)]
    assert all(t in (r, p) for t, r, p in zip(taught, reasoned, prose, strict=True))
    share_taught = sum(t == r for t, r in zip(taught, reasoned)) / len(taught)
    assert share_taught == share if share in (0.0, 1.0) else 0.2 < share_taught < 0.8
    assert all("<answer>" not in p and "The image shows" in p for p in prose)


def test_reasoned_share_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="reasoned_share"):
        SFTModule(reasoned_share=1.5)


def batch(n, kind="triplet"):
    return collate_examples([ProceduralExamples(n, seed=2, image_size=64, kind=kind)[i] for i in range(n)])


def test_answer_loss_counts_target_tokens_only():
    module = SFTModule(image_weight=0.0)
    both = batch(2)
    alone = [collate_examples([ProceduralExamples(2, seed=2, kind="triplet")[i]]) for i in range(2)]
    answers = [sft_completion(s, c) for s, c in zip(both.qa_solution, both.prompt)]
    lengths = [len(module.policy.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers]
    assert lengths[0] != lengths[1], "the shorter answer is padded in the batch"
    # The batch loss is the token-weighted mean of the rows' own losses: padding adds nothing.
    parts = [module.text_loss(b) for b in alone]
    expected = (parts[0] * lengths[0] + parts[1] * lengths[1]) / sum(lengths)
    torch.testing.assert_close(module.text_loss(both), expected, atol=1e-5, rtol=0)


def test_image_loss_is_the_nll_of_the_real_images_vq_tokens():
    module = SFTModule(text_weight=0.0, uncond_prob=0.0)
    b = batch(2)
    tokens = module.policy.janus.encode_images(b.real_image)
    assert tokens.shape == (2, module.policy.num_image_tokens)
    loss = module.image_loss(b.prompt, b.real_image)
    vocab = module.policy.model.config.vq_config.num_embeddings
    assert 0 < loss.item() < 2 * torch.log(torch.tensor(float(vocab))).item()


@pytest.mark.parametrize("train_towers", [True, False])
def test_the_answer_loss_trains_the_vision_tower_only_with_train_towers(train_towers):
    module = SFTModule(image_weight=0.0, train_towers=train_towers)
    module.loss(batch(2))[0].backward()
    grads = [p.grad for p in module.policy.model.model.vision_model.parameters()]
    assert all((g is not None and g.abs().sum() > 0) if train_towers else g is None for g in grads)
    assert module.policy.model.model.aligner.fc1.weight.grad is not None or not train_towers


def test_sft_lowers_both_losses_and_stage_one_starts_from_it(tmp_path, quiet_trainer):
    L.seed_everything(0)
    module = SFTModule(lr=3e-3, train_towers=True, max_answer_tokens=48)
    frozen_vq = {k: v.clone() for k, v in module.policy.model.model.vqmodel.state_dict().items()}
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer, metrics = quiet_trainer(15, [checkpoint], enable_checkpointing=True)
    trainer.fit(module, ExampleDataModule(batch_size=4, length=4, image_size=64))  # one batch, seen 15 times
    image, text = metrics.values("sft/image_loss"), metrics.values("sft/text_loss")
    assert image[-1] < image[0] - 0.5 and text[-1] < text[0] - 1.5, (image, text)  # nats per token
    for key, value in module.policy.model.model.vqmodel.state_dict().items():
        assert torch.equal(value, frozen_vq[key]), "the VQ codebook the image tokens index stays fixed"
    state, hparams = read_checkpoint(tmp_path / "last.ckpt")
    assert hparams["model"] == "tiny"
    rl = CoRLModule(text_rewards=[TextReward("format")], init_from=str(tmp_path / "last.ckpt"))
    for key, value in rl.policy.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_sft_refuses_weights_that_train_nothing():
    with pytest.raises(ValueError, match="image_weight"):
        SFTModule(image_weight=0.0, text_weight=0.0)


def test_sft_with_lora_trains_the_adapters_only(quiet_trainer):
    L.seed_everything(0)
    module = SFTModule(lr=1e-2, lora=LoRA(r=2), max_answer_tokens=16)
    start = {k: v.clone() for k, v in module.policy.model.state_dict().items()}
    trainer, metrics = quiet_trainer(2)
    trainer.fit(module, ExampleDataModule(batch_size=2, length=2, image_size=64))
    changed = {k for k, v in module.policy.model.state_dict().items() if not torch.equal(v, start[k])}
    assert changed == {k for k in start if ".lora_A." in k or ".lora_B." in k}  # all adapters, nothing else
    assert len(metrics.values("sft/loss")) == 2


def test_sft_refuses_towers_with_lora():
    with pytest.raises(ValueError, match="model.train_towers .* model.lora"):
        SFTModule(train_towers=True, lora=LoRA())
