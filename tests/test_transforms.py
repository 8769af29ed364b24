import albumentations as A
import numpy as np
import pytest
import timm
import torch
from timm.data import resolve_data_config

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins.data import RandomColorOffset, create_dataset, create_transform

RGB_MEAN = np.array([122.0, 117.0, 104.0])


def _pixels(x: torch.Tensor, mean) -> np.ndarray:
    """Undo (pixel - mean) / 256 and return HWC integer pixels."""
    return np.rint(x.permute(1, 2, 0).numpy().astype(np.float64) * 256 + np.asarray(mean)).astype(int)


def _shift_and_flip(out: np.ndarray, img: np.ndarray, pad: int = 4):
    """The (dy, dx, flipped) that turn the zero-padded ``img`` into ``out``; None if none does."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    for flipped in (False, True):
        for y in range(2 * pad + 1):
            for x in range(2 * pad + 1):
                crop = padded[y:y + h, x:x + w]
                if np.array_equal(crop[:, ::-1] if flipped else crop, out):
                    return y - pad, x - pad, flipped
    return None


@pytest.mark.parametrize('name, chans, size, mean', [
    ('cifar10', 3, 32, RGB_MEAN), ('cifar100', 3, 32, RGB_MEAN), ('fashion_mnist', 1, 28, [117.0])])
def test_pad_crop_flip_pipeline(name, chans, size, mean):
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (size, size, chans), dtype=np.uint8)  # no zeros: padding is recognisable
    t = create_transform(name, train=True, seed=0)
    seen = set()
    for _ in range(300):
        out = t(image=img)['image']
        assert out.shape == (chans, size, size) and out.dtype == torch.float32
        assert out.min() >= (0 - max(mean)) / 256 and out.max() <= (255 - min(mean)) / 256
        found = _shift_and_flip(_pixels(out, mean), img)
        assert found is not None, 'output is not a <=4 px shift (zero padded) of the input, flipped or not'
        seen.add(found)
    dys = {s[0] for s in seen}
    assert dys == set(range(-4, 5)) and {s[2] for s in seen} == {False, True}


def test_digits_shift_without_flip():
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[8:24, 10:12] = 200  # an 'L': its mirror image is no shift of it
    img[22:24, 12:18] = 200
    t = create_transform('digits', train=True, seed=1)
    found = [_shift_and_flip(_pixels(t(image=img)['image'], RGB_MEAN), img) for _ in range(100)]
    assert all(f is not None and not f[2] for f in found)
    assert len({f[:2] for f in found}) > 20


@pytest.mark.parametrize('train', [True, False])
def test_svhn_only_normalises(train):
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = create_transform('svhn', train=train)(image=img)['image']
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), (img - RGB_MEAN) / 256, atol=1e-6)


@pytest.mark.parametrize('name, model_kwargs', [
    ('cifar10', {}), ('svhn', {}), ('fashion_mnist', dict(in_chans=1)), ('voc2012', None)])
def test_normalisation_matches_timm_data_config(name, model_kwargs):
    model = timm.create_model('unet_resnet34_tn', encoder_kwargs=dict(layers=(1, 1, 1, 1))) if model_kwargs is None \
        else timm.create_model('resnet34_tn', **model_kwargs)
    cfg = resolve_data_config(model=model)
    chans = cfg['input_size'][0]
    img = np.random.default_rng(0).integers(0, 256, (20, 24, chans), dtype=np.uint8)
    out = create_transform(name, train=False)(image=img)['image']
    # what timm's own transforms compute: (pixel / 255 - mean) / std
    want = (img / 255.0 - np.array(cfg['mean'])) / np.array(cfg['std'])
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(want, (img - np.array(RGB_MEAN if chans == 3 else [117.0])) / 256, atol=1e-12)


def test_voc_train_crop_flip_joint_on_image_and_mask():
    """The mask is the image's red channel: after the pipeline every labelled pixel must still equal its
    red value up to the one colour offset added to the whole image."""
    rng = np.random.default_rng(0)
    t = create_transform('voc2012', train=True, seed=0)
    flips, offsets = set(), set()
    for h, w in [(300, 250), (120, 333), (227, 227), (500, 375)]:
        img = rng.integers(50, 206, (h, w, 3), dtype=np.uint8)  # the offset cannot clip
        img[:, : w // 2, 1] = 0  # left/right halves differ: a flip is visible
        mask = img[..., 0].copy()
        out = t(image=img, mask=mask)
        x, m = out['image'], out['mask']
        assert x.shape == (3, 227, 227) and x.dtype == torch.float32
        assert m.shape == (227, 227) and m.dtype == torch.uint8
        px, m = _pixels(x, RGB_MEAN), m.numpy().astype(int)
        labelled = m != 255
        diff = np.unique(px[..., 0][labelled] - m[labelled])
        assert len(diff) == 1, 'image and mask were cropped or flipped differently'
        offsets.add(int(diff[0]))
        # padding: where the image is smaller than the crop the mask is the ignore index
        assert labelled.sum() == min(h, 227) * min(w, 227)
        left_green = px[..., 1][labelled].reshape(min(h, 227), min(w, 227))[:, 0].mean()
        flips.add(bool(left_green > 40))
    assert len(offsets) > 1 and flips == {True, False}


def test_voc_eval_keeps_whole_image():
    img = np.random.default_rng(0).integers(0, 256, (131, 77, 3), dtype=np.uint8)
    mask = np.full((131, 77), 3, dtype=np.uint8)
    out = create_transform('voc2012', train=False)(image=img, mask=mask)
    assert out['image'].shape == (3, 131, 77) and torch.equal(out['mask'], torch.from_numpy(mask))


def test_random_color_offset():
    t = RandomColorOffset(p=1.0)
    t.set_random_seed(0)
    img = np.full((4, 5, 3), 128, dtype=np.uint8)
    outs = np.stack([t(image=img)['image'] for _ in range(4000)]).astype(int) - 128
    per_image = outs.reshape(len(outs), -1, 3)
    assert np.all(per_image == per_image[:, :1]), 'one offset for the whole image'
    # dlib: round(0.1 * B z); the covariance of B z is B B^T
    basis = np.array([[-66.379, 25.094, 6.79698], [-68.0492, -0.302309, -13.9539], [-68.4907, -24.0199, 7.27653]])
    want_std = 0.1 * np.sqrt((basis ** 2).sum(1))
    np.testing.assert_allclose(per_image[:, 0].std(0), want_std, rtol=0.06)
    # clipped to the valid range, float images in [0, 1] too
    assert RandomColorOffset(scale=5.0, p=1.0)(image=np.full((2, 2, 3), 250, np.uint8))['image'].max() <= 255
    f = RandomColorOffset(scale=5.0, p=1.0)(image=np.full((2, 2, 3), 0.5, np.float32))['image']
    assert f.dtype == np.float32 and 0 <= f.min() <= f.max() <= 1
    assert np.array_equal(RandomColorOffset(scale=0.0, p=1.0)(image=img)['image'], img)
    with pytest.raises(ValueError, match='RGB'):
        RandomColorOffset(p=1.0)(image=np.zeros((2, 2, 1), np.uint8))


def test_pipelines_compose_with_other_albumentations():
    t = create_transform('cifar10', train=True)
    assert isinstance(t, A.Compose) and type(t.transforms[-1]).__name__ == 'ToTensorV2'
    custom = A.Compose([A.ToGray(p=1.0), *t.transforms])
    out = custom(image=np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))['image']
    assert out.shape == (3, 32, 32)
    restored = A.from_dict(A.to_dict(create_transform('voc2012', train=True)))  # serialisable
    assert isinstance(restored.transforms[2], RandomColorOffset) and restored.transforms[2].scale == 0.1


def test_transform_from_dataset_and_errors(tmp_path):
    ds = create_dataset('digits', split='test', max_samples=10)
    t = create_transform(ds, train=True)
    assert [type(x).__name__ for x in t.transforms][:2] == ['Pad', 'RandomCrop']
    with pytest.raises(ValueError, match='img_size'):
        create_transform('imagefolder', train=True)
    assert create_transform('imagefolder', train=True, img_size=40)(
        image=np.zeros((40, 40, 3), np.uint8))['image'].shape == (3, 40, 40)
    with pytest.raises(ValueError, match='channel'):
        create_transform('cifar10', train=True, in_chans=1)
