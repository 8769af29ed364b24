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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import yaml

__all__ = ['build_parser', 'parse_args', 'args_to_yaml', 'parse_kwargs', 'check_launch', 'ConfigError',
           'MIXUP_CHOICES', 'finite_float', 'load_config', 'given_flags', 'args_from_yaml', 'packaged_configs',
           'resolve_config_path']

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


AMP_DTYPES = {'bfloat16': 'bf16', 'float16': 'fp16'}
TRACKERS = ('tensorboard', 'wandb', 'mlflow', 'aim', 'comet_ml', 'clearml', 'dvclive')


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default shown once: a help text that says its default itself, or a None default, gets no suffix."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _mixup_value(text):
    """--mixup: timm's alpha (a number) or, as an alias of --mix-method, a method name."""
    if isinstance(text, str) and text in MIXUP_CHOICES:
        return text
    try:
        return finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'{text!r} is neither an alpha (a number) nor a method '
                                         f'({", ".join(MIXUP_CHOICES)})') from None


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description='Train a timm model with the timm-normplugins methods (TN, FDT, MCEL, WC/GC) under Accelerate. '
                    "Flag names follow timm's train.py where timm has the flag.",
        formatter_class=_HelpFormatter)
    p.add_argument('-c', '--config', default=None,
                   help="YAML file setting any flag (ours, or a timm train.py args.yaml); the command line overrides "
                        'it. A path that does not exist is looked up among the packaged paper configs, e.g. '
                        'fdt_tn/c10_resnet34_tn_fdt.yaml')
    p.add_argument('--reproduces', default='', help='paper table/row this run reproduces (recorded only)')

    g = p.add_argument_group('model')
    g.add_argument('--model', default='cifar_resnet20_tn', help='any timm model name')
    g.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra create_model args')
    g.add_argument('--num-classes', type=int, default=None, help='default: the dataset\'s')
    g.add_argument('--tn-grad', default=None, choices=('exact', 'paper'), help='TN gradient mode of _tn models')
    g.add_argument('--drop-rate', '--drop', type=finite_float, default=0.0, help='dropout before the classifier')
    g.add_argument('--pretrained', action='store_true', help="start from timm's pretrained weights of --model")
    g.add_argument('--initial-checkpoint', default=None, metavar='PATH',
                   help='start from these weights (.safetensors/.pth, loaded strictly, as timm does); default: none')
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
    g.add_argument('--dataset', default='digits',
                   help='cifar10, cifar100, fashion_mnist, svhn, digits, imagefolder; segmentation: voc2012, '
                        'segfolder (any image + mask folder, docs/DATA.md)')
    g.add_argument('--data-dir', default=None, help='dataset root (not needed for digits)')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='test')
    g.add_argument('--download', action='store_true', help='let torchvision download a missing dataset')
    g.add_argument('--max-train-samples', type=int, default=None, help='class-balanced training subset')
    g.add_argument('--max-val-samples', type=int, default=None, help='class-balanced validation subset')
    g.add_argument('--img-size', type=int, default=None, help='training crop size (default: the dataset\'s)')
    g.add_argument('-b', '--batch-size', type=int, default=64, help='per process')
    g.add_argument('-vb', '--val-batch-size', '--validation-batch-size', type=int, default=None,
                   help='default: 2x batch size (1 for seg)')
    g.add_argument('-j', '--workers', type=int, default=2, help='DataLoader workers running the augmentation')
    g.add_argument('--grad-accum-steps', type=int, default=1, help='batches whose gradients make one update')
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
    g.add_argument('--mix-method', default=None, choices=MIXUP_CHOICES,
                   help='fdt/ov: Full Distribution Training (OV: its overlay with a hard label); mixup/cutmix: '
                        "timm's Mixup with the --mixup/--cutmix alphas. Default: fdt; mixup or cutmix when "
                        'an alpha > 0 is given, none when the alphas are given as 0 (a timm args.yaml); none for '
                        'segmentation')
    g.add_argument('--mixup', type=_mixup_value, default=None, metavar='ALPHA|METHOD',
                   help="timm's mixup alpha (a number; default: 0.8 with --mix-method mixup, else 0). A method name "
                        '(fdt, ov, mixup, cutmix, none) is an alias of --mix-method METHOD')
    g.add_argument('--cutmix', type=finite_float, default=None, metavar='ALPHA',
                   help="timm's cutmix alpha (default: 1.0 with --mix-method cutmix, else 0)")
    g.add_argument('--mixup-prob', type=finite_float, default=1.0, help='fraction of samples mixed')
    g.add_argument('--fdt-max-images', type=int, default=None, help='cap on images superimposed per sample')
    g.add_argument('--fdt-min-images', type=int, default=1,
                   help='least images superimposed per sample (the number of classes: every sample superimposes '
                        'all of them, the literal reading of Alg. 2\'s max(C, RND); a control)')
    g.add_argument('--fdt-weights', default='harmonic', choices=('harmonic', 'uniform', 'dirichlet'))
    g.add_argument('--loss', default=None, help='ce, soft_ce, fdt, mcel, sg_mcel, gmcel (default: fdt with '
                                                 '--mix-method fdt, soft_ce with mixup/cutmix, else ce)')
    g.add_argument('--smoothing', type=finite_float, default=0.0, help='label smoothing')
    g.add_argument('--similarity', default=None, help='MCEL similarity matrix (.safetensors); default: LDA '
                                                      'on the training images, computed on the fly')
    g.add_argument('--mcel-eps', type=finite_float, default=0.2, help='MCEL mixing weight epsilon')
    g.add_argument('--loss-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra loss args')

    g = p.add_argument_group('runtime')
    g.add_argument('--mixed-precision', default=None, choices=MIXED_PRECISION_CHOICES,
                   help="Accelerate's autocast (default: no; with --amp: --amp-dtype's)")
    g.add_argument('--amp', action='store_true',
                   help="timm's switch: --mixed-precision of --amp-dtype (bf16 by default: it needs no loss scaling "
                        'and is the only autocast on CPU)')
    g.add_argument('--amp-dtype', default='bfloat16', choices=tuple(AMP_DTYPES),
                   help="with --amp (timm's default is float16, which needs a GPU)")
    g.add_argument('--model-ema', action='store_true',
                   help="keep timm's ModelEmaV3 of the weights; it is validated each epoch and saved as "
                        'model_ema.safetensors')
    g.add_argument('--model-ema-decay', type=finite_float, default=0.9998, help='EMA decay per update')
    g.add_argument('--channels-last', action='store_true')
    g.add_argument('--torchcompile', nargs='?', const='inductor', default=None, help='torch.compile backend')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--output', default='output')
    g.add_argument('--experiment', default=None, help='run folder name under --output (default: from the args)')
    g.add_argument('--resume', default=None, help='run folder (or its state folder) to continue')
    g.add_argument('--log-interval', type=int, default=50, help='batches between progress-bar updates')
    g.add_argument('--log-with', default=None, choices=TRACKERS,
                   help="Accelerate tracker receiving each epoch's metrics (offline tensorboard files go to "
                        'RUN/tracking); default: none')
    g.add_argument('--log-wandb', action='store_true', help="timm's switch: --log-with wandb")
    g.add_argument('--stop-after-epochs', type=int, default=None,
                   help='end the process after this many epochs as if interrupted (to test --resume)')

    g = p.add_argument_group('robustness evaluation after training')
    g.add_argument('--eval-attack', nargs='*', default=['pgd-paper'],
                   help='attacks run on the final model (empty: none); see recipes/evaluate.py')
    g.add_argument('--eval-num-images', type=int, default=20, help='test images attacked')
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


# keys only timm's train.py writes to its args.yaml: a file with several is read as a timm args.yaml, whose keys
# this recipe does not use are listed in one warning instead of being refused
TIMM_ONLY_KEYS = frozenset({
    'aa', 'reprob', 'remode', 'recount', 'resplit', 'bn_momentum', 'bn_eps', 'sync_bn', 'dist_bn', 'split_bn',
    'drop_path', 'drop_block', 'drop_connect', 'mixup_mode', 'mixup_switch_prob', 'mixup_off_epoch', 'cutmix_minmax',
    'checkpoint_hist', 'recovery_interval', 'pin_mem', 'no_prefetcher', 'jsd_loss', 'bce_loss', 'lr_noise', 'lr_base',
    'lr_cycle_mul', 'opt_eps', 'opt_betas', 'layer_decay', 'color_jitter', 'hflip', 'vflip', 'scale', 'ratio',
    'train_interpolation', 'eval_metric', 'tta', 'crop_pct', 'gp', 'aug_repeats', 'aug_splits', 'clip_mode',
    'worker_seeding', 'model_ema_warmup', 'model_ema_force_cpu', 'no_resume_opt', 'cooldown_epochs', 'patience_epochs',
})
# timm args.yaml values that mean "not set" for a flag of ours
_TIMM_UNSET = (None, '')


def packaged_configs() -> Optional[Path]:
    """The paper configs: ``recipes/configs`` of a checkout, or the copy installed as package data."""
    here = Path(__file__).resolve().parents[1]
    for folder in (here / 'configs', here.parent / 'recipes' / 'configs'):
        if folder.is_dir():
            return folder
    return None


def resolve_config_path(path: str) -> str:
    """``path`` itself, or the packaged paper config of that name (``fdt_tn/c10_resnet34_tn_fdt.yaml``)."""
    if Path(path).exists():
        return path
    root = packaged_configs()
    if root is not None and not Path(path).is_absolute():
        for candidate in (root / path, root / Path(path).relative_to('recipes/configs')
                          if Path(path).parts[:2] == ('recipes', 'configs') else None):
            if candidate is not None and candidate.is_file():
                return str(candidate)
    raise ConfigError(f'{path}: no such config file' + (f' (nor among the packaged configs in {root})' if root else ''))


def _key_dests(parser: argparse.ArgumentParser) -> Dict[str, str]:
    """YAML key -> dest: every long flag name (``drop``, ``validation_batch_size``) and every dest."""
    keys = {}
    for action in parser._actions:
        if action.dest == 'help':
            continue
        keys[action.dest] = action.dest
        for opt in action.option_strings:
            if opt.startswith('--'):
                keys.setdefault(opt[2:].replace('-', '_'), action.dest)
    return keys


def _method_alias(values: Dict[str, Any], where: str) -> None:
    """``mixup: fdt`` (a method name where timm has an alpha) -> ``mix_method: fdt``."""
    if isinstance(values.get('mixup'), str):
        method = values.pop('mixup')
        if values.get('mix_method', method) != method:
            raise ConfigError(f'{where}: mixup {method} and mix-method {values["mix_method"]} contradict')
        values['mix_method'] = method


def load_config(path: str, parser: argparse.ArgumentParser, warn=None) -> Dict[str, Any]:
    """A YAML file of flags -> {dest: value}, each value checked like the command line checks it.

    A timm train.py ``args.yaml`` (recognised by keys only timm writes) is read too: its keys this recipe
    has are used (nulls and empty strings are timm's "not set"), the others are listed in one warning.
    """
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f'{path}: not a readable YAML config ({str(e).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: a config is a mapping of flag names to values')
    keys = _key_dests(parser)
    dests = _flag_dests(parser)
    timm_file = len(TIMM_ONLY_KEYS & {str(k) for k in raw}) >= 3
    values, unused = {}, []
    for key, value in raw.items():
        name = str(key).replace('-', '_')
        dest = keys.get(name)
        if timm_file:
            if dest in (None, 'config', 'resume'):
                if value not in (None, '', False):  # timm's "not set" asks for nothing
                    unused.append(str(key))
                continue
            if value in _TIMM_UNSET or (value is False and dests[dest].nargs != 0):
                continue
            if name == 'dataset' and isinstance(value, str) and '/' in value:
                value = value.split('/', 1)[1]  # timm's torch/cifar10
        elif dest is None or dest == 'config':
            raise ConfigError(f'{path}: {key!r} is not a flag of the training recipe')
        if name == 'mixup' and isinstance(value, str):
            values['mixup'] = _config_item(argparse.Action([], 'mixup', type=_mixup_value), value, f'{path}: {key}')
            continue
        values[dest] = _config_value(dests[dest], value, f'{path}: {key}')
    _method_alias(values, path)
    if unused:
        (warn or _warn)(f'{path} is a timm train.py args.yaml; keys this recipe does not use: {", ".join(unused)}')
    return values


def _warn(message: str) -> None:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def given_flags(argv: Sequence[str]) -> Set[str]:
    """The dests that ``argv`` sets explicitly (whatever their value), by parsing without defaults."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    given = vars(probe.parse_args(list(argv)))
    if isinstance(given.get('mixup'), str):  # --mixup METHOD sets the method
        given['mix_method'] = given.pop('mixup')
    if given.get('amp'):
        given['mixed_precision'] = True
    return set(given)


_SEG_DATASETS = ('voc2012',)


def _is_seg(args: argparse.Namespace) -> bool:
    if args.task:
        return args.task == 'seg'
    try:
        from ..data.datasets import canonical_dataset_name
        return canonical_dataset_name(args.dataset) in _SEG_DATASETS
    except Exception:  # noqa: BLE001 -- an unknown dataset is reported by check_names
        return False


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on other flags: method, alphas, loss, precision, tracker."""
    if isinstance(args.mixup, str):
        if args.mix_method not in (None, args.mixup):
            raise ConfigError(f'--mixup {args.mixup} and --mix-method {args.mix_method} contradict')
        args.mix_method, args.mixup = args.mixup, None
    if args.mix_method is None:
        if args.mixup is None and args.cutmix is None:
            args.mix_method = 'none' if _is_seg(args) else 'fdt'
        else:
            args.mix_method = 'mixup' if (args.mixup or 0) > 0 else 'cutmix' if (args.cutmix or 0) > 0 else 'none'
    if args.mixup is None:
        args.mixup = 0.8 if args.mix_method == 'mixup' else 0.0
    if args.cutmix is None:
        args.cutmix = 1.0 if args.mix_method == 'cutmix' else 0.0
    if args.mixup < 0 or args.cutmix < 0:
        raise ConfigError('--mixup and --cutmix alphas must be >= 0')
    if args.mix_method in ('mixup', 'cutmix'):
        if (args.mixup if args.mix_method == 'mixup' else args.cutmix) <= 0:
            raise ConfigError(f'--mix-method {args.mix_method} needs --{args.mix_method} ALPHA > 0')
    elif args.mixup or args.cutmix:
        raise ConfigError(f'--mixup/--cutmix alphas ({args.mixup}, {args.cutmix}) are for timm\'s Mixup; '
                          f'--mix-method {args.mix_method} does not use them')
    if args.loss is None:
        args.loss = {'fdt': 'fdt', 'mixup': 'soft_ce', 'cutmix': 'soft_ce'}.get(args.mix_method, 'ce')
    amp = AMP_DTYPES[args.amp_dtype] if args.amp else None
    if args.mixed_precision is None:
        args.mixed_precision = amp or 'no'
    elif amp is not None and args.mixed_precision != amp:
        raise ConfigError(f'--amp (--amp-dtype {args.amp_dtype}) and --mixed-precision {args.mixed_precision} '
                          'contradict')
    if args.log_wandb:
        if args.log_with not in (None, 'wandb'):
            raise ConfigError(f'--log-wandb and --log-with {args.log_with} contradict')
        args.log_with = 'wandb'
    if args.initial_checkpoint == '':
        args.initial_checkpoint = None
    if args.initial_checkpoint and not Path(args.initial_checkpoint).is_file():
        raise ConfigError(f'--initial-checkpoint {args.initial_checkpoint}: no such file')


def _check(args: argparse.Namespace) -> argparse.Namespace:
    """Normalise the key=value flags and check what no single flag's type can."""
    for dest in KWARGS_FLAGS:
        setattr(args, dest, parse_kwargs(getattr(args, dest), '--' + dest.replace('_', '-')))
    if args.epochs < 1 or args.batch_size < 1 or args.grad_accum_steps < 1:
        raise ConfigError('--epochs, --batch-size and --grad-accum-steps must be >= 1')
    _resolve_defaults(args)
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
    values = load_config(str(path), parser, warn=lambda message: None)
    if values.get('resume'):
        raise ConfigError(f'{path}: a run\'s settings cannot name another run to resume')
    parser.set_defaults(**values)
    return _check(parser.parse_args([]))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags over ``--config`` over defaults; with ``--resume RUN``, the run's own settings (see ``resume.py``)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)
    config = load_config(resolve_config_path(pre.config), parser) if pre.config else {}
    parser.set_defaults(**config)
    args = _check(parser.parse_args(argv))
    if args.resume:
        from .resume import restore_args  # resume.py parses the run's args.yaml with this module
        given = set(config) | given_flags(argv)
        if 'amp' in config and config['amp']:
            given.add('mixed_precision')
        args = restore_args(args, given=given - {'config'})
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
