""" LDA class similarity (MCEL section 4, eq. 12), its file format, plot and script. """
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from sklearn.datasets import load_digits

from timm_normplugins.loss import (
    class_similarity, create_loss, load_similarity, plot_similarity, save_similarity, similarity_from_class_means)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def digits():
    d = load_digits()
    return d.images.astype(np.float32), d.target


@pytest.fixture(scope='module')
def digits_A(digits):
    return class_similarity(*digits)


def test_eq12_from_class_means_by_hand():
    V = [[1.0, 0.0], [0.6, 0.8], [-1.0, 0.2]]
    S = [[0.0] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(3):
            if i != j:
                cos = sum(a * b for a, b in zip(V[i], V[j])) / (math.hypot(*V[i]) * math.hypot(*V[j]))
                S[i][j] = 1 / (1 + math.exp(1 - cos))
    hand = [[S[i][j] / sum(S[i]) for j in range(3)] for i in range(3)]
    torch.testing.assert_close(similarity_from_class_means(torch.tensor(V)), torch.tensor(hand))


def test_digits_row_stochastic_zero_diagonal(digits_A):
    A = digits_A
    assert A.shape == (10, 10) and A.dtype == torch.float32
    assert (A >= 0).all()
    torch.testing.assert_close(A.diagonal(), torch.zeros(10))
    torch.testing.assert_close(A.sum(1), torch.ones(10))
    create_loss('mcel', similarity=A, eps=0.2)   # accepted by MCEL as is


def test_digits_visually_similar_digits_are_closest(digits_A):
    A = digits_A

    def top2(i):
        return set(A[i].topk(2).indices.tolist())
    # 1/8 (vertical stroke with a thin body), 2/3 and 3/9 (shared right-hand curves), 4/6 (closed
    # lower loop with a left stroke in 8x8 digits): mutual top-2 neighbours
    for a, b in [(1, 8), (2, 3), (3, 9), (4, 6)]:
        assert b in top2(a) and a in top2(b), (a, b, A[a].tolist())
    off = A + torch.eye(10)                                  # ignore the zero diagonal for argmin
    assert off[3].argmin() == 4 and off[4].argmin() == 3, '3 and 4 share no strokes: least similar'


def test_paper_symmetry_claim(digits_A):
    """Only S is symmetric; after row normalisation A is not, and its columns do not sum to 1."""
    A = digits_A.double()
    assert (A - A.T).abs().max() > 1e-3
    col = A.sum(0)
    assert (col - 1).abs().max() > 0.02 and (col - 1).abs().max() < 0.1   # nearly, not exactly
    # S = A * row_sum(S) is symmetric: A_ij / A_ji = r_j / r_i
    ratio = A / A.T
    ratio.fill_diagonal_(1)
    r = ratio[0]                                 # r_j / r_0
    torch.testing.assert_close(ratio, r.unsqueeze(0) / r.unsqueeze(1), rtol=1e-4, atol=0)


def test_sinkhorn_gives_the_symmetric_doubly_stochastic_matrix(digits):
    A = class_similarity(*digits, normalize='sinkhorn').double()
    torch.testing.assert_close(A, A.T, rtol=0, atol=1e-7)
    torch.testing.assert_close(A.sum(0), torch.ones(10, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(A.sum(1), torch.ones(10, dtype=torch.float64), rtol=0, atol=1e-6)
    assert A.diagonal().abs().max() == 0
    k2 = similarity_from_class_means([[1.0, 0.0], [0.0, 1.0]], normalize='sinkhorn')
    torch.testing.assert_close(k2, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


class TinyNet(torch.nn.Module):
    """timm-style: forward_features -> forward_head(pre_logits=True) gives the penultimate features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 24), torch.nn.Tanh())
        self.head = torch.nn.Linear(24, 10)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_lda_on_model_features(digits):
    images, labels = digits
    net = TinyNet().train()
    A = class_similarity(torch.from_numpy(images), labels, model=net, batch_size=500)
    assert net.training, 'the model is returned in the mode it came in'
    with torch.no_grad():
        feats = net.body(torch.from_numpy(images)).numpy()
    torch.testing.assert_close(A, class_similarity(feats, labels), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(A, class_similarity(images, labels), atol=1e-3), 'features, not pixels'


def test_dataset_input_and_subset(digits):
    images, labels = digits

    class DS(torch.utils.data.Dataset):
        targets = labels[:300].tolist()

        def __len__(self):
            return 300

        def __getitem__(self, i):
            return torch.from_numpy(images[i]), int(labels[i])

    torch.testing.assert_close(class_similarity(DS()), class_similarity(images[:300], labels[:300]))
    A = class_similarity(images, labels, max_samples=500, seed=1)
    torch.testing.assert_close(A.sum(1), torch.ones(10))
    assert not torch.allclose(A, class_similarity(images, labels, max_samples=500, seed=2))


def test_save_load_roundtrip_and_errors(tmp_path, digits_A):
    names = [f'digit {i}' for i in range(10)]
    path = save_similarity(tmp_path / 'sub' / 'A.safetensors', digits_A, class_names=names)
    A, got = load_similarity(path, with_class_names=True)
    assert torch.equal(A, digits_A) and got == names
    assert torch.equal(load_similarity(path), digits_A)
    with pytest.raises(FileNotFoundError):
        load_similarity(tmp_path / 'missing.safetensors')
    safetensors.torch.save_file({'weights': torch.zeros(2)}, str(tmp_path / 'other.safetensors'))
    with pytest.raises(ValueError, match="no 'similarity' tensor"):
        load_similarity(tmp_path / 'other.safetensors')
    safetensors.torch.save_file({'similarity': torch.ones(3, 3)}, str(tmp_path / 'bad.safetensors'))
    with pytest.raises(ValueError, match='zero diagonal'):
        load_similarity(tmp_path / 'bad.safetensors')
    with pytest.raises(ValueError, match='3 class names'):
        save_similarity(tmp_path / 'x.safetensors', digits_A, class_names=['a', 'b', 'c'])


def test_bad_inputs_raise(digits):
    images, labels = digits
    with pytest.raises(ValueError, match=r'missing classes \[9\]'):
        class_similarity(images[labels < 9], labels[labels < 9], num_classes=10)
    with pytest.raises(ValueError, match='1797 images but 10 labels'):
        class_similarity(images, labels[:10])
    with pytest.raises(ValueError, match='n_components'):
        class_similarity(images, labels, n_components=10)
    with pytest.raises(ValueError, match='normalize'):
        class_similarity(images, labels, normalize='column')
    with pytest.raises(TypeError, match='integer class indices'):
        class_similarity(images, labels + 0.5)
    with pytest.raises(ValueError, match='needs labels'):
        class_similarity(images)
    with pytest.raises(ValueError, match='zero vectors'):
        similarity_from_class_means([[0.0, 0.0], [1.0, 0.0]])


def test_script_writes_matrix_and_heatmap(tmp_path):
    spec = importlib.util.spec_from_file_location('class_similarity_script', ROOT / 'scripts' / 'class_similarity.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / 'digits.safetensors'
    A = script.main(['--dataset', 'digits', '--output', str(out)])
    loaded, names = load_similarity(out, with_class_names=True)
    assert torch.equal(loaded, A) and names == [str(i) for i in range(10)]
    png = out.with_suffix('.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
    fig = plot_similarity(A, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names


def test_script_on_an_image_folder_with_class_names(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, base in (('car', 200), ('cat', 50), ('dog', 80)):
        (tmp_path / 'imgs' / c).mkdir(parents=True)
        for i in range(8):
            pixels = rng.normal(base, 30, (8, 8, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / 'imgs' / c / f'{i}.png')
    spec = importlib.util.spec_from_file_location('class_similarity_script', ROOT / 'scripts' / 'class_similarity.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / 'A.safetensors'
    A = script.main(['--dataset', 'imagefolder', '--data-dir', str(tmp_path / 'imgs'), '--output', str(out)])
    _, names = load_similarity(out, with_class_names=True)
    assert names == ['car', 'cat', 'dog']
    assert A[1].argmax() == 2 and A[2].argmax() == 1, 'the two dark classes are each other\'s nearest'


def test_literal_eq12_projects_without_centring(digits):
    """center=False: v_i = mean over class i of L·X (eq. 12 as printed); the default centres first."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    X, y = digits[0].reshape(len(digits[0]), -1), digits[1]
    L = LinearDiscriminantAnalysis(n_components=9, solver='svd').fit(X, y).scalings_[:, :9]
    for center, Z in ((False, X @ L), (True, (X - X.mean(0)) @ L)):
        means = np.stack([Z[y == c].mean(0) for c in range(10)])
        expected = similarity_from_class_means(torch.as_tensor(means))
        torch.testing.assert_close(class_similarity(*digits, center=center), expected, rtol=1e-4, atol=1e-6)
    literal, centred = class_similarity(*digits, center=False), class_similarity(*digits)
    assert (literal - centred).abs().max() > 1e-3  # the choice matters
