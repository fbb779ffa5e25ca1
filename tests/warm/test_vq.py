import pytest
import torch

from corl.modules.tiny import build_tiny_janus
from corl.warm.vq import (
    ema_codebook_update,
    quantize_on_sphere,
    reconstruction_error,
    reconstruction_loss,
    reconstruction_scene,
    scene_pixels,
    train_vq,
)


def fresh_vq():
    """A 32 px VQ (4x4 token grid) of the recommended widths: 64 channels, so GroupNorm(32) has 2 per group."""
    model, _ = build_tiny_janus(image_size=32, patch_size=8, vq_base_channels=64, vq_res_blocks=0, seed=0)
    return model.model.vqmodel


@pytest.fixture(scope="module")
def trained():
    """A fresh VQ, its held-out error, then the same VQ after a short training and its stats."""
    vq = fresh_vq()
    held_out = scene_pixels(seed=999, indices=range(16), image_size=32)  # another scene set than training's
    before = reconstruction_error(vq, held_out)
    stats = train_vq(vq, steps=80, batch_size=8, image_size=32, seed=0)
    return vq, held_out, before, stats


def test_scene_pixels_range_and_layout():
    pixels = scene_pixels(seed=0, indices=[0, 1], image_size=32)
    assert pixels.shape == (2, 3, 32, 32)
    # corner pixel is background: white (250 -> 250 / 127.5 - 1), black (15) or gray (128)
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert round(pixels[0, 0, 0, 0].item(), 4) in {round(v / 127.5 - 1, 4) for v in (250, 15, 128)}


def test_quantize_on_sphere_by_hand():
    # codes [2, 0] and [0, 3] normalise to e0 = [1, 0] and e1 = [0, 1]; the latent [1, 1.1] is nearer
    # e1 by cosine (1.1 > 1), though nearer the raw [2, 0] in Euclid (1 + 1.21 = 2.21 < 1 + 3.61 = 4.61),
    # which is why training must normalise as decode's get_codebook_entry does.
    codebook = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    latents = torch.tensor([1.0, 1.1]).view(1, 2, 1, 1)  # [B=1, D=2, h=1, w=1]
    quantized, loss, indices = quantize_on_sphere(codebook, latents, beta=0.25)
    assert indices.tolist() == [1]
    torch.testing.assert_close(quantized.view(2), torch.tensor([0.0, 1.0]))
    # z = [1, 1.1] / sqrt(2.21); mse(e1, z) = ((0 - z0)^2 + (1 - z1)^2) / 2, times (1 + beta)
    z0, z1 = 1 / 2.21**0.5, 1.1 / 2.21**0.5
    torch.testing.assert_close(loss, torch.tensor(1.25 * (z0**2 + (1 - z1) ** 2) / 2))


def test_reconstruction_loss_by_hand_weights_the_objects():
    # a 1 x 2 image: a background pixel at the top-left (the reference) and one object pixel
    pixels = torch.tensor([[[[-1.0, 1.0]], [[-1.0, 1.0]], [[-1.0, 1.0]]]])  # [1, 3, 1, 2]: black, then white
    off = torch.tensor([[0.5, 0.0]]).expand(3, 1, 2)[None]  # error 0.5 on the background pixel only
    # weights 1 (background) and 1 + 3 = 4 (object); per-channel error e + e^2 = 0.75 on one of two pixels
    mean_weight = (1 + 4) / 2
    loss = reconstruction_loss
    torch.testing.assert_close(loss(pixels + off, pixels, 3.0), torch.tensor(0.75 * 1 / 2 / mean_weight))
    on_object = torch.tensor([[0.0, -0.5]]).expand(3, 1, 2)[None]  # the same error on the object pixel
    torch.testing.assert_close(loss(pixels + on_object, pixels, 3.0), torch.tensor(0.75 * 4 / 2 / mean_weight))
    torch.testing.assert_close(loss(pixels + on_object, pixels, 0.0), torch.tensor(0.75 / 2))
    assert loss(pixels, pixels, 3.0) == 0


def test_ema_codebook_update_by_hand():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    latents = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 6.0]])  # normalised: [.6, .8], [0, 1], [0, 1]
    ema_codebook_update(codebook, latents, torch.tensor([0, 1, 1]), decay=0.5)
    # code 0: normalise(.5 * [1, 0] + .5 * [.6, .8]) = [.8, .4] / sqrt(.8) = [.8944, .4472]
    # code 1: its latents' mean is itself, so it stays; code 2 was not picked, so it stays
    expected = torch.tensor([[0.8 / 0.8**0.5, 0.4 / 0.8**0.5], [0.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(codebook, expected)


def test_training_lowers_held_out_error(trained):
    vq, held_out, before, stats = trained
    after = reconstruction_error(vq, held_out)
    assert after < 0.6 * before, (before, after, stats)
    assert stats["codes_used"] > 16  # more codes than one 4x4 image has: no collapse onto a few codes


def test_training_leaves_vq_frozen_and_encode_consistent(trained):
    vq = trained[0]
    assert not any(module.training for module in vq.modules())
    assert not any(p.requires_grad for p in vq.parameters())
    codes = vq.quantize.embedding.weight
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(len(codes)))
    # encode's Euclidean nearest code equals the cosine nearest code the decoder was trained on
    images = trained[1][:4]
    latents = vq.quant_conv(vq.encoder(images))
    _, _, sphere_indices = quantize_on_sphere(codes, latents, beta=0.25)
    assert torch.equal(vq.encode(images).image_tokens, sphere_indices)


def test_training_is_deterministic_for_a_seed():
    rng_state = torch.random.get_rng_state()
    runs = [fresh_vq() for _ in range(3)]
    for vq, seed in zip(runs, (1, 1, 2)):
        train_vq(vq, steps=3, batch_size=4, image_size=32, seed=seed)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is untouched
    same, other = runs[1].state_dict(), runs[2].state_dict()
    assert all(torch.equal(value, same[name]) for name, value in runs[0].state_dict().items())
    assert not all(torch.equal(value, other[name]) for name, value in runs[0].state_dict().items())


def test_reconstruction_scene_scores_what_the_decoder_shows(trained):
    vq = trained[0]
    scores = reconstruction_scene(vq, seed=999, indices=range(16), image_size=32)
    assert set(scores) == {"scene", "scene/background", "scene/count", "scene/colour", "scene/shape"}
    assert all(0 <= value <= 1 for value in scores.values())
    untrained = reconstruction_scene(fresh_vq(), seed=999, indices=range(16), image_size=32)
    assert untrained["scene"] < scores["scene"], (untrained, scores)  # noise passes fewer checks than scenes
