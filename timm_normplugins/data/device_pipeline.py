""" Device-resident input pipeline for the in-memory classification data sets (CIFAR, Fashion-MNIST, SVHN,
digits, same-size image folders).

The uint8 images live on the training device; each batch is gathered, padded, cropped, flipped and
normalised there by a few batched tensor ops -- no DataLoader workers, no per-image Python:

    loader = DeviceLoader(train_set, batch_size=256, device='cuda', seed=0)   # train_set.transform: the
    for epoch in range(epochs):                                               # paper's Albumentations pipeline
        loader.set_epoch(epoch)
        for x, y in loader:            # x float32 (B, C, H, W) on the device, y int64
            x, target = mixer(x, y)    # FDTMixup works on the device batch as before

:class:`DeviceAugment` reads the Albumentations pipeline it replaces (``create_transform``'s
``[Pad] [RandomCrop] [HorizontalFlip] Normalize ToTensorV2``) and draws the same random decisions from
the same distributions: crop offsets uniform over ``0 .. padded - crop`` inclusive (Albumentations'
``get_crop_coords``), a flip with probability ``p``. Normalisation looks pixels up in a table made by
running the pipeline's own ``Normalize`` on the 256 grey levels, so given the same offsets and flips the
output equals Albumentations' bit for bit (tests/test_device_pipeline.py).

Epoch order depends on ``(seed, epoch)`` only and is the same in every process; with several processes
(Accelerate) each takes every ``num_replicas``-th sample of it, all shards equally long, and draws its
augmentation from its own stream ``(seed, epoch, rank)``. A resumed run therefore repeats an
uninterrupted one.
"""
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ['DeviceAugment', 'DeviceLoader', 'create_device_loader']


def _albumentations():
    import albumentations as A
    from albumentations.pytorch import ToTensorV2
    return A, ToTensorV2


class DeviceAugment:
    """Pad + random crop + horizontal flip + normalisation of uint8 ``(B, H, W, C)`` batches, batched.

    Args:
        in_chans: C.
        lut: ``(256, C)`` float32, the normalised value of each grey level per channel.
        pad: zero padding on every side before the crop (the pixel value ``fill``).
        crop: ``(h, w)`` of the crop, or None for no crop (then ``pad`` must be 0).
        flip_p: probability of a horizontal flip.
        fill: grey level of the padding.
        affine: ``(mean, 1 / std)`` per channel in pixel units, float32, if ``(p - mean) / std`` computed
            in float32 gives ``lut`` exactly (checked here); faster than a table lookup on a CPU.
    """

    def __init__(self, in_chans: int, lut: torch.Tensor, pad: int = 0, crop: Optional[Tuple[int, int]] = None,
                 flip_p: float = 0.0, fill: int = 0, affine: Optional[Tuple[np.ndarray, np.ndarray]] = None):
        if pad and crop is None:
            raise ValueError('padding without a crop would change the image size')
        if tuple(lut.shape) != (256, in_chans):
            raise ValueError(f'lut must be (256, {in_chans}), got {tuple(lut.shape)}')
        self.in_chans, self.pad, self.crop, self.flip_p, self.fill = in_chans, pad, crop, flip_p, int(fill)
        self.lut = lut.float().contiguous()
        self.affine = None if affine is None else tuple(torch.tensor(np.asarray(a, dtype=np.float32)) for a in affine)
        if self.affine is not None:  # use the arithmetic only where it reproduces the table exactly
            grey = torch.arange(256, dtype=torch.float32)[:, None]
            if not torch.equal((grey - self.affine[0]) * self.affine[1], self.lut):
                self.affine = None

    @classmethod
    def from_transform(cls, transform, in_chans: int) -> 'DeviceAugment':
        """The device twin of an Albumentations ``Compose`` from ``create_transform``.

        Raises ValueError for any transform this module does not reproduce (use the DataLoader there).
        """
        A, ToTensorV2 = _albumentations()
        import cv2
        pad, crop, flip_p, fill, normalize, seen = 0, None, 0.0, 0, None, []
        order = (A.Pad, A.RandomCrop, A.HorizontalFlip, A.Normalize, ToTensorV2)
        for t in getattr(transform, 'transforms', [transform]):
            kind = next((k for k in order if type(t) is k), None)
            if kind is None:
                raise ValueError(f'the device pipeline reproduces {[k.__name__ for k in order]}, '
                                 f'not {type(t).__name__}')
            if seen and order.index(kind) <= order.index(seen[-1]):
                raise ValueError(f'the device pipeline needs the order {[k.__name__ for k in order]}')
            seen.append(kind)
            if kind is A.Pad:
                sides = t.padding if isinstance(t.padding, (tuple, list)) else (t.padding,)
                if len(set(sides)) != 1 or t.border_mode != cv2.BORDER_CONSTANT or t.p != 1:
                    raise ValueError('the device pipeline pads every side alike with a constant, always')
                fill = np.asarray(t.fill).reshape(-1)
                if len(set(fill.tolist())) != 1:
                    raise ValueError('the device pipeline pads with one grey level')
                pad, fill = int(sides[0]), int(fill[0])
            elif kind is A.RandomCrop:
                if t.pad_if_needed or t.p != 1:
                    raise ValueError('the device pipeline crops always and without pad_if_needed')
                crop = (int(t.height), int(t.width))
            elif kind is A.HorizontalFlip:
                flip_p = float(t.p)
            elif kind is A.Normalize:
                normalize = t
        if normalize is None:
            raise ValueError('the device pipeline ends in Normalize (the paper pipelines do)')
        # the pipeline's own Normalize on every grey level: the same float32 values, by construction
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], in_chans, axis=2)
        lut = A.Compose([normalize], p=1.0)(image=ramp)['image'].reshape(256, in_chans)
        # Albumentations' float32 (mean * 255, 1 / (std * 255)): the affine form, if it reproduces the table
        affine = None
        if hasattr(normalize, 'mean_np') and hasattr(normalize, 'denominator'):
            affine = (np.broadcast_to(normalize.mean_np, (in_chans,)),
                      np.broadcast_to(normalize.denominator, (in_chans,)))
        return cls(in_chans, torch.from_numpy(np.ascontiguousarray(lut, dtype=np.float32)), pad, crop, flip_p, fill,
                   affine)

    def to(self, device) -> 'DeviceAugment':
        self.lut = self.lut.to(device)
        if self.affine is not None:
            self.affine = tuple(a.to(device) for a in self.affine)
        return self

    def sample(self, batch: int, image_size: Tuple[int, int], device, generator: Optional[torch.Generator] = None):
        """Random ``(top, left, flip)`` per image in padded coordinates, distributed as Albumentations'."""
        H, W = image_size
        h, w = self.crop or (H, W)
        if h > H + 2 * self.pad or w > W + 2 * self.pad:
            raise ValueError(f'crop {(h, w)} exceeds the padded image {(H + 2 * self.pad, W + 2 * self.pad)}')
        top = torch.randint(0, H + 2 * self.pad - h + 1, (batch,), device=device, generator=generator)
        left = torch.randint(0, W + 2 * self.pad - w + 1, (batch,), device=device, generator=generator)
        flip = torch.rand(batch, device=device, generator=generator) < self.flip_p
        return top, left, flip

    def pixel_table(self, images: torch.Tensor) -> torch.Tensor:
        """``(N*H*W + 1, C)``: every pixel of uint8 ``(N, H, W, C)`` images, then the padding pixel --
        what :meth:`apply` gathers from (a padded position simply points at the last row)."""
        fill = torch.full((1, images.shape[-1]), self.fill, dtype=images.dtype, device=images.device)
        return torch.cat([images.reshape(-1, images.shape[-1]), fill])

    def apply(self, images: torch.Tensor, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
              flip: torch.Tensor, channels_last: bool = False, pixels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Samples ``index`` of ``images`` (uint8 ``(N, H, W, C)``) cropped at ``(top, left)`` of the padded
        image, flipped where ``flip``, normalised: float32 ``(B, C, h, w)`` (channels_last memory if asked).

        Crop, padding and flip are all in a per-pixel index (small); the full-size work is one gather of
        whole pixels straight from the data set (``pixels``: its :meth:`pixel_table`, made here if not
        given) and the normalisation, which also writes the requested layout.
        """
        N, H, W, C = images.shape
        h, w = self.crop or (H, W)
        dev = images.device
        pixels = self.pixel_table(images) if pixels is None else pixels
        rows = top[:, None] - self.pad + torch.arange(h, device=dev)                        # (B, h)
        cols = left[:, None] - self.pad + torch.arange(w, device=dev)                       # (B, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # flip after the crop: columns reversed
        pixel = (index[:, None] * H + rows)[:, :, None] * W + cols[:, None, :]              # (B, h, w)
        if self.pad:
            outside = ((rows < 0) | (rows >= H))[:, :, None] | ((cols < 0) | (cols >= W))[:, None, :]
            pixel = pixel.masked_fill_(outside, N * H * W)  # the padding pixel
        grey = pixels.index_select(0, pixel.view(-1)).view(-1, h, w, C).permute(0, 3, 1, 2)
        return self._normalize(grey, channels_last)

    def _normalize(self, grey: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """uint8 (B, C, h, w) in channels_last memory -> float32 in the requested layout, in one pass + one."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(grey.shape, dtype=torch.float32, device=grey.device, memory_format=fmt)
        if self.affine is not None:  # (p - m) * d in float32, the very operations that built the table
            mean, inv_std = self.affine
            return torch.sub(grey, mean.view(1, -1, 1, 1), out=out).mul_(inv_std.view(1, -1, 1, 1))
        for c in range(self.in_chans):
            out[:, c] = self.lut[:, c][grey[:, c].long()]
        return out

    def __call__(self, images: torch.Tensor, index: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None, channels_last: bool = False) -> torch.Tensor:
        if index is None:
            index = torch.arange(images.shape[0], device=images.device)
        top, left, flip = self.sample(index.shape[0], images.shape[1:3], images.device, generator)
        return self.apply(images, index, top, left, flip, channels_last)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pad={self.pad}, crop={self.crop}, flip_p={self.flip_p}, '
                f'in_chans={self.in_chans})')


def _images_array(dataset) -> np.ndarray:
    images = getattr(dataset, 'images', None)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError('the device pipeline needs an in-memory data set of same-size uint8 images '
                         '(cifar10/100, fashion_mnist, svhn, digits, or a same-size image folder)')
    return images


class DeviceLoader:
    """Batches ``(x, y)`` of an in-memory classification data set, augmented on ``device``.

    Args:
        dataset: an ``ImageClassificationDataset`` (uint8 ``(N, H, W, C)`` images); its ``transform``
            (``create_transform``'s pipeline) defines the augmentation unless ``augment`` is given.
        batch_size: per process.
        device: where the images live and the batches are made.
        shuffle / drop_last: as in ``DataLoader``.
        seed: epoch order and augmentation are functions of ``(seed, epoch[, rank])``.
        num_replicas / rank: this process's share (every ``num_replicas``-th sample of the epoch order).
        channels_last: batches in channels_last memory format (no copy on the way).
    """

    def __init__(self, dataset, batch_size: int, device: Union[str, torch.device] = 'cpu',
                 augment: Optional[DeviceAugment] = None, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, channels_last: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} outside 0..{num_replicas - 1}')
        images = _images_array(dataset)
        self.device = torch.device(device)
        if augment is None:
            augment = DeviceAugment.from_transform(dataset.transform, images.shape[-1])
        self.augment = augment.to(self.device)
        self.pixels = self.augment.pixel_table(torch.from_numpy(images).to(self.device))
        self.images = self.pixels[:-1].view(images.shape)  # a view: the data set is on the device once
        self.targets = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long).to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.num_replicas, self.rank, self.channels_last = seed, num_replicas, rank, channels_last
        self.epoch = 0
        self.dataset = dataset

    @property
    def shard_size(self) -> int:
        return len(self.targets) // self.num_replicas  # equal shards: every process runs the same steps

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.targets)
        if self.shuffle:  # on the CPU: the same permutation in every process, whatever its device
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        else:
            order = torch.arange(n)
        return order[self.rank:self.shard_size * self.num_replicas:self.num_replicas].to(self.device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1000 + self.epoch) * 1009 + self.rank)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            top, left, flip = self.augment.sample(index.shape[0], self.images.shape[1:3], self.device, gen)
            x = self.augment.apply(self.images, index, top, left, flip, self.channels_last, self.pixels)
            yield x, self.targets[index]


def create_device_loader(dataset, batch_size: int, accelerator=None, device=None, seed: int = 0,
                         drop_last: bool = True, channels_last: bool = False) -> DeviceLoader:
    """A training :class:`DeviceLoader` for this process: Accelerate's device, process index and count."""
    if accelerator is not None:
        device, replicas, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    else:
        replicas, rank = 1, 0
    return DeviceLoader(dataset, batch_size, device or 'cpu', seed=seed, drop_last=drop_last, shuffle=True,
                        num_replicas=replicas, rank=rank, channels_last=channels_last)
