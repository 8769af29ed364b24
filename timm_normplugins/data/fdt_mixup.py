""" Full Distribution Training mixer (Fuhl & Kasneci, eq. 2-4, Alg. 2), batch level.

Drop-in for timm's ``mixup_fn`` (same call contract as ``timm.data.Mixup``)::

    mixer = FDTMixup(num_classes=10)
    x, target = mixer(x, y)          # x mixed, target (B, 10) float, every row sums to 1

Every output sample b superimposes n images of pairwise distinct classes with the normalised
harmonic weights ``F_i = (1/i) / sum_{j<=n} 1/j`` (eq. 2) and gets the same weighted sum of their
one-hot labels as target (eq. 3-4):

* **The leading image is sample b itself** (weight F_1, the largest). Each input image therefore
  stays the dominant content of exactly one output, the batch keeps its label distribution, and
  the OV ablation's hard label (``label='hard'``, Table 1: same overlay, Alg. 3 loss) is simply y_b.
* **n** is drawn uniformly from 1..min(C, max_images) per sample (the paper: "randomly up to the
  amount of different classes"; its ``max(C, RND)`` can only mean this), then capped by the number of
  distinct classes present in the batch. ``min_images`` raises the lower end (``min_images=C``:
  every sample superimposes all classes, Alg. 2's ``max(C, RND)`` read literally -- a control, not
  the default). The cap keeps P(n = m) exact for m below it and moves the rest of the mass onto it.
  :class:`FDTDataset` draws partners from the whole dataset instead and has no cap.
* **Partners** follow Alg. 2's ``j = RND(L) | C(j) not in C(GT)``: the i-th partner is a uniformly
  random batch image among those whose class is not used yet. (On a balanced dataset that is a
  uniformly random unused class; within a batch the classes are weighted by their batch counts, as
  Alg. 2 does on an imbalanced dataset.) Alg. 2's loops are written ``i < Amount``; we use n images,
  as eq. 2-4 (sums up to n) say.
* ``prob`` < 1 leaves each sample unmixed (n = 1) with probability 1 - prob.
* ``weights='uniform'`` uses 1/n each, ``'dirichlet'`` a flat Dirichlet draw ("random factor
  selection", the paper's conclusion) sorted so the leading image keeps the largest weight.
* ``label_smoothing`` s as in timm: ``target * (1 - s) + s / C``.
* A batch with a single class (or C = 1, or ``mixup_enabled = False``) is returned unmixed.

Implementation: one (B, B) mixing matrix W per call, ``x_mix = W @ x.flatten(1)`` and
``target[:, y_j] += W[:, j]`` (exact: products with 0 vanish, so an unmixed row copies its image
bit-for-bit). Partners: every image gets a unique random key per row; per class the largest key
picks the representative (``scatter_reduce(amax)``) and classes are drawn in the order of those keys
-- the first occurrences of each class in a uniformly random permutation, which is exactly Alg. 2's
sequential draw. Everything stays on the input's device: no ``.item()``, no data-dependent shapes, no
loop over samples, so nothing waits for the device. Memory O(B^2 + B C). Any dense memory format
(channels_last included) is kept. On the CPU only, when W is sparse (small C), the product runs as a
sparse-dense matmul (there is no device to wait for, and it skips the zeros).

Randomness: ``seed=...`` (a private ``torch.Generator`` per device; ``state_dict()`` saves it, so
``accelerator.register_for_checkpointing(mixer)`` resumes it), ``generator=...`` (yours), or neither
(torch's global RNG, which ``torch.manual_seed`` and Accelerate's checkpoints already cover).
"""
from typing import Dict, Optional

import torch

from ..core.checks import check_labels
from .fdt_options import FDT_LABELS, FDT_WEIGHTS, FDTOptions, FDTOptionsAttributes

__all__ = ['FDTMixup', 'FDT_WEIGHTS', 'FDT_LABELS', 'fdt_weights']



def fdt_weights(n: int, weights: str = 'harmonic', dtype=torch.float64) -> torch.Tensor:
    """The n mixing weights F_1..F_n of a deterministic series (eq. 2 for ``'harmonic'``)."""
    if n < 1:
        raise ValueError(f'a mixture needs n >= 1 images, got {n}')
    if weights == 'harmonic':
        w = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    elif weights == 'uniform':
        w = torch.ones(n, dtype=torch.float64)
    else:
        raise ValueError(f"fixed weight series are 'harmonic' or 'uniform', got {weights!r}")
    return (w / w.sum()).to(dtype)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _use_sparse(x: torch.Tensor, n_mean: float) -> bool:
    """CPU only: a sparse W (expected density n_mean/B below 10%) is multiplied as COO.

    On a CPU a dense (B, B) x (B, D) GEMM costs B/n times the useful work, and finding the nonzeros
    (data-dependent) costs nothing there; on accelerators the dense GEMM keeps shapes static.
    """
    return (x.device.type == 'cpu' and x.dtype in (torch.float32, torch.float64)
            and n_mean < 0.1 * x.shape[0])


def _batch_matmul(W: torch.Tensor, x: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """``out[b] = sum_j W[b, j] x[j]`` keeping x's memory format (no layout copy for channels_last)."""
    B = x.shape[0]
    W = W.to(x.dtype)

    def mm(flat):
        return torch.sparse.mm(W.to_sparse(), flat) if sparse else W @ flat

    if x.is_contiguous():
        return mm(x.reshape(B, -1)).view(x.shape)
    for fmt, perm, inv in ((torch.channels_last, (0, 2, 3, 1), (0, 3, 1, 2)),
                           (torch.channels_last_3d, (0, 2, 3, 4, 1), (0, 4, 1, 2, 3))):
        if x.dim() == len(perm) and x.is_contiguous(memory_format=fmt):
            xp = x.permute(perm)  # a contiguous view in memory order
            return mm(xp.reshape(B, -1)).view(xp.shape).permute(inv)
    return mm(x.reshape(B, -1)).view(x.shape)  # reshape copies a non-dense layout once


class FDTMixup(FDTOptionsAttributes):
    """Full Distribution Training for a batch, in timm's Mixup slot (see the module docstring).

    Args:
        num_classes: C, the number of classes (targets are (B, C)).
        prob: probability that a sample is mixed (else n = 1).
        weights: ``'harmonic'`` (eq. 2), ``'uniform'`` or ``'dirichlet'`` (flat, sorted).
        label: ``'soft'`` (FDT, eq. 4) or ``'hard'`` (OV: one-hot label of the leading image).
        label_smoothing: timm-style smoothing of the returned targets.
        max_images: upper end of n's uniform range (default C).
        min_images: lower end of n's uniform range (default 1; C superimposes every class, a control).
        seed / generator: reproducible randomness (see the module docstring); at most one of them.
        validate: check label ranges (None: on CPU tensors only, where it costs no device sync).

    ``mixup_enabled`` (attribute) switches mixing off for an epoch, like timm's Mixup.
    """

    def __init__(self, num_classes: int = 1000, prob: float = 1.0, weights: str = 'harmonic',
                 label: str = 'soft', label_smoothing: float = 0.0, max_images: Optional[int] = None,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 validate: Optional[bool] = None, min_images: int = 1):
        self.options = FDTOptions(num_classes, prob, weights, label, label_smoothing, max_images, min_images)
        if seed is not None and generator is not None:
            raise ValueError('give either seed or generator, not both')
        self.seed = seed
        self.generator = generator
        self.validate = validate
        self.mixup_enabled = True  # set to False to disable mixing (intended to be set by train loop)
        self._generators: Dict[str, torch.Generator] = {}
        self._tables: Dict[tuple, torch.Tensor] = {}

    # --- randomness -------------------------------------------------------------------------------
    def _rng(self, device: torch.device) -> Optional[torch.Generator]:
        if self.generator is not None:
            if not _same_device(self.generator.device, device):
                raise ValueError(f'the generator is on {self.generator.device} but the batch is on {device}')
            return self.generator
        if self.seed is None:
            return None
        g = self._generators.get(str(device))
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[str(device)] = g
        return g

    def state_dict(self) -> dict:
        gens = dict(self._generators)
        if self.generator is not None:
            gens['user'] = self.generator
        return {'mixup_enabled': self.mixup_enabled, 'generators': {k: g.get_state() for k, g in gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.mixup_enabled = bool(state.get('mixup_enabled', True))
        for key, s in state.get('generators', {}).items():
            if key == 'user':
                if self.generator is None:
                    raise ValueError('the state holds a user generator but this mixer has none')
                self.generator.set_state(s)
            else:
                g = torch.Generator(device=key)
                g.set_state(s)
                self._generators[key] = g

    # --- the mixing plan --------------------------------------------------------------------------
    def _weight_table(self, dtype, device) -> torch.Tensor:
        """(n_max + 1, n_max): row n holds F_1..F_n, zeros after (row 0 unused: index by n directly)."""
        key = (self.weights, self.n_max, dtype, str(device))
        t = self._tables.get(key)
        if t is None:
            t = torch.zeros(self.n_max + 1, self.n_max, dtype=torch.float64)
            for n in range(1, self.n_max + 1):
                t[n, :n] = fdt_weights(n, self.weights)
            t = t.to(device=device, dtype=dtype)
            self._tables[key] = t
        return t

    def _rank_weights(self, n: torch.Tensor, dtype, g) -> torch.Tensor:
        """(B, n_max) weights by rank (0 = leading image) for each sample's n."""
        if self.weights != 'dirichlet':
            return self._weight_table(dtype, n.device).index_select(0, n)
        B, m = n.shape[0], self.n_max
        u = torch.rand(B, m, generator=g, device=n.device, dtype=torch.float64)
        # Exp(1) draws, normalised -> flat Dirichlet over the first n entries (clamped: never all 0)
        e = (-torch.log1p(-u)).clamp_min(torch.finfo(torch.float64).tiny)
        e = torch.where(torch.arange(m, device=n.device) < n.unsqueeze(1), e, torch.zeros((), dtype=e.dtype,
                                                                                          device=n.device))
        w = (e / e.sum(1, keepdim=True)).sort(dim=1, descending=True).values
        return w.to(dtype)

    def sample_plan(self, y: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """The (B, B) mixing matrix: row b holds the weights of the images summed into sample b."""
        B, C, device = y.shape[0], self.num_classes, y.device
        g = self._rng(device)
        if not self.mixup_enabled or B == 0 or self.n_max == 1 or self.mix_prob == 0.0:
            return torch.eye(B, dtype=dtype, device=device)
        n = torch.randint(self.min_images, self.n_max + 1, (B,), generator=g, device=device)
        if self.mix_prob < 1.0:
            mixed = torch.rand(B, generator=g, device=device) < self.mix_prob
            n = torch.where(mixed, n, torch.ones((), dtype=n.dtype, device=device))
        present = torch.zeros(C, dtype=torch.bool, device=device).index_fill_(0, y, True)
        n = torch.minimum(n, present.sum())  # own class + distinct other classes available
        w_rank = self._rank_weights(n, dtype, g)                                # (B, n_max)

        # Alg. 2 as random keys: in row b every image j gets a unique random key (low bits = j, so no
        # ties); per class the image with the largest key represents it, and classes are drawn in the
        # order of their representatives' keys -- exactly the first occurrences of each class in a
        # uniformly random permutation, i.e. Alg. 2's sequential "random image of an unused class".
        # b's own class gets key -1, like absent classes, so it sorts behind the K - 1 classes it can
        # draw: its rank is >= K >= n and it is never taken. In-place updates keep temporaries few.
        y_row = y.expand(B, B)
        keys = torch.randint(0, 2 ** 40, (B, B), generator=g, device=device).mul_(B).add_(
            torch.arange(B, device=device))
        keys.masked_fill_(y_row == y.unsqueeze(1), -1)
        best = torch.full((B, C), -1, dtype=keys.dtype, device=device).scatter_reduce_(
            1, y_row, keys, 'amax')                                            # (B, C) representative key
        order = best.argsort(dim=1, descending=True)                           # classes, drawn first first
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(1, C + 1, device=device).expand(B, C))
        rank = rank.gather(1, y_row)                                           # j's position if drawn, 1-based
        take = (keys == best.gather(1, y_row)).logical_and_(rank < n.unsqueeze(1))
        W = w_rank.gather(1, rank.clamp_(max=self.n_max - 1)).mul_(take)
        W.diagonal().add_(w_rank[:, 0])
        return W

    def targets(self, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Soft (``W @ onehot(y)``, eq. 4) or hard (one-hot y, OV) targets, label-smoothed."""
        target = torch.zeros(y.shape[0], self.num_classes, dtype=W.dtype, device=W.device)
        if self.label == 'soft':
            target.index_add_(1, y, W)          # target[:, y_j] += W[:, j] (one nonzero per class: exact)
        else:
            target.scatter_(1, y.unsqueeze(1), 1.0)
        if self.label_smoothing > 0:
            target.mul_(1.0 - self.label_smoothing).add_(self.label_smoothing / self.num_classes)
        return target

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f'FDTMixup mixes floating-point images, got {getattr(x, "dtype", type(x))}')
        if x.dim() < 2:
            raise ValueError(f'x must be a batch (B, ...), got shape {tuple(x.shape)}')
        if not torch.is_tensor(y) or y.dim() != 1:
            raise ValueError(f'FDTMixup needs class indices of shape (B,), got '
                             f'{tuple(y.shape) if torch.is_tensor(y) else type(y)}')
        if y.shape[0] != x.shape[0]:
            raise ValueError(f'{x.shape[0]} images but {y.shape[0]} labels')
        check_labels(y, self.num_classes, validate=self.validate)
        return y.to(device=x.device, dtype=torch.long, non_blocking=True)

    def apply_plan(self, x: torch.Tensor, y: torch.Tensor, W: torch.Tensor):
        """Mix ``x`` and build the targets for a plan from :meth:`sample_plan`."""
        tdtype = torch.promote_types(x.dtype, torch.float32)
        return _batch_matmul(W, x, _use_sparse(x, (self.min_images + self.n_max) / 2)), self.targets(y, W.to(tdtype))

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        y = self._check_batch(x, y)
        tdtype = torch.promote_types(x.dtype, torch.float32)
        W = self.sample_plan(y, tdtype)
        if not self.mixup_enabled or x.shape[0] == 0:
            return x, self.targets(y, W)
        return self.apply_plan(x, y, W)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, prob={self.mix_prob}, '
                f'weights={self.weights!r}, label={self.label!r}, label_smoothing={self.label_smoothing}, '
                f'max_images={self.max_images}, min_images={self.min_images})')
