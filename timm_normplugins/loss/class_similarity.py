""" LDA class similarity for MCEL (Negi, Chan & Mahoor, section 4, eq. 12).

Fit linear discriminant analysis (scikit-learn) on the training images (flattened pixels) or on
features of a model, project onto the first lambda = k - 1 discriminant components, take the class
means v_i there, and fill ::

    d_ij = 1 - <v_i, v_j> / (|v_i| |v_j|)          (cosine distance)
    s_ij = 1 / (1 + e^{d_ij})                      (i != j; s_ii = 0)
    A_ij = s_ij / sum_j s_ij                       (rows normalised)

**Symmetry.** The paper says that A is symmetric and hence also column-stochastic. Only S is
symmetric: dividing row i by its own sum r_i gives ``A_ij = s_ij / r_i`` while ``A_ji = s_ij / r_j``,
so A is symmetric (and its columns sum to 1) only when all rows of S have the same sum. Because
s lies in (1/(1+e^2), 1/2] = (0.12, 0.5], the row sums differ by at most a factor of about 4 and A is
*nearly* symmetric; on scikit-learn's digits its column sums range over roughly 0.96-1.04.
``normalize='sinkhorn'`` instead scales S symmetrically, ``A = D S D`` (Sinkhorn-Knopp), which gives a
matrix that really is symmetric, zero-diagonal and doubly stochastic -- the property the paper states.
The default, ``'row'``, is eq. 12 as written.
"""
import json
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import safetensors.torch
import torch

from ..core.checks import check_similarity

__all__ = ['class_similarity', 'similarity_from_class_means', 'save_similarity', 'load_similarity',
           'plot_similarity', 'SIMILARITY_NORMALIZATIONS']

SIMILARITY_NORMALIZATIONS = ('row', 'sinkhorn')
_KEY = 'similarity'


def _sinkhorn_symmetric(S: np.ndarray, tol: float = 1e-12, max_iter: int = 10000) -> np.ndarray:
    # Symmetric Sinkhorn-Knopp: d <- sqrt(d / (S d)) converges to D S D doubly stochastic for a
    # symmetric S with total support (true here: all off-diagonal entries are positive).
    d = np.ones(S.shape[0])
    for _ in range(max_iter):
        d = np.sqrt(d / (S @ d))
        if np.abs(d * (S @ d) - 1).max() < tol:
            break
    A = d[:, None] * S * d[None, :]
    return (A + A.T) / 2  # remove rounding asymmetry


def similarity_from_class_means(means, normalize: str = 'row') -> torch.Tensor:
    """Eq. 12 on given class vectors ``means`` (k, lambda): a (k, k) float32 tensor."""
    if normalize not in SIMILARITY_NORMALIZATIONS:
        raise ValueError(f'normalize must be one of {SIMILARITY_NORMALIZATIONS}, got {normalize!r}')
    V = np.asarray(means.detach().cpu() if torch.is_tensor(means) else means, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] < 2:
        raise ValueError(f'class means must be a (k, lambda) array with k >= 2, got shape {V.shape}')
    norms = np.linalg.norm(V, axis=1)
    if not np.all(norms > 0):
        raise ValueError(f'class means of classes {np.flatnonzero(norms <= 0).tolist()} are zero vectors; '
                         'their cosine distance is undefined')
    Vn = V / norms[:, None]
    d = 1.0 - Vn @ Vn.T
    S = 1.0 / (1.0 + np.exp(d))
    np.fill_diagonal(S, 0.0)
    A = S / S.sum(1, keepdims=True) if normalize == 'row' else _sinkhorn_symmetric(S)
    return torch.from_numpy(A).float()


def _as_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _read_dataset(dataset, labels) -> Tuple[torch.Tensor, np.ndarray]:
    items = [dataset[i] for i in range(len(dataset))]
    xs = torch.stack([torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x for x, _ in items])
    if labels is None:
        labels = getattr(dataset, 'targets', None)
    if labels is None:
        labels = [int(t) for _, t in items]
    return xs, _as_numpy(labels)


@torch.no_grad()
def _model_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device) -> np.ndarray:
    """Penultimate features: timm's ``forward_head(..., pre_logits=True)`` where available."""
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    feats = []
    try:
        for chunk in torch.split(x, batch_size):
            xb = chunk.to(device).float()
            if hasattr(model, 'forward_features') and hasattr(model, 'forward_head'):
                f = model.forward_head(model.forward_features(xb), pre_logits=True)
            else:
                f = model(xb)
            feats.append(f.flatten(1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy()


def class_similarity(data, labels=None, *, num_classes: Optional[int] = None,
                     model: Optional[torch.nn.Module] = None, n_components: Optional[int] = None,
                     normalize: str = 'row', batch_size: int = 256, device=None,
                     max_samples: Optional[int] = None, seed: int = 0, center: bool = True,
                     **lda_kwargs) -> torch.Tensor:
    """The LDA class-similarity matrix of eq. 12.

    Args:
        data: training images (N, ...) as a tensor/array, or a map-style dataset of (image, label).
        labels: (N,) class indices (for a dataset: taken from ``dataset.targets`` or the items if None).
        num_classes: k (default: max label + 1); every class must occur.
        model: if given, LDA runs on its penultimate features (timm ``forward_head(pre_logits=True)``),
            computed in eval mode in batches of ``batch_size`` on ``device``; else on flattened pixels.
        n_components: lambda, the number of discriminant components (default and the paper's: k - 1,
            capped by the feature dimension).
        normalize: ``'row'`` (eq. 12) or ``'sinkhorn'`` (symmetric and doubly stochastic).
        max_samples: fit on a class-stratified random subset of this size (seeded by ``seed``).
        center: project with scikit-learn's ``transform`` (default), which subtracts the training mean
            first; ``False`` is eq. 12 read literally, ``v_i = mean(L X)`` with no centring. The cosines
            of eq. 12 depend on the origin, so the two differ (docs/FDT_MCEL.md).
        **lda_kwargs: passed to ``sklearn.discriminant_analysis.LinearDiscriminantAnalysis``
            (default ``solver='svd'``).

    Returns: (k, k) float32 tensor, row-stochastic with a zero diagonal.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if hasattr(data, '__getitem__') and hasattr(data, '__len__') and not (
            torch.is_tensor(data) or isinstance(data, np.ndarray)):
        data, labels = _read_dataset(data, labels)
    if labels is None:
        raise ValueError('class_similarity needs labels for an image array')
    y = _as_numpy(labels).reshape(-1)
    if y.dtype.kind not in 'iu':
        if y.dtype.kind == 'f' and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f'labels must be integer class indices, got dtype {y.dtype}')
    n = len(data)
    if n != len(y):
        raise ValueError(f'{n} images but {len(y)} labels')
    if y.size and y.min() < 0:
        raise ValueError(f'labels must be >= 0, found {y.min()}')
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if y.max() >= k:
        raise ValueError(f'labels must lie in [0, {k - 1}], found {y.max()}')
    missing = np.setdiff1d(np.arange(k), y)
    if missing.size:
        raise ValueError(f'every class needs training samples for its LDA mean; missing classes {missing.tolist()}')
    if k < 2:
        raise ValueError('a class similarity needs at least 2 classes')

    index = np.arange(n)
    if max_samples is not None and max_samples < n:
        from sklearn.model_selection import train_test_split
        index, _ = train_test_split(index, train_size=max_samples, stratify=y, random_state=seed)
        index = np.sort(index)
    y = y[index]
    if model is not None:
        x = data[torch.as_tensor(index)] if torch.is_tensor(data) else torch.as_tensor(_as_numpy(data)[index])
        X = _model_features(model, x, batch_size, device)
    else:
        X = _as_numpy(data)[index].reshape(len(index), -1).astype(np.float32, copy=False)
    lam = n_components if n_components is not None else min(k - 1, X.shape[1])
    if not 1 <= lam <= min(k - 1, X.shape[1]):
        raise ValueError(f'n_components must lie in [1, {min(k - 1, X.shape[1])}] (k - 1 = {k - 1}, '
                         f'{X.shape[1]} features), got {lam}')
    lda_kwargs.setdefault('solver', 'svd')
    lda = LinearDiscriminantAnalysis(n_components=lam, **lda_kwargs).fit(X, y)
    Z = lda.transform(X) if center else X @ lda.scalings_[:, :lam]
    means = np.stack([Z[y == c].mean(0) for c in range(k)])
    return similarity_from_class_means(means, normalize)


def save_similarity(path: Union[str, Path], similarity: torch.Tensor,
                    class_names: Optional[Sequence[str]] = None) -> Path:
    """Write a checked similarity matrix (and class names, in the metadata) to a safetensors file."""
    A = check_similarity(similarity).float().contiguous().cpu()
    meta = {'format': 'pt', 'timm_normplugins.kind': 'class_similarity'}
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != A.shape[0]:
            raise ValueError(f'{len(class_names)} class names for a {A.shape[0]} x {A.shape[0]} similarity')
        meta['timm_normplugins.class_names'] = json.dumps(class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({_KEY: A}, str(path), metadata=meta)
    return path


def load_similarity(path: Union[str, Path], with_class_names: bool = False):
    """Read a similarity matrix written by :func:`save_similarity` (checked on load).

    Returns the (k, k) tensor, or ``(tensor, class_names or None)`` with ``with_class_names=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'similarity file not found: {path}')
    with safetensors.safe_open(str(path), framework='pt') as f:
        if _KEY not in f.keys():
            raise ValueError(f'{path} holds no {_KEY!r} tensor (keys: {list(f.keys())})')
        A = f.get_tensor(_KEY)
        meta = f.metadata() or {}
    A = check_similarity(A, name=f'similarity in {path}')
    if not with_class_names:
        return A
    names = meta.get('timm_normplugins.class_names')
    return A, (json.loads(names) if names else None)


def plot_similarity(similarity, class_names: Optional[Sequence[str]] = None, path=None,
                    title: str = 'LDA class similarity (eq. 12)', annotate: Optional[bool] = None):
    """A heatmap like the MCEL paper's Figure 2; saved to ``path`` if given. Returns the Figure.

    Uses matplotlib's object API (no pyplot), so it works under any backend, headless included.
    """
    import matplotlib
    from matplotlib.figure import Figure

    A = torch.as_tensor(similarity).detach().cpu().double().numpy()
    k = A.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f'{len(names)} class names for a {k} x {k} similarity')
    size = min(4 + 0.45 * k, 24)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
    # the zero diagonal (the true class, carried by the one-hot part) is greyed out so the colour
    # scale spans the off-diagonal similarities
    off = ~np.eye(k, dtype=bool)
    cmap = matplotlib.colormaps['viridis'].with_extremes(bad='lightgrey')
    im = ax.imshow(np.ma.masked_array(A, mask=~off), cmap=cmap, vmin=A[off].min(), vmax=A[off].max())
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='A[i, j] = r(j | i)')
    ax.set_xticks(range(k), labels=names, rotation=90 if k > 10 or max(map(len, names)) > 4 else 0)
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel('similar class j')
    ax.set_ylabel('true class i')
    ax.set_title(title)
    if annotate if annotate is not None else k <= 20:
        mid = (A[off].max() + A[off].min()) / 2
        for i in range(k):
            for j in range(k):
                ax.text(j, i, 'true' if i == j else f'{A[i, j]:.3f}', ha='center', va='center', fontsize=7,
                        color='black' if i == j or A[i, j] > mid else 'white')
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(str(path), dpi=120)
    return fig
