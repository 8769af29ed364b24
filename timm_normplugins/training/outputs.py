""" A run folder: checkpoints, args.yaml, metrics.csv, summary.json, curves.png and resumable state.

State is saved atomically: Accelerate writes ``state/epoch_K.partial``, which is renamed to
``state/epoch_K`` once complete, and only then does ``state/LATEST`` (replaced atomically) point to it;
older epochs are removed afterwards. A kill at any moment leaves ``LATEST`` naming a complete state.
"""
import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from ..checkpoint import save_model
from .config import ConfigError, args_to_yaml

__all__ = ['RunOutputs', 'plot_curves', 'write_atomic']


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def _default_experiment(args) -> str:
    extras = [f'{k}{v}' for k, v in (('', getattr(args, 'weight_reparam', 'none')),
                                      ('err_', getattr(args, 'error_norm', 'none'))) if v != 'none']
    return '-'.join([args.dataset, args.model, *extras, args.opt, args.mixup, args.loss, f's{args.seed}'])


class RunOutputs:
    def __init__(self, args, accelerator):
        self.args, self.accelerator = args, accelerator
        resume_run = self._resume_run_dir() if args.resume else None
        if args.experiment:
            self.run_dir = Path(args.output) / args.experiment
        else:
            self.run_dir = resume_run or Path(args.output) / _default_experiment(args)
        if resume_run is not None:
            self._check_resume(resume_run)
        elif (self.run_dir / 'state' / 'LATEST').exists():
            raise ConfigError(f'{self.run_dir} already holds a run; continue it with --resume {self.run_dir} '
                              'or choose another --experiment')
        if accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run_dir / 'args.yaml', args_to_yaml(args))
        accelerator.wait_for_everyone()

    # --- resume -------------------------------------------------------------------------------------------
    def _resume_run_dir(self) -> Path:
        path = Path(self.args.resume)
        for candidate in (path, path.parent, path.parent.parent):
            if (candidate / 'state' / 'LATEST').exists():
                return candidate
        raise ConfigError(f'--resume {path}: no saved state found (expected {path}/state/LATEST)')

    def _check_resume(self, run: Path) -> None:
        saved = yaml.safe_load((run / 'args.yaml').read_text()) if (run / 'args.yaml').exists() else {}
        # (the reparametrisation changes the state's keys, so it must match too)
        for key in ('model', 'dataset', 'num_classes', 'model_kwargs', 'weight_reparam', 'weight_reparam_scope'):
            if key in saved and saved[key] != getattr(self.args, key):
                raise ConfigError(f'--resume {run}: that run trained {key}={saved[key]!r}, this one asks for '
                                  f'{getattr(self.args, key)!r}')

    def resume_state_dir(self) -> Path:
        run = self._resume_run_dir()
        return run / 'state' / (run / 'state' / 'LATEST').read_text().strip()

    # --- per epoch ----------------------------------------------------------------------------------------
    def save_epoch(self, model, progress) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            row = progress.history[-1]
            meta = {k: str(v) for k, v in row.items()}
            save_model(unwrapped, self.run_dir / 'model.safetensors', metadata=meta)
            if progress.is_best:
                save_model(unwrapped, self.run_dir / 'model_best.safetensors', metadata=meta)
            self._write_metrics(progress)
        self._save_state(progress.epoch)

    def _save_state(self, epoch: int) -> None:
        acc = self.accelerator
        state_root = self.run_dir / 'state'
        partial = state_root / f'epoch_{epoch}.partial'
        if acc.is_main_process and partial.exists():
            shutil.rmtree(partial)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            final = state_root / f'epoch_{epoch}'
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            write_atomic(state_root / 'LATEST', final.name)
            for old in state_root.glob('epoch_*'):
                if old.name != final.name:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _write_metrics(self, progress) -> None:
        rows = progress.history
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.run_dir / 'metrics.csv', buf.getvalue())
        self._write_summary(progress, None)
        plot_curves(rows, self.run_dir / 'curves.png')

    def _write_summary(self, progress, robust: Optional[Dict[str, Any]]) -> None:
        import timm
        import torch

        from ..version import __version__
        summary = dict(
            run_dir=str(self.run_dir), epochs_done=progress.epoch, last=progress.history[-1], best=progress.best,
            robustness=robust, args=yaml.safe_load(args_to_yaml(self.args)),
            versions=dict(timm_normplugins=__version__, torch=torch.__version__, timm=timm.__version__),
            processes=self.accelerator.num_processes)
        write_atomic(self.run_dir / 'summary.json', json.dumps(summary, indent=2))

    def finish(self, progress, robust: Optional[Dict[str, Any]]) -> None:
        if self.accelerator.is_main_process:
            self._write_summary(progress, robust)
        self.accelerator.wait_for_everyone()


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
    fig.suptitle(title or path.parent.name, fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(path.name + '.tmp.png')
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
