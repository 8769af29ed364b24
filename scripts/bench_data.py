""" Epoch time of the in-memory datasets vs timm's decode-per-item ImageDataset on the same tar.

    python scripts/bench_data.py --root ../shared/datasets/cifar10/train.tar [--samples 10000]

Both sides run the same Albumentations training pipeline (create_transform('cifar10', train=True)) in one
process, so the difference is the per-item JPEG decode that the in-memory dataset pays once, up front.
"""
import argparse
import time

import numpy as np
import timm.data

from timm_normplugins.data import create_dataset, create_transform


def _epoch(get, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        get(i)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--root', required=True, help='a .tar (or folder) of class folders of images')
    parser.add_argument('--samples', type=int, default=10000, help='items per epoch (first N)')
    parser.add_argument('--epochs', type=int, default=2)
    args = parser.parse_args()
    transform = create_transform('cifar10', train=True, seed=0)

    start = time.perf_counter()
    ours = create_dataset('imagefolder', args.root, transform=transform)
    decode_once = time.perf_counter() - start
    n = min(args.samples, len(ours))

    timm_ds = timm.data.create_dataset('', root=args.root)

    def timm_item(i):  # what a timm ImageDataset loader does per item, then the same pipeline
        img, target = timm_ds[i]
        return transform(image=np.asarray(img))['image'], target

    ours_t = min(_epoch(ours.__getitem__, n) for _ in range(args.epochs))
    timm_t = min(_epoch(timm_item, n) for _ in range(args.epochs))
    print(f'{len(ours)} images decoded into memory once in {decode_once:.1f} s')
    print(f'epoch of {n} items: in-memory {ours_t:.2f} s ({n / ours_t:.0f} img/s), '
          f'timm ImageDataset (decode per item) {timm_t:.2f} s ({n / timm_t:.0f} img/s), '
          f'ratio {timm_t / ours_t:.2f}x')


if __name__ == '__main__':
    main()
