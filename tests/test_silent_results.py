""" Silent wrong results made right or loud (issue 23, item 2): each test crafts the faulty input on disk.

1. a ``train/`` + ``val/`` image folder is never read as one tree (validation on training images);
2. class lists come from the training split, other splits are mapped by name (an empty class folder shifted
   every label);
3. a checkpoint with non-finite weights or std <= 0 is refused by the evaluation;
4. a NaN pixel is refused by the [0, 1] input check;
5. fp16 autocast on CPU, which Accelerate silently drops, is refused before a run folder exists.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from timm_normplugins.data import DataFileError, DatasetNotFoundError, create_dataset, dataset_info

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')

pytestmark = pytest.mark.usefixtures('one_thread')


def _folder(root: Path, counts, size=(12, 12)):
    """``root/<class>/<i>.png`` with ``counts[class]`` images each; colour encodes the class."""
    for ci, (cls, n) in enumerate(counts.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new('RGB', size, (60 * ci, 10 * i, 200)).save(root / cls / f'{i}.png')


# --- 1. a split tree is never merged --------------------------------------------------------------------------

@pytest.mark.parametrize('val_name', ['val', 'validation'])
def test_split_tree_val_folder_is_the_validation_split(tmp_path, val_name):
    _folder(tmp_path / 'train', {'a': 4, 'b': 4})
    _folder(tmp_path / val_name, {'a': 2, 'b': 1})
    for split in ('test', 'val', 'validation'):  # the recipe's default --val-split is 'test'
        ds = create_dataset('imagefolder', tmp_path, split)
        assert len(ds) == 3, f'{split}: {len(ds)} images, the validation split has 3 (train merged in?)'
        assert Path(ds.source) == tmp_path / val_name
    train = create_dataset('imagefolder', tmp_path, 'train')
    assert len(train) == 8 and Path(train.source) == tmp_path / 'train'


def test_split_tree_without_the_asked_split_is_an_error(tmp_path):
    _folder(tmp_path / 'train', {'a': 2, 'b': 2})
    with pytest.raises(DatasetNotFoundError, match='never merged') as e:
        create_dataset('imagefolder', tmp_path, 'test')
    assert str(tmp_path) in str(e.value) and '\n' not in str(e.value)


def test_train_cli_validates_on_the_val_folder_only(tmp_path):
    data = tmp_path / 'data'
    _folder(data / 'train', {'a': 4, 'b': 4})
    _folder(data / 'val', {'a': 2, 'b': 1})
    proc = subprocess.run(
        [sys.executable, str(REPO / 'recipes' / 'train.py'), '--dataset', 'imagefolder', '--data-dir', str(data),
         '--model', 'cifar_resnet20_tn', '--img-size', '12', '--batch-size', '4', '--workers', '0', '--epochs', '1',
         '--mixup', 'none', '--loss', 'ce', '--eval-attack', '--output', str(tmp_path / 'out'),
         '--experiment', 'run'],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '(8 train / 3 val)' in proc.stdout
    assert f'train from {data / "train"}, val from {data / "val"}' in proc.stdout


# --- 2. labels are the training split's, by class name ------------------------------------------------------

def test_empty_val_class_folder_shifts_no_label(tmp_path):
    _folder(tmp_path / 'train', {'a': 2, 'b': 2, 'c': 2})
    _folder(tmp_path / 'val', {'a': 0, 'b': 2, 'c': 1})  # 'a' is an empty folder
    assert (tmp_path / 'val' / 'a').is_dir()
    train, val = (create_dataset('imagefolder', tmp_path, s) for s in ('train', 'val'))
    assert val.classes == train.classes == ['a', 'b', 'c']
    assert val.targets.tolist() == [1, 1, 2]  # old code: [0, 0, 1], every label one off
    # the image colours encode the class: the same class has the same red channel in both splits
    red = {int(t): int(img[0, 0, 0]) for img, t in zip(train.images, train.targets)}
    assert all(red[int(t)] == int(img[0, 0, 0]) for img, t in zip(val.images, val.targets))
    assert dataset_info('imagefolder', tmp_path, 'val').num_classes == 3


def test_missing_val_class_folder_shifts_no_label(tmp_path):
    _folder(tmp_path / 'train', {'a': 2, 'b': 2, 'c': 2})
    _folder(tmp_path / 'val', {'c': 2})  # no 'a' or 'b' folder at all
    val = create_dataset('imagefolder', tmp_path, 'val')
    assert val.targets.tolist() == [2, 2] and val.num_classes == 3


def test_extra_val_class_is_named(tmp_path):
    _folder(tmp_path / 'train', {'a': 2, 'b': 2})
    _folder(tmp_path / 'val', {'a': 1, 'zebra': 1})
    with pytest.raises(DataFileError) as e:
        create_dataset('imagefolder', tmp_path, 'val')
    assert str(tmp_path / 'val' / 'zebra') in str(e.value) and '\n' not in str(e.value)


def test_empty_class_folder_of_the_class_list_source_is_named(tmp_path):
    _folder(tmp_path / 'train', {'a': 2, 'b': 0, 'c': 2})
    _folder(tmp_path / 'val', {'a': 1, 'b': 1, 'c': 1})
    with pytest.raises(DataFileError) as e:
        create_dataset('imagefolder', tmp_path, 'train')
    assert str(tmp_path / 'train' / 'b') in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(DataFileError, match='holds no image'):  # a plain tree is its own class list
        create_dataset('imagefolder', tmp_path / 'train', 'test')


def test_val_tar_is_mapped_to_train_tar_classes(tmp_path):
    from _dataset_files import write_class_tar
    write_class_tar(tmp_path / 'train.tar', classes=('cat', 'dog', 'emu'), per_class=2)
    write_class_tar(tmp_path / 'val.tar', classes=('dog', 'emu'), per_class=1)
    val = create_dataset('imagefolder', tmp_path, 'val')
    assert val.classes == ['cat', 'dog', 'emu'] and val.targets.tolist() == [1, 2]


def test_train_cli_refuses_extra_val_class_and_leaves_no_run(tmp_path):
    data = tmp_path / 'data'
    _folder(data / 'train', {'a': 4, 'b': 4})
    _folder(data / 'val', {'a': 1, 'q': 1})
    proc = subprocess.run(
        [sys.executable, str(REPO / 'recipes' / 'train.py'), '--dataset', 'imagefolder', '--data-dir', str(data),
         '--img-size', '12', '--epochs', '1', '--output', str(tmp_path / 'out'), '--experiment', 'run'],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert str(data / 'val' / 'q') in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'out' / 'run').exists()


# --- 3. the evaluation refuses checkpoints that can only score chance ------------------------------------

TINY_NET = dict(layers=(1, 1, 1, 1), channels=(8, 8, 16, 16), stem_width=8)


def _tiny_checkpoint(path: Path, fault: str) -> Path:
    import json

    import timm

    import timm_normplugins  # noqa: F401  (registers the models)
    from timm_normplugins import save_model
    torch.manual_seed(0)
    model = timm.create_model('resnet34_tn', num_classes=10, **TINY_NET)
    metadata = None
    with torch.no_grad():
        if fault == 'nan-weight':
            next(model.parameters()).view(-1)[3] = float('nan')
        elif fault == 'inf-buffer':
            buffers = [b for b in model.buffers() if b.is_floating_point()]
            buffers[0].view(-1)[0] = float('inf')
        elif fault == 'std-zero':
            cfg = {k: model.pretrained_cfg[k] for k in ('mean', 'std', 'input_size') if k in model.pretrained_cfg}
            cfg['std'] = [0.0] * len(cfg['std'])
            metadata = {'timm_normplugins.data_config': json.dumps(cfg)}
    return save_model(model, path, metadata=metadata)


@pytest.mark.parametrize('fault, message', [
    ('nan-weight', 'non-finite (nan/inf) weights'), ('inf-buffer', 'non-finite (nan/inf) weights'),
    ('std-zero', 'std must be finite and positive'),
])
def test_evaluate_cli_refuses_a_degenerate_checkpoint(tmp_path, fault, message):
    path = _tiny_checkpoint(tmp_path / fault / 'model.safetensors', fault)
    proc = subprocess.run(
        [sys.executable, str(REPO / 'recipes' / 'evaluate.py'), '--checkpoint', str(path), '--dataset', 'digits',
         '--num-images', '20', '--attack', 'pgd-paper', '--eps', '0.1', '--steps', '2', '--workers', '0',
         '--no-progress', '--output', str(tmp_path / 'report')],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert proc.returncode != 0, proc.stdout[-1500:]  # old code: exit 0, 10 % at every ε, sanity checks ✓
    assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert str(path) in proc.stderr and message in proc.stderr
    assert not (tmp_path / 'report').exists()


def test_evaluate_robustness_refuses_non_finite_models_and_normalisation():
    from timm_normplugins.robust import PixelSpaceModel, evaluate_robustness
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    x, y = torch.rand(6, 3, 4, 4), torch.arange(6)
    loader = [(x, y)]
    with pytest.raises(ValueError, match='std must be finite and positive'):
        PixelSpaceModel(model, (0.5,) * 3, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match='std must be finite and positive'):
        evaluate_robustness(model, loader, (), mean=(0.5,) * 3, std=(0.2, float('nan'), 0.2), progress=False)
    with torch.no_grad():
        model[1].bias[2] = float('inf')
    with pytest.raises(ValueError, match=r"non-finite \(nan/inf\) weights .*'model.1.bias'"):
        evaluate_robustness({'broken': model}, loader, (), mean=(0.5,) * 3, std=(0.2,) * 3, progress=False)


# --- 4. a nan pixel does not switch the [0, 1] input check off ---------------------------------------------

def test_nan_pixel_is_rejected():
    from timm_normplugins.robust import evaluate_robustness
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    x, y = torch.rand(6, 3, 4, 4), torch.arange(6)
    evaluate_robustness(model, [(x, y)], (), mean=(0.5,) * 3, std=(0.2,) * 3, progress=False)  # clean: fine
    x[4, 1, 2, 3] = float('nan')
    with pytest.raises(ValueError, match=r'pixels in \[0, 1\], got 1 nan'):
        evaluate_robustness(model, [(x, y)], ['pgd-paper'], mean=(0.5,) * 3, std=(0.2,) * 3, progress=False)


# --- 5. fp16 on CPU is refused, not recorded while training in fp32 -----------------------------------------

@pytest.mark.parametrize('flags, named', [
    (['--amp', '--amp-dtype', 'float16'], '--amp --amp-dtype float16'),
    (['--mixed-precision', 'fp16'], '--mixed-precision fp16'),
])
def test_fp16_on_cpu_is_refused_before_a_run_folder_exists(tmp_path, flags, named):
    env = dict(ENV, CUDA_VISIBLE_DEVICES='')  # a CPU run even where a GPU is present
    proc = subprocess.run(
        [sys.executable, str(REPO / 'recipes' / 'train.py'), *flags, '--model', 'cifar_resnet20_tn',
         '--max-train-samples', '16', '--max-val-samples', '8', '--batch-size', '8', '--workers', '0',
         '--epochs', '1', '--eval-attack', '--output', str(tmp_path / 'out'), '--experiment', 'run'],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    # old code: exit 0, trained in fp32, args.yaml and summary.json said fp16
    assert proc.returncode == 1, (proc.stdout[-800:], proc.stderr[-800:])
    assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr and 'fp32' in proc.stderr
    assert not (tmp_path / 'out' / 'run').exists()
