#!/usr/bin/env python
""" Train a timm model with Tensor Normalization, FDT, MCEL and WC/GC under Accelerate.

    accelerate launch recipes/train.py                       # the main job: TN + FDT + sgd_wcgc on digits
    accelerate launch recipes/train.py --config recipes/configs/fdt_tn/c10_resnet34_tn_fdt.yaml --data-dir ~/data
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --epochs 1   # 2 CPU processes without a GPU
    python recipes/train.py --help                           # every flag (timm's train.py names)

Writes to --output/--experiment: model.safetensors (last) and model_best.safetensors, args.yaml (replays
the run), metrics.csv, summary.json, curves.png and state/ (Accelerate state for --resume).
"""
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm import tqdm

import timm_normplugins  # noqa: F401  (registers models and optimizers in timm)
from timm_normplugins.data.device_pipeline import create_device_loader
from timm_normplugins.training import (
    RunOutputs, TrainProgress, build_datasets, build_loss, build_mixer, build_model, build_optimizer,
    build_scheduler, check_launch, check_names, evaluate, parse_args, resolve_task, run_robustness, seed_epoch,
    use_cpu_cores,
)


def main(argv=None):
    args = parse_args(argv)
    check_names(args)
    check_launch()
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),  # several processes on a CPU-only machine: gloo
        mixed_precision=args.mixed_precision,
        dynamo_backend=args.torchcompile.upper() if args.torchcompile else 'no',
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )
    use_cpu_cores(accelerator)
    set_seed(args.seed)
    out = RunOutputs(args, accelerator)  # checks --resume belongs to this architecture, before any work

    # data, model, mixer, loss, optimizer, schedule
    info, train_set, val_set = build_datasets(args)
    task = resolve_task(args, info)
    model = build_model(args, info)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    num_classes = model.num_classes
    mixer = build_mixer(args, num_classes)
    loss_fn = build_loss(args, info, train_set).to(accelerator.device)
    optimizer = build_optimizer(args, model, loss_fn)
    scheduler, num_epochs = build_scheduler(args, optimizer)

    loader_kw = dict(num_workers=args.workers, pin_memory=accelerator.device.type == 'cuda')
    if args.device_augment:  # issue 15: batches made on the device; accelerator.prepare passes it through
        train_loader = create_device_loader(train_set, args.batch_size, accelerator, seed=args.seed,
                                            drop_last=len(train_set) >= args.batch_size,
                                            channels_last=args.channels_last)
    else:
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                                   drop_last=len(train_set) >= args.batch_size, **loader_kw)
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=args.val_batch_size or (1 if task == 'seg' else 2 * args.batch_size), **loader_kw)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    progress = TrainProgress()
    for obj in (scheduler, progress, loss_fn):
        accelerator.register_for_checkpointing(obj)
    if args.resume:
        accelerator.load_state(out.resume_state_dir())
        accelerator.print(f'resumed from {out.resume_state_dir()} after epoch {progress.epoch}')
    accelerator.print(f'{args.model} on {info.name} ({len(train_set)} train / {len(val_set)} val), '
                      f'opt {args.opt}, mixup {args.mixup}, loss {args.loss}, {num_epochs} epochs, '
                      f'{accelerator.num_processes} process(es) on {accelerator.device}')

    for epoch in range(progress.epoch, num_epochs):
        seed_epoch(args.seed, epoch, train_loader, train_set)  # an epoch's randomness depends on (seed, epoch) only
        model.train()
        loss_fn.train()
        start, loss_sum, seen = time.time(), torch.zeros((), device=accelerator.device), 0
        bar = tqdm(train_loader, desc=f'epoch {epoch + 1}/{num_epochs}', leave=False,
                   disable=not accelerator.is_local_main_process, mininterval=1.0)
        for step, (x, y) in enumerate(bar):
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if mixer is not None:
                x, target = mixer(x, y)
            with accelerator.autocast():
                output = model(x)
                loss = loss_fn(output, target)
            accelerator.backward(loss)
            if args.clip_grad is not None and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * x.shape[0]
            seen += x.shape[0]
            if step % args.log_interval == 0:
                bar.set_postfix(loss=f'{loss.item():.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.3g}')
        scheduler.step(epoch + 1)
        train_loss = (accelerator.reduce(loss_sum, 'sum') / accelerator.reduce(
            torch.tensor(seen, device=accelerator.device), 'sum')).item()
        metrics = evaluate(model, val_loader, accelerator, task, num_classes, info.ignore_index)
        progress.end_epoch(dict(epoch=epoch + 1, lr=optimizer.param_groups[0]['lr'], train_loss=train_loss,
                                epoch_time=time.time() - start, **metrics), task)
        out.save_epoch(model, progress)
        accelerator.print(progress.log_line())
        if args.stop_after_epochs is not None and epoch + 1 - progress.resumed_at >= args.stop_after_epochs \
                and epoch + 1 < num_epochs:
            accelerator.print(f'stopping after epoch {epoch + 1} (--stop-after-epochs); continue with --resume')
            return 0

    robust = run_robustness(args, accelerator, model, val_set, task, out.run_dir)
    out.finish(progress, robust)
    accelerator.print(f'done: {out.run_dir}')
    accelerator.end_training()
    return 0


if __name__ == '__main__':
    sys.exit(main())
