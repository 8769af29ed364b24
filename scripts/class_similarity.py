#!/usr/bin/env python3
""" Compute the MCEL LDA class-similarity matrix (eq. 12) of a dataset and draw it like the paper's
Figure 2.

    python scripts/class_similarity.py --dataset digits --output out/digits_similarity.safetensors
    python scripts/class_similarity.py --dataset torch/cifar10 --data-dir ~/data --download \\
        --output out/cifar10_similarity.safetensors --max-samples 20000
    python scripts/class_similarity.py --dataset torch/cifar10 --data-dir ~/data \\
        --checkpoint runs/c10/model.safetensors --output out/cifar10_features_similarity.safetensors

``digits`` is scikit-learn's built-in 8x8 digits (no download). Other names go to timm's
``create_dataset`` (``torch/cifar10``, ``torch/cifar100``, ``torch/fashion_mnist``, ``torch/svhn``,
``imagefolder`` with ``--data-dir`` a folder of class sub-folders, ...). With ``--checkpoint`` (a
package safetensors checkpoint) or ``--model NAME --pretrained`` LDA runs on the model's penultimate
features instead of raw pixels; images are normalised with the model's data config. Writes the matrix as safetensors (class names in the metadata, load it with
``timm_normplugins.loss.load_similarity`` or pass the path to ``--similarity`` / ``create_loss``) and
a heatmap PNG next to it (or at ``--plot``).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_normplugins.loss import class_similarity, plot_similarity, save_similarity  # noqa: E402


def load_images(name: str, data_dir, split: str, download: bool):
    """(images (N, H, W[, C]) uint8/float array, labels (N,), class names)."""
    if name == 'digits':
        from sklearn.datasets import load_digits
        d = load_digits()
        # pixels are 0..16; scaled to [0, 1] like decoded images (LDA itself is scale invariant)
        return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64), [str(c) for c in d.target_names]
    from timm.data import create_dataset
    ds = create_dataset(name, root=data_dir, split=split, download=download, is_training=False)
    data, targets = getattr(ds, 'data', None), getattr(ds, 'targets', None)
    if data is not None and targets is not None:     # torchvision in-memory datasets (CIFAR, MNIST)
        images, labels = np.asarray(data), np.asarray(targets)
    else:
        items = [ds[i] for i in range(len(ds))]
        images = np.stack([np.asarray(x) for x, _ in items])
        labels = np.asarray([int(t) for _, t in items])
    classes = getattr(ds, 'classes', None)
    class_to_idx = getattr(getattr(ds, 'reader', None), 'class_to_idx', None)   # timm image folders
    if classes is None and class_to_idx:
        classes = sorted(class_to_idx, key=class_to_idx.get)
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(labels.max() + 1)]
    return images, labels, names


def build_model(args):
    import timm
    import timm_normplugins  # noqa: F401  registers the package's models
    if args.checkpoint:
        from timm_normplugins.checkpoint import load_model
        return load_model(args.checkpoint, device=args.device)
    return timm.create_model(args.model, pretrained=args.pretrained).to(args.device)


def model_inputs(images: np.ndarray, model) -> torch.Tensor:
    """uint8 / float HW[C] images -> normalised NCHW float tensor with the model's data config."""
    from timm.data import resolve_data_config
    cfg = resolve_data_config(model=model)
    x = torch.as_tensor(images).float()
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    x = x.permute(0, 3, 1, 2)
    if images.dtype == np.uint8:
        x = x / 255.0
    in_chans = cfg['input_size'][0]
    if x.shape[1] != in_chans:
        raise SystemExit(f'images have {x.shape[1]} channels, the model expects {in_chans}')
    mean = torch.tensor(cfg['mean']).view(1, -1, 1, 1)
    std = torch.tensor(cfg['std']).view(1, -1, 1, 1)
    return (x - mean) / std


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits', help="'digits' or a timm dataset name (torch/cifar10, ...)")
    p.add_argument('--data-dir', default=None)
    p.add_argument('--split', default='train')
    p.add_argument('--download', action='store_true')
    p.add_argument('--output', required=True, help='similarity .safetensors to write')
    p.add_argument('--plot', default=None, help='heatmap PNG (default: the output path with .png)')
    p.add_argument('--normalize', default='row', choices=['row', 'sinkhorn'])
    p.add_argument('--n-components', type=int, default=None, help='lambda (default k - 1, as in the paper)')
    p.add_argument('--max-samples', type=int, default=None, help='stratified subset for the LDA fit')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--model', default=None, help='LDA on this timm model\'s penultimate features')
    p.add_argument('--pretrained', action='store_true')
    p.add_argument('--checkpoint', default=None, help='package safetensors checkpoint (implies --model)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch-size', type=int, default=256)
    args = p.parse_args(argv)

    images, labels, names = load_images(args.dataset, args.data_dir, args.split, args.download)
    model = build_model(args) if (args.model or args.checkpoint) else None
    data = model_inputs(images, model) if model is not None else images
    A = class_similarity(data, labels, num_classes=len(names), model=model, n_components=args.n_components,
                         normalize=args.normalize, max_samples=args.max_samples, seed=args.seed,
                         batch_size=args.batch_size, device=args.device)
    out = save_similarity(args.output, A, class_names=names)
    plot = Path(args.plot) if args.plot else out.with_suffix('.png')
    source = f'{args.checkpoint or args.model} features' if model is not None else 'pixels'
    plot_similarity(A, names, plot, title=f'LDA class similarity, {args.dataset} ({source}, {args.normalize})')
    nearest = A.argmax(1)
    print(f'{args.dataset}: {len(labels)} images, {len(names)} classes -> {out}, {plot}')
    for i, name in enumerate(names[:20]):
        print(f'  {name:>12} most similar to {names[nearest[i]]} ({A[i, nearest[i]]:.3f})')
    return A


if __name__ == '__main__':
    main()
