""" The FDT/TN paper's PGD protocol (eq. 6-7) on top of torchattacks' PGD.

Eq. 6 is plain PGD, ``x^{t+1} = Clip_ε(x^t + α·sign(∇f(x^t)))`` with ``x^0`` the clean image,
T = 40 steps and Foolbox's relative step ``α = ε·0.01/0.3``. Eq. 7 counts every iterate as an image:
robust accuracy = mean over images and over t = 1..T of [f(x^t) is correct], not only t = T.

Eq. 6 has no valid-pixel clamp: the iterates may leave [0, 1] by up to ε. torchattacks clamps every
iterate to [0, 1]; ``clamp=False`` (the default here, the paper's eq. 6) runs the same loop without that
clamp, ``clamp=True`` runs torchattacks' ``PGD`` (``PaperPGDL2``: ``PGDL2``) unchanged. The two differ
only where pixels sit within ε of 0 or 1 (docs/ROBUSTNESS.md).

Both record how many predictions each iterate got right. The loop computes the logits of iterate t at step t+1
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
            adv_images = super().forward(images, labels) if self.clamp else self._eq6_forward(images, labels)
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

    def _eq6_forward(self, images, labels):
        """torchattacks' PGD loop without the clamp to [0, 1]: x^{t+1} = Proj_ε(x^t + step(∇))."""
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        loss = torch.nn.CrossEntropyLoss()
        adv_images = images + self._project(self._random_delta(images)) if self.random_start else images.clone()
        for _ in range(self.steps):
            adv_images.requires_grad_(True)
            cost = loss(self.get_logits(adv_images), labels)
            grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
            adv_images = images + self._project(adv_images.detach() + self._ascent(grad) - images)
        return adv_images.detach()


class PaperPGD(_IterateRecorder, torchattacks.PGD):
    """L∞ PGD recording every iterate's correct predictions (eq. 7); ``clamp``: torchattacks' [0, 1] clamp."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=40, random_start=False, clamp=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.attack = 'PaperPGD'
        self.clamp = clamp
        self._init_recorder()

    def _ascent(self, grad):
        return self.alpha * grad.sign()

    def _project(self, delta):
        return delta.clamp(-self.eps, self.eps)

    def _random_delta(self, images):
        return torch.empty_like(images).uniform_(-self.eps, self.eps)


class PaperPGDL2(_IterateRecorder, torchattacks.PGDL2):
    """L2 PGD recording every iterate's correct predictions (eq. 7); ``clamp``: torchattacks' [0, 1] clamp."""

    def __init__(self, model, eps=1.0, alpha=0.2, steps=40, random_start=False, clamp=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.attack = 'PaperPGDL2'
        self.clamp = clamp
        self._init_recorder()

    def _norms(self, t):
        return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))

    def _ascent(self, grad):
        return self.alpha * grad / (self._norms(grad) + self.eps_for_division)

    def _project(self, delta):
        return delta * torch.clamp(self.eps / self._norms(delta), max=1.0)

    def _random_delta(self, images):  # torchattacks' PGDL2 start: uniform radius, normal direction
        delta = torch.empty_like(images).normal_()
        return delta / self._norms(delta) * torch.zeros_like(self._norms(delta)).uniform_(0, 1) * self.eps


def paper_pgd(
        model,
        eps: float,
        steps: int = 40,
        rel_stepsize: float = FOOLBOX_REL_STEPSIZE,
        abs_stepsize: Optional[float] = None,
        random_start: bool = False,
        norm: str = 'Linf',
        clamp: bool = False,
):
    """PGD with Foolbox's step-size rule: ``α = abs_stepsize`` if given, else ``rel_stepsize·ε``.

    ``eps`` and ``abs_stepsize`` are in the units of ``model``'s input (pixels in [0, 1] for a
    ``PixelSpaceModel``). ``random_start=False`` follows eq. 6 (x^0 is the clean image); Foolbox's
    ``LinfPGD`` starts at a uniform random point instead. ``clamp=False`` follows eq. 6 (iterates may
    leave [0, 1]); ``clamp=True`` keeps them valid pixels, as torchattacks (and Foolbox) do.
    """
    if norm not in PGD_NORMS:
        raise ValueError(f'PGD norm must be one of {PGD_NORMS}, got {norm!r}')
    if steps < 1:
        raise ValueError(f'PGD needs at least one step, got steps={steps}')
    alpha = abs_stepsize if abs_stepsize is not None else rel_stepsize * eps
    cls = PaperPGD if norm == 'Linf' else PaperPGDL2
    return cls(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, clamp=clamp)
