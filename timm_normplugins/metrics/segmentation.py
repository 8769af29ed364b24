""" Semantic segmentation metrics from a confusion matrix: pixel accuracy and mean IoU.

The WC/GC paper's Table 5 reports "average pixel accuracy" on the VOC2012 val set. Its authors evaluated
with dlib, whose segmentation example counts right and wrong pixels over the whole set, skipping the
ignore label: ``pixel_acc = sum_c n_cc / sum_cc' n_cc'`` -- pooled over all labelled pixels, not averaged
per image. Mean IoU is the VOC challenge's measure.

The state is one int64 ``(C, C)`` confusion matrix (rows: true class, columns: prediction), so
accumulating over batches is a sum and so is combining processes: ``metric.sync(accelerator)`` (or,
without Accelerate, ``metric.sync()`` under ``torch.distributed``) returns the all-reduced metric.
"""
from typing import Dict, Optional, Union

import torch
import torch.distributed as dist

__all__ = ['SegmentationMetric', 'segmentation_scores']


def segmentation_scores(confusion: torch.Tensor) -> Dict[str, Union[float, torch.Tensor]]:
    """Scores of a ``(C, C)`` confusion matrix (rows: target, columns: prediction).

    Returns:
        pixel_acc: correctly classified labelled pixels / labelled pixels.
        mean_iou: mean over classes of TP / (TP + FP + FN); classes absent from both targets and
            predictions are left out.
        mean_class_acc: mean over classes present in the targets of TP / (TP + FN).
        iou, class_acc: the per-class values (float64, NaN where undefined).
    """
    cm = confusion.detach().to(device='cpu', dtype=torch.float64)
    true_pos = cm.diagonal()
    per_target, per_pred = cm.sum(1), cm.sum(0)
    union = per_target + per_pred - true_pos
    nan = torch.tensor(float('nan'), dtype=torch.float64)
    iou = torch.where(union > 0, true_pos / union.clamp(min=1), nan)
    class_acc = torch.where(per_target > 0, true_pos / per_target.clamp(min=1), nan)
    total = cm.sum()
    return dict(
        pixel_acc=float(true_pos.sum() / total) if total > 0 else float('nan'),
        mean_iou=float(iou.nanmean()),
        mean_class_acc=float(class_acc.nanmean()),
        iou=iou,
        class_acc=class_acc,
    )


class SegmentationMetric:
    """Accumulates a confusion matrix over batches (and processes) for pixel accuracy and mIoU.

    Args:
        num_classes: number of classes C.
        ignore_index: target value that is not scored (VOC: 255, object borders).
        device: where the matrix lives; default: the device of the first batch.

    Example::

        metric = SegmentationMetric(21)
        for images, masks in loader:
            metric.update(model(images), masks)
        scores = metric.sync(accelerator).compute()   # or metric.compute() in a single process
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255, device: Optional[torch.device] = None):
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f'ignore_index {ignore_index} is a class id (num_classes={num_classes})')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion: Optional[torch.Tensor] = None
        if device is not None:
            self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self):
        if self.confusion is not None:
            self.confusion.zero_()

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor):
        """Add a batch: ``output`` logits ``(B, C, H, W)`` or predicted ids ``(B, H, W)``; ``target`` ``(B, H, W)``."""
        if output.dim() == target.dim() + 1:
            if output.shape[1] != self.num_classes:
                raise ValueError(f'output has {output.shape[1]} channels, expected num_classes={self.num_classes}')
            pred = output.argmax(dim=1)
        elif output.dim() == target.dim() and not output.is_floating_point():
            pred = output
        else:
            raise ValueError(f'output must be logits (B, C, H, W) or class ids shaped like the target; '
                             f'got output {tuple(output.shape)} ({output.dtype}), target {tuple(target.shape)}')
        if pred.shape != target.shape:
            raise ValueError(f'prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape')
        target = target.to(pred.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, pred = target[keep], pred[keep]
        target, pred = target.long().flatten(), pred.long().flatten()
        c = self.num_classes
        bad = (target < 0) | (target >= c) | (pred < 0) | (pred >= c)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f'class id out of range [0, {c}): target {int(target[i])}, prediction {int(pred[i])} '
                             f'(ignore_index={self.ignore_index})')
        counts = torch.bincount(target * c + pred, minlength=c * c).view(c, c)
        if self.confusion is None:
            self.confusion = torch.zeros(c, c, dtype=torch.int64, device=counts.device)
        self.confusion += counts.to(self.confusion.device)

    def sync(self, accelerator=None) -> 'SegmentationMetric':
        """A copy whose matrix is summed over all processes (this one is left as is, so it can keep
        accumulating). Uses ``accelerator.reduce`` when given, else ``torch.distributed`` when initialised;
        a single process gets a plain copy."""
        if self.confusion is None:
            raise RuntimeError('sync() before any update(): give device= so that a process without '
                               'batches still holds a (zero) matrix to reduce')
        out = SegmentationMetric(self.num_classes, self.ignore_index)
        confusion = self.confusion.clone()
        if accelerator is not None:
            confusion = accelerator.reduce(confusion, reduction='sum')
        elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
        out.confusion = confusion
        return out

    def compute(self) -> Dict[str, Union[float, torch.Tensor]]:
        """``pixel_acc``, ``mean_iou``, ``mean_class_acc`` (floats) and per-class ``iou``, ``class_acc``."""
        if self.confusion is None:
            raise RuntimeError('compute() before any update()')
        return segmentation_scores(self.confusion)
