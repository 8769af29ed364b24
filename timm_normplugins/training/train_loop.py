""" The training recipe under Accelerate: ``main`` (one run, from flags) and its epoch loop.

``timm_normplugins.cli.train`` (``recipes/train.py``, the ``timm-normplugins-train`` command) calls ``main``;
the building blocks are in this package (``build.py``, ``outputs.py``, ``state.py``, ``nonfinite.py``).
"""
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from timm.utils import accuracy
from tqdm import tqdm

from ..checkpoint import CheckpointError
from ..data import DataFileError, DatasetNotFoundError
from .build import (
    build_datasets, build_loaders, build_loss, build_mixer, build_model, build_optimizer, build_scheduler,
    check_names, resolve_task,
)
from .config import check_launch, parse_args
from .errors import ConfigError, TrainingError
from .nonfinite import NonFiniteGuard
from .outputs import RunOutputs, run_folder
from .robustness import run_robustness
from .state import TrainingState

__all__ = ['main', 'train', 'check_precision', 'seed_epoch', 'evaluate', 'TrainProgress', 'use_cpu_cores',
           'exit_status', 'skipped_steps']

# Accelerate's seedable sampler shuffles epoch e with data_seed + e; the offset keeps that stream apart from
# the global RNG's (seed * 1000 + epoch), which draws mixing, dropout and the worker seeds
_SHUFFLE_OFFSET = 2 ** 40


def use_cpu_cores(accelerator) -> None:
    """On CPU, give each process its share of the cores.

    ``accelerate launch`` without ``--cpu`` sets OMP_NUM_THREADS=1 for every process (its thread tuning only
    runs with ``--cpu``), which makes a single-process CPU run use one core. Another value is the user's choice.
    """
    if accelerator.device.type != 'cpu' or os.environ.get('OMP_NUM_THREADS') != '1' \
            or 'ACCELERATE_MIXED_PRECISION' not in os.environ:
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))


def check_precision(args, accelerator) -> None:
    """Refuse fp16 autocast on a CPU: Accelerate would train in fp32 without a word.

    Accelerate raises for fp16 on every device that cannot run it except the CPU, where it leaves autocast
    and loss scaling off, so the run would train in fp32 while args.yaml and summary.json say fp16. The
    recorded settings must be the ones trained with, and a run's args.yaml must replay it: refusing (as
    Accelerate does elsewhere) keeps both true; bf16 is the CPU's autocast.
    """
    if args.mixed_precision == 'fp16' and accelerator.device.type == 'cpu':
        flag = f'--amp --amp-dtype {args.amp_dtype}' if args.amp else '--mixed-precision fp16'
        raise ConfigError(f'{flag}: Accelerate runs fp16 autocast only on a GPU; on this CPU it would silently '
                          'train in fp32 while the run records fp16. Use --amp-dtype bfloat16 (--mixed-precision '
                          'bf16), the CPU\'s autocast, or no --amp')


def seed_epoch(seed: int, epoch: int, loader, dataset) -> None:
    """Make an epoch's randomness (shuffle, augmentation, mixing) a function of (seed, epoch) only.

    That makes a resumed run identical to an uninterrupted one: nothing depends on how many random numbers
    earlier epochs drew. The shuffle is Accelerate's seedable sampler (``set_epoch``); DataLoader workers
    are seeded from torch's RNG when the epoch's iterator starts; without workers the Albumentations
    pipeline's own RNG is reseeded here.
    """
    set_seed(seed * 1000 + epoch)
    if hasattr(loader, 'set_epoch'):
        loader.set_epoch(epoch)
    transform = getattr(dataset, 'transform', None)
    if getattr(loader, 'num_workers', 0) == 0 and hasattr(transform, 'set_random_seed'):
        transform.set_random_seed(seed * 1000 + epoch)


@torch.no_grad()
def evaluate(model, loader, accelerator, task: str, num_classes: int, ignore_index: Optional[int] = None):
    """Top-1/top-5 and loss (classification) or pixel accuracy and mIoU (segmentation).

    Everything is gathered with ``gather_for_metrics``, which drops the samples Accelerate repeats to even
    out the last batch across processes: each validation sample is counted exactly once. Segmentation
    gathers per-sample confusion matrices, which have one shape whatever the image size.
    """
    model.eval()
    if task == 'seg':
        from ..metrics import SegmentationMetric, segmentation_scores
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=accelerator.device)
        for x, mask in loader:
            with accelerator.autocast():
                pred = model(x).argmax(1)
            per_sample = []
            for p, m in zip(pred, mask):
                metric = SegmentationMetric(num_classes, ignore_index, device=accelerator.device)
                metric.update(p[None], m[None])
                per_sample.append(metric.confusion)
            confusion += accelerator.gather_for_metrics(torch.stack(per_sample)).sum(0)
        scores = segmentation_scores(confusion.cpu())
        return dict(val_pixel_acc=100 * float(scores['pixel_acc']), val_miou=100 * float(scores['mean_iou']),
                    val_count=int(confusion.sum()))
    loss_sum, correct1, correct5, count = 0.0, 0.0, 0.0, 0
    k = min(5, num_classes)
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        logits, y = accelerator.gather_for_metrics((logits.float(), y))
        loss_sum += F.cross_entropy(logits, y, reduction='sum').item()
        top1, topk = accuracy(logits, y, topk=(1, k))
        correct1 += top1.item() * y.shape[0] / 100
        correct5 += topk.item() * y.shape[0] / 100
        count += y.shape[0]
    return dict(val_loss=loss_sum / count, val_top1=100 * correct1 / count, val_top5=100 * correct5 / count,
                val_count=count)


class TrainProgress:
    """Epoch counter, metric history and best score; saved in the state for --resume."""

    def __init__(self):
        self.epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.resumed_at = 0
        self.is_best = False

    @staticmethod
    def score(row: Dict[str, Any], task: str) -> float:
        return row['val_miou'] if task == 'seg' else row['val_top1']

    def end_epoch(self, row: Dict[str, Any], task: str) -> None:
        self.history.append(row)
        self.epoch = row['epoch']
        score = self.score(row, task)  # a non-finite score is never best (the guard stops such runs first)
        self.is_best = math.isfinite(score) and (self.best is None or score > self.score(self.best, task))
        if self.is_best:
            self.best = dict(row)

    def log_line(self) -> str:
        row = self.history[-1]
        shown = [f'epoch {row["epoch"]:3d}', f'lr {row["lr"]:.4g}', f'train_loss {row["train_loss"]:.4f}']
        if row.get('skipped_steps'):
            shown.append(f'skipped_steps {row["skipped_steps"]}')
        shown += [f'{k} {v:.2f}' for k, v in row.items()
                  if k.startswith('val_') and k != 'val_count' and isinstance(v, float)]
        shown.append(f'{row["epoch_time"]:.1f}s')
        return '  '.join(shown) + ('  *best*' if self.is_best else '')

    def state_dict(self) -> Dict[str, Any]:
        return dict(epoch=self.epoch, history=self.history, best=self.best)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch, self.history, self.best = state['epoch'], list(state['history']), state['best']
        self.resumed_at = self.epoch


def main(argv=None):
    args = parse_args(argv)  # with --resume: the run's saved settings
    check_names(args)
    check_launch()
    # a second main() in one process (tests, notebooks) may ask for another precision or accumulation:
    # forget the previous run's Accelerate settings (the process group, PartialState, is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    run_dir = run_folder(args)
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),  # several processes on a CPU-only machine: gloo
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum_steps,
        dynamo_backend=args.torchcompile.upper() if args.torchcompile else 'no',
        dataloader_config=DataLoaderConfiguration(even_batches=True, use_seedable_sampler=True,
                                                  data_seed=args.seed + _SHUFFLE_OFFSET),
        log_with=args.log_with,  # tensorboard & co write under RUN/tracking
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / 'tracking'))
        if args.log_with else None,
    )
    check_precision(args, accelerator)  # before RunOutputs: a refused start leaves no run folder
    use_cpu_cores(accelerator)
    set_seed(args.seed)
    out = RunOutputs(args, accelerator)  # locks the run folder and checks it (and --resume's state) before any work
    if args.log_with:
        accelerator.init_trackers(run_dir.name, config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                         for k, v in vars(args).items()})
    progress = TrainProgress()
    try:
        return train(args, accelerator, out, progress)
    except TrainingError as e:
        out.record_failure(progress, e)
        raise
    except (ConfigError, DatasetNotFoundError, DataFileError, CheckpointError, FileNotFoundError):
        out.discard_new(progress)  # a failed start leaves no run folder behind
        raise
    finally:
        out.close()


def train(args, accelerator, out, progress):
    info, train_set, val_set = build_datasets(args)
    task = resolve_task(args, info)
    train_loader, val_loader = build_loaders(args, train_set, val_set, task, accelerator)
    model = build_model(args, info)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    num_classes = model.num_classes
    mixer = build_mixer(args, num_classes)
    loss_fn = build_loss(args, info, train_set).to(accelerator.device)
    optimizer = build_optimizer(args, model, loss_fn)
    scheduler, num_epochs = build_scheduler(args, optimizer)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    ema = None
    if args.model_ema:  # timm's ModelEmaV3 of the unwrapped weights, updated after each optimizer update
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=args.model_ema_decay)
    state = TrainingState(accelerator, scheduler, progress, loss_fn, args.epochs, ema)  # saved with Accelerate's
    guard = NonFiniteGuard(args.nonfinite_loss, accelerator, check_every=args.log_interval)
    if out.resume_from is not None:
        out.load_state(out.resume_from, state)
        accelerator.print(f'resumed from {out.resume_from} after epoch {progress.epoch}')
    mixing = f'timm Mixup (mixup {args.mixup}, cutmix {args.cutmix})' if args.mix_method in ('mixup', 'cutmix') \
        else args.mix_method
    sources = [getattr(ds, 'source', None) for ds in (train_set, val_set)]
    if any(sources):  # an image folder: say which folder each split came from
        accelerator.print(f'data: train from {sources[0]}, val from {sources[1]}')
    accelerator.print(f'{args.model} on {info.name} ({len(train_set)} train / {len(val_set)} val), '
                      f'opt {args.opt}, mixing {mixing}, loss {args.loss}, {num_epochs} epochs, '
                      f'{accelerator.num_processes} process(es) on {accelerator.device}')
    noise = getattr(train_set, 'label_noise', None)
    if noise:
        accelerator.print(f"label noise: {noise['relabelled']} training labels exchanged ({noise['fraction']:g} of each "
                          f"class) in the class pairs {noise['pairs']} (seed {noise['seed']})")

    for epoch in range(progress.epoch, num_epochs):
        seed_epoch(args.seed, epoch, train_loader, train_set)
        model.train()
        loss_fn.train()
        guard.start_epoch()
        lr = optimizer.param_groups[0]['lr']  # the lr this epoch trains at (the scheduler moves it at the end)
        start, loss_sum, seen = time.time(), torch.zeros((), device=accelerator.device), 0
        bar = tqdm(train_loader, desc=f'epoch {epoch + 1}/{num_epochs}', leave=False,
                   disable=not accelerator.is_local_main_process, mininterval=1.0)
        for step, (x, y) in enumerate(bar):
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if mixer is not None:
                x, target = mixer(x, y)
            snapshot = guard.snapshot(model)
            with accelerator.accumulate(model):  # --grad-accum-steps: the optimizer steps every N batches
                with accelerator.autocast():
                    output = model(x)
                    loss = loss_fn(output, target)
                if not guard.loss_ok(loss, x, epoch, step, model, snapshot):  # stop: raises; skip: False
                    continue
                accelerator.backward(loss)
                if args.clip_grad is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if ema is not None and accelerator.sync_gradients:
                ema.update(accelerator.unwrap_model(model))
            loss_sum += loss.detach() * x.shape[0]
            seen += x.shape[0]
            if step % args.log_interval == 0:
                bar.set_postfix(loss=f'{loss.item():.4f}', lr=f'{lr:.3g}')
        guard.end_epoch(epoch, model)  # no pending bad loss, an update was made, weights and buffers are finite
        scheduler.step(epoch + 1)
        train_loss = (accelerator.reduce(loss_sum, 'sum') / accelerator.reduce(
            torch.tensor(seen, device=accelerator.device), 'sum')).item()
        metrics = evaluate(model, val_loader, accelerator, task, num_classes, info.ignore_index)
        if ema is not None:  # timm's train.py validates the EMA weights too
            ema_metrics = evaluate(ema.module, val_loader, accelerator, task, num_classes, info.ignore_index)
            metrics.update({f'ema_{k}': v for k, v in ema_metrics.items() if k != 'val_count'})
        guard.check_metrics(epoch, dict(train_loss=train_loss, **metrics))
        row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, epoch_time=time.time() - start, **metrics)
        if guard.skip:
            row['skipped_steps'] = guard.skipped
        progress.end_epoch(row, task)
        out.save_epoch(model, progress, ema)
        if args.log_with:
            accelerator.log({k: v for k, v in row.items() if k != 'epoch'}, step=epoch + 1)
        accelerator.print(progress.log_line())
        if args.stop_after_epochs is not None and epoch + 1 - progress.resumed_at >= args.stop_after_epochs \
                and epoch + 1 < num_epochs:
            accelerator.print(f'stopping after epoch {epoch + 1} (--stop-after-epochs); continue with --resume')
            return exit_status(progress, accelerator)

    robust = run_robustness(args, accelerator, model, val_set, task, out.run_dir)
    out.finish(progress, robust, dict(policy=args.nonfinite_loss, skipped_steps=skipped_steps(progress)))
    accelerator.print(f'done: {out.run_dir}')
    accelerator.end_training()
    return exit_status(progress, accelerator)


def skipped_steps(progress) -> int:
    return sum(row.get('skipped_steps', 0) for row in progress.history)  # resumed epochs included


def exit_status(progress, accelerator) -> int:
    """0, or 3 when --nonfinite-loss skip dropped steps: no run ends with status 0 after a non-finite loss."""
    skipped = skipped_steps(progress)
    if not skipped:
        return 0
    if accelerator.is_main_process:
        print(f'{Path(sys.argv[0]).name}: warning: {skipped} training steps had a non-finite loss and were skipped '
              '(--nonfinite-loss skip); exit status 3', file=sys.stderr, flush=True)
    return 3
