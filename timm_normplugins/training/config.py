""" Command line + YAML configuration of the training recipe (``recipes/train.py``).

Flag names follow timm's train.py where timm has the flag. ``--config FILE.yaml`` sets any flag
(keys spelled like the flags, with ``-`` or ``_``); the command line overrides the file. The
defaults are the README's main job: a TN network trained with FDT and ``sgd_wcgc`` on the
offline ``digits`` dataset, small enough for 1-2 minutes on two CPU cores.
"""
import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence

import yaml

__all__ = ['build_parser', 'parse_args', 'args_to_yaml', 'parse_kwargs', 'check_launch', 'ConfigError',
           'MIXUP_CHOICES']

MIXUP_CHOICES = ('fdt', 'ov', 'mixup', 'cutmix', 'none')
WEIGHT_REPARAM_CHOICES = ('none', 'wn', 'ws')
ERROR_NORM_CHOICES = ('none', 'global', 'sample', 'channel', 'instance')
MIXED_PRECISION_CHOICES = ('no', 'bf16', 'fp16')


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, bad keys); raised before any training."""


def parse_kwargs(items: Optional[Sequence[str]], flag: str) -> Dict[str, Any]:
    """``['a=1', 'b=x', 'c=[1, 2]']`` -> ``{'a': 1, 'b': 'x', 'c': [1, 2]}`` (values parsed as YAML)."""
    if isinstance(items, dict):  # from a YAML config
        return dict(items)
    out = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'{flag} takes key=value pairs, got {item!r}')
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Train a timm model with the timm-normplugins methods (TN, FDT, MCEL, WC/GC) under Accelerate.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--config', default=None, help='YAML file setting any flag; the command line overrides it')
    p.add_argument('--reproduces', default='', help='paper table/row this run reproduces (recorded only)')

    g = p.add_argument_group('model')
    g.add_argument('--model', default='cifar_resnet20_tn', help='any timm model name')
    g.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra create_model args')
    g.add_argument('--num-classes', type=int, default=None, help='default: the dataset\'s')
    g.add_argument('--tn-grad', default=None, choices=('exact', 'paper'), help='TN gradient mode of _tn models')
    g.add_argument('--drop-rate', type=float, default=0.0, help='dropout before the classifier')
    g.add_argument('--weight-reparam', default='none', choices=WEIGHT_REPARAM_CHOICES,
                   help='WC/GC paper baselines: weight normalisation (eq.1, k=1) or standardisation (eq.3)')
    g.add_argument('--weight-reparam-scope', default='conv_linear', choices=('conv_linear', 'conv', 'all'),
                   help='layers reparametrised (WC/GC scope names; the classifier only with all)')
    g.add_argument('--error-norm', default='none', choices=ERROR_NORM_CHOICES,
                   help='subtract the mean of the back-propagated error at every conv input over this area '
                        '(WC/GC Table 2: sample = EL, channel = EB)')
    g.add_argument('--error-norm-standardize', action='store_true',
                   help='standardise the error instead (ELN / EBN, eq.8-9)')
    g.add_argument('--task', default=None, choices=('cls', 'seg'), help='default: from the dataset')

    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='digits', help='cifar10, cifar100, fashion_mnist, svhn, voc2012, '
                                                       'digits, imagefolder')
    g.add_argument('--data-dir', default=None, help='dataset root (not needed for digits)')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='test')
    g.add_argument('--download', action='store_true', help='let torchvision download a missing dataset')
    g.add_argument('--max-train-samples', type=int, default=None, help='class-balanced training subset')
    g.add_argument('--max-val-samples', type=int, default=None, help='class-balanced validation subset')
    g.add_argument('--img-size', type=int, default=None, help='training crop size (default: the dataset\'s)')
    g.add_argument('--batch-size', type=int, default=64)
    g.add_argument('--val-batch-size', type=int, default=None, help='default: 2x batch size (1 for seg)')
    g.add_argument('--workers', type=int, default=2, help='DataLoader workers running the augmentation')

    g = p.add_argument_group('optimizer and schedule')
    g.add_argument('--opt', default='sgd_wcgc', help='any timm optimizer name, incl. <base>_wcgc/_gc/_wc')
    g.add_argument('--opt-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra optimizer args')
    g.add_argument('--lr', type=float, default=0.1)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=5e-4)
    g.add_argument('--clip-grad', type=float, default=None, help='max global gradient norm')
    g.add_argument('--epochs', type=int, default=10)
    g.add_argument('--sched', default='step', help='timm scheduler: step, multistep, cosine, ...')
    g.add_argument('--decay-epochs', type=float, default=4, help='step: epochs between decays')
    g.add_argument('--decay-milestones', type=int, nargs='*', default=[],
                   help="multistep: decay epochs, timm's convention: milestone m lowers the lr from epoch index m-1")
    g.add_argument('--decay-rate', type=float, default=0.1)
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=0.0)

    g = p.add_argument_group('mixing and loss')
    g.add_argument('--mixup', default='fdt', choices=MIXUP_CHOICES,
                   help='fdt/ov: Full Distribution Training (OV: its overlay with a hard label); mixup/cutmix: timm')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='fraction of samples mixed')
    g.add_argument('--fdt-max-images', type=int, default=None, help='cap on images superimposed per sample')
    g.add_argument('--fdt-weights', default='harmonic', choices=('harmonic', 'uniform', 'dirichlet'))
    g.add_argument('--loss', default='fdt', help='ce, soft_ce, fdt, mcel, sg_mcel, gmcel')
    g.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')
    g.add_argument('--similarity', default=None, help='MCEL similarity matrix (.safetensors); default: LDA '
                                                      'on the training images, computed on the fly')
    g.add_argument('--mcel-eps', type=float, default=0.2, help='MCEL mixing weight epsilon')
    g.add_argument('--loss-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra loss args')

    g = p.add_argument_group('runtime')
    g.add_argument('--mixed-precision', default='no', choices=MIXED_PRECISION_CHOICES)
    g.add_argument('--channels-last', action='store_true')
    g.add_argument('--torchcompile', nargs='?', const='inductor', default=None, help='torch.compile backend')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--output', default='output')
    g.add_argument('--experiment', default=None, help='run folder name under --output (default: from the args)')
    g.add_argument('--resume', default=None, help='run folder (or its state folder) to continue')
    g.add_argument('--log-interval', type=int, default=50, help='batches between progress-bar updates')
    g.add_argument('--stop-after-epochs', type=int, default=None,
                   help='end the process after this many epochs as if interrupted (to test --resume)')

    g = p.add_argument_group('robustness evaluation after training')
    g.add_argument('--eval-attack', nargs='*', default=['pgd-paper'],
                   help='attacks run on the final model (empty: none); see recipes/evaluate.py')
    g.add_argument('--eval-num-images', type=int, default=20, help='test images attacked')
    return p


def _flag_dests(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != 'help'}


def load_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: a config is a mapping of flag names to values')
    dests = _flag_dests(parser)
    values = {}
    for key, value in raw.items():
        dest = str(key).replace('-', '_')
        if dest not in dests or dest == 'config':
            raise ConfigError(f'{path}: {key!r} is not a flag of recipes/train.py')
        action = dests[dest]
        if action.choices is not None and value is not None and not isinstance(value, list) \
                and value not in action.choices:
            raise ConfigError(f'{path}: {key}={value!r} is not one of {list(action.choices)}')
        values[dest] = value
    return values


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags over ``--config`` over defaults."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**load_config(pre.config, parser))
    args = parser.parse_args(argv)
    args.model_kwargs = parse_kwargs(args.model_kwargs, '--model-kwargs')
    args.opt_kwargs = parse_kwargs(args.opt_kwargs, '--opt-kwargs')
    args.loss_kwargs = parse_kwargs(args.loss_kwargs, '--loss-kwargs')
    if args.epochs < 1 or args.batch_size < 1:
        raise ConfigError('--epochs and --batch-size must be >= 1')
    if args.error_norm_standardize and args.error_norm == 'none':
        raise ConfigError('--error-norm-standardize needs an --error-norm area')
    if args.error_norm_standardize and args.mixed_precision == 'fp16':
        raise ConfigError('--error-norm-standardize makes gradients independent of the loss scale, so fp16 loss '
                          'scaling would shrink every update; use --mixed-precision bf16 or no')
    return args


def check_launch(environ=None) -> None:
    """Refuse ``accelerate launch --cpu --num_processes N`` (N > 1), which Accelerate runs as ONE process.

    Accelerate 1.x starts several CPU processes only through mpirun (``--mpirun_hostfile``); without it
    the simple launcher starts a single process and only sets MASTER_ADDR. Training would silently run
    once instead of N times in parallel, so stop and say what works.
    """
    import os
    env = os.environ if environ is None else environ
    launched_by_process_group = any(k in env for k in ('WORLD_SIZE', 'PMI_SIZE', 'OMPI_COMM_WORLD_SIZE',
                                                       'MV2_COMM_WORLD_SIZE'))
    if env.get('ACCELERATE_USE_CPU', '').lower() == 'true' and 'MASTER_ADDR' in env and not launched_by_process_group:
        raise ConfigError(
            'accelerate launch --cpu --num_processes N starts a single process (Accelerate runs several CPU '
            'processes only through mpirun). For N processes on this machine use\n'
            '    accelerate launch --multi_gpu --num_processes N recipes/train.py ...   (CPU + gloo when no GPU)\n'
            'or  torchrun --nproc_per_node N recipes/train.py ...')


def args_to_yaml(args: argparse.Namespace) -> str:
    """The run's resolved flags; ``--config`` with this file replays the run."""
    values = {k: v for k, v in vars(args).items() if k not in ('config', 'resume', 'stop_after_epochs')}
    return yaml.safe_dump(values, sort_keys=True)
