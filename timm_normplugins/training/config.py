""" Command line + YAML configuration of the training recipe (``recipes/train.py``).

Flag names follow timm's train.py where timm has the flag. ``--config FILE.yaml`` sets any flag
(keys spelled like the flags, with ``-`` or ``_``); the command line overrides the file. A YAML value
is checked as the command line checks it: one value where the flag takes one, its type (finite
numbers, whole numbers for int flags), its choices. ``--resume RUN`` starts from the run's own
settings instead (``resume.py``). The defaults are the README's main job: a TN network trained with FDT
and ``sgd_wcgc`` on the offline ``digits`` dataset, small enough for 1-2 minutes on two CPU cores.
"""
import argparse
import math
import sys
from typing import Any, Dict, List, Optional, Sequence, Set

import yaml

__all__ = ['build_parser', 'parse_args', 'args_to_yaml', 'parse_kwargs', 'check_launch', 'ConfigError',
           'MIXUP_CHOICES', 'finite_float', 'load_config', 'given_flags', 'args_from_yaml']

MIXUP_CHOICES = ('fdt', 'ov', 'mixup', 'cutmix', 'none')
WEIGHT_REPARAM_CHOICES = ('none', 'wn', 'ws')
ERROR_NORM_CHOICES = ('none', 'global', 'sample', 'channel', 'instance')
MIXED_PRECISION_CHOICES = ('no', 'bf16', 'fp16')
NONFINITE_CHOICES = ('stop', 'skip')
KWARGS_FLAGS = ('model_kwargs', 'opt_kwargs', 'loss_kwargs')


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, bad keys); raised before any training."""


def finite_float(text) -> float:
    """argparse type: a float that is not nan/inf (``--lr nan`` would train NaN from the first step)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f'invalid number: {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'{text!r} is not a finite number')
    return value


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
    g.add_argument('--drop-rate', type=finite_float, default=0.0, help='dropout before the classifier')
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
    g.add_argument('--device-augment', action='store_true',
                   help='in-memory datasets: keep the uint8 images on the device and augment batches there '
                        '(timm_normplugins.data.device_pipeline) instead of DataLoader workers')

    g = p.add_argument_group('optimizer and schedule')
    g.add_argument('--opt', default='sgd_wcgc', help='any timm optimizer name, incl. <base>_wcgc/_gc/_wc')
    g.add_argument('--opt-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra optimizer args')
    g.add_argument('--lr', type=finite_float, default=0.1)
    g.add_argument('--momentum', type=finite_float, default=0.9)
    g.add_argument('--weight-decay', type=finite_float, default=5e-4)
    g.add_argument('--clip-grad', type=finite_float, default=None, help='max global gradient norm')
    g.add_argument('--nonfinite-loss', default='stop', choices=NONFINITE_CHOICES,
                   help='a nan/inf training loss stops the run (nothing of that epoch is saved), or skips that '
                        "batch's update like AMP's GradScaler; skip still stops on non-finite weights or metrics")
    g.add_argument('--epochs', type=int, default=10)
    g.add_argument('--sched', default='step', help='timm scheduler: step, multistep, cosine, ...')
    g.add_argument('--decay-epochs', type=finite_float, default=4, help='step: epochs between decays')
    g.add_argument('--decay-milestones', type=int, nargs='*', default=[],
                   help="multistep: decay epochs, timm's convention: milestone m lowers the lr from epoch index m-1")
    g.add_argument('--decay-rate', type=finite_float, default=0.1)
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-lr', type=finite_float, default=1e-5)
    g.add_argument('--min-lr', type=finite_float, default=0.0)

    g = p.add_argument_group('mixing and loss')
    g.add_argument('--mixup', default='fdt', choices=MIXUP_CHOICES,
                   help='fdt/ov: Full Distribution Training (OV: its overlay with a hard label); mixup/cutmix: timm')
    g.add_argument('--mixup-prob', type=finite_float, default=1.0, help='fraction of samples mixed')
    g.add_argument('--fdt-max-images', type=int, default=None, help='cap on images superimposed per sample')
    g.add_argument('--fdt-weights', default='harmonic', choices=('harmonic', 'uniform', 'dirichlet'))
    g.add_argument('--loss', default='fdt', help='ce, soft_ce, fdt, mcel, sg_mcel, gmcel')
    g.add_argument('--smoothing', type=finite_float, default=0.0, help='label smoothing')
    g.add_argument('--similarity', default=None, help='MCEL similarity matrix (.safetensors); default: LDA '
                                                      'on the training images, computed on the fly')
    g.add_argument('--mcel-eps', type=finite_float, default=0.2, help='MCEL mixing weight epsilon')
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
    g.add_argument('--eval-num-images', type=int, default=100, help='test images attacked')
    return p


def _flag_dests(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != 'help'}


def _config_item(action: argparse.Action, value: Any, where: str) -> Any:
    """One value checked and converted as the command line would (type, choices); YAML gives typed values."""
    if value is None:
        if action.default is not None:
            raise ConfigError(f'{where}: null is not a value of this flag')
        return None
    if isinstance(value, (list, dict)):
        raise ConfigError(f'{where}: each item is one value, got {value!r}')
    kind = action.type
    if isinstance(value, bool) and kind is not None:
        raise ConfigError(f'{where}: {value!r} is not a number')
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f'{where}: {value!r} is not a whole number')
    if kind is None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
        raise ConfigError(f'{where}: {value!r} is not a string')
    try:
        value = kind(value) if kind is not None else str(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f'{where}: {e}') from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f'{where}={value!r} is not one of {list(action.choices)}')
    return value


def _config_value(action: argparse.Action, value: Any, where: str) -> Any:
    if action.nargs == 0:  # store_true switches
        if not isinstance(value, bool):
            raise ConfigError(f'{where} is a switch: true or false, got {value!r}')
        return value
    if action.nargs in ('*', '+'):
        if action.dest in KWARGS_FLAGS and isinstance(value, dict):
            return dict(value)  # KEY: VALUE mapping; parse_kwargs checks the key=value list form
        items = value if isinstance(value, list) else [value]
        return [_config_item(action, v, where) for v in items]
    if isinstance(value, (list, dict)):  # e.g. `mixup: [fdt]`, which no string comparison would match
        raise ConfigError(f'{where} takes one value, got {value!r}')
    return _config_item(action, value, where)


def load_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """A YAML file of flags -> {dest: value}, each value checked like the command line checks it."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f'{path}: not a readable YAML config ({str(e).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: a config is a mapping of flag names to values')
    dests = _flag_dests(parser)
    values = {}
    for key, value in raw.items():
        dest = str(key).replace('-', '_')
        if dest not in dests or dest == 'config':
            raise ConfigError(f'{path}: {key!r} is not a flag of recipes/train.py')
        values[dest] = _config_value(dests[dest], value, f'{path}: {key}')
    return values


def given_flags(argv: Sequence[str]) -> Set[str]:
    """The dests that ``argv`` sets explicitly (whatever their value), by parsing without defaults."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(list(argv))))


def _check(args: argparse.Namespace) -> argparse.Namespace:
    """Normalise the key=value flags and check what no single flag's type can."""
    for dest in KWARGS_FLAGS:
        setattr(args, dest, parse_kwargs(getattr(args, dest), '--' + dest.replace('_', '-')))
    if args.epochs < 1 or args.batch_size < 1:
        raise ConfigError('--epochs and --batch-size must be >= 1')
    for dest in ('max_train_samples', 'max_val_samples', 'val_batch_size', 'workers', 'eval_num_images'):
        value = getattr(args, dest)
        if value is not None and value < (0 if dest in ('workers', 'max_train_samples', 'max_val_samples') else 1):
            raise ConfigError(f'--{dest.replace("_", "-")} {value} is out of range')
    if args.error_norm_standardize and args.error_norm == 'none':
        raise ConfigError('--error-norm-standardize needs an --error-norm area')
    if args.error_norm_standardize and args.mixed_precision == 'fp16':
        raise ConfigError('--error-norm-standardize makes gradients independent of the loss scale, so fp16 loss '
                          'scaling would shrink every update; use --mixed-precision bf16 or no')
    return args


def args_from_yaml(path) -> argparse.Namespace:
    """The settings a YAML file records (a run's ``args.yaml``), today's defaults for flags it lacks."""
    parser = build_parser()
    values = load_config(str(path), parser)
    if values.get('resume'):
        raise ConfigError(f'{path}: a run\'s settings cannot name another run to resume')
    parser.set_defaults(**values)
    return _check(parser.parse_args([]))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags over ``--config`` over defaults; with ``--resume RUN``, the run's own settings (see ``resume.py``)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)
    config = load_config(pre.config, parser) if pre.config else {}
    parser.set_defaults(**config)
    args = _check(parser.parse_args(argv))
    if args.resume:
        from .resume import restore_args  # resume.py parses the run's args.yaml with this module
        args = restore_args(args, given=(set(config) | given_flags(argv)) - {'config'})
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
