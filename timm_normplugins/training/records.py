""" What a run reports after each epoch: metrics.csv, summary.json and curves.png (written atomically). """
import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .atomic import write_atomic

__all__ = ['write_metrics', 'write_summary', 'plot_curves']


def write_metrics(run_dir: Path, rows: List[Dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))  # a resumed older run may lack new columns
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval='')
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / 'metrics.csv', buf.getvalue())
    write_atomic(run_dir / 'curves.png', lambda tmp: plot_curves(rows, tmp, title=run_dir.name))


def write_summary(run_dir: Path, status: str, progress, args: Dict[str, Any], processes: int,
                  robust: Optional[Dict[str, Any]] = None, nonfinite: Optional[Dict[str, Any]] = None) -> None:
    import timm
    import torch

    from ..version import __version__
    summary = dict(
        run_dir=str(run_dir), status=status, epochs_done=progress.epoch,
        last=progress.history[-1] if progress.history else None, best=progress.best,
        robustness=robust, nonfinite_loss=nonfinite, args=args,
        versions=dict(timm_normplugins=__version__, torch=torch.__version__, timm=timm.__version__),
        processes=processes)
    write_atomic(run_dir / 'summary.json', json.dumps(summary, indent=2))


def plot_curves(rows, path: Path, title: Optional[str] = None) -> None:
    """Training curves a person reads at a glance; markers on every epoch, so a 1-epoch run shows too.

    One panel per kind of number: the training objective (whatever ``--loss`` is, on mixed batches: FDT's
    summed loss is ~12 and would flatten a cross-entropy drawn on the same axis), the validation
    cross-entropy, the validation scores (%) and the learning rate as logged per epoch (log scale).
    The title is ``title`` or the run folder's name (dataset, model, optimizer, mixing, loss, seed).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = [r['epoch'] for r in rows]
    line = dict(marker='o', markersize=4)
    panels = [('train_loss', 'training objective (--loss)', None)]
    if 'val_loss' in rows[0]:
        panels.append(('val_loss', 'validation cross-entropy', None))
    panels += [('scores', 'validation scores', '%'), ('lr', 'learning rate', None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (key, label, unit) in zip(axes[0], panels):
        if key == 'scores':
            for score, name in (('val_top1', 'top-1'), ('val_top5', 'top-5'), ('val_pixel_acc', 'pixel acc'),
                                ('val_miou', 'mIoU')):
                if score in rows[0]:
                    ax.plot(epochs, [r[score] for r in rows], label=name, **line)
            ax.legend(fontsize=8)
        else:
            ax.plot(epochs, [r[key] for r in rows], **line)
        if key == 'lr':
            ax.set_yscale('log')
        ax.set_title(label, fontsize=10)
        ax.set_xlabel('epoch')
        if unit:
            ax.set_ylabel(unit)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)  # whole epochs, also for a single one
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or Path(path).parent.name, fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format='png')  # format: the temporary's name does not end in .png
    finally:
        plt.close(fig)
