import pytest
import torch
import torchvision
from PIL import Image

from corl.data.images import photo_pixels
from corl.modules.rewards import GeneratedImages, ImageConsistencyReward


def score(reward, images, real_photos):
    tokens = torch.zeros(len(images), 4, dtype=torch.long)
    return reward(GeneratedImages(images, real_photos, [""] * len(images), tokens))


def test_identical_images_score_one_and_different_less(photos):
    reward = ImageConsistencyReward(net="alex", random_trunk=True, resolution=64)
    real = photos(3)
    same = torch.stack([photo_pixels(p, 64) for p in real])  # the target itself, at the reward's resolution
    torch.testing.assert_close(score(reward, same, real), torch.ones(3))
    different = score(reward, torch.rand(3, 3, 32, 32) * 2 - 1, real)
    assert different.shape == (3,) and (different < 1).all() and (different >= 0).all()


def test_rows_are_compared_with_their_own_real_image(photos):
    reward = ImageConsistencyReward(random_trunk=True, resolution=64)
    a, b = photos(2)
    generated = torch.stack([photo_pixels(a, 64), photo_pixels(b, 64)])
    values = score(reward, generated, [a, a])
    assert values[0] == pytest.approx(1.0) and values[1] < 1.0


def four_by_three_photo():
    """A 4:3 photo: a green centre square between a red left band and a blue right band."""
    photo = Image.new("RGB", (80, 60), (40, 180, 60))
    photo.paste((220, 40, 40), (0, 0, 10, 60))
    photo.paste((40, 80, 220), (70, 0, 80, 60))
    return photo


def test_target_is_the_photo_centre_cropped_not_letterboxed(tiny_policy):
    photo = four_by_three_photo()
    target = GeneratedImages(torch.zeros(1, 3, 32, 32), [photo], ["p"], torch.zeros(1, 4)).real_images(48)
    assert target.shape == (1, 3, 48, 48)
    green = torch.tensor([40, 180, 60]).float().div(127.5).sub(1).view(1, 3, 1, 1)
    torch.testing.assert_close(target, green.expand_as(target), atol=2 / 255, rtol=0)  # the bands are cropped away
    # The understanding input letterboxes the same photo with the processor's grey bars.
    letterboxed = tiny_policy().janus.pixel_values([photo])
    grey = letterboxed[0, :, 0, :]  # the top row is padding
    assert (grey - grey.mean()).abs().max() < 1e-3 and grey.abs().max() < 0.05
    assert not (target - grey.mean()).abs().amin(dim=1).lt(0.05).any()  # no padding colour in the target


def test_resize_keeps_the_whole_photo():
    target = photo_pixels(four_by_three_photo(), 40, fit="resize")
    red, blue = torch.tensor([220, 40, 40]) / 127.5 - 1, torch.tensor([40, 80, 220]) / 127.5 - 1
    torch.testing.assert_close(target[:, 20, 0], red, atol=0.02, rtol=0)
    torch.testing.assert_close(target[:, 20, -1], blue, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="real_fit"):
        ImageConsistencyReward(real_fit="pad")


def test_missing_trunk_fails_at_setup_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reward = ImageConsistencyReward(net="vgg")
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*trunk_path.*random_trunk"):
        reward.setup()


def test_trunk_weights_come_from_the_checkpoint(tmp_path):
    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    reward = ImageConsistencyReward(net="alex", trunk_path=str(path), resolution=64)
    reward.setup()
    torch.testing.assert_close(reward._metric.net.slice1[0].weight, alexnet.features[0].weight)
    torch.testing.assert_close(getattr(reward._metric.net.slice5, "10").bias, alexnet.features[10].bias)


def test_checkpoint_of_the_wrong_trunk_is_refused(tmp_path):
    path = tmp_path / "not_alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match="not a torchvision alex"):
        ImageConsistencyReward(net="alex", trunk_path=str(path)).setup()


def test_unknown_net_is_refused():
    with pytest.raises(ValueError, match="alex"):
        ImageConsistencyReward(net="squeeze")
