""" Pieces of the training loop that are not model-specific: seeding, validation, progress. """
import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from timm.utils import accuracy

__all__ = ['seed_epoch', 'evaluate', 'TrainProgress', 'use_cpu_cores']


def use_cpu_cores(accelerator) -> None:
    """On CPU, give each process its share of the cores.

    ``accelerate launch`` without ``--cpu`` sets OMP_NUM_THREADS=1 for every process (its thread tuning
    only runs with ``--cpu``), which makes a single-process CPU run use one core. An OMP_NUM_THREADS other
    than Accelerate's 1 is the user's choice and kept.
    """
    import os
    if accelerator.device.type != 'cpu' or os.environ.get('OMP_NUM_THREADS') != '1' \
            or 'ACCELERATE_MIXED_PRECISION' not in os.environ:
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))


def seed_epoch(seed: int, epoch: int, loader, dataset) -> None:
    """Make an epoch's randomness (shuffle, augmentation, mixing) a function of (seed, epoch) only.

    That is what makes a resumed run identical to an uninterrupted one: nothing depends on how many
    random numbers earlier epochs drew. DataLoader workers are seeded from torch's RNG when an epoch's
    iterator starts; without workers the Albumentations pipeline's own RNG is reseeded here.

    With several processes, Accelerate gives the prepared loader a shuffling generator of its own
    (``synchronized_generator``, seeded once at ``prepare`` and not part of the saved state), so it is
    reseeded here too, from a draw of the freshly seeded global RNG -- as a single-process
    ``RandomSampler`` seeds itself.
    """
    set_seed(seed * 1000 + epoch)
    generator = getattr(loader, 'synchronized_generator', None)
    if generator is not None:
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    if hasattr(loader, 'set_epoch'):
        loader.set_epoch(epoch)
    transform = getattr(dataset, 'transform', None)
    if getattr(loader, 'num_workers', 0) == 0 and hasattr(transform, 'set_random_seed'):
        transform.set_random_seed(seed * 1000 + epoch)


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: Optional[int]):
    """Per-sample confusion matrices (B, K, K): fixed-size, so they gather across processes."""
    b = target.shape[0]
    pred, target = pred.reshape(b, -1), target.reshape(b, -1)
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    idx = (target.clamp(0, num_classes - 1) * num_classes + pred) + (
        torch.arange(b, device=target.device)[:, None] * num_classes * num_classes)
    counts = torch.bincount(idx[valid], minlength=b * num_classes * num_classes)
    return counts.view(b, num_classes, num_classes)


@torch.no_grad()
def evaluate(model, loader, accelerator, task: str, num_classes: int, ignore_index: Optional[int] = None):
    """Top-1/top-5 and loss (classification) or pixel accuracy and mIoU (segmentation).

    Everything is gathered with ``gather_for_metrics``, which drops the samples Accelerate repeats to
    even out the last batch across processes: each validation sample is counted exactly once.
    """
    model.eval()
    if task == 'seg':
        from ..metrics import segmentation_scores
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=accelerator.device)
        for x, mask in loader:
            with accelerator.autocast():
                pred = model(x).argmax(1)
            confusion += accelerator.gather_for_metrics(_confusion(pred, mask, num_classes, ignore_index)).sum(0)
        scores = segmentation_scores(confusion.cpu())
        return dict(val_pixel_acc=100 * float(scores['pixel_acc']), val_miou=100 * float(scores['mean_iou']),
                    val_count=int(confusion.sum()))
    loss_sum, correct1, correct5, count = 0.0, 0.0, 0.0, 0
    k = min(5, num_classes)
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        logits, y = accelerator.gather_for_metrics((logits.float(), y))
        loss_sum += F.cross_entropy(logits, y, reduction='sum').item()
        top1, topk = accuracy(logits, y, topk=(1, k))
        correct1 += top1.item() * y.shape[0] / 100
        correct5 += topk.item() * y.shape[0] / 100
        count += y.shape[0]
    return dict(val_loss=loss_sum / count, val_top1=100 * correct1 / count, val_top5=100 * correct5 / count,
                val_count=count)


class TrainProgress:
    """Epoch counter, metric history and best score; saved in the Accelerate state for --resume."""

    def __init__(self):
        self.epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.resumed_at = 0
        self.is_best = False

    @staticmethod
    def score(row: Dict[str, Any], task: str) -> float:
        return row['val_miou'] if task == 'seg' else row['val_top1']

    def end_epoch(self, row: Dict[str, Any], task: str) -> None:
        self.history.append(row)
        self.epoch = row['epoch']
        # a non-finite score is never best (the guard stops such runs first; this holds regardless)
        score = self.score(row, task)
        self.is_best = math.isfinite(score) and (self.best is None or score > self.score(self.best, task))
        if self.is_best:
            self.best = dict(row)

    def log_line(self) -> str:
        row = self.history[-1]
        shown = [f'epoch {row["epoch"]:3d}', f'lr {row["lr"]:.4g}', f'train_loss {row["train_loss"]:.4f}']
        if row.get('skipped_steps'):
            shown.append(f'skipped_steps {row["skipped_steps"]}')
        shown += [f'{k} {v:.2f}' for k, v in row.items()
                  if k.startswith('val_') and k != 'val_count' and isinstance(v, float)]
        shown.append(f'{row["epoch_time"]:.1f}s')
        return '  '.join(shown) + ('  *best*' if self.is_best else '')

    def state_dict(self) -> Dict[str, Any]:
        return dict(epoch=self.epoch, history=self.history, best=self.best)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch, self.history, self.best = state['epoch'], list(state['history']), state['best']
        self.resumed_at = self.epoch
