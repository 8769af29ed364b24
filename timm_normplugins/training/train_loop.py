""" The training recipe under Accelerate: ``main`` (one run, from flags) and its epoch loop.

``timm_normplugins.cli.train`` (``recipes/train.py``, ``timm-normplugins-train``) calls ``main``. Everything is
built and checked before the run folder is claimed, so a refused start leaves no folder behind.
"""
import copy
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
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
from .errors import ConfigError, Interrupted
from .nonfinite import NonFiniteGuard
from .outputs import RunOutputs, run_folder
from .state import TrainingState, load_state

__all__ = ['main', 'train', 'check_precision', 'seed_epoch', 'evaluate', 'TrainProgress', 'use_cpu_cores',
           'exit_status', 'skipped_steps', 'run_robustness']

# Accelerate's seedable sampler shuffles epoch e with data_seed + e; the offset keeps that stream apart from
# the global RNG's (seed * 1000 + epoch), which draws mixing, dropout and the worker seeds
_SHUFFLE_OFFSET = 2 ** 40
# a start that fails with one of these leaves no trace: a run folder it created is removed
START_ERRORS = (ConfigError, DatasetNotFoundError, DataFileError, CheckpointError, FileNotFoundError)


def use_cpu_cores(accelerator) -> None:
    """On CPU, give each process its share of the cores: ``accelerate launch`` without ``--cpu`` sets
    OMP_NUM_THREADS=1, which makes a single-process CPU run use one core. Another value is the user's choice."""
    if accelerator.device.type == 'cpu' and os.environ.get('OMP_NUM_THREADS') == '1' \
            and 'ACCELERATE_MIXED_PRECISION' in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))


def check_precision(args, accelerator) -> None:
    """Refuse fp16 autocast on a CPU, where Accelerate trains in fp32 without a word while the run records fp16."""
    if args.mixed_precision == 'fp16' and accelerator.device.type == 'cpu':
        flag = f'--amp --amp-dtype {args.amp_dtype}' if args.amp else '--mixed-precision fp16'
        raise ConfigError(f'{flag}: Accelerate runs fp16 autocast only on a GPU; on this CPU it would silently '
                          "train in fp32 while the run records fp16. Use --amp-dtype bfloat16 (--mixed-precision "
                          "bf16), the CPU's autocast, or no --amp")


def seed_epoch(seed: int, epoch: int, loader, dataset) -> None:
    """Make an epoch's randomness (shuffle, augmentation, mixing) a function of (seed, epoch) only, so a resumed
    run is the uninterrupted one. The shuffle is Accelerate's seedable sampler (``set_epoch``); DataLoader workers
    are seeded from torch's RNG; without workers the Albumentations pipeline's own RNG is reseeded here."""
    set_seed(seed * 1000 + epoch)
    if hasattr(loader, 'set_epoch'):
        loader.set_epoch(epoch)
    transform = getattr(dataset, 'transform', None)
    if getattr(loader, 'num_workers', 0) == 0 and hasattr(transform, 'set_random_seed'):
        transform.set_random_seed(seed * 1000 + epoch)


@torch.no_grad()
def evaluate(model, loader, accelerator, task: str, num_classes: int, ignore_index: Optional[int] = None):
    """Top-1/top-5 and loss (classification) or pixel accuracy and mIoU (segmentation). ``gather_for_metrics``
    drops the samples Accelerate repeats to even out the last batch: each sample counts once. Segmentation
    gathers per-sample confusion matrices, which have one shape whatever the image size."""
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
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        logits, y = accelerator.gather_for_metrics((logits.float(), y))
        loss_sum += F.cross_entropy(logits, y, reduction='sum').item()
        top1, topk = accuracy(logits, y, topk=(1, min(5, num_classes)))
        correct1 += top1.item() * y.shape[0] / 100
        correct5 += topk.item() * y.shape[0] / 100
        count += y.shape[0]
    return dict(val_loss=loss_sum / count, val_top1=100 * correct1 / count, val_top5=100 * correct5 / count,
                val_count=count)


class TrainProgress:
    """Epoch counter, metric history and best score; saved in the state for --resume."""

    def __init__(self):
        self.epoch, self.resumed_at, self.is_best = 0, 0, False
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None

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
        shown += [f'{k} {v:.2f}' for k, v in row.items() if k.startswith('val_') and isinstance(v, float)]
        return '  '.join([*shown, f'{row["epoch_time"]:.1f}s']) + ('  *best*' if self.is_best else '')

    def state_dict(self) -> Dict[str, Any]:
        return dict(epoch=self.epoch, history=self.history, best=self.best)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch, self.history, self.best = state['epoch'], list(state['history']), state['best']
        self.resumed_at = self.epoch


def run_robustness(args, accelerator, model, val_set, task: str, run_dir: Path) -> Optional[Dict[str, Any]]:
    """Attack ``--eval-num-images`` validation images with ``--eval-attack`` on the main process (no barrier: the
    other processes do not wait for it). Classification takes ``balanced_subset`` (as ``evaluate.py
    --num-images``), segmentation the first n; the images are the evaluation pipeline's without its Normalize, the
    attacks working in pixel space (``timm_normplugins.robust``). Returns the report's numbers for summary.json."""
    if not args.eval_attack or not accelerator.is_main_process:
        return None
    from ..data import balanced_subset, create_transform
    from ..robust import evaluate_robustness, pixel_transform
    n = min(args.eval_num_images, len(val_set))
    if hasattr(val_set, 'subset'):  # a new dataset object: the training run's val_set keeps its transform
        images = val_set.subset(balanced_subset(val_set.targets, n))
    else:  # segmentation sets read per item: first n
        images = copy.copy(val_set)
        images.images, images.masks = val_set.images[:n], val_set.masks[:n]
    images.transform = pixel_transform(create_transform(val_set, train=False))
    same_size = task == 'cls' and getattr(val_set, 'img_size', None) is not None  # else: one image at a time
    loader = torch.utils.data.DataLoader(images, batch_size=100 if same_size else 1, shuffle=False)
    report = evaluate_robustness({args.model: accelerator.unwrap_model(model).eval()}, loader,
                                 attacks=args.eval_attack, seed=args.seed, output=run_dir / 'robustness',
                                 progress=accelerator.is_local_main_process,
                                 info=dict(dataset=args.dataset, split=args.val_split))
    accelerator.print(report.markdown())
    return report.to_dict()


def _on_signal(signum, frame):
    for sig in (signal.SIGINT, signal.SIGTERM):  # one is enough: the summary is written undisturbed
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


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
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum_steps,
        dynamo_backend=args.torchcompile.upper() if args.torchcompile else 'no',
        dataloader_config=DataLoaderConfiguration(even_batches=True, use_seedable_sampler=True,
                                                  data_seed=args.seed + _SHUFFLE_OFFSET),
        log_with=args.log_with, project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / 'tracking')) if args.log_with else None)
    check_precision(args, accelerator)
    use_cpu_cores(accelerator)
    set_seed(args.seed)
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    progress, out = TrainProgress(), None
    try:
        run = build(args, accelerator)  # everything checked before the run folder exists
        out = RunOutputs(args, accelerator)  # locks the run folder and checks it (and --resume's state)
        return train(args, accelerator, out, progress, run)
    except BaseException as e:
        if out is not None:
            out.fail(progress, e, START_ERRORS)
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if out is not None:
            out.close()


def build(args, accelerator) -> SimpleNamespace:
    """Data, model, mixer, loss, optimizer and scheduler, prepared by Accelerate; writes nothing."""
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
    return SimpleNamespace(info=info, task=task, train_set=train_set, val_set=val_set, train_loader=train_loader,
                           val_loader=val_loader, model=model, num_classes=num_classes, mixer=mixer, loss_fn=loss_fn,
                           optimizer=optimizer, scheduler=scheduler, num_epochs=num_epochs)


def train(args, accelerator, out, progress, run: SimpleNamespace):
    r, acc = run, accelerator
    model, optimizer, loss_fn, scheduler, ema = r.model, r.optimizer, r.loss_fn, r.scheduler, None
    if args.model_ema:  # timm's ModelEmaV3 of the unwrapped weights, updated after each optimizer update
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(acc.unwrap_model(model), decay=args.model_ema_decay)
    state = TrainingState(acc, scheduler, progress, loss_fn, args.epochs, ema)  # saved with Accelerate's state
    guard = NonFiniteGuard(args.nonfinite_loss, acc, check_every=args.log_interval)
    if args.log_with:
        acc.init_trackers(out.run_dir.name, config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                    for k, v in vars(args).items()})
    if out.resume_from is not None:
        load_state(acc, out.resume_from, state)
        acc.print(f'resumed from {out.resume_from} after epoch {progress.epoch}')
    mixing = f'timm Mixup (mixup {args.mixup}, cutmix {args.cutmix})' if args.mix_method in ('mixup', 'cutmix') \
        else args.mix_method
    sources = [getattr(ds, 'source', None) for ds in (r.train_set, r.val_set)]
    if any(sources):  # an image folder: say which folder each split came from
        acc.print(f'data: train from {sources[0]}, val from {sources[1]}')
    acc.print(f'{args.model} on {r.info.name} ({len(r.train_set)} train / {len(r.val_set)} val), opt {args.opt}, '
              f'mixing {mixing}, loss {args.loss}, {r.num_epochs} epochs, {acc.num_processes} process(es) on '
              f'{acc.device}')
    noise = getattr(r.train_set, 'label_noise', None)
    if noise:
        acc.print(f"label noise: {noise['relabelled']} training labels exchanged ({noise['fraction']:g} of each "
                  f"class) in the class pairs {noise['pairs']} (seed {noise['seed']})")

    for epoch in range(progress.epoch, r.num_epochs):
        seed_epoch(args.seed, epoch, r.train_loader, r.train_set)
        model.train()
        loss_fn.train()
        guard.start_epoch()
        lr = optimizer.param_groups[0]['lr']  # the lr this epoch trains at (the scheduler moves it at the end)
        start, loss_sum, seen = time.time(), torch.zeros((), device=acc.device), 0
        bar = tqdm(r.train_loader, desc=f'epoch {epoch + 1}/{r.num_epochs}', leave=False,
                   disable=not acc.is_local_main_process, mininterval=1.0)
        for step, (x, y) in enumerate(bar):
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if r.mixer is not None:
                x, target = r.mixer(x, y)
            snapshot = guard.snapshot(model)
            with acc.accumulate(model):  # --grad-accum-steps: the optimizer steps every N batches
                with acc.autocast():
                    loss = loss_fn(model(x), target)
                if not guard.loss_ok(loss, x, epoch, step, model, snapshot):  # stop: raises; skip: False
                    continue
                acc.backward(loss)
                if args.clip_grad is not None and acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if ema is not None and acc.sync_gradients:
                ema.update(acc.unwrap_model(model))
            loss_sum += loss.detach() * x.shape[0]
            seen += x.shape[0]
            if step % args.log_interval == 0:
                bar.set_postfix(loss=f'{loss.item():.4f}', lr=f'{lr:.3g}')
        guard.end_epoch(epoch, model)  # no pending bad loss, an update was made, weights and buffers are finite
        scheduler.step(epoch + 1)
        train_loss = (acc.reduce(loss_sum, 'sum') / acc.reduce(torch.tensor(seen, device=acc.device), 'sum')).item()
        metrics = evaluate(model, r.val_loader, acc, r.task, r.num_classes, r.info.ignore_index)
        if ema is not None:  # timm's train.py validates the EMA weights too
            ema_metrics = evaluate(ema.module, r.val_loader, acc, r.task, r.num_classes, r.info.ignore_index)
            metrics.update({f'ema_{k}': v for k, v in ema_metrics.items() if k != 'val_count'})
        guard.check_metrics(epoch, dict(train_loss=train_loss, **metrics))
        row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, epoch_time=time.time() - start, **metrics)
        if guard.skip:
            row['skipped_steps'] = guard.skipped
        progress.end_epoch(row, r.task)
        # the class names travel with the weights (evaluate/predict show them), when they name the model's outputs
        names = r.info.classes if len(r.info.classes) == r.num_classes else None
        out.save_epoch(model, progress, ema, label_names=names)
        if args.log_with:
            acc.log({k: v for k, v in row.items() if k != 'epoch'}, step=epoch + 1)
        acc.print(progress.log_line())
        if args.stop_after_epochs is not None and epoch + 1 - progress.resumed_at >= args.stop_after_epochs \
                and epoch + 1 < r.num_epochs:
            acc.print(f'stopping after epoch {epoch + 1} (--stop-after-epochs); continue with --resume')
            if acc.is_main_process:
                out.write_summary(progress, f'interrupted (--stop-after-epochs); continue with --resume {out.run_dir}')
            return exit_status(progress, acc)

    if acc.is_main_process:  # the attack runs here alone; the other processes end now instead of waiting for it
        robust = run_robustness(args, acc, model, r.val_set, r.task, out.run_dir)
        out.write_summary(progress, 'finished', robust,
                          dict(policy=args.nonfinite_loss, skipped_steps=skipped_steps(progress)))
        acc.print(f'done: {out.run_dir}')
    acc.end_training()
    return exit_status(progress, acc)


def skipped_steps(progress) -> int:
    return sum(row.get('skipped_steps', 0) for row in progress.history)  # resumed epochs included


def exit_status(progress, accelerator) -> int:
    """0, or 3 when --nonfinite-loss skip dropped steps: no run ends with status 0 after a non-finite loss."""
    skipped = skipped_steps(progress)
    if skipped and accelerator.is_main_process:
        print(f'{Path(sys.argv[0]).name}: warning: {skipped} training steps had a non-finite loss and were skipped '
              '(--nonfinite-loss skip); exit status 3', file=sys.stderr, flush=True)
    return 3 if skipped else 0
