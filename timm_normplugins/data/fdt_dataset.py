""" Full Distribution Training at dataset level: the paper's exact semantics (eq. 2-4, Alg. 2).

:class:`FDTMixup` mixes within a batch, so n is capped by the classes the batch happens to hold
(a batch of 100 CIFAR-100 images holds about 63). :class:`FDTDataset` wraps a map-style dataset and
draws the partner images from the *whole* dataset, so n reaches C::

    train = FDTDataset(cifar100_train, num_classes=100)      # items: (mixed image, (100,) target)
    loader = DataLoader(train, batch_size=100, shuffle=True, num_workers=8, persistent_workers=True)
    for epoch in range(epochs):
        train.set_epoch(epoch)                                # before iterating the loader
        for x, target in loader: ...

Item ``index`` of epoch e: the leading image is ``dataset[index]`` (weight F_1, so OV's hard label is
its label), n is uniform in min_images..min(C, max_images) (capped by the number of classes in the dataset),
and partner i = 2..n is a uniformly random image among those whose class is not used yet (Alg. 2's
``j = RND(L) | C(j) not in C(GT)``; sampling classes by their image counts without replacement is
exactly that). Options mean what they mean for :class:`FDTMixup`.

Determinism: the plan (partners and weights) of item ``index`` depends only on (seed, epoch, index)
-- a fresh ``numpy.random.Generator`` seeded with that triple -- so it is the same in any worker, in
any order, with or without workers. The epoch lives in shared memory, so ``set_epoch`` reaches
persistent DataLoader workers too. The wrapped dataset's own random augmentations follow their own
RNG (the DataLoader seeds workers per epoch).

Cost: an item loads n images (mean (C+1)/2 for uniform n: 5.5 for CIFAR-10, 50.5 for CIFAR-100), so
data loading does that many times the work; ``max_images`` bounds it. Labels come from
``dataset.targets`` when the dataset has it (also through ``torch.utils.data.Subset``), else from
``labels=`` or by reading every item once at construction.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .fdt_mixup import fdt_weights
from .fdt_options import FDTOptions, FDTOptionsAttributes

__all__ = ['FDTDataset']


def _dataset_labels(dataset) -> np.ndarray:
    targets = getattr(dataset, 'targets', None)
    if targets is not None:
        return np.asarray(targets.cpu() if torch.is_tensor(targets) else targets)
    if isinstance(dataset, Subset):
        inner = getattr(dataset.dataset, 'targets', None)
        if inner is not None:
            inner = np.asarray(inner.cpu() if torch.is_tensor(inner) else inner)
            return inner[np.asarray(dataset.indices)]
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])  # slow fallback: reads every item


class FDTDataset(FDTOptionsAttributes, Dataset):
    """Wrap a map-style (image, label) dataset; items become (FDT image, (C,) target).

    Args:
        dataset: map-style dataset whose images are tensors or arrays of one shape (after transforms).
        num_classes: C (default: ``len(dataset.classes)`` or max label + 1).
        prob, weights, label, label_smoothing, max_images, min_images: as for :class:`FDTMixup`.
        seed: base seed; with the epoch and the index it fixes every item's plan.
        labels: the dataset's labels, if it has no ``targets`` attribute (avoids reading every item).
    """

    def __init__(self, dataset, num_classes: Optional[int] = None, prob: float = 1.0, weights: str = 'harmonic',
                 label: str = 'soft', label_smoothing: float = 0.0, max_images: Optional[int] = None,
                 seed: int = 0, labels: Optional[Sequence[int]] = None, min_images: int = 1):
        labels = _dataset_labels(dataset) if labels is None else np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(dataset):
            raise ValueError(f'need one label per item: {len(dataset)} items, labels of shape {labels.shape}')
        if labels.dtype.kind not in 'iu':
            raise TypeError(f'labels must be integer class indices, got dtype {labels.dtype}')
        if num_classes is None:
            classes = getattr(dataset, 'classes', None)
            num_classes = len(classes) if classes is not None else int(labels.max()) + 1
        self.options = FDTOptions(num_classes, prob, weights, label, label_smoothing, max_images, min_images)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise ValueError(f'labels must lie in [0, {num_classes - 1}], found {bad}')
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be a non-negative int, got {seed!r}')
        self.dataset = dataset
        self.labels = labels.astype(np.int64)
        self.seed = seed
        order = np.argsort(self.labels, kind='stable')
        counts = np.bincount(self.labels, minlength=num_classes)
        self._members = np.split(order, np.cumsum(counts)[:-1])   # image indices of each class
        self._counts = counts
        self._classes = np.flatnonzero(counts)
        # shared memory: set_epoch in the main process is seen by (persistent) DataLoader workers
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f'epoch must be >= 0, got {epoch}')
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def plan(self, index: int, epoch: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(image indices, weights) of item ``index`` in ``epoch`` (default: the current epoch).

        The first index is ``index`` itself; classes of the indices are pairwise distinct.
        """
        n_items = len(self.labels)
        if not -n_items <= index < n_items:
            raise IndexError(f'index {index} out of range for {n_items} items')
        index = int(index) % n_items
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, index])
        mixed = self.mix_prob >= 1.0 or rng.random() < self.mix_prob
        n = int(rng.integers(self.min_images, self.n_max + 1)) if mixed else 1
        others = self._classes[self._classes != self.labels[index]]
        n = min(n, 1 + len(others))
        picked = [index]
        if n > 1:
            p = self._counts[others] / self._counts[others].sum()
            for c in rng.choice(others, size=n - 1, replace=False, p=p):
                picked.append(int(self._members[c][rng.integers(self._counts[c])]))
        if self.weights == 'dirichlet':
            w = np.sort(rng.exponential(size=n))[::-1]
            w = w / w.sum()
        else:
            w = fdt_weights(n, self.weights).numpy()
        return np.asarray(picked, dtype=np.int64), w

    def __getitem__(self, index: int):
        picked, w = self.plan(index)
        x = None
        for j, wj in zip(picked, w):
            img = self.dataset[int(j)][0]
            img = img if torch.is_tensor(img) else torch.as_tensor(np.asarray(img))
            if not (img.is_floating_point() or img.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32)):
                raise TypeError(f'FDTDataset mixes numeric images, got {img.dtype}')
            img = img.float()
            if x is None:
                x = img * float(wj)
            elif img.shape != x.shape:
                raise ValueError(f'images of different shapes cannot be mixed: {tuple(x.shape)} vs '
                                 f'{tuple(img.shape)} (item {int(j)}); resize them in the dataset transform')
            else:
                x.add_(img, alpha=float(wj))
        target = torch.zeros(self.num_classes, dtype=torch.float32)
        if self.label == 'soft':
            target[torch.from_numpy(self.labels[picked])] = torch.from_numpy(w).float()
        else:
            target[int(self.labels[picked[0]])] = 1.0
        if self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return x, target

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({type(self.dataset).__name__}, num_classes={self.num_classes}, '
                f'weights={self.weights!r}, label={self.label!r}, max_images={self.max_images}, '
                f'min_images={self.min_images})')
