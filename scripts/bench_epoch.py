#!/usr/bin/env python
""" Wall-clock time of whole CIFAR-10 training epochs: resnet34_tn + FDT + sgd_wcgc on device-resident data.

    python scripts/bench_epoch.py --device cuda                       # bf16, channels_last, compiled (defaults)
    python scripts/bench_epoch.py --device cuda --data-dir ../shared/datasets/cifar10   # the real images
    python scripts/bench_epoch.py --device cpu --samples 512 --batch-size 64 --no-compile --precision no

An epoch: every batch from ``DeviceLoader`` (uint8 images on the device; pad/crop/flip/normalise there),
FDTMixup, forward under autocast, the FDT loss, backward, the ``sgd_wcgc`` step. The first epoch includes
compilation and is reported separately; the others are the steady state. Without ``--data-dir`` the 50,000
images are random uint8 of CIFAR-10's shape (the time does not depend on the pixels).
"""
import argparse
import json
from contextlib import nullcontext

from bench import measure, time_call  # also puts this checkout's package first on sys.path

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

import timm_normplugins  # noqa: F401,E402
from timm_normplugins.data import FDTMixup, create_dataset, create_transform  # noqa: E402
from timm_normplugins.data.datasets import CIFAR10_CLASSES, ImageClassificationDataset  # noqa: E402
from timm_normplugins.data.device_pipeline import DeviceLoader  # noqa: E402
from timm_normplugins.loss import create_loss  # noqa: E402


def dataset(args):
    if args.data_dir:
        ds = create_dataset('imagefolder', args.data_dir, 'train', max_samples=args.samples)
    else:
        rng = np.random.default_rng(0)
        ds = ImageClassificationDataset(rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8),
                                        rng.integers(0, 10, args.samples), CIFAR10_CLASSES, name='cifar10')
    ds.transform = create_transform('cifar10', train=True)
    return ds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--data-dir', default=None, help='CIFAR-10 as an image folder / tar (default: random images)')
    p.add_argument('--samples', type=int, default=50000)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--model', default='resnet34_tn')
    p.add_argument('--opt', default='sgd_wcgc')
    p.add_argument('--precision', default='bf16', choices=['no', 'bf16', 'fp16'])
    p.add_argument('--no-channels-last', action='store_true')
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--epochs', type=int, default=3, help='the first one includes compilation')
    p.add_argument('--json', default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    channels_last = not args.no_channels_last

    ds = dataset(args)
    loader = DeviceLoader(ds, args.batch_size, device, seed=0, channels_last=channels_last)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, args.opt, lr=0.1, momentum=0.9, weight_decay=5e-4)
    fwd = model if args.no_compile else torch.compile(model)
    mixer, loss_fn = FDTMixup(num_classes=10, seed=0), create_loss('fdt')
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext

    epochs = iter(range(args.epochs))
    last = {}

    def run_epoch():
        for x, y in loader:
            x, target = mixer(x, y)
            with autocast():
                loss = loss_fn(fwd(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        last['loss'] = loss

    def next_epoch(_=None):
        loader.set_epoch(next(epochs))

    next_epoch()
    times = [time_call(run_epoch, device)[0]]  # includes compilation
    print(f'epoch 1: {times[0]:.2f} s ({len(loader)} steps, loss {last["loss"].item():.3f})', flush=True)
    steady = times[0]
    if args.epochs > 1:
        timing = measure({'epoch': run_epoch}, args.epochs - 1, device=device, before=next_epoch)['epoch']
        times += timing['all_s']
        steady = timing['min_s']  # the least disturbed epoch
        print(f'epochs 2-{args.epochs}: ' + ', '.join(f'{t:.2f}' for t in timing['all_s']) +
              f' s (loss {last["loss"].item():.3f})', flush=True)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'{args.model} + FDT + {args.opt}, {len(ds)} images, batch {args.batch_size}, {args.precision}, '
          f'channels_last={channels_last}, compiled={not args.no_compile}, {name}: '
          f'steady epoch {steady:.2f} s, first epoch {times[0]:.2f} s')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'device': name, 'model': args.model, 'opt': args.opt, 'samples': len(ds),
                       'batch': args.batch_size, 'precision': args.precision, 'channels_last': channels_last,
                       'compiled': not args.no_compile, 'epoch_s': times, 'steady_epoch_s': steady}, f, indent=1)


if __name__ == '__main__':
    main()
