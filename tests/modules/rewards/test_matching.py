import math

import pytest
import torch
from PIL import Image

from corl.modules.rewards import GeneratedImages, TextImageMatchingReward
from corl.modules.rewards.matching import token_matching_score


def test_score_by_hand_on_known_vectors():
    # positions: 0 pad, 1-2 image, 3-4 text
    states = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]])
    image = torch.tensor([[False, True, True, False, False]])
    text = torch.tensor([[False, False, False, True, True]])
    c = 1 / math.sqrt(2)
    # image->text: i1=(1,0): max(cos with (1,0)=1, (1,1)=c) = 1 ; i2=(0,1): max(0, c) = c  -> (1 + c) / 2
    # text->image: t1=(1,0): max(1, 0) = 1 ; t2=(1,1): max(c, c) = c                      -> (1 + c) / 2
    expected = ((0.5 * ((1 + c) / 2 + (1 + c) / 2)) + 1) / 2
    assert token_matching_score(states, image, text).item() == pytest.approx(expected)


def test_score_matches_a_direct_loop_on_random_vectors():
    torch.manual_seed(0)
    states = torch.randn(3, 9, 5)
    image = torch.zeros(3, 9, dtype=torch.bool)
    text = torch.zeros(3, 9, dtype=torch.bool)
    image[0, 1:4], text[0, 5:9] = True, True
    image[1, 0:2], text[1, 2:3] = True, True
    image[2, 3:8], text[2, 0:2] = True, True
    got = token_matching_score(states, image, text)
    for r in range(3):
        i = states[r][image[r]]
        t = states[r][text[r]]
        cos = torch.nn.functional.cosine_similarity(i[:, None], t[None], dim=-1)
        direct = 0.5 * (cos.max(1).values.mean() + cos.max(0).values.mean())
        assert got[r].item() == pytest.approx(((direct + 1) / 2).item(), abs=1e-6)


def test_rows_without_a_span_are_nan():
    states = torch.randn(1, 4, 3)
    image = torch.tensor([[True, True, False, False]])
    assert token_matching_score(states, image, torch.zeros_like(image)).isnan().all()


def samples_for(policy, images, prompts):
    tokens = torch.zeros(len(prompts), policy.num_image_tokens, dtype=torch.long)
    return GeneratedImages(images, [Image.new("RGB", (8, 8))] * len(prompts), prompts, tokens, policy.reader)


def test_spans_come_from_the_masks(tiny_policy):
    policy = tiny_policy()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    prompts = ["a red circle", "a blue square and a green triangle on a white background"]
    states, image_mask, text_mask = policy.reader.matching_states(policy.reader.image_features(images), prompts)
    assert (image_mask.sum(1) == policy.num_image_tokens).all()
    ids = policy.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    assert text_mask.sum(1).tolist() == [len(x) for x in ids]
    enc = policy.prompts.encode([[{"type": "image"}, {"type": "text", "text": p}] for p in prompts], "text")
    ids, mask = enc.ids, enc.mask
    assert mask[0, 0] == 0, "the shorter prompt is left-padded"
    for row in range(2):  # the text positions hold exactly the prompt's tokens
        assert policy.tokenizer.decode(ids[row][text_mask[row]]).strip() == prompts[row]
    assert not (image_mask & text_mask).any()


def test_same_value_alone_and_inside_a_left_padded_batch(tiny_policy):
    policy = tiny_policy()
    reward = TextImageMatchingReward()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    prompts = ["a red circle", "a blue square and a green triangle on a white background", "a yellow square"]
    together = reward(samples_for(policy, images, prompts))
    alone = torch.cat([reward(samples_for(policy, images[i : i + 1], prompts[i : i + 1])) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert ((together > 0) & (together < 1)).all()
    assert len(set(together.tolist())) == 3  # each image scored against its own prompt


def test_the_vision_tower_reads_generated_images_once_for_all_rewards(tiny_policy):
    from corl.modules.rewards import CiderD, CycleConsistencyReward, ImageConsistencyReward, SelfCaptioner

    policy = tiny_policy()
    calls = []
    policy.model.model.vision_model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    samples = samples_for(policy, images, ["a red circle", "a red circle", "a blue square", "a blue square"])
    cycle = CycleConsistencyReward(ImageConsistencyReward(random_trunk=True, resolution=64),
                                   SelfCaptioner(max_tokens=4, batch_size=2), CiderD())
    cycle(samples)
    TextImageMatchingReward(batch_size=3)(samples)
    assert calls == [4]  # one batched pass over the 4 images, shared by the captioner and the matching reward
