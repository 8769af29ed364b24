""" recipes/train.py end to end: classification on digits, segmentation on a generated VOC tree,
two real processes under ``accelerate launch``, resume equivalence and the CLI's errors. """
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

import timm_normplugins
from timm_normplugins import load_model, read_checkpoint_info
from timm_normplugins.training import ConfigError, parse_args

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'recipes'))
import train as train_recipe  # noqa: E402

# small and fast: 200 digits, 10-class TN net, FDT + sgd_wcgc, PGD on 20 images
QUICK = ['--model', 'cifar_resnet20_tn', '--max-train-samples', '200', '--max-val-samples', '100',
         '--batch-size', '50', '--workers', '0', '--epochs', '1', '--log-interval', '1']


def run(tmp_path, *extra, experiment='run'):
    assert train_recipe.main([*QUICK, '--output', str(tmp_path), '--experiment', experiment, *extra]) == 0
    return tmp_path / experiment


def test_main_job_flags_are_the_defaults():
    args = parse_args([])
    assert (args.dataset, args.mixup, args.loss, args.opt) == ('digits', 'fdt', 'fdt', 'sgd_wcgc')
    assert args.model.endswith('_tn') and args.eval_attack == ['pgd-paper']


def test_classification_end_to_end(tmp_path):
    out = run(tmp_path, '--eval-attack', 'pgd-paper', '--eval-num-images', '20')
    for name in ('model.safetensors', 'model_best.safetensors', 'args.yaml', 'metrics.csv', 'summary.json',
                 'curves.png', 'state/LATEST'):
        assert (out / name).exists(), name
    model = load_model(out / 'model.safetensors')
    assert read_checkpoint_info(out / 'model.safetensors')['architecture'] == 'cifar_resnet20_tn'
    via_timm = timm.create_model('cifar_resnet20_tn', pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors')))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), via_timm.eval()(x))
    rows = list(csv.DictReader(open(out / 'metrics.csv')))
    assert len(rows) == 1 and int(rows[0]['val_count']) == 100
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['robustness'] is not None and summary['epochs_done'] == 1
    assert (out / 'robustness').is_dir()
    # args.yaml replays the run
    replay = parse_args(['--config', str(out / 'args.yaml')])
    assert replay.model == 'cifar_resnet20_tn' and replay.max_train_samples == 200


def test_segmentation_end_to_end(tmp_path):
    from _dataset_files import write_voc
    write_voc(tmp_path / 'voc')
    out = run(tmp_path, '--dataset', 'voc2012', '--data-dir', str(tmp_path / 'voc'), '--val-split', 'val',
              '--model', 'unet_resnet34', '--model-kwargs', 'encoder=resnet18', '--mixup', 'none', '--loss', 'ce',
              '--opt', 'momentum_wcgc', '--img-size', '64', '--batch-size', '2', '--eval-attack',
              '--max-train-samples', '2', '--max-val-samples', '1')
    rows = list(csv.DictReader(open(out / 'metrics.csv')))
    assert {'val_pixel_acc', 'val_miou'} <= set(rows[0])
    assert int(rows[0]['val_count']) == 50 * 70 - 70  # the generated val mask has one ignored row
    model = load_model(out / 'model.safetensors')
    assert model(torch.randn(1, 3, 45, 33)).shape == (1, 21, 45, 33)


def _weights(path):
    return safetensors.torch.load_file(str(path))


def test_resume_gives_the_same_run(tmp_path):
    common = ['--epochs', '2', '--sched', 'step', '--decay-epochs', '1', '--eval-attack']
    full = run(tmp_path, *common, experiment='full')
    part = run(tmp_path, *common, '--stop-after-epochs', '1', experiment='part')
    assert len(list(csv.DictReader(open(part / 'metrics.csv')))) == 1
    # a save killed half-way leaves a .partial folder and LATEST still naming epoch 1: resume ignores it
    (part / 'state' / 'epoch_2.partial').mkdir()
    (part / 'state' / 'epoch_2.partial' / 'model.safetensors').write_bytes(b'truncated')
    assert (part / 'state' / 'LATEST').read_text() == 'epoch_1'
    assert train_recipe.main([*QUICK, *common, '--output', str(tmp_path), '--resume', str(part)]) == 0
    assert sorted(p.name for p in (part / 'state').iterdir()) == ['LATEST', 'epoch_2']
    a, b = list(csv.DictReader(open(full / 'metrics.csv'))), list(csv.DictReader(open(part / 'metrics.csv')))
    assert len(b) == 2
    for ra, rb in zip(a, b):
        for key in ('train_loss', 'val_loss', 'val_top1', 'val_top5', 'lr'):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-6, abs=1e-9), key
    wa, wb = _weights(full / 'model.safetensors'), _weights(part / 'model.safetensors')
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('argv, message', [
    (['--model', 'resnet34_tnn'], 'unknown model'),
    (['--opt', 'sgd_wcgcx'], 'unknown optimizer'),
    (['--loss', 'focal'], 'unknown loss'),
    (['--dataset', 'cifar10', '--data-dir', '/nonexistent'], 'cifar'),
    (['--dataset', 'mnist9'], 'unknown dataset'),
    (['--tn-grad', 'paper', '--model', 'cifar_resnet20'], 'no Tensor Normalization'),
])
def test_cli_errors_before_training(tmp_path, argv, message):
    with pytest.raises((ConfigError, ValueError, FileNotFoundError), match=message):
        train_recipe.main([*QUICK, '--output', str(tmp_path), *argv])
    assert not (tmp_path / 'run' / 'state').exists()


def test_mixup_choice_and_config_keys_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(['--mixup', 'fdtt'])
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: resnet34_tn\nlearning_rate: 0.1\n')
    with pytest.raises(ConfigError, match="'learning_rate' is not a flag"):
        parse_args(['--config', str(bad)])
    bad.write_text('mixup: overlay\n')
    with pytest.raises(ConfigError, match='not one of'):
        parse_args(['--config', str(bad)])
    good = tmp_path / 'good.yaml'
    good.write_text('model: resnet34_tn\nlr: 0.05\nopt-kwargs: [wcgc_area=channel]\n')
    args = parse_args(['--config', str(good), '--lr', '0.2'])
    assert args.model == 'resnet34_tn' and args.lr == 0.2 and args.opt_kwargs == {'wcgc_area': 'channel'}


def test_single_process_cpu_launch_for_several_processes_is_refused():
    from timm_normplugins.training import check_launch
    env = {'ACCELERATE_USE_CPU': 'True', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': '29500'}
    with pytest.raises(ConfigError, match='--multi_gpu --num_processes N'):
        check_launch(env)
    check_launch({'ACCELERATE_USE_CPU': 'True'})  # one process asked for: fine
    check_launch(dict(env, WORLD_SIZE='2'))  # really launched as a process group: fine


def test_resume_from_another_architecture_is_refused(tmp_path):
    first = run(tmp_path, '--eval-attack', '--stop-after-epochs', '1', '--epochs', '2')
    with pytest.raises(ConfigError, match="model='cifar_resnet20_tn'"):
        train_recipe.main([*QUICK, '--model', 'cifar_resnet32', '--output', str(tmp_path), '--resume', str(first)])
    with pytest.raises(ConfigError, match='already holds a run'):
        run(tmp_path, '--eval-attack')


def test_two_processes_with_accelerate_launch(tmp_path):
    # on a machine without GPU, --multi_gpu starts the processes with torch.distributed.run and the recipe
    # runs them on the CPU with gloo (`--cpu --num_processes 2` would start one process, see check_launch)
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           str(REPO / 'recipes' / 'train.py'), *QUICK, '--max-val-samples', '99', '--eval-attack',
           '--output', str(tmp_path), '--experiment', 'ddp']
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / 'ddp' / 'metrics.csv')))
    # 99 validation images over 2 processes: Accelerate pads one, gather_for_metrics drops it again
    assert int(rows[0]['val_count']) == 99
    summary = json.loads((tmp_path / 'ddp' / 'summary.json').read_text())
    assert summary['processes'] == 2
    assert proc.stdout.count('epoch   1') == 1  # one log line per epoch, from the main process only
