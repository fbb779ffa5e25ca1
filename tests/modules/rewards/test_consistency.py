import pytest
import torch
import torchvision

from corl.modules.rewards import GeneratedImages, ImageConsistencyReward


def score(reward, images, real):
    tokens = torch.zeros(len(images), 4, dtype=torch.long)
    return reward(GeneratedImages(images, real, [""] * len(images), tokens))


def test_identical_images_score_one_and_different_less():
    torch.manual_seed(0)
    reward = ImageConsistencyReward(net="alex", random_trunk=True, resolution=64)
    real = torch.rand(3, 3, 32, 32) * 2 - 1
    other = torch.rand(3, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(score(reward, real, real), torch.ones(3))
    different = score(reward, other, real)
    assert different.shape == (3,) and (different < 1).all() and (different >= 0).all()


def test_rows_are_compared_with_their_own_real_image():
    torch.manual_seed(0)
    reward = ImageConsistencyReward(random_trunk=True, resolution=64)
    a, b = torch.rand(2, 1, 3, 64, 64) * 2 - 1
    values = score(reward, torch.cat([a, b]), torch.cat([a, a]))
    assert values[0] == pytest.approx(1.0) and values[1] < 1.0


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
