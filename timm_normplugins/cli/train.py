""" Train a timm model with Tensor Normalization, FDT, MCEL and WC/GC under Accelerate.

    accelerate launch recipes/train.py                       # the main job: TN + FDT + sgd_wcgc on digits
    accelerate launch recipes/train.py --config recipes/configs/fdt_tn/c10_resnet34_tn_fdt.yaml --data-dir ~/data
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --epochs 1   # 2 CPU processes without a GPU
    accelerate launch recipes/train.py --resume output/RUN   # continue a run with its own settings
    python recipes/train.py --help                           # every flag (timm's train.py names)
    timm-normplugins-train -c fdt_tn/c10_resnet34_tn_fdt.yaml  # installed: the same main, a packaged config

This module is the recipe; ``recipes/train.py`` and the ``timm-normplugins-train`` command call ``cli``.

Writes to --output/--experiment: model.safetensors (last) and model_best.safetensors, args.yaml (replays
the run), metrics.csv, summary.json, curves.png and state/ (for --resume). What a kill, a full disk or a
NaN does to a run: docs/RECIPES.md, "Failure behaviour".
"""
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from tqdm import tqdm

import timm_normplugins  # noqa: F401  (registers models and optimizers in timm)
from timm_normplugins.checkpoint import CheckpointError
from timm_normplugins.data import DataFileError, DatasetNotFoundError
from timm_normplugins.training import (
    ConfigError, NonFiniteGuard, RunOutputs, TrainingError, TrainingState, TrainProgress, build_datasets,
    build_loaders, build_loss, build_mixer, build_model, build_optimizer, build_scheduler, check_launch,
    check_names, evaluate, parse_args, resolve_task, run_robustness, seed_epoch, use_cpu_cores,
)
from timm_normplugins.training.outputs import run_folder


def main(argv=None):
    args = parse_args(argv)  # with --resume: the run's saved settings
    check_names(args)
    check_launch()
    # a second main() in one process (tests, notebooks) may ask for another precision or accumulation:
    # forget the previous run's Accelerate settings (the process group, PartialState, is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),  # several processes on a CPU-only machine: gloo
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum_steps,
        dynamo_backend=args.torchcompile.upper() if args.torchcompile else 'no',
        dataloader_config=DataLoaderConfiguration(even_batches=True),
        log_with=args.log_with,  # tensorboard & co write under RUN/tracking
        project_config=ProjectConfiguration(project_dir=str(run_folder(args)),
                                            logging_dir=str(run_folder(args) / 'tracking')) if args.log_with else None,
    )
    use_cpu_cores(accelerator)
    set_seed(args.seed)
    out = RunOutputs(args, accelerator)  # locks the run folder and checks it (and --resume's state) before any work
    if args.log_with:
        accelerator.init_trackers(out.run_dir.name, config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
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
    # data, model, mixer, loss, optimizer, schedule
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
    guard = NonFiniteGuard(args.nonfinite_loss, accelerator)
    if out.resume_from is not None:
        out.load_state(out.resume_from, state)
        accelerator.print(f'resumed from {out.resume_from} after epoch {progress.epoch}')
    accelerator.print(f'{args.model} on {info.name} ({len(train_set)} train / {len(val_set)} val), '
                      f'opt {args.opt}, mixing {_mixing(args)}, loss {args.loss}, {num_epochs} epochs, '
                      f'{accelerator.num_processes} process(es) on {accelerator.device}')

    for epoch in range(progress.epoch, num_epochs):
        seed_epoch(args.seed, epoch, train_loader, train_set)  # an epoch's randomness depends on (seed, epoch) only
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
        guard.end_epoch(epoch, model)  # an update was made, weights and buffers are finite
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


def _mixing(args) -> str:
    if args.mix_method in ('mixup', 'cutmix'):
        return f'timm Mixup (mixup {args.mixup}, cutmix {args.cutmix})'
    return args.mix_method


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


def cli(argv=None) -> int:
    """``main`` with the recipe's own errors as one line on stderr and exit status 1 (no traceback)."""
    try:
        return main(argv)
    except (ConfigError, TrainingError, DatasetNotFoundError, DataFileError, CheckpointError) as e:
        print(f'{Path(sys.argv[0]).name}: error: {e}', file=sys.stderr, flush=True)
        return 1


def console() -> None:
    """The ``timm-normplugins-train`` command."""
    sys.exit(cli())


if __name__ == '__main__':
    sys.exit(cli())
