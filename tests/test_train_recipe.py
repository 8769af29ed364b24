""" recipes/train.py end to end: classification on digits, segmentation on a generated VOC tree,
two real processes under ``accelerate launch``, resume equivalence and the CLI's errors. """
import csv
import json
import os
import re
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
from _payloads import RunsCode  # noqa: E402

# small and fast: 200 digits, 10-class TN net, FDT + sgd_wcgc, PGD on 20 images
QUICK = ['--model', 'cifar_resnet20_tn', '--max-train-samples', '200', '--max-val-samples', '100',
         '--batch-size', '50', '--workers', '0', '--epochs', '1', '--log-interval', '1']


def run(tmp_path, *extra, experiment='run'):
    assert train_recipe.main([*QUICK, '--output', str(tmp_path), '--experiment', experiment, *extra]) == 0
    return tmp_path / experiment


def test_main_job_flags_are_the_defaults():
    args = parse_args([])
    assert (args.dataset, args.mix_method, args.loss, args.opt) == ('digits', 'fdt', 'fdt', 'sgd_wcgc')
    assert (args.mixup, args.cutmix, args.mixed_precision) == (0.0, 0.0, 'no')
    assert args.model.endswith('_tn') and args.eval_attack == ['pgd-paper']


def test_classification_end_to_end(tmp_path):
    out = run(tmp_path, '--eval-attack', 'pgd-paper', '--eval-num-images', '20')
    for name in ('model.safetensors', 'model_best.safetensors', 'args.yaml', 'metrics.csv', 'summary.json',
                 'curves.png', 'state/LATEST'):
        assert (out / name).exists(), name
    model = load_model(out / 'model.safetensors')
    info = read_checkpoint_info(out / 'model.safetensors')
    assert info['architecture'] == 'cifar_resnet20_tn'
    assert info['label_names'] == [str(i) for i in range(10)]  # digits' class names travel with the weights
    assert list(model.pretrained_cfg['label_names']) == info['label_names']
    via_timm = timm.create_model('cifar_resnet20_tn', pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors')))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), via_timm.eval()(x))
    rows = list(csv.DictReader(open(out / 'metrics.csv')))
    assert len(rows) == 1 and int(rows[0]['val_count']) == 100
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['robustness'] is not None and summary['epochs_done'] == 1
    assert (out / 'robustness').is_dir()
    # every file of the run, the state's model.safetensors too, has the mode of metrics.csv (0644 under 022)
    modes = {p.relative_to(out): p.stat().st_mode & 0o777 for p in out.rglob('*') if p.is_file()}
    assert set(modes.values()) == {modes[Path('metrics.csv')]}, modes
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
    assert len(read_checkpoint_info(out / 'model.safetensors')['label_names']) == 21
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
    (['--mix-method', 'ov', '--fdt-min-images', '11'], r'--mix-method ov: min_images=11 exceeds'),
])
def test_cli_errors_before_training(tmp_path, argv, message):
    with pytest.raises((ConfigError, ValueError, FileNotFoundError), match=message):
        train_recipe.main([*QUICK, '--output', str(tmp_path), *argv])
    assert not (tmp_path / 'run' / 'state').exists()


def test_mixup_choice_and_config_keys_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(['--mixup', 'fdtt'])
    with pytest.raises(SystemExit):
        parse_args(['--mix-method', '0.2'])
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: resnet34_tn\nlearning_rate: 0.1\n')
    with pytest.raises(ConfigError, match="'learning_rate' is not a flag"):
        parse_args(['--config', str(bad)])
    bad.write_text('mixup: overlay\n')
    with pytest.raises(ConfigError, match='neither an alpha'):
        parse_args(['--config', str(bad)])
    good = tmp_path / 'good.yaml'
    good.write_text('model: resnet34_tn\nlr: 0.05\nopt-kwargs: [wcgc_area=channel]\n')
    args = parse_args(['--config', str(good), '--lr', '0.2'])
    assert args.model == 'resnet34_tn' and args.lr == 0.2 and args.opt_kwargs == {'wcgc_area': 'channel'}


def test_fdt_count_flags_reach_the_mixer():
    from timm_normplugins.training import build_mixer
    mixer = build_mixer(parse_args(['--mix-method', 'ov', '--fdt-min-images', '10']), 10)
    assert (mixer.label, mixer.min_images, mixer.n_max) == ('hard', 10, 10)
    mixer = build_mixer(parse_args(['--mixup', 'fdt', '--fdt-max-images', '3']), 10)
    assert (mixer.label, mixer.min_images, mixer.n_max) == ('soft', 1, 3)


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


# --- timm habits (issue 13) ------------------------------------------------------------------------------------
TINY = ['--dataset', 'digits', '--max-train-samples', '64', '--max-val-samples', '32', '--epochs', '1',
        '--eval-attack', '--workers', '0']
# as timm's train.py writes it: underscores, timm's "not set" values, many keys the recipe does not have
TIMM_ARGS_YAML = """aa: rand-m9-mstd0.5-inc1
amp: false
amp_dtype: float16
batch_size: 128
bn_momentum: null
checkpoint_hist: 10
clip_grad: null
color_jitter: 0.4
cutmix: 0.0
data: null
data_dir: null
dataset: ''
decay_epochs: 90
drop: 0.0
drop_path: 0.1
epochs: 300
experiment: ''
grad_accum_steps: 1
hflip: 0.5
initial_checkpoint: ''
lr: null
mixup: 0.0
mixup_mode: batch
model: cifar_resnet20
model_ema: false
model_ema_decay: 0.9998
opt: sgd
output: ''
pin_mem: true
remode: pixel
reprob: 0.25
resume: ''
sched: cosine
smoothing: 0.1
validation_batch_size: null
warmup_epochs: 0
weight_decay: 2.0e-05
workers: 4
"""


def test_timm_flags_and_aliases():
    args = parse_args(['-b', '32', '--amp', '--mixup', '0.2', '--cutmix', '1.0', '-vb', '8', '-j', '0'])
    assert (args.batch_size, args.val_batch_size, args.workers) == (32, 8, 0)
    assert args.mixed_precision == 'bf16' and args.amp  # --amp: bf16 unless --amp-dtype float16
    assert parse_args(['--amp', '--amp-dtype', 'float16']).mixed_precision == 'fp16'
    assert (args.mix_method, args.mixup, args.cutmix, args.loss) == ('mixup', 0.2, 1.0, 'soft_ce')
    assert parse_args(['--cutmix', '1']).mix_method == 'cutmix'
    assert parse_args(['--mix-method', 'mixup']).mixup == 0.8  # timm-style method default alpha
    alias = parse_args(['--mixup', 'ov'])  # a method name on --mixup: the selector
    assert (alias.mix_method, alias.mixup, alias.loss) == ('ov', 0.0, 'ce')
    for dataset in ('voc2012', 'segfolder'):  # masks are not mixed: segmentation defaults to no mixing
        seg = parse_args(['--dataset', dataset])
        assert (seg.mix_method, seg.loss) == ('none', 'ce')
    for bad, message in ((['--mix-method', 'fdt', '--mixup', '0.2'], 'does not use them'),
                         (['--amp', '--mixed-precision', 'no'], 'contradict'),
                         (['--mixup', 'fdt', '--mix-method', 'none'], 'contradict'),
                         (['--mix-method', 'cutmix', '--cutmix', '0'], 'needs --cutmix')):
        with pytest.raises(ConfigError, match=message):
            parse_args(bad)
    from timm_normplugins.training import build_parser
    text = build_parser().format_help()
    assert '(default: None)' not in text and 'default: the dataset' in text


def test_timm_args_yaml_is_read_with_one_warning(tmp_path, capsys):
    path = tmp_path / 'args.yaml'
    path.write_text(TIMM_ARGS_YAML)
    args = parse_args(['-c', str(path), '-b', '16'])
    warning = capsys.readouterr().err
    assert warning.count('warning:') == 1 and 'aa, ' in warning and 'reprob' in warning
    assert 'resume' not in warning and 'data,' not in warning  # timm's "not set" values ask for nothing
    assert (args.model, args.opt, args.sched, args.smoothing, args.batch_size) == ('cifar_resnet20', 'sgd', 'cosine',
                                                                                   0.1, 16)
    assert (args.mix_method, args.loss, args.mixed_precision, args.dataset) == ('none', 'ce', 'no', 'digits')


def test_timm_args_yaml_head_size_is_not_carried_into_another_dataset(tmp_path):
    path = tmp_path / 'args.yaml'
    path.write_text(TIMM_ARGS_YAML + 'num_classes: 1000\n')  # an ImageNet run's args.yaml; dataset '' is digits here
    with pytest.raises(ConfigError, match='--num-classes 1000: digits has 10 classes'):
        train_recipe.main(['-c', str(path), *TINY, '--output', str(tmp_path / 'runs')])
    assert not (tmp_path / 'runs').exists()


def test_packaged_config_by_name():
    args = parse_args(['-c', 'fdt_tn/c10_resnet34_tn_fdt.yaml'])
    assert args.dataset == 'cifar10' and args.mix_method == 'fdt'


def test_timm_style_tiny_runs(tmp_path, capsys):
    """The must-hold commands: -c <timm args.yaml>, -b 64, --amp, --mixup 0.2 --cutmix 1.0."""
    cfg = tmp_path / 'timm_args.yaml'
    cfg.write_text(TIMM_ARGS_YAML)
    argv = ['-c', str(cfg), *TINY, '-b', '64', '--amp', '--output', str(tmp_path), '--experiment', 'timm']
    gpu = torch.accelerator.is_available()
    if not gpu:  # fp16 on a CPU is refused: Accelerate would train in fp32 while the run recorded fp16
        with pytest.raises(ConfigError, match='--amp --amp-dtype float16'):
            train_recipe.main(argv)
        assert not (tmp_path / 'timm').exists()
        argv += ['--amp-dtype', 'bfloat16']
    assert train_recipe.main(argv) == 0
    saved = (tmp_path / 'timm' / 'args.yaml').read_text()
    # the file's amp_dtype (timm's float16 default) is what --amp turns on, as in timm's train.py (on a GPU)
    assert 'amp: true' in saved and f'mixed_precision: {"fp16" if gpu else "bf16"}' in saved
    assert 'batch_size: 64' in saved
    assert train_recipe.main([*TINY, '-b', '16', '--mixup', '0.2', '--cutmix', '1.0', '--model-ema',
                              '--grad-accum-steps', '2', '--output', str(tmp_path), '--experiment', 'mix',
                              '--stop-after-epochs', '1', '--epochs', '2']) == 0
    run = tmp_path / 'mix'
    saved = (run / 'args.yaml').read_text()
    assert 'mix_method: mixup' in saved and 'mixup: 0.2' in saved and 'cutmix: 1.0' in saved
    assert (run / 'model_ema.safetensors').exists()
    assert 'ema_val_top1' in (run / 'metrics.csv').read_text()
    # the new flags are checked on resume like the others
    with pytest.raises(ConfigError, match="mixup=0.2"):
        train_recipe.main(['--resume', str(run), '--mixup', '0.5'])
    with pytest.raises(ConfigError, match="mix_method='mixup'"):
        train_recipe.main(['--resume', str(run), '--mixup', 'fdt'])
    assert train_recipe.main(['--resume', str(run), '--mixup', '0.2', '--cutmix', '1.0']) == 0


def test_failed_start_is_one_line_and_leaves_no_run_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'recipes' / 'train.py'), *TINY, '--output', str(tmp_path),
                           '--initial-checkpoint', str(tmp_path / 'missing.safetensors')],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    # a library's import-time warning (timm 1.0.12 uses torch.jit.interface) is its two lines, not ours
    lines = re.sub(r'^\S+:\d+: \w*Warning: .*\n(  .*\n)?', '', proc.stderr, flags=re.M).strip().splitlines()
    assert len(lines) == 1 and '--initial-checkpoint' in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_tracking(tmp_path):
    # not a dependency: with it in the dev extra pip's resolver gives up on a fresh machine
    # (resolution-too-deep, 2026-12-01: torchattacks pins requests~=2.25.1, the newest httpx2 wants idna>=3.18)
    pytest.importorskip('tensorboard')
    assert train_recipe.main([*TINY, '-b', '32', '--log-with', 'tensorboard', '--output', str(tmp_path),
                              '--experiment', 'tb']) == 0
    assert list((tmp_path / 'tb' / 'tracking').rglob('events.out.tfevents*'))


def test_missing_tracker_package_is_refused(tmp_path):
    """Accelerate silently drops a tracker whose package is missing; the recipe refuses before any folder."""
    import accelerate.utils
    if accelerate.utils.is_dvclive_available():
        pytest.skip('dvclive is installed here')
    with pytest.raises(ConfigError, match='--log-with dvclive: the dvclive package is not installed'):
        train_recipe.main([*TINY, '--log-with', 'dvclive', '--output', str(tmp_path), '--experiment', 'x'])
    assert list(tmp_path.iterdir()) == []


def test_crafted_initial_checkpoint_runs_no_code_and_is_one_line(tmp_path):
    """A .pth whose pickle would run a command: refused before any code runs, on every timm version (timm <
    1.0.20's load_checkpoint unpickles without weights_only), one line, no run folder."""
    import torch
    marker, crafted, out = tmp_path / 'pwned', tmp_path / 'init.pth', tmp_path / 'runs'
    torch.save({'state_dict': {'fc.weight': RunsCode(marker)}}, crafted)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'recipes' / 'train.py'), *TINY, '--output', str(out),
                           '--initial-checkpoint', str(crafted)], capture_output=True, text=True, env=env, timeout=300)
    assert not marker.exists()
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    lines = re.sub(r'^\S+:\d+: \w*Warning: .*\n(  .*\n)?', '', proc.stderr, flags=re.M).strip().splitlines()
    assert len(lines) == 1 and '--initial-checkpoint' in lines[0] and 'init.pth' in lines[0], proc.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_resume_of_a_run_whose_args_yaml_names_a_crafted_pth_runs_no_code(tmp_path):
    """A run folder handed over with its args.yaml pointing ``initial_checkpoint`` at a code-running .pth:
    --resume refuses it in one line naming the file, before any of its code runs."""
    import yaml
    out = tmp_path / 'runs'
    train_recipe.main([*QUICK, '--mix-method', 'none', '--epochs', '2', '--stop-after-epochs', '1',
                       '--output', str(out), '--experiment', 'handed'])
    run_dir = out / 'handed'
    marker, crafted = tmp_path / 'pwned', tmp_path / 'init.pth'
    torch.save({'state_dict': {'fc.weight': RunsCode(marker)}}, crafted)
    saved = yaml.safe_load((run_dir / 'args.yaml').read_text())
    saved['initial_checkpoint'] = str(crafted)
    (run_dir / 'args.yaml').write_text(yaml.safe_dump(saved))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'recipes' / 'train.py'), '--resume', str(run_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert not marker.exists()
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    lines = re.sub(r'^\S+:\d+: \w*Warning: .*\n(  .*\n)?', '', proc.stderr, flags=re.M).strip().splitlines()
    assert '--initial-checkpoint' in lines[-1] and 'init.pth' in lines[-1], proc.stderr
    assert (run_dir / 'state').is_dir()  # the handed run's own state is untouched
