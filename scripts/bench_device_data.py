#!/usr/bin/env python
""" Input pipeline throughput: the device-resident pipeline against DataLoader workers running Albumentations.

    python scripts/bench_device_data.py --device cpu                                   # digits, offline
    python scripts/bench_device_data.py --dataset imagefolder --data-dir ../shared/datasets/cifar10 \\
        --max-samples 20000 --device cuda --channels-last

Both sides produce the same batches (same distribution: tests/test_device_pipeline.py) of the paper's
training pipeline, delivered on --device as float32: the DataLoader path (in-memory dataset, Albumentations
per image in --workers processes, then a host-to-device copy) and ``DeviceLoader`` (uint8 images on the
device, a few batched ops per batch). Images/s over whole epochs after one warm-up batch, best of --epochs,
all variants in this one process.
"""
import argparse
import json

from bench import measure  # also puts this checkout's package first on sys.path

import torch  # noqa: E402

from timm_normplugins.data import create_dataset, create_transform  # noqa: E402
from timm_normplugins.data.device_pipeline import DeviceLoader  # noqa: E402


class Epoch:
    """One pass over a loader's batches, moved to ``device``; ``start()`` (untimed) sets the epoch and takes the
    first batch, so worker start-up is not timed; calling it consumes the rest and counts the images."""

    def __init__(self, loader, device, channels_last):
        self.loader, self.device, self.channels_last = loader, device, channels_last
        self.epoch, self.images, self._it = -1, 0, None

    def start(self):
        self.epoch += 1
        if hasattr(self.loader, 'set_epoch'):
            self.loader.set_epoch(self.epoch)
        self._it = iter(self.loader)
        next(self._it)

    def __call__(self):
        n = 0
        for x, y in self._it:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            n += x.shape[0]
        self.images = n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--max-samples', type=int, default=None)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--workers', type=int, nargs='+', default=[2])
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU; 1 avoids oversubscription '
                                                              'on a small shared machine)')
    p.add_argument('--json', default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ds = create_dataset(args.dataset, args.data_dir, 'train', max_samples=args.max_samples)
    ds.transform = create_transform(ds, train=True)
    variants = {}
    for w in args.workers:
        variants[f'DataLoader, {w} workers'] = torch.utils.data.DataLoader(
            ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=w,
            persistent_workers=w > 0, pin_memory=device.type == 'cuda')
    variants['DeviceLoader'] = DeviceLoader(ds, args.batch_size, device, seed=0, channels_last=args.channels_last)
    epochs = {k: Epoch(loader, device, args.channels_last) for k, loader in variants.items()}
    # epochs interleaved, so machine load hits all alike; best of --epochs
    timing = measure(epochs, args.epochs, device=device, before=lambda k: epochs[k].start())
    best = {k: epochs[k].images / t['min_s'] for k, t in timing.items()}
    print(f'{args.dataset}: {len(ds)} images {ds.img_size} x{ds.in_chans}, batch {args.batch_size}, '
          f'device {device}, channels_last={args.channels_last}, torch threads {torch.get_num_threads()}')
    for name, r in best.items():
        print(f'{name:24s} {r:10.0f} img/s   x{r / best["DeviceLoader"]:.3f} of DeviceLoader')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'dataset': args.dataset, 'samples': len(ds), 'batch': args.batch_size,
                       'device': str(device), 'img_per_s': best}, f, indent=1)


if __name__ == '__main__':
    main()
