""" Building blocks of the training recipe, from parsed args (``config.py``), each through the ecosystem's factory
(timm's models, optimizers and schedulers, our datasets, mixers and losses). ``check_names`` validates every name
before anything is built, so a typo fails in a second rather than after the data has loaded.
"""
import argparse
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2

from ..data import create_dataset, create_transform, dataset_info
from ..data.label_noise import apply_label_noise
from ..data.datasets import canonical_dataset_name
from ..loss import class_similarity, create_loss, list_losses, load_similarity, loss_param_groups
from ..layers import ReLUTN
from ..models import add_error_normalization, apply_weight_reparam
from .errors import ConfigError

__all__ = ['check_names', 'build_datasets', 'build_loaders', 'build_model', 'apply_normalization_flags', 'build_mixer',
           'build_loss', 'build_optimizer', 'build_scheduler', 'resolve_task']


def check_names(args: argparse.Namespace) -> None:
    """Fail fast, before any data is read, on names that do not exist."""
    if not timm.is_model(args.model):
        close = timm.list_models(f'*{args.model.split("_")[0]}*')[:8]
        raise ConfigError(f'unknown model {args.model!r}' + (f'; similar: {", ".join(close)}' if close else ''))
    if args.opt.lower().removeprefix('lookahead_') not in list_optimizers():
        raise ConfigError(f'unknown optimizer {args.opt!r}; see timm.optim.list_optimizers()')
    if args.loss not in list_losses():
        raise ConfigError(f'unknown loss {args.loss!r}; choose one of {list_losses()}')
    canonical_dataset_name(args.dataset)  # raises for an unknown dataset
    if args.eval_attack:  # the attacks run after training: a typo must not cost the whole run
        from ..robust.attacks import resolve_attacks
        try:
            resolve_attacks(args.eval_attack)
        except (ValueError, TypeError) as e:
            raise ConfigError(f'--eval-attack: {e}') from None
    if args.log_with is not None:  # Accelerate drops a tracker whose package is missing without a word
        import accelerate.utils
        available = getattr(accelerate.utils, f'is_{args.log_with}_available', None)
        if available is not None and not available():
            raise ConfigError(f'--log-with {args.log_with}: the {args.log_with} package is not installed '
                              f'(pip install {args.log_with})')


def resolve_task(args: argparse.Namespace, info) -> str:
    task = args.task or info.task
    if task != info.task:
        raise ConfigError(f'--task {task} does not fit dataset {info.name} ({info.task})')
    if task == 'seg':
        if args.mix_method != 'none':
            raise ConfigError(f'--mix-method {args.mix_method} mixes whole images for classification; use '
                              '--mix-method none for segmentation')
        if args.loss not in ('ce', 'mcel'):
            raise ConfigError(f'segmentation supports the per-pixel losses ce and mcel, not {args.loss!r}')
        if any(a.startswith('autoattack') for a in args.eval_attack):
            raise ConfigError('--eval-attack: AutoAttack is for classifiers; segmentation supports PGD attacks')
    return task


def build_datasets(args: argparse.Namespace):
    """(info, train set, validation set) with the papers' Albumentations pipelines."""
    info = dataset_info(args.dataset, root=args.data_dir, split=args.train_split)
    sets = []
    for split, limit, train in ((args.train_split, args.max_train_samples, True),
                                (args.val_split, args.max_val_samples, False)):
        ds = create_dataset(args.dataset, root=args.data_dir, split=split, download=args.download, max_samples=limit)
        # from the dataset object: an imagefolder's image size is known once it is read
        ds.transform = create_transform(ds, train=train, img_size=args.img_size if train else None)
        if train and args.label_noise:
            try:
                apply_label_noise(ds, args.label_noise, args.label_noise_seed)
            except ValueError as e:
                raise ConfigError(f'--label-noise {args.label_noise:g}: {e}') from None
        sets.append(ds)
    return (info, *sets)


def build_loaders(args: argparse.Namespace, train_set, val_set, task: str, accelerator):
    """Training and validation DataLoaders. Refused now rather than late: an empty set, and an explicit
    ``--val-batch-size`` above 1 for classification images of differing sizes (validated one at a time).
    ``drop_last`` only when every process gets a full batch (Accelerate shards whole batches)."""
    from torch.utils.data import DataLoader
    for name, ds, flag in (('training', train_set, '--max-train-samples'),
                           ('validation', val_set, '--max-val-samples')):
        if len(ds) == 0:
            raise ConfigError(f'the {name} set of {args.dataset} is empty (check {flag} and the split)')
    val_batch = args.val_batch_size or (1 if task == 'seg' else 2 * args.batch_size)
    if task == 'cls' and getattr(val_set, 'img_size', ()) is None:
        if args.val_batch_size not in (None, 1):
            raise ConfigError(f'the validation images of {args.data_dir or args.dataset} differ in size, so '
                              f'--val-batch-size {args.val_batch_size} cannot batch them; use 1')
        val_batch = 1
    loader_kw = dict(num_workers=args.workers, pin_memory=accelerator.device.type == 'cuda')
    drop_last = len(train_set) >= args.batch_size * accelerator.num_processes
    if getattr(args, 'device_augment', False):  # batches made on the device; accelerator.prepare passes it through
        from ..data.device_pipeline import create_device_loader
        train_loader = create_device_loader(train_set, args.batch_size, accelerator, seed=args.seed,
                                            drop_last=drop_last, channels_last=args.channels_last)
    else:
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=drop_last,
                                  **loader_kw)
    val_loader = DataLoader(val_set, batch_size=val_batch, **loader_kw)
    return train_loader, val_loader


def build_model(args: argparse.Namespace, info) -> nn.Module:
    # fewer outputs than labels crash later; more train outputs no label ever asks for (timm's args.yaml
    # carries num_classes: 1000 into a 10-class run): the head is the data's, so any other count is refused
    if args.num_classes is not None and info.num_classes and args.num_classes != info.num_classes:
        raise ConfigError(f'--num-classes {args.num_classes}: {info.name} has {info.num_classes} classes '
                          '(leave --num-classes out; the head is sized from the data)')
    kwargs: Dict[str, Any] = dict(num_classes=args.num_classes or info.num_classes, in_chans=info.in_chans)
    if args.drop_rate:
        kwargs['drop_rate'] = args.drop_rate
    if args.tn_grad is not None:
        if '_tn' not in args.model:
            raise ConfigError(f'--tn-grad given but {args.model} has no Tensor Normalization (use a _tn model)')
        kwargs['tn_grad'] = args.tn_grad
    kwargs.update(args.model_kwargs)
    if args.pretrained:
        kwargs['pretrained'] = True
    try:
        model = timm.create_model(args.model, **kwargs)
    except TypeError as e:  # an argument the model does not take
        if not args.model_kwargs:
            raise
        raise ConfigError(f'--model-kwargs {args.model_kwargs}: {args.model} refuses them ({e})') from None
    except (OSError, RuntimeError) as e:
        if not args.pretrained:
            raise
        raise ConfigError(f'--pretrained: no weights for {args.model} ({str(e).splitlines()[0][:200]})') from None
    if args.initial_checkpoint:
        # ours, not timm's load_checkpoint: torch files are read with weights_only=True on every timm version
        from ..checkpoint import CheckpointError, load_weights
        try:
            load_weights(model, args.initial_checkpoint)
        except CheckpointError as e:
            raise ConfigError(f'--initial-checkpoint: {e}') from None
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise ConfigError(f'--initial-checkpoint {args.initial_checkpoint}: '
                              f'{(str(e).strip().splitlines() or [type(e).__name__])[0][:300]}') from None
    if args.tn_grad is not None and not any(isinstance(m, ReLUTN) for m in model.modules()):
        raise ConfigError(f'--tn-grad given but {args.model} has no Tensor Normalization')
    return apply_normalization_flags(args, model)


def apply_normalization_flags(args: argparse.Namespace, model: nn.Module) -> nn.Module:
    """``--weight-reparam`` (WN/WS) and ``--error-norm``, the WC/GC paper's comparison methods; before the
    optimizer is built, which must see the reparametrised tensors."""
    try:
        if args.weight_reparam != 'none':
            apply_weight_reparam(model, args.weight_reparam, scope=args.weight_reparam_scope)
        if args.error_norm != 'none':
            add_error_normalization(model, args.error_norm, standardize=args.error_norm_standardize)
    except ValueError as e:
        raise ConfigError(f'{args.model}: {e}') from e
    return model


def build_mixer(args: argparse.Namespace, num_classes: int):
    """The batch-level mixer called as ``x, target = mixer(x, y)``, or None."""
    if args.mix_method == 'none':
        return None
    if args.mix_method in ('fdt', 'ov'):
        from ..data import FDTMixup
        try:
            return FDTMixup(num_classes=num_classes, prob=args.mixup_prob, weights=args.fdt_weights,
                            label='soft' if args.mix_method == 'fdt' else 'hard', label_smoothing=args.smoothing,
                            max_images=args.fdt_max_images, min_images=args.fdt_min_images)
        except ValueError as e:  # a flag out of range: name the flag's problem, no traceback
            raise ConfigError(f'--mix-method {args.mix_method}: {e}') from e
    from timm.data import Mixup
    # timm's Mixup with both alphas > 0 switches between mixup and cutmix per batch (timm's train.py does the same)
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                 label_smoothing=args.smoothing, num_classes=num_classes)


def _similarity(args: argparse.Namespace, train_set, num_classes: int) -> torch.Tensor:
    if args.similarity:
        try:
            similarity = load_similarity(args.similarity)
        except Exception as e:  # noqa: BLE001 -- OSError, safetensors' errors, the matrix checks: one line
            raise ConfigError(f'--similarity {args.similarity}: {(str(e).strip().splitlines() or [""])[0][:200]}'
                              ) from None
        if similarity.shape[0] != num_classes:
            raise ConfigError(f'--similarity {args.similarity}: a {similarity.shape[0]}-class matrix for '
                              f'{num_classes} classes')
        return similarity
    # eq. 12 on flattened training pixels (un-augmented); a stratified subset keeps LDA to seconds
    return class_similarity(train_set.images, train_set.targets, num_classes=num_classes, max_samples=10000,
                            seed=args.seed)


def build_loss(args: argparse.Namespace, info, train_set=None) -> nn.Module:
    num_classes = args.num_classes or info.num_classes
    kwargs: Dict[str, Any] = dict(args.loss_kwargs)
    seg = info.task == 'seg'
    if args.loss in ('ce',):
        kwargs.setdefault('label_smoothing', args.smoothing if args.mix_method == 'none' else 0.0)
    if seg:
        kwargs.setdefault('ignore_index', info.ignore_index)
    if args.loss == 'mcel':
        if 'similarity' not in kwargs:
            kwargs['similarity'] = _similarity(args, train_set, num_classes)
        kwargs.setdefault('eps', args.mcel_eps)
    if args.loss in ('sg_mcel', 'gmcel'):
        if 'similarity' not in kwargs and (args.similarity or train_set is not None):
            kwargs['similarity'] = _similarity(args, train_set, num_classes)
        kwargs.setdefault('num_classes', num_classes)
    return create_loss(args.loss, **kwargs)


def build_optimizer(args: argparse.Namespace, model: nn.Module, loss_fn: Optional[nn.Module] = None):
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, **args.opt_kwargs)
    # learnable loss parameters (SG-MCEL / GMCEL eps): their own group, never centralized
    for group in loss_param_groups(loss_fn) if loss_fn is not None else ():
        optimizer.add_param_group(group)
    return optimizer


def build_scheduler(args: argparse.Namespace, optimizer) -> Tuple[Any, int]:
    return create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        decay_milestones=args.decay_milestones or (args.epochs // 2,), decay_rate=args.decay_rate,
        warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr, min_lr=args.min_lr)
