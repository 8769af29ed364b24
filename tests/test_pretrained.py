""" The registered pretrained tags (models/_pretrained.py): listed and loaded the timm way, offline, from
package data that is byte for byte the reproduction's committed run; every number in their cfgs equals the
committed result file it cites; the weights shipped in the wheel; a model card per tag.

The accuracy checks against the real Fashion-MNIST test set run where Debian's ``dataset-fashion-mnist`` is
installed (slow: the 10,000 test images through each model).
"""
import hashlib
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

import timm_normplugins
from timm_normplugins import read_checkpoint_info
from timm_normplugins.data.datasets import FASHION_MNIST_CLASSES
from timm_normplugins.models._pretrained import FMNIST_RUNS, PRETRAINED_DIR, RUN_DIR

REPO = Path(__file__).resolve().parents[1]
TAGS = sorted(FMNIST_RUNS)
FMNIST_DIR = Path('/usr/share/datasets/fashion-mnist')

pytestmark = pytest.mark.usefixtures('one_thread')


def _notes(cfg):
    """The cfg's ``notes`` as {key: [values]} ("key: value" lines)."""
    out = {}
    for line in cfg['notes']:
        key, _, value = line.partition(': ')
        out.setdefault(key, []).append(value)
    return out


def test_tags_are_listed_the_timm_way():
    listed = timm.list_models('*', pretrained=True)
    assert set(TAGS) <= set(listed)
    assert set(timm.list_models('cifar_resnet20*', pretrained=True)) == set(TAGS)
    assert set(timm_normplugins.list_plugin_models()) >= {'cifar_resnet20', 'cifar_resnet20_tn'}
    assert {'cifar_resnet20.base_fmnist', 'cifar_resnet20.fdt_fmnist', 'cifar_resnet20_tn.fdt_fmnist'} <= set(TAGS)


def test_untagged_names_keep_their_cifar_default():
    """A tag is opt-in: the plain name stays the 3-channel 32x32 CIFAR model without weights."""
    for name in ('cifar_resnet20', 'cifar_resnet20_tn'):
        model = timm.create_model(name)
        assert model.pretrained_cfg['input_size'] == (3, 32, 32) and model.stem[0].in_channels == 3
        assert not model.pretrained_cfg.get('file') and 'label_names' not in model.pretrained_cfg
        with pytest.raises(RuntimeError, match='No pretrained weights exist for ' + name):
            timm.create_model(name, pretrained=True)


@pytest.mark.parametrize('name', TAGS)
def test_tag_loads_offline_from_package_data(name):
    row = FMNIST_RUNS[name][0]
    model = timm.create_model(name, pretrained=True)
    cfg = model.pretrained_cfg
    file = PRETRAINED_DIR / f'{name}.safetensors'
    assert Path(cfg['file']) == file and file.is_relative_to(Path(timm_normplugins.__file__).parent)
    for key, value in safetensors.torch.load_file(str(file)).items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert cfg['architecture'] == name.split('.')[0] and cfg['tag'] == name.split('.')[1]
    assert cfg['num_classes'] == 10 and cfg['input_size'] == (1, 28, 28) and model.stem[0].in_channels == 1
    assert cfg['label_names'] == FASHION_MNIST_CLASSES
    info = read_checkpoint_info(file)  # the cfg's normalisation is the one the run trained with
    assert info['architecture'] == cfg['architecture']
    assert list(cfg['mean']) == info['data_config']['mean'] and list(cfg['std']) == info['data_config']['std']
    for key in ('license', 'origin_url', 'paper_name', 'description', 'first_conv', 'classifier'):
        assert cfg[key], key
    assert cfg['origin_url'] == RUN_DIR.format(row=row)
    assert Path(__file__).parents[1].joinpath('docs', 'models', f'{name}.md').is_file()
    # fine-tuning the timm way: another class count drops the classifier
    tuned = timm.create_model(name, pretrained=True, num_classes=3)
    assert tuned.fc.out_features == 3 and 'label_names' not in tuned.pretrained_cfg
    torch.testing.assert_close(tuned.stem[0].weight, model.stem[0].weight)


@pytest.mark.parametrize('name', TAGS)
def test_shipped_weights_are_the_committed_run(name):
    run = REPO / RUN_DIR.format(row=FMNIST_RUNS[name][0])
    if not run.is_dir():
        pytest.skip('no reproduction/ folder (not a source checkout)')
    shipped = (PRETRAINED_DIR / f'{name}.safetensors').read_bytes()
    assert hashlib.sha256(shipped).digest() == hashlib.sha256((run / 'model.safetensors').read_bytes()).digest()
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['args']['model'] == name.split('.')[0]
    assert summary['args']['seed'] == 0 and summary['args']['dataset'] == 'fashion_mnist'
    # the file holds the last epoch's weights, whose validation the summary's 'last' entry reports
    meta = read_checkpoint_info(PRETRAINED_DIR / f'{name}.safetensors')['metadata']
    assert int(meta['epoch']) == summary['last']['epoch'] == summary['epochs_done']


def _measured(run: Path):
    """The numbers a cfg cites, read from the run's result files."""
    def eq7(folder, attack, eps):
        report = json.loads((run / folder / 'report.json').read_text())
        model, = report['models'].values()
        entry, = [e for e in model['attacks'][attack] if e['eps'] == eps]
        return entry['accuracy_eq7']
    aa = json.loads((run / 'eval_aa' / 'report.json').read_text())
    aa_model, = aa['models'].values()
    aa_entry, = aa_model['attacks']['autoattack']
    assert aa_entry['eps_pixel'] == pytest.approx(8 / 255) and aa_entry['n'] == 200
    return {
        'clean_top1': json.loads((run / 'summary.json').read_text())['last']['val_top1'],
        'pgd_paper_eq7_eps0.1': eq7('eval', 'pgd-paper', 0.1),
        'pgd_paper_eq7_eps0.01': eq7('eval', 'pgd-paper', 0.01),
        'pgd_foolbox_eq7_eps0.1': eq7('eval_foolbox', 'pgd-foolbox', 0.1),
        'autoattack_8/255': aa_entry['accuracy'],
    }


@pytest.mark.parametrize('name', TAGS)
def test_cfg_numbers_are_the_committed_results(name):
    row, _, metrics = FMNIST_RUNS[name]
    run = REPO / RUN_DIR.format(row=row)
    if not run.is_dir():
        pytest.skip('no reproduction/ folder (not a source checkout)')
    assert metrics == pytest.approx(_measured(run), abs=1e-9)
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    notes = _notes(cfg)
    assert notes['dataset'][0].startswith('Fashion-MNIST') and f'--rows {row}' in notes['train'][0]
    shown = [float(m.group(1)) for line in notes['measured'] for m in [re.search(r'([\d.]+) % \(', line)]]
    assert shown == [round(v, 2) for v in metrics.values()]
    card = (REPO / 'docs' / 'models' / f'{name}.md').read_text()
    for value in metrics.values():  # the card quotes the same numbers
        assert f'{value:.2f}' in card, value
    assert f'--rows {row}' in card and name in card


def test_pretrained_files_are_package_data():
    """setuptools ships pretrained/*.safetensors in the wheel (package-data) and the sdist (MANIFEST.in)."""
    pyproject = tomllib.loads((REPO / 'pyproject.toml').read_text())
    globs = pyproject['tool']['setuptools']['package-data']['timm_normplugins']
    pkg = Path(timm_normplugins.__file__).parent
    shipped = {p.relative_to(pkg) for g in globs for p in pkg.glob(g)}
    assert {Path('pretrained') / f'{name}.safetensors' for name in TAGS} <= shipped
    assert {p.name for p in PRETRAINED_DIR.iterdir()} == {f'{name}.safetensors' for name in TAGS}  # no strays
    assert 'recursive-include timm_normplugins/pretrained *.safetensors' in (REPO / 'MANIFEST.in').read_text()


@pytest.mark.slow
def test_wheel_holds_the_pretrained_weights(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(tmp_path), str(REPO)],
                   check=True, timeout=600)
    wheel, = tmp_path.glob('timm_normplugins-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        for name in TAGS:
            data = zf.read(f'timm_normplugins/pretrained/{name}.safetensors')
            assert data == (PRETRAINED_DIR / f'{name}.safetensors').read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason='needs Debian\'s dataset-fashion-mnist')
@pytest.mark.parametrize('name', TAGS)
def test_clean_accuracy_on_the_test_set_matches_the_cfg(name):
    """The tag's own cfg (mean, std, input size) reproduces the clean top-1 its notes quote, on all 10,000."""
    from timm_normplugins.data import readers
    images, labels, _ = readers.read_fashion_mnist(str(FMNIST_DIR), 'test')
    model = timm.create_model(name, pretrained=True).eval()
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg['input_size'] == (1, *images.shape[1:3])  # no resize: the run saw 28x28
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(cfg['mean']).view(1, -1, 1, 1)) / torch.tensor(cfg['std']).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x.split(500)])
    top1 = 100 * (pred == torch.from_numpy(labels)).double().mean().item()
    assert top1 == pytest.approx(FMNIST_RUNS[name][2]['clean_top1'], abs=0.05)
