""" The documented recipe for using torchattacks directly: ``pixel_space_model`` + a float [0, 1] pixel loader. """
import pytest
import timm
import torch
import torchattacks
from torch.utils.data import DataLoader

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins.data import create_dataset, create_transform
from timm_normplugins.robust import attack_guard, pixel_space_model, pixel_transform


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _recipe(n=8):
    """docs/ROBUSTNESS.md, 'torchattacks directly', as written there."""
    torch.manual_seed(0)
    model = timm.create_model('wcgc_cnn_c', num_classes=10).eval()
    net = pixel_space_model(model)  # takes [0, 1] pixels, applies the model's own normalisation
    test = create_dataset('digits', split='test', max_samples=n,
                          transform=pixel_transform(create_transform('digits', train=False)))
    images, labels = next(iter(DataLoader(test, batch_size=n)))
    return net, images, labels


def test_plain_torchattacks_pgd():
    net, images, labels = _recipe()
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    atk = torchattacks.PGD(net, eps=8 / 255, alpha=2 / 255, steps=3)
    with attack_guard(net):  # optional: no side effects on the model or the global RNG
        adv = atk(images, labels)
    assert adv.shape == images.shape and (adv - images).abs().max() <= 8 / 255 + 1e-6
    assert 0 <= adv.min() and adv.max() <= 1


def test_plain_torchattacks_autoattack():
    net, images, _ = _recipe(4)
    with torch.no_grad():
        labels = net(images).argmax(1)  # correctly classified by construction, so every stage runs
    atk = torchattacks.AutoAttack(net, norm='Linf', eps=8 / 255, version='standard', n_classes=10, seed=0)
    adv = atk(images, labels)
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert (net(adv).argmax(1) != labels).any()  # an untrained net falls to 8/255


def test_uint8_pixels_are_what_torchattacks_refuses():
    # why the documented loader gives floats: the 0-255 integers fail inside torchattacks
    net, images, labels = _recipe(2)
    with pytest.raises(Exception, match='Byte'):
        torchattacks.PGD(net, eps=8 / 255, alpha=2 / 255, steps=1)((images * 255).to(torch.uint8), labels)
