""" recipes/evaluate.py end to end: real checkpoints, real dataset readers, the report on disk. """
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import timm_normplugins  # noqa: F401
from timm_normplugins import save_model
from timm_normplugins.data import create_dataset, create_transform
from timm_normplugins.models._paper_cfg import paper_mean_std
from timm_normplugins.robust import PixelSpaceModel, RobustnessResult, pixel_transform

from _dataset_files import write_voc

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(layers=(1, 1, 1, 1), channels=(8, 8, 16, 16), stem_width=8)


def _recipe():
    spec = importlib.util.spec_from_file_location('evaluate_recipe', ROOT / 'recipes' / 'evaluate.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    paths = []
    for name, arch in (('tn', 'resnet34_tn'), ('base', 'resnet34_cifar')):
        model = timm.create_model(arch, num_classes=10, **TINY)
        paths.append(save_model(model, folder / name / 'model.safetensors'))
    return paths


def test_pixel_pipeline_plus_wrapper_is_the_evaluation_pipeline():
    """What the attacked model sees from the CLI's loader is bit-identical to create_transform's output."""
    normalised = create_dataset('digits', split='test', max_samples=20,
                                transform=create_transform('digits', train=False))
    pixels = create_dataset('digits', split='test', max_samples=20,
                            transform=pixel_transform(create_transform('digits', train=False)))
    wrapper = PixelSpaceModel(torch.nn.Identity(), *paper_mean_std(3))
    uint8 = create_dataset('digits', split='test', max_samples=20,
                           transform=pixel_transform(create_transform('digits', train=False), dtype='uint8'))
    for i in range(len(pixels)):
        px, label = pixels[i]
        assert px.dtype == torch.float32 and 0 <= px.min() and px.max() <= 1
        ref, ref_label = normalised[i]
        assert label == ref_label
        assert torch.equal(wrapper(px[None])[0], ref)
        assert uint8[i][0].dtype == torch.uint8 and torch.equal(uint8[i][0].float() / 255, px)


def test_cli_end_to_end_on_digits(checkpoints, tmp_path, capsys):
    out = tmp_path / 'report'
    result = _recipe().main([
        '--checkpoint', *map(str, checkpoints), '--dataset', 'digits', '--attack', 'pgd-paper', 'autoattack',
        '--steps', '2', '--n-queries', '5', '--num-images', '20', '--batch-size', '8', '--workers', '0',
        '--seed', '3', '--output', str(out), '--no-progress', '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert 'running pgd-paper: Linf PGD' in printed and 'RobustBench standard configuration' in printed
    assert '| Model | Baseline | ε = 0.1 | ε = 0.01 | ε = 0.001 | ε = 0.0001 |' in printed
    loaded = RobustnessResult.load(out / 'report.json')
    assert list(loaded.models) == ['tn', 'base']
    assert loaded.settings['num_images'] == 20 and loaded.settings['seed'] == 3
    assert loaded.settings['architectures'] == {'tn': 'resnet34_tn', 'base': 'resnet34_cifar'}
    assert 'digits test split' in loaded.settings['data']
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict()))
    for name in ('tn', 'base'):
        rows = loaded.models[name]['attacks']['pgd-paper']
        assert [r['eps'] for r in rows] == [0.1, 0.01, 0.001, 0.0001]
        assert all(len(r['per_iterate']) == 2 for r in rows)
        assert loaded.models[name]['attacks']['autoattack'][0]['eps_pixel'] == pytest.approx(8 / 255)
    assert (out / 'report.md').is_file() and (out / 'accuracy_vs_eps.png').stat().st_size > 5000
    # timm validate.py's ending: --result and its fields, best top-1 first
    timm_rows = json.loads(printed.split('--result\n', 1)[1])
    assert [r['name'] for r in timm_rows] == sorted(['tn', 'base'], key=lambda n: -loaded.accuracy(n))
    assert list(timm_rows[0])[:9] == ['model', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'img_size',
                                      'crop_pct', 'interpolation']
    for row in timm_rows:
        assert row['top1'] == round(loaded.accuracy(row['name']), 4) and row['top1'] + row['top1_err'] == 100
        assert row['model'] == loaded.settings['architectures'][row['name']] and row['img_size'] == 32
        assert row['crop_pct'] == 1.0 and row['interpolation'] == 'bilinear' and row['top5'] >= row['top1']
        assert row['checkpoint'].endswith(f"{row['name']}/model.safetensors")


def test_cli_clean_only_in_timm_validate_format(checkpoints, tmp_path, capsys):
    out, csv_path = tmp_path / 'report', tmp_path / 'results.csv'
    _recipe().main(['--checkpoint', str(checkpoints[0]), '--attack', '--num-images', '30', '--workers', '0',
                    '--output', str(out), '--no-progress', '--results-file', str(csv_path)])
    printed = capsys.readouterr().out
    row = json.loads(printed.split('--result\n', 1)[1])
    assert row['model'] == 'resnet34_tn' and row['param_count'] == round(
        sum(p.numel() for p in timm.create_model('resnet34_tn', num_classes=10, **TINY).parameters()) / 1e6, 2)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith('model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation')
    assert lines[1].startswith(f"resnet34_tn,{row['top1']},")
    md = (out / 'report.md').read_text(encoding='utf-8')
    assert '## Clean accuracy' in md and not (out / 'accuracy_vs_eps.png').exists()


def test_cli_segmentation_on_generated_voc(tmp_path, capsys):
    write_voc(tmp_path / 'voc')
    torch.manual_seed(0)
    unet = timm.create_model('unet_resnet34_tn', num_classes=21, decoder_channels=(16, 16, 16, 16, 16),
                             encoder_kwargs=dict(layers=(1, 1, 1, 1)))
    path = save_model(unet, tmp_path / 'unet' / 'model.safetensors')
    out = tmp_path / 'report'
    _recipe().main(['--checkpoint', str(path), '--dataset', 'voc2012', '--data-dir', str(tmp_path / 'voc'),
                    '--attack', 'pgd-paper', '--eps', '0.01', '--steps', '1', '--workers', '0',
                    '--output', str(out), '--no-progress'])
    loaded = RobustnessResult.load(out)
    assert loaded.settings['task'] == 'segmentation' and loaded.settings['ignore_index'] == 255
    clean = loaded.models['unet']['clean']
    assert clean['n'] == 50 * 70 - 70  # the first row is VOC 'void' (255) and not scored
    assert 0 <= clean['miou'] <= 100
    assert 'mIoU' in (out / 'report.md').read_text(encoding='utf-8')


def test_unregistered_architecture_is_a_clear_error(tmp_path):
    model = timm.create_model('resnet34_tn', num_classes=10, **TINY)
    path = save_model(model, tmp_path / 'odd.safetensors',
                      metadata={'timm_normplugins.architecture': 'resnet34_tn_from_the_future'})
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'recipes' / 'evaluate.py'), '--checkpoint', str(path),
                           '--dataset', 'digits', '--output', str(tmp_path / 'r')],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "'resnet34_tn_from_the_future', which is not registered in timm" in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'r').exists()


def test_cli_input_errors(checkpoints, tmp_path, capsys):
    recipe = _recipe()
    cases = [
        (['--dataset', 'cifar100', '--data-dir', str(tmp_path)], 'has 10 classes, cifar100 has 100'),
        (['--dataset', 'cifar10', '--data-dir', str(tmp_path)], str(tmp_path)),  # files not there
        (['--dataset', 'fashion_mnist', '--data-dir', str(tmp_path)], 'takes 3-channel images, fashion_mnist has 1'),
        (['--attack', 'pgd-paper', '--n-queries', '5'], 'n_queries=5 does not apply to the selected attacks'),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            recipe.main(['--checkpoint', str(checkpoints[0]), '--output', str(tmp_path / 'r'), *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.main(['--checkpoint', str(tmp_path / 'missing.safetensors'), '--output', str(tmp_path / 'r')])
    assert 'checkpoint not found' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.main(['--checkpoint', *map(str, checkpoints), '--name', 'only_one'])
    assert not (tmp_path / 'r').exists()
