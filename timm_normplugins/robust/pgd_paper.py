""" The FDT/TN paper's PGD protocol (eq. 6-7) on top of torchattacks' PGD.

Eq. 6 is plain PGD, ``x^{t+1} = Clip_ε(x^t + α·sign(∇f(x^t)))`` with ``x^0`` the clean image,
T = 40 steps and Foolbox's relative step ``α = ε·0.01/0.3``. Eq. 7 counts every iterate as an image:
robust accuracy = mean over images and over t = 1..T of [f(x^t) is correct], not only t = T.

``PaperPGD`` is torchattacks' ``PGD`` (``PaperPGDL2``: ``PGDL2``) unchanged, plus a record of how
many predictions each iterate got right. The loop computes the logits of iterate t at step t+1
anyway (to take its gradient), so the record reads them there; only the final iterate x^T needs an
extra forward pass. Everything therefore comes from one attack run.
"""
from typing import List, Optional

import torch
import torchattacks

__all__ = ['PaperPGD', 'PaperPGDL2', 'paper_pgd', 'FOOLBOX_REL_STEPSIZE', 'PGD_NORMS']

FOOLBOX_REL_STEPSIZE = 0.01 / 0.3  # Foolbox 3's LinfPGD default, the paper's α rule
PGD_NORMS = ('Linf', 'L2')


class _IterateRecorder:
    """Mixin for torchattacks PGD variants whose loop calls ``get_logits`` once per step.

    After a call: ``iterate_correct`` is a ``(T, N)`` tensor, row t−1 holding how many predictions
    of each image's iterate x^t are right (0/1 for classification; right pixels for segmentation,
    where labels < 0 are ignored); ``start_correct`` is the same for x^0 (the clean image, or the
    random start); ``final_pred`` is the prediction on x^T.
    """
    steps: int

    def _init_recorder(self):
        self.supported_mode = ['default']  # targeted modes call get_logits for the target labels
        # leading underscores keep the tensors out of torchattacks' repr
        self._records: Optional[List[torch.Tensor]] = None
        self._record_labels: Optional[torch.Tensor] = None
        self._iterate_correct = self._start_correct = self._final_pred = None

    @property
    def iterate_correct(self) -> Optional[torch.Tensor]:
        return self._iterate_correct

    @property
    def start_correct(self) -> Optional[torch.Tensor]:
        return self._start_correct

    @property
    def final_pred(self) -> Optional[torch.Tensor]:
        return self._final_pred

    def get_logits(self, inputs, labels=None, *args, **kwargs):
        logits = super().get_logits(inputs, labels, *args, **kwargs)
        if self._records is not None:
            pred = logits.detach().argmax(1)
            self._records.append((pred == self._record_labels).flatten(1).sum(1) if pred.dim() > 1
                                 else (pred == self._record_labels).to(torch.int64))
            self._final_pred = pred
        return logits

    def forward(self, images, labels):
        self._records, self._record_labels = [], labels.to(self.device)
        try:
            adv_images = super().forward(images, labels)
            with torch.no_grad():
                self.get_logits(adv_images)  # x^T: the only forward the attack did not need itself
            records = self._records
        finally:
            self._records, self._record_labels = None, None
        if len(records) != self.steps + 1:
            raise RuntimeError(
                f'{type(self).__name__} expected {self.steps + 1} forward passes (one per iterate), saw '
                f'{len(records)}: the torchattacks PGD loop changed, so the iterates cannot be attributed')
        self._start_correct = records[0]
        self._iterate_correct = torch.stack(records[1:])
        return adv_images


class PaperPGD(_IterateRecorder, torchattacks.PGD):
    """L∞ PGD (torchattacks) recording every iterate's correct predictions (eq. 7)."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=40, random_start=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.attack = 'PaperPGD'
        self._init_recorder()


class PaperPGDL2(_IterateRecorder, torchattacks.PGDL2):
    """L2 PGD (torchattacks) recording every iterate's correct predictions (eq. 7)."""

    def __init__(self, model, eps=1.0, alpha=0.2, steps=40, random_start=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.attack = 'PaperPGDL2'
        self._init_recorder()


def paper_pgd(
        model,
        eps: float,
        steps: int = 40,
        rel_stepsize: float = FOOLBOX_REL_STEPSIZE,
        abs_stepsize: Optional[float] = None,
        random_start: bool = False,
        norm: str = 'Linf',
):
    """PGD with Foolbox's step-size rule: ``α = abs_stepsize`` if given, else ``rel_stepsize·ε``.

    ``eps`` and ``abs_stepsize`` are in the units of ``model``'s input (pixels in [0, 1] for a
    ``PixelSpaceModel``). ``random_start=False`` follows eq. 6 (x^0 is the clean image); Foolbox's
    ``LinfPGD`` starts at a uniform random point instead.
    """
    if norm not in PGD_NORMS:
        raise ValueError(f'PGD norm must be one of {PGD_NORMS}, got {norm!r}')
    if steps < 1:
        raise ValueError(f'PGD needs at least one step, got steps={steps}')
    alpha = abs_stepsize if abs_stepsize is not None else rel_stepsize * eps
    cls = PaperPGD if norm == 'Linf' else PaperPGDL2
    return cls(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
