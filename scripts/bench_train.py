#!/usr/bin/env python
""" Training throughput: the input pipeline alone, a full training step, and the full stack vs plain.

    python scripts/bench_train.py --dataset imagefolder --data-dir ../shared/datasets/cifar10 --device cuda \\
        --batch-size 256 --mixed-precision bf16 --channels-last --compile
    python scripts/bench_train.py --device cpu --batch-size 64 --steps 5        # digits, offline

Reports in one run:
* input pipeline: images/s of the DataLoader (in-memory dataset + the paper's Albumentations pipeline in
  --workers processes), nothing else;
* full stack: a training step of ``--model`` (TN) with FDTMixup + the FDT loss + ``sgd_wcgc``;
* plain: the ReLU twin (``--plain-model``) with timm's Mixup + soft-target CE + timm ``sgd``,
  and the full-stack / plain time ratio (goal on a GPU: <= 1.10).
The step timings use one fixed device-resident batch so that they measure compute, not loading.
"""
import argparse
from contextlib import nullcontext

from bench import measure, time_call  # also puts this checkout's package first on sys.path

import timm  # noqa: E402
import torch  # noqa: E402
from timm.data import Mixup  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

import timm_normplugins  # noqa: F401,E402
from timm_normplugins.data import FDTMixup, create_dataset, create_transform  # noqa: E402
from timm_normplugins.loss import create_loss  # noqa: E402

DTYPES = {'no': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def pipeline_rate(args) -> float:
    ds = create_dataset(args.dataset, args.data_dir, 'train', max_samples=args.pipeline_samples)
    ds.transform = create_transform(ds, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    for _ in zip(range(2), loader):  # start the workers
        pass
    seconds, n = time_call(lambda: sum(x.shape[0] for x, _ in loader))
    return n / seconds, ds


def make_step(args, model_name, stack, num_classes, in_chans, device):
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=num_classes, in_chans=in_chans).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if stack == 'full':
        mixer, loss_fn = FDTMixup(num_classes), create_loss('fdt')
        opt = create_optimizer_v2(model, opt='sgd_wcgc', lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        mixer = Mixup(mixup_alpha=0.8, num_classes=num_classes)
        loss_fn = SoftTargetCrossEntropy()
        opt = create_optimizer_v2(model, opt='sgd', lr=0.1, momentum=0.9, weight_decay=5e-4)
    fwd = torch.compile(model) if args.compile else model
    dtype = DTYPES[args.mixed_precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext

    def step(x, y):
        xm, target = mixer(x, y)
        with autocast():
            loss = loss_fn(fwd(xm), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--model', default='resnet34_tn')
    p.add_argument('--plain-model', default='resnet34_cifar')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--pipeline-samples', type=int, default=None, help='subset for the pipeline timing')
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--mixed-precision', default='no', choices=sorted(DTYPES))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--skip-pipeline', action='store_true', help='time the training steps only')
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    args = p.parse_args()
    device = torch.device(args.device)

    if args.skip_pipeline:
        rate, ds = None, create_dataset(args.dataset, args.data_dir, 'train', max_samples=args.batch_size)
    else:
        rate, ds = pipeline_rate(args)
    print(f'device={device} batch={args.batch_size} precision={args.mixed_precision} channels_last={args.channels_last} '
          f'compile={args.compile} torch={torch.__version__}')
    if rate is not None:
        print(f'input pipeline ({args.dataset}, {args.workers} workers): {rate:10.0f} img/s')
    c, h, w = ds.in_chans, *(ds.img_size or (32, 32))
    x = torch.randn(args.batch_size, c, h, w, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, ds.num_classes, (args.batch_size,), device=device)
    steps = {'full': make_step(args, args.model, 'full', ds.num_classes, c, device),
             'plain': make_step(args, args.plain_model, 'plain', ds.num_classes, c, device)}
    timing = measure({k: (lambda step=step: step(x, y)) for k, step in steps.items()}, args.steps, args.warmup,
                     device, baseline='plain')
    med = {k: t['median_s'] for k, t in timing.items()}
    print(f'full stack ({args.model} + FDTMixup + fdt loss + sgd_wcgc): {1e3 * med["full"]:9.1f} ms/step '
          f'{args.batch_size / med["full"]:10.0f} img/s')
    print(f'plain ({args.plain_model} + timm Mixup + soft CE + sgd):      {1e3 * med["plain"]:9.1f} ms/step '
          f'{args.batch_size / med["plain"]:10.0f} img/s')
    print(f'full / plain time ratio: {timing["full"]["ratio_median"]:.3f}')
    if rate is not None:
        print(f'input pipeline / full-step throughput: {rate / (args.batch_size / med["full"]):.1f}x')
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump({'device': str(device), 'batch': args.batch_size, 'precision': args.mixed_precision,
                       'channels_last': args.channels_last, 'compile': args.compile, 'ms_full': 1e3 * med['full'],
                       'ms_plain': 1e3 * med['plain'], 'full_over_plain': timing['full']['ratio_median'],
                       'pipeline_img_per_s': rate}, f, indent=1)


if __name__ == '__main__':
    main()
