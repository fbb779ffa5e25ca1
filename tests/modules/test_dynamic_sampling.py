import torch

from corl.data.procedural import ProceduralExamples
from corl.data.schema import collate_examples
from corl.modules.corl_module import CoRLModule
from corl.modules.dynamic_sampling import combine, informative_groups, pick_groups
from corl.modules.rewards import ImageReward, TextReward


def test_informative_groups_have_rewards_that_differ():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5])  # groups of 2: equal, differ, equal
    assert informative_groups(rewards, 2).tolist() == [False, True, False]


def test_pick_groups_takes_informative_first_then_fills_from_the_first_round():
    flags = [torch.tensor([False, True, False]), torch.tensor([True, False, True])]
    assert pick_groups(flags, 3) == [(0, 1), (1, 0), (1, 2)]
    assert pick_groups([torch.tensor([False, True, False]), torch.tensor([False, False, False])], 3) == [
        (0, 1), (0, 0), (0, 2)]  # too few: the first round's uninformative groups keep the step full


class Counting(ImageReward):
    default_name = "count"

    def __call__(self, samples):
        return torch.arange(len(samples), dtype=torch.float32)


def batch(seed, n=2):
    return collate_examples([ProceduralExamples(n, seed=seed, image_size=64)[i] for i in range(n)])


def test_groups_of_several_rounds_combine_into_one_consistent_rollout():
    m = CoRLModule(model="tiny", group_size=2, max_completion_tokens=6, log_media_every_n_steps=0,
                   image_rewards=[Counting()], text_rewards=[TextReward("format")], beta=0.1)
    rounds = []
    for seed in (1, 2):  # different prompts and questions: different padded lengths
        b = batch(seed)
        rollout = m.rollout(b)
        rounds.append((rollout, m.score(rollout, b), b))
    rollout, rewards, combined = combine(rounds, [(1, 1), (0, 0)], m.policy.tokenizer.pad_token_id)
    assert combined.prompt == [rounds[0][2].prompt[0], rounds[1][2].prompt[1]]
    assert rewards["count"].tolist() == [0.0, 1.0, 2.0, 3.0]  # round 0's group 0, then round 1's group 1
    assert torch.equal(rollout.image.tokens, torch.cat([rounds[0][0].image.tokens[:2], rounds[1][0].image.tokens[2:]]))
    # Re-padded to common lengths, the training forward still reproduces the sampling log-probs.
    torch.testing.assert_close(m.policy.logprobs(rollout.image).logps, rollout.image.old_logps, atol=1e-4, rtol=0)
    torch.testing.assert_close(m.policy.logprobs(rollout.text).logps, rollout.text.old_logps, atol=1e-4, rtol=0)
    assert rollout.ref_text_logps.shape == rollout.text.completion_ids.shape
    assert rollout.text.image_embeds.shape[0] == 4 and rollout.text.example_index.tolist() == [0, 0, 3, 3]


def same_for_counting(completions, qa_problem, **columns):
    """Counting questions: the same reward for every answer (no advantage); others: the answer's length."""
    return [1.0 if "How many" in q else float(len(c)) for c, q in zip(completions, qa_problem, strict=True)]


def test_dynamic_sampling_trains_on_informative_groups(quiet_trainer):
    from corl.data.datamodule import ExampleDataModule

    m = CoRLModule(model="tiny", group_size=2, max_completion_tokens=6, log_media_every_n_steps=0,
                   text_rewards=[TextReward(same_for_counting, name="t")], dynamic_sampling=True,
                   max_resample_rounds=4)
    kept = []
    real_update = m.update

    def update(rollout, advantages, rewards):
        kept.append(rollout.text.completion_ids.shape[0])
        return real_update(rollout, advantages, rewards)

    m.update = update
    trainer, metrics = quiet_trainer(3)
    trainer.fit(m, ExampleDataModule(batch_size=4, length=64, questions="oe"))
    assert kept == [8, 8, 8], "every step keeps batch_size groups"
    fractions = metrics.values("dynamic/left_out_fraction")
    assert any(f > 0 for f in fractions) and all(0 <= f < 1 for f in fractions)
    assert all(s["advantage/abs_mean"] > 0 for s in metrics.steps)
