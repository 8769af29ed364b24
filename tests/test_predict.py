""" timm-normplugins-predict end to end: real checkpoints and image files, results checked against the model's
own forward pass on the same preprocessed tensors. """
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins import load_model, save_model
from timm_normplugins.cli.predict import expand_inputs, main, resolve_label_names, voc_palette

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Three checkpoints (RGB classifier, grey classifier, U-Net) and a folder of PNGs of different sizes."""
    root = tmp_path_factory.mktemp('predict')
    torch.manual_seed(0)
    out = dict(root=root)
    out['rgb'] = save_model(timm.create_model('cifar_resnet20', num_classes=4), root / 'rgb.safetensors')
    out['grey'] = save_model(timm.create_model('cifar_resnet20', num_classes=3, in_chans=1), root / 'grey.safetensors')
    out['unet'] = save_model(timm.create_model('unet_resnet34', encoder='test_resnet', num_classes=3),
                             root / 'unet.safetensors')
    images = root / 'imgs'
    (images / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 36), (40, 36), (28, 50)]):
        # a bright square at a different place per image: the model's outputs differ between images
        pixels = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        pixels[4 + 6 * i:16 + 6 * i, 3:15] = 250
        Image.fromarray(pixels).save(images / f'a{i}.png')
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(images / 'sub' / 'grey.png')
    (images / 'notes.txt').write_text('not an image: a folder search skips it by extension')
    out['images'] = sorted([images / 'a0.png', images / 'a1.png', images / 'a2.png', images / 'sub' / 'grey.png'])
    return out


def _forward_probs(model, path, in_chans):
    """The softmax of ``model`` on ``path`` preprocessed by timm's eval transform of its data config."""
    config = resolve_data_config(model=model)
    image = Image.open(path).convert('L' if in_chans == 1 else 'RGB')
    with torch.inference_mode():
        return model(create_transform(**config)(image)[None]).softmax(1)[0]


def _run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'timm_normplugins', 'predict', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_folder_to_csv_matches_the_models_forward(files, tmp_path):
    out = tmp_path / 'preds.csv'
    proc = _run_cli('--checkpoint', files['rgb'], files['root'] / 'imgs', '--topk', '3', '--output', out,
                    '-b', '3', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['file'] for r in rows] == [str(p) for p in files['images']]  # the folder, recursively, no .txt
    model = load_model(files['rgb']).eval()
    for row, path in zip(rows, files['images']):
        probs = _forward_probs(model, path, 3)
        top = probs.topk(3)
        assert [int(row[f'index_{k}']) for k in (1, 2, 3)] == top.indices.tolist()
        assert [float(row[f'prob_{k}']) for k in (1, 2, 3)] == pytest.approx(top.values.tolist(), abs=2e-6)
        assert [row[f'label_{k}'] for k in (1, 2, 3)] == [str(i) for i in top.indices.tolist()]  # no names: indices
    assert len({r['index_1'] + r['prob_1'] for r in rows}) == len(rows)  # the images really differ
    table = proc.stdout.splitlines()
    assert table[0].split() == ['image', 'rank', 'index', 'prob']
    assert len(table) == 1 + 3 * len(rows)
    assert table[1].split()[0] == str(files['images'][0]) and table[2].split()[0] == '2'


def test_grey_model_glob_label_names_and_json(files, tmp_path, capsys):
    names = tmp_path / 'classes.txt'
    names.write_text('tee\nshirt\nbag\n\n')  # a trailing blank line is no class
    out = tmp_path / 'preds.json'
    pattern = str(files['root'] / 'imgs' / '**' / '*.png')
    assert main(['--checkpoint', str(files['grey']), pattern, '--label-names', str(names), '--topk', '10',
                 '--output', str(out)]) == 0
    records = json.loads(out.read_text())
    model = load_model(files['grey']).eval()
    assert [r['file'] for r in records] == [str(p) for p in files['images']]
    for record, path in zip(records, files['images']):
        probs = _forward_probs(model, path, 1)  # colour images are read as grey for a 1-channel model
        assert len(record['index']) == 3  # --topk capped at the class count
        assert record['index'] == probs.topk(3).indices.tolist()
        assert record['label'] == [['tee', 'shirt', 'bag'][i] for i in record['index']]
        assert record['prob'] == pytest.approx(probs.topk(3).values.tolist(), abs=2e-6)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ['image', 'rank', 'class', 'index', 'prob']
    assert printed[1].split()[2] == records[0]['label'][0]


def test_timm_model_name_with_a_plain_weights_file(files, tmp_path, capsys):
    torch.manual_seed(1)
    model = timm.create_model('test_resnet', num_classes=5).eval()
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'weights.pth')
    image = files['images'][2]
    assert main(['--model', 'test_resnet', '--num-classes', '5', '--checkpoint', str(tmp_path / 'weights.pth'),
                 str(image), '--topk', '1', '--output', str(tmp_path / 'p.csv')]) == 0
    row, = csv.DictReader(open(tmp_path / 'p.csv', newline=''))
    probs = _forward_probs(model, image, 3)
    assert int(row['index_1']) == int(probs.argmax())
    assert float(row['prob_1']) == pytest.approx(float(probs.max()), abs=2e-6)


def test_expand_inputs_folder_glob_and_file(files, tmp_path):
    imgs = files['root'] / 'imgs'
    found = expand_inputs([str(imgs)])
    assert [p for p, _ in found] == files['images']
    assert [n for _, n in found] == ['a0.png', 'a1.png', 'a2.png', 'sub/grey.png']  # relative to the folder
    found = expand_inputs([str(imgs / 'a*.png'), str(imgs / 'a1.png'), str(imgs / '*' / '*.png')])
    assert [n for _, n in found] == ['a0.png', 'a1.png', 'a2.png', 'sub/grey.png']  # each file once, in order
    jpg = tmp_path / 'x.JPG'
    Image.new('RGB', (4, 4)).save(jpg, format='JPEG')
    assert expand_inputs([str(tmp_path)]) == [(jpg, 'x.JPG')]  # extensions compare case-insensitively


def test_label_names_resolution(files, tmp_path):
    model = load_model(files['rgb'])
    assert resolve_label_names(model, 4) == ['0', '1', '2', '3']
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=('cat', 'dog', 'car', 'ship'))
    assert resolve_label_names(model, 4) == ['cat', 'dog', 'car', 'ship']
    assert resolve_label_names(model, 5) == ['0', '1', '2', '3', '4']  # names for another class count: unused
    override = tmp_path / 'names.txt'
    override.write_text('a\nb\nc\nd\n')
    assert resolve_label_names(model, 4, str(override)) == ['a', 'b', 'c', 'd']
    imagenet = timm.create_model('test_resnet')  # 1000 classes: timm's ImageNet names, as its inference.py
    assert resolve_label_names(imagenet, 1000)[0] == 'tench, Tinca tinca'


def test_segmenter_writes_palette_masks_and_fractions(files, tmp_path, capsys):
    masks, out = tmp_path / 'masks', tmp_path / 'seg.json'
    inputs = [str(p) for p in files['images'][:3]]  # two sizes: batches hold one size each
    assert main(['--checkpoint', str(files['unet']), *inputs, '--output-dir', str(masks), '--output', str(out),
                 '-b', '2']) == 0
    records = json.loads(out.read_text())
    model = load_model(files['unet']).eval()
    config = resolve_data_config(model=model)
    mean = torch.tensor(config['mean']).view(3, 1, 1)
    std = torch.tensor(config['std']).view(3, 1, 1)
    for record, path in zip(records, inputs):
        pixels = torch.from_numpy(np.array(Image.open(path).convert('RGB'))).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            expected = model(((pixels - mean) / std)[None]).argmax(1)[0].numpy()
        mask = Image.open(record['mask'])
        assert record['mask'] == str(masks / Path(path).name)
        assert mask.mode == 'P' and mask.getpalette()[:9] == voc_palette()[:9]
        assert np.array_equal(np.array(mask), expected)  # whole image, its own size
        counts = np.bincount(expected.ravel(), minlength=3) / expected.size
        assert record['fractions'] == {str(i): pytest.approx(counts[i], abs=1e-6) for i in range(3) if counts[i]}
    assert not list(masks.glob('*.tmp'))
    assert capsys.readouterr().out.splitlines()[0].split() == ['image', 'index', 'pixels']


def _one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [ln for ln in err if 'error:' in ln] == err[-1:], err  # one line, the last one
    return err[-1]


def test_bad_inputs_are_one_line_errors(files, tmp_path, capsys):
    rgb, imgs = str(files['rgb']), files['root'] / 'imgs'
    (tmp_path / 'empty' / 'deeper').mkdir(parents=True)
    (tmp_path / 'three.txt').write_text('a\nb\nc\n')
    cases = [
        (['--checkpoint', rgb, str(tmp_path / 'missing.png')], 'missing.png: no such file or folder'),
        (['--checkpoint', rgb, str(imgs / 'notes.txt')], 'notes.txt is not an image'),
        (['--checkpoint', rgb, str(tmp_path / 'empty')], 'empty: folder holds no image file'),
        (['--checkpoint', rgb, str(imgs / '*.jpg')], '*.jpg: no image file matches'),
        (['--checkpoint', rgb, str(imgs), '--output', str(tmp_path / 'p.txt')], '--output'),
        (['--checkpoint', rgb, str(imgs), '--output', str(tmp_path / 'three.txt' / 'p.csv')],
         'three.txt is a file, not a folder'),
        (['--checkpoint', rgb, str(imgs), '--label-names', str(tmp_path / 'three.txt')],
         '3 names, the model has 4 classes'),
        (['--model', 'test_resnet', '--in-chans', '4', str(imgs)], '4-channel input'),
        (['--model', 'cifar_resnet_20', str(imgs)], 'did you mean cifar_resnet20'),
        (['--checkpoint', str(files['unet']), str(imgs), '--img-size', '64'], '--img-size'),
        (['--checkpoint', rgb, str(imgs), '--output-dir', str(tmp_path / 'm')], '--output-dir'),
    ]
    for argv, expected in cases:
        line = _one_line_error(capsys, argv)
        assert expected in line, (argv, line)
    torch.save(timm.create_model('test_resnet', num_classes=5).state_dict(), tmp_path / 'five.pth')
    line = _one_line_error(capsys, ['--model', 'test_resnet', '--num-classes', '3', '--checkpoint',
                                    str(tmp_path / 'five.pth'), str(imgs)])
    assert 'five.pth does not fit test_resnet' in line and 'class count: checkpoint 5, model 3' in line
    plain = tmp_path / 'plain.safetensors'
    import safetensors.torch
    safetensors.torch.save_file({'w': torch.zeros(1)}, str(plain))
    assert '--model NAME' in _one_line_error(capsys, ['--checkpoint', str(plain), str(imgs)])


def test_a_bad_image_stops_the_run_and_replaces_no_output(files, tmp_path):
    """A real process: exit status 2, one line naming the file, the previous results file untouched."""
    bad = tmp_path / 'broken.png'
    bad.write_bytes(Image.open(files['images'][0]).tobytes()[:200])  # pixels without a PNG header
    out = tmp_path / 'preds.csv'
    out.write_text('previous results\n')
    proc = _run_cli('--checkpoint', files['rgb'], files['images'][0], bad, '--output', out, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if 'error' in ln]
    assert lines == [f'timm_normplugins predict: error: {bad} is not an image in a supported format '
                     '(JPEG, PNG, BMP, GIF, TIFF, WEBP, PPM, TGA)'], proc.stderr
    assert 'Traceback' not in proc.stderr
    assert out.read_text() == 'previous results\n'
    assert not list(tmp_path.glob('*.tmp'))
