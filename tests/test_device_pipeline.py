import albumentations as A
import numpy as np
import pytest
import torch

from timm_normplugins.data import create_dataset, create_transform
from timm_normplugins.data.datasets import ImageClassificationDataset
from timm_normplugins.data.device_pipeline import DeviceAugment, DeviceLoader, create_device_loader


def fake_dataset(name, n=24, size=(32, 32), chans=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size, chans), dtype=np.uint8)
    ds = ImageClassificationDataset(images, rng.integers(0, 10, n), [str(i) for i in range(10)], name=name)
    ds.transform = create_transform(name, train=True)
    return ds


def albumentations_with_decisions(transform, images, seed=0):
    """Run the real pipeline and read back the crop offsets and flips it drew."""
    recorded = A.Compose(list(transform.transforms), save_applied_params=True, seed=seed)
    outs, top, left, flip = [], [], [], []
    for im in images:
        r = recorded(image=im)
        applied = dict(r['applied_transforms'])
        x_min, y_min = applied['RandomCrop']['crop_coords'][:2] if 'RandomCrop' in applied else (0, 0)
        outs.append(r['image'])
        top.append(y_min)
        left.append(x_min)
        flip.append('HorizontalFlip' in applied)
    return torch.stack(outs), torch.tensor(top), torch.tensor(left), torch.tensor(flip)


@pytest.mark.parametrize('name,size,chans', [('cifar10', (32, 32), 3), ('fashion_mnist', (28, 28), 1),
                                             ('svhn', (32, 32), 3)])
@pytest.mark.parametrize('channels_last,table', [(False, False), (True, False), (False, True)])
def test_same_decisions_give_albumentations_output_bit_for_bit(name, size, chans, channels_last, table):
    ds = fake_dataset(name, size=size, chans=chans)
    expected, top, left, flip = albumentations_with_decisions(ds.transform, ds.images)
    aug = DeviceAugment.from_transform(ds.transform, chans)
    assert aug.affine is not None  # Albumentations' float32 arithmetic reproduces its table
    if table:
        aug.affine = None  # the table lookup (for a Normalize whose arithmetic is not known)
    images = torch.from_numpy(ds.images)
    out = aug.apply(images, torch.arange(len(ds)), top, left, flip, channels_last=channels_last)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(out, expected)
    if name != 'svhn':  # the check covered padding and both flip states
        assert flip.any() and not flip.all() and (top == 0).any() | (top == 8).any()


def test_digits_pipeline_crops_without_flipping():
    ds = create_dataset('digits', split='train', max_samples=40)
    ds.transform = create_transform(ds, train=True)
    aug = DeviceAugment.from_transform(ds.transform, ds.in_chans)
    assert aug.flip_p == 0 and aug.pad == 4 and aug.crop == ds.img_size
    expected, top, left, flip = albumentations_with_decisions(ds.transform, ds.images)
    out = aug.apply(torch.from_numpy(ds.images), torch.arange(len(ds)), top, left, flip)
    assert torch.equal(out, expected)


def test_random_decisions_follow_albumentations_distribution():
    ds = fake_dataset('cifar10', n=1)
    aug = DeviceAugment.from_transform(ds.transform, 3)
    top, left, flip = aug.sample(20000, (32, 32), 'cpu', torch.Generator().manual_seed(0))
    _, a_top, a_left, a_flip = albumentations_with_decisions(ds.transform, np.repeat(ds.images, 2000, 0))
    for ours, theirs in ((top, a_top), (left, a_left)):
        assert set(ours.tolist()) == set(theirs.tolist()) == set(range(9))  # 0..8 inclusive, 4 px each way
        counts = torch.bincount(ours, minlength=9).double() / len(ours)
        assert (counts - 1 / 9).abs().max() < 0.01
    assert abs(flip.double().mean() - 0.5) < 0.015 and abs(a_flip.double().mean() - 0.5) < 0.05


def test_unsupported_pipeline_is_refused():
    with pytest.raises(ValueError, match='device pipeline'):  # VOC: pad_if_needed crop, colour offset
        DeviceAugment.from_transform(create_transform('voc2012', train=True), 3)
    with pytest.raises(ValueError, match='order'):
        DeviceAugment.from_transform(A.Compose([A.HorizontalFlip(), A.Pad(4), A.Normalize()]), 3)


def test_loader_epochs_shards_and_labels():
    ds = fake_dataset('cifar10', n=50)
    ds.transform = create_transform('cifar10', train=False)  # normalisation only: x is checkable per sample
    plain = DeviceAugment.from_transform(ds.transform, 3)
    loaders = [DeviceLoader(ds, 8, seed=3, num_replicas=3, rank=r) for r in range(3)]
    assert [len(loader) for loader in loaders] == [2, 2, 2]  # 16 samples each, 2 dropped this epoch
    seen = []
    for loader in loaders:
        for x, y in loader:
            # find each normalised image among the data set's: labels travel with their images
            ref = plain.apply(loader.images, torch.arange(50), *(torch.zeros(50, dtype=torch.long),) * 2,
                              torch.zeros(50, dtype=torch.bool))
            idx = [int(((ref - xi).abs().flatten(1).sum(1) == 0).nonzero()) for xi in x]
            assert torch.equal(y, loader.targets[idx])
            seen += idx
    assert len(seen) == len(set(seen)) == 48  # disjoint shards
    first = [y for _, y in loaders[0]]
    loaders[0].set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loaders[0]]))
    loaders[0].set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loaders[0]]))  # (seed, epoch) only


def test_loader_augments_and_keeps_channels_last():
    ds = fake_dataset('cifar10', n=20)
    loader = create_device_loader(ds, 16, seed=0, channels_last=True, drop_last=False)
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [16, 4]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)
    # augmented: some padding (value of grey level 0) shows up
    zero = DeviceAugment.from_transform(ds.transform, 3).lut[0]
    assert (batches[0][0] == zero[None, :, None, None]).all(1).any()


def test_accelerate_shard_of_the_loader():
    class FakeAccelerator:
        device, num_processes, process_index = torch.device('cpu'), 2, 1

    ds = fake_dataset('cifar10', n=21)
    loader = create_device_loader(ds, 4, FakeAccelerator(), seed=0)
    assert (loader.num_replicas, loader.rank, len(loader)) == (2, 1, 2)  # 10 samples, 2 full batches


def test_recipe_flag_trains_from_device_batches(tmp_path, monkeypatch):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'recipes'))
    import train as train_recipe

    batches = []
    iterate = DeviceLoader.__iter__

    def counted(self):
        for x, y in iterate(self):
            batches.append(x.shape)
            yield x, y

    monkeypatch.setattr(DeviceLoader, '__iter__', counted)
    args = ['--model', 'cifar_resnet20_tn', '--max-train-samples', '100', '--max-val-samples', '50',
            '--batch-size', '50', '--workers', '0', '--epochs', '1', '--eval-attack', '--device-augment',
            '--output', str(tmp_path), '--experiment', 'dev']
    assert train_recipe.main(args) == 0
    assert batches == [torch.Size([50, 3, 32, 32])] * 2
    assert (tmp_path / 'dev' / 'metrics.csv').exists()
