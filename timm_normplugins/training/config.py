""" Command line + YAML configuration of the training recipe.

Flag names follow timm's train.py. ``--config FILE.yaml`` sets any flag (keys spelled like the flags): the file
becomes command-line tokens placed before the command line, so argparse checks its values and the command line
overrides it. ``--resume RUN`` starts from the run's own settings instead. The defaults are the README's main
job: a TN network trained with FDT and ``sgd_wcgc`` on the offline ``digits`` dataset.
"""
import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

import yaml

from .errors import ConfigError

__all__ = ['build_parser', 'parse_args', 'args_to_yaml', 'parse_kwargs', 'check_launch', 'ConfigError',
           'MIXUP_CHOICES', 'finite_float', 'whole_number', 'load_config', 'given_flags', 'args_from_yaml',
           'packaged_configs', 'resolve_config_path', 'RESUME_MAY_CHANGE', 'find_run', 'restore_args']

MIXUP_CHOICES = ('fdt', 'ov', 'mixup', 'cutmix', 'none')
KWARGS_FLAGS = ('model_kwargs', 'opt_kwargs', 'loss_kwargs')
AMP_DTYPES = {'bfloat16': 'bf16', 'float16': 'fp16'}
TRACKERS = ('tensorboard', 'wandb', 'mlflow', 'aim', 'comet_ml', 'clearml', 'dvclive')
# flags a resumed run may change: they do not change what the saved epochs computed
RESUME_MAY_CHANGE = frozenset({
    'epochs', 'stop_after_epochs', 'resume', 'output', 'experiment', 'data_dir', 'download', 'log_interval',
    'eval_attack', 'eval_num_images', 'log_with', 'log_wandb'})
# keys only timm's train.py writes: a file with several is a timm args.yaml, whose other keys get one warning
TIMM_ONLY_KEYS = frozenset(
    'aa reprob remode recount resplit bn_momentum bn_eps sync_bn dist_bn split_bn drop_path drop_block '
    'drop_connect mixup_mode mixup_switch_prob mixup_off_epoch cutmix_minmax checkpoint_hist recovery_interval '
    'pin_mem no_prefetcher jsd_loss bce_loss lr_noise lr_base lr_cycle_mul opt_eps opt_betas layer_decay '
    'color_jitter hflip vflip scale ratio train_interpolation eval_metric tta crop_pct gp aug_repeats aug_splits '
    'clip_mode worker_seeding model_ema_warmup model_ema_force_cpu no_resume_opt cooldown_epochs '
    'patience_epochs'.split())


def _number(cast, low=None, above=None):
    """An argparse type: ``cast`` of the text, finite, and ``>= low`` / ``> above`` when given."""
    def parse(text):
        try:
            value = cast(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f'{text!r} is not a {"whole number" if cast is int else "number"}') from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'{text!r} is not a finite number')
        if (low is not None and value < low) or (above is not None and value <= above):
            raise argparse.ArgumentTypeError(f'{text!r} must be {f">= {low}" if above is None else f"> {above}"}')
        return value
    parse.__name__ = 'whole number' if cast is int else 'number'  # argparse's "invalid <name> value"
    return parse


finite_float, whole_number = _number(float), _number(int)
_count, _size, _alpha = _number(int, low=0), _number(int, low=1), _number(float, low=0)


def _mixup_value(text):
    """--mixup: timm's alpha (a number) or, as an alias of --mix-method, a method name."""
    if text in MIXUP_CHOICES:
        return text
    try:
        return _alpha(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is neither an alpha >= 0 nor a method ({", ".join(MIXUP_CHOICES)})') from None


def parse_kwargs(items: Optional[Sequence[str]], flag: str) -> Dict[str, Any]:
    """``['a=1', 'b=x', 'c=[1, 2]']`` -> ``{'a': 1, 'b': 'x', 'c': [1, 2]}`` (values parsed as YAML)."""
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'{flag} takes key=value pairs, got {item!r}')
        out[key.strip()] = yaml.safe_load(value)
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """A default shown once: not for None/False, nor where the help text states it."""

    def _get_help_string(self, action):
        if 'default' in (action.help or '').lower() or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, formatter_class=_HelpFormatter, description=(
        "Train a timm model with the timm-normplugins methods (TN, FDT, MCEL, WC/GC) under Accelerate. Flag names "
        "follow timm's train.py where timm has the flag."))
    p.add_argument('-c', '--config', help='YAML file setting any flag (ours, or a timm train.py args.yaml); the '
                   'command line overrides it. Also a packaged paper config, e.g. fdt_tn/c10_resnet34_tn_fdt.yaml')
    p.add_argument('--reproduces', default='', help='paper table/row this run reproduces (recorded only)')
    g = p.add_argument_group('model')
    g.add_argument('--model', default='cifar_resnet20_tn', help='any timm model name')
    g.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra create_model args')
    g.add_argument('--num-classes', type=_size, help="default: the dataset's")
    g.add_argument('--tn-grad', choices=('exact', 'paper'), help='TN gradient mode of _tn models')
    g.add_argument('--drop-rate', '--drop', type=_alpha, default=0.0, help='dropout before the classifier')
    g.add_argument('--pretrained', action='store_true', help="start from timm's pretrained weights of --model")
    g.add_argument('--initial-checkpoint', metavar='PATH', help='start from these weights (.safetensors/.pth, '
                   'loaded strictly, as timm does); default: none')
    g.add_argument('--weight-reparam', default='none', choices=('none', 'wn', 'ws'),
                   help='WC/GC paper baselines: weight normalisation (eq.1, k=1) or standardisation (eq.3)')
    g.add_argument('--weight-reparam-scope', default='conv_linear', choices=('conv_linear', 'conv', 'all'),
                   help='layers reparametrised (WC/GC scope names; the classifier only with all)')
    g.add_argument('--error-norm', default='none', choices=('none', 'global', 'sample', 'channel', 'instance'),
                   help='subtract the mean of the back-propagated error at every conv input over this area '
                        '(WC/GC Table 2: sample = EL, channel = EB)')
    g.add_argument('--error-norm-standardize', action='store_true', help='standardise it instead (ELN/EBN, eq.8-9)')
    g.add_argument('--task', choices=('cls', 'seg'), help='default: from the dataset')
    g = p.add_argument_group('data')
    g.add_argument('--dataset', default='digits', help='cifar10, cifar100, fashion_mnist, svhn, digits, imagefolder; '
                   'segmentation: voc2012, segfolder (docs/DATA.md)')
    g.add_argument('--data-dir', help='dataset root (not needed for digits)')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='test')
    g.add_argument('--download', action='store_true', help='let torchvision download a missing dataset')
    g.add_argument('--max-train-samples', type=_count, help='class-balanced training subset')
    g.add_argument('--max-val-samples', type=_count, help='class-balanced validation subset')
    g.add_argument('--label-noise', type=_alpha, default=0.0, metavar='FRACTION', help="exchange this fraction of "
                   "each class's training labels with a partner class (MCEL paper, Figure 5; 0..0.5)")
    g.add_argument('--label-noise-seed', type=_count, default=0, help='draws the class pairs and relabelled images')
    g.add_argument('--img-size', type=_size, help="training crop size (default: the dataset's)")
    g.add_argument('-b', '--batch-size', type=_size, default=64, help='per process')
    g.add_argument('-vb', '--val-batch-size', '--validation-batch-size', type=_size,
                   help='default: 2x batch size (1 for seg)')
    g.add_argument('-j', '--workers', type=_count, default=2, help='DataLoader workers running the augmentation')
    g.add_argument('--grad-accum-steps', type=_size, default=1, help='batches whose gradients make one update')
    g.add_argument('--device-augment', action='store_true', help='in-memory datasets: augment uint8 batches on '
                   'the device (data.device_pipeline) instead of in DataLoader workers')
    g = p.add_argument_group('optimizer and schedule')
    g.add_argument('--opt', default='sgd_wcgc', help='any timm optimizer name, incl. <base>_wcgc/_gc/_wc')
    g.add_argument('--opt-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra optimizer args')
    g.add_argument('--lr', type=finite_float, default=0.1)
    g.add_argument('--momentum', type=finite_float, default=0.9)
    g.add_argument('--weight-decay', type=finite_float, default=5e-4)
    g.add_argument('--clip-grad', type=finite_float, help='max global gradient norm')
    g.add_argument('--nonfinite-loss', default='stop', choices=('stop', 'skip'), help='a nan/inf training loss '
                   "stops the run (nothing of that epoch is saved), or skips that batch's update like AMP's "
                   'GradScaler; skip still stops on non-finite weights or metrics')
    g.add_argument('--epochs', type=_size, default=10)
    g.add_argument('--sched', default='step', help='timm scheduler: step, multistep, cosine, ...')
    g.add_argument('--decay-epochs', type=_number(float, above=0), default=4, help='step: epochs between decays')
    g.add_argument('--decay-milestones', type=_count, nargs='*', default=[],
                   help="multistep: decay epochs, timm's convention (milestone m lowers the lr from epoch m-1)")
    g.add_argument('--decay-rate', type=finite_float, default=0.1)
    g.add_argument('--warmup-epochs', type=_count, default=0)
    g.add_argument('--warmup-lr', type=finite_float, default=1e-5)
    g.add_argument('--min-lr', type=finite_float, default=0.0)
    g = p.add_argument_group('mixing and loss')
    g.add_argument('--mix-method', choices=MIXUP_CHOICES, help="fdt/ov: Full Distribution Training (ov: overlay "
                   "with a hard label); mixup/cutmix: timm's Mixup. Default: fdt; mixup or cutmix when an alpha > 0 "
                   'is given, none when the alphas are 0 (a timm args.yaml) and for segmentation')
    g.add_argument('--mixup', type=_mixup_value, metavar='ALPHA|METHOD', help="timm's mixup alpha (default: 0.8 "
                   'with --mix-method mixup, else 0); a method name is an alias of --mix-method METHOD')
    g.add_argument('--cutmix', type=_alpha, metavar='ALPHA',
                   help="timm's cutmix alpha (default: 1.0 with --mix-method cutmix, else 0)")
    g.add_argument('--mixup-prob', type=finite_float, default=1.0, help='fraction of samples mixed')
    g.add_argument('--fdt-max-images', type=_size, help='cap on images superimposed per sample')
    g.add_argument('--fdt-min-images', type=_size, default=1, help='least images superimposed per sample (the '
                   "number of classes: Alg. 2's max(C, RND) read literally, a control)")
    g.add_argument('--fdt-weights', default='harmonic', choices=('harmonic', 'uniform', 'dirichlet'))
    g.add_argument('--loss', help='ce, soft_ce, fdt, mcel, sg_mcel, gmcel (default: fdt with --mix-method fdt, '
                   'soft_ce with mixup/cutmix, else ce)')
    g.add_argument('--smoothing', type=_alpha, default=0.0, help='label smoothing')
    g.add_argument('--similarity', help='MCEL similarity matrix (.safetensors); default: LDA on the training '
                   'images, computed on the fly')
    g.add_argument('--mcel-eps', type=finite_float, default=0.2, help='MCEL mixing weight epsilon')
    g.add_argument('--loss-kwargs', nargs='*', default=[], metavar='KEY=VALUE', help='extra loss args')
    g = p.add_argument_group('runtime')
    g.add_argument('--mixed-precision', choices=('no', 'bf16', 'fp16'),
                   help="Accelerate's autocast (default: no; with --amp: --amp-dtype's)")
    g.add_argument('--amp', action='store_true', help="timm's switch: --mixed-precision of --amp-dtype")
    g.add_argument('--amp-dtype', default='bfloat16', choices=tuple(AMP_DTYPES),
                   help="with --amp (bf16 needs no loss scaling and is the CPU's autocast; timm's float16 a GPU)")
    g.add_argument('--model-ema', action='store_true',
                   help="keep timm's ModelEmaV3, validated each epoch and saved as model_ema.safetensors")
    g.add_argument('--model-ema-decay', type=finite_float, default=0.9998, help='EMA decay per update')
    g.add_argument('--channels-last', action='store_true')
    g.add_argument('--torchcompile', nargs='?', const='inductor', help='torch.compile backend')
    g.add_argument('--seed', type=_count, default=42)
    g.add_argument('--output', default='output')
    g.add_argument('--experiment', help='run folder name under --output (default: from the args)')
    g.add_argument('--resume', help='run folder (or its state folder) to continue')
    g.add_argument('--log-interval', type=_size, default=50, help='batches between progress-bar updates')
    g.add_argument('--log-with', choices=TRACKERS, help="Accelerate tracker receiving each epoch's metrics "
                   '(offline files go to RUN/tracking); default: none')
    g.add_argument('--log-wandb', action='store_true', help="timm's switch: --log-with wandb")
    g.add_argument('--stop-after-epochs', type=_size, help='end after this many epochs as if interrupted')
    g = p.add_argument_group('robustness evaluation after training')
    g.add_argument('--eval-attack', nargs='*', default=['pgd-paper'],
                   help='attacks run on the final model (empty: none); see recipes/evaluate.py')
    g.add_argument('--eval-num-images', type=_size, default=20, help='test images attacked')
    return p


# --- YAML configs: a file becomes command-line tokens ---------------------------------------------------------

def packaged_configs() -> Optional[Path]:
    """The paper configs: ``recipes/configs`` of a checkout, or the copy installed as package data."""
    here = Path(__file__).resolve().parents[1]
    return next((f for f in (here / 'configs', here.parent / 'recipes' / 'configs') if f.is_dir()), None)


def resolve_config_path(path: str) -> str:
    """``path`` itself, or the packaged paper config of that name (``fdt_tn/c10_resnet34_tn_fdt.yaml``)."""
    if Path(path).exists():
        return path
    root, parts = packaged_configs(), Path(path).parts
    if root is not None and not Path(path).is_absolute():
        for candidate in (root / path, root.joinpath(*parts[2:]) if parts[:2] == ('recipes', 'configs') else None):
            if candidate is not None and candidate.is_file():
                return str(candidate)
    raise ConfigError(f'{path}: no such config file' + (f' (nor among the packaged configs in {root})' if root else ''))


def _tokens(action: argparse.Action, value: Any, where: str) -> List[str]:
    """One YAML value as argv tokens. argparse checks the values; refused here is only what YAML can say and
    argv cannot (a list for one value, a bool for a string or number, null)."""
    flag = next(o for o in action.option_strings if o.startswith('--'))
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise ConfigError(f'{where} is a switch: true or false, got {value!r}')
        return [flag] if value else []
    if value is None:
        if action.default is not None:
            raise ConfigError(f'{where}: null is not a value of this flag')
        return []
    if isinstance(value, dict) and action.dest in KWARGS_FLAGS:  # KEY: VALUE mapping
        value = [f'{k}={yaml.safe_dump(v, default_flow_style=True, width=1 << 30).removesuffix("...").strip()}'
                 for k, v in value.items()]
    several = action.nargs in ('*', '+')
    if isinstance(value, (list, dict)) and not several:  # e.g. `mixup: [fdt]`, which is not CutMix
        raise ConfigError(f'{where} takes one value, got {value!r}')
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, (list, dict, bool)):  # YAML's yes/true would pass as the string 'True'
            raise ConfigError(f'{where}: {item!r} is not a {"string" if action.type is None else "number"}'
                              if isinstance(item, bool) else f'{where}: each item is one value, got {item!r}')
    return [flag, *map(str, items)] if several else [f'{flag}={value}']  # =: a value may start with '-'


def load_config(path: str, warn=None) -> List[str]:
    """A YAML file of flags -> command-line tokens, checked by argparse.

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
    probe = build_parser()
    flags = {}  # YAML key -> action: every long flag name (``drop``, ``validation_batch_size``) and every dest
    for action in probe._actions[1:]:  # [0] is --help
        for name in [action.dest] + [o[2:].replace('-', '_') for o in action.option_strings if o[:2] == '--']:
            flags.setdefault(name, action)
    timm_file = len(TIMM_ONLY_KEYS & {str(k) for k in raw}) >= 3
    tokens, unused = [], []
    for key, value in raw.items():
        action = flags.get(str(key).replace('-', '_'))
        if timm_file:
            if action is None or action.dest in ('config', 'resume'):
                if value not in (None, '', False):  # timm's "not set" asks for nothing
                    unused.append(str(key))
                continue
            if value is None or value == '' or (value is False and action.nargs != 0):
                continue
            if action.dest == 'dataset' and isinstance(value, str):
                value = value.split('/', 1)[-1]  # timm's torch/cifar10
        elif action is None or action.dest == 'config':
            raise ConfigError(f'{path}: {key!r} is not a flag of the training recipe')
        tokens += _tokens(action, value, f'{path}: {key}')
    probe.exit_on_error = False  # a bad value is the file's error, not a command-line usage error
    try:
        probe.parse_args(tokens)
    except argparse.ArgumentError as e:
        raise ConfigError(f'{path}: {e}') from None
    if unused:
        (warn or _warn)(f'{path} is a timm train.py args.yaml; keys this recipe does not use: {", ".join(unused)}')
    return tokens


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


# --- values that depend on other flags --------------------------------------------------------------------

def _resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """key=value flags parsed; the defaults that depend on other flags (method, alphas, loss, precision, tracker)
    and the combinations no single flag's type can check."""
    for dest in KWARGS_FLAGS:
        setattr(args, dest, parse_kwargs(getattr(args, dest), '--' + dest.replace('_', '-')))
    if isinstance(args.mixup, str):
        if args.mix_method not in (None, args.mixup):
            raise ConfigError(f'--mixup {args.mixup} and --mix-method {args.mix_method} contradict')
        args.mix_method, args.mixup = args.mixup, None
    if args.mix_method is None:
        if args.mixup is None and args.cutmix is None:
            from ..data.datasets import dataset_task
            try:
                seg = args.task == 'seg' or (not args.task and dataset_task(args.dataset) == 'seg')
            except Exception:  # noqa: BLE001 -- an unknown dataset is reported by check_names
                seg = False
            args.mix_method = 'none' if seg else 'fdt'
        else:
            args.mix_method = 'mixup' if (args.mixup or 0) > 0 else 'cutmix' if (args.cutmix or 0) > 0 else 'none'
    if args.mixup is None:
        args.mixup = 0.8 if args.mix_method == 'mixup' else 0.0
    if args.cutmix is None:
        args.cutmix = 1.0 if args.mix_method == 'cutmix' else 0.0
    if args.mix_method in ('mixup', 'cutmix'):
        if (args.mixup if args.mix_method == 'mixup' else args.cutmix) <= 0:
            raise ConfigError(f'--mix-method {args.mix_method} needs --{args.mix_method} ALPHA > 0')
    elif args.mixup or args.cutmix:
        raise ConfigError(f"--mixup/--cutmix alphas ({args.mixup}, {args.cutmix}) are for timm's Mixup; "
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
    args.initial_checkpoint = args.initial_checkpoint or None
    for flag in ('initial_checkpoint', 'similarity'):  # a file named now, not found after the data has loaded
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise ConfigError(f'--{flag.replace("_", "-")} {path}: no such file')
    if args.error_norm_standardize and args.error_norm == 'none':
        raise ConfigError('--error-norm-standardize needs an --error-norm area')
    if args.error_norm_standardize and args.mixed_precision == 'fp16':
        raise ConfigError('--error-norm-standardize makes gradients independent of the loss scale, so fp16 loss '
                          'scaling would shrink every update; use --mixed-precision bf16 or no')
    return args


def args_from_yaml(path) -> argparse.Namespace:
    """The settings a YAML file records (a run's ``args.yaml``), today's defaults for flags it lacks."""
    args = _resolve_defaults(build_parser().parse_args(load_config(str(path), warn=lambda message: None)))
    if args.resume:
        raise ConfigError(f"{path}: a run's settings cannot name another run to resume")
    return args


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags over ``--config`` over defaults; with ``--resume RUN``, the run's own settings (``restore_args``)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)
    config = load_config(resolve_config_path(pre.config)) if pre.config else []
    args = _resolve_defaults(parser.parse_args(config + argv))
    if args.resume:
        args = restore_args(args, given=given_flags(config + argv) - {'config'})
    return args


# --- --resume RUN: the run's own settings ------------------------------------------------------------------

def find_run(path) -> Path:
    """The run folder (holding ``args.yaml``) of ``path``: the folder itself, its ``state/`` or a state in it."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / 'args.yaml').is_file():
            return candidate
    raise ConfigError(f'--resume {path}: no run there (expected {path / "args.yaml"})')


def restore_args(args: argparse.Namespace, given: Iterable[str]) -> argparse.Namespace:
    """The saved settings of the run ``args.resume`` names, with the given flags that may change applied.

    A flag given again is accepted when it equals the saved value (``scripts/reproduce.py`` reruns its whole
    command plus ``--resume``) and refused, with the list, when it contradicts it, except ``RESUME_MAY_CHANGE``.
    ``given``: dests set on the command line or by ``--config`` (whatever their value).
    """
    run = find_run(args.resume)
    saved, given = args_from_yaml(run / 'args.yaml'), set(given)
    shown = lambda v: ' '.join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    conflicts = [f'--{k.replace("_", "-")} {shown(getattr(args, k))} (the run has {k}={getattr(saved, k)!r})'
                 for k in sorted(given - RESUME_MAY_CHANGE) if getattr(args, k) != getattr(saved, k)]
    if conflicts:
        allowed = ', '.join('--' + k.replace('_', '-') for k in sorted(RESUME_MAY_CHANGE - {'resume'}))
        raise ConfigError(f'--resume {run}: {"; ".join(conflicts)} contradict the run\'s settings '
                          f'({run / "args.yaml"}). --resume alone restores them; only {allowed} may change')
    if {'output', 'experiment'} & given:
        asked = Path(args.output if 'output' in given else run.parent) / (
            args.experiment if 'experiment' in given else run.name)
        if asked.resolve() != run.resolve():
            raise ConfigError(f'--resume {run} with --output/--experiment naming another folder ({asked})')
    for key in given & RESUME_MAY_CHANGE:
        setattr(saved, key, getattr(args, key))
    saved.resume = str(run)
    return saved


def check_launch(environ=None) -> None:
    """Refuse ``accelerate launch --cpu --num_processes N`` (N > 1): without mpirun Accelerate starts ONE process
    (it only sets MASTER_ADDR), so training would run once, not N times."""
    env = os.environ if environ is None else environ
    group = any(k in env for k in ('WORLD_SIZE', 'PMI_SIZE', 'OMPI_COMM_WORLD_SIZE', 'MV2_COMM_WORLD_SIZE'))
    if env.get('ACCELERATE_USE_CPU', '').lower() == 'true' and 'MASTER_ADDR' in env and not group:
        raise ConfigError('accelerate launch --cpu --num_processes N starts a single process (Accelerate runs several '
                          'CPU processes only through mpirun); for N processes use accelerate launch --multi_gpu '
                          '--num_processes N (CPU + gloo when no GPU) or torchrun --nproc_per_node N')


def args_to_yaml(args: argparse.Namespace) -> str:
    """The run's resolved flags; ``--config`` with this file replays the run."""
    return yaml.safe_dump({k: v for k, v in vars(args).items() if k not in ('config', 'resume', 'stop_after_epochs')},
                          sort_keys=True)
