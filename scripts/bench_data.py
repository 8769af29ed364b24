""" Epoch time of the in-memory datasets vs timm's decode-per-item ImageDataset on the same tar.

    python scripts/bench_data.py --root ../shared/datasets/cifar10/train.tar [--samples 10000]

Both sides run the same Albumentations training pipeline (create_transform('cifar10', train=True)) in one
process, so the difference is the per-item JPEG decode that the in-memory dataset pays once, up front.
"""
import argparse

from bench import measure, time_call  # also puts this checkout's package first on sys.path

import numpy as np  # noqa: E402
import timm.data  # noqa: E402

from timm_normplugins.data import create_dataset, create_transform  # noqa: E402


def _epoch(get, n: int):
    """One pass over the first ``n`` items."""
    def epoch():
        for i in range(n):
            get(i)
    return epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--root', required=True, help='a .tar (or folder) of class folders of images')
    parser.add_argument('--samples', type=int, default=10000, help='items per epoch (first N)')
    parser.add_argument('--epochs', type=int, default=2)
    args = parser.parse_args()
    transform = create_transform('cifar10', train=True, seed=0)

    decode_once, ours = time_call(lambda: create_dataset('imagefolder', args.root, transform=transform))
    n = min(args.samples, len(ours))

    timm_ds = timm.data.create_dataset('', root=args.root)

    def timm_item(i):  # what a timm ImageDataset loader does per item, then the same pipeline
        img, target = timm_ds[i]
        return transform(image=np.asarray(img))['image'], target

    timing = measure({'ours': _epoch(ours.__getitem__, n), 'timm': _epoch(timm_item, n)}, args.epochs, baseline='ours')
    ours_t, timm_t = timing['ours']['min_s'], timing['timm']['min_s']  # best epoch: the least disturbed
    print(f'{len(ours)} images decoded into memory once in {decode_once:.1f} s')
    print(f'epoch of {n} items: in-memory {ours_t:.2f} s ({n / ours_t:.0f} img/s), '
          f'timm ImageDataset (decode per item) {timm_t:.2f} s ({n / timm_t:.0f} img/s), '
          f"ratio {timing['timm']['ratio_min']:.2f}x")


if __name__ == '__main__':
    main()
