""" Losses against hand computations written from the papers (Alg. 3/4, MCEL eq. 4/6/9/10/11). """
import math

import pytest
import torch
import torch.nn.functional as F

from timm_normplugins.loss import (
    GMCELoss, MCELoss, SGMCELoss, create_loss, fdt_loss, list_losses, loss_param_groups, save_similarity,
    uniform_similarity)


def softmax_rows(P):
    """Eq. 5, per row, in plain Python."""
    out = []
    for row in P.tolist():
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        out.append([v / s for v in e])
    return torch.tensor(out, dtype=torch.float64)


def alg3(P, labels):
    """Alg. 3 loop: loss L and error E (the gradient w.r.t. the logits)."""
    B, Y = P.shape
    PS = softmax_rows(P)
    scale, L, E = 1.0 / B, 0.0, torch.zeros(B, Y, dtype=torch.float64)
    for b in range(B):
        for y in range(Y):
            if y == labels[b]:
                L += scale * -math.log(PS[b, y])
                E[b, y] = scale * (PS[b, y] - 1)
            else:
                E[b, y] = scale * PS[b, y]
    return L, E


def alg4(P, GT, eps=1e-6):
    """Alg. 4 loop: loss L (sum of -log p over present classes) and error E = (P_S - GT)/B."""
    B, Y = P.shape
    PS = softmax_rows(P)
    scale, L, E = 1.0 / B, 0.0, torch.zeros(B, Y, dtype=torch.float64)
    for b in range(B):
        for y in range(Y):
            if GT[b, y] > eps:
                L += scale * -math.log(PS[b, y])
                E[b, y] = scale * (PS[b, y] - GT[b, y])
            else:
                E[b, y] = scale * PS[b, y]
    return L, E


def random_similarity(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.rand(k, k, generator=g, dtype=torch.float64) + 0.1
    S.fill_diagonal_(0)
    return S / S.sum(1, keepdim=True)


def logits_labels(B=5, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, generator=g, dtype=torch.float64) * 2, torch.randint(0, C, (B,), generator=g)


def soft_targets(B=5, C=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = torch.rand(B, C, generator=g, dtype=torch.float64)
    T[T < 0.4] = 0
    T[:, 0] += 0.1
    return T / T.sum(1, keepdim=True)


# --- Alg. 3 --------------------------------------------------------------------------------------

def test_ce_matches_alg3_value_and_error():
    P, y = logits_labels()
    P.requires_grad_(True)
    loss = create_loss('ce')(P, y)
    loss.backward()
    L, E = alg3(P.detach(), y.tolist())
    assert loss.item() == pytest.approx(L, rel=1e-12)
    torch.testing.assert_close(P.grad, E, rtol=0, atol=1e-12)
    # one-hot rows (OV targets, timm mixers switched off) give the same
    P2 = P.detach().clone().requires_grad_(True)
    create_loss('ce')(P2, F.one_hot(y, 4).double()).backward()
    torch.testing.assert_close(P2.grad, E, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: create_loss('ce')(z, y), (P.detach().requires_grad_(),))


def test_ce_per_pixel_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 3, (2, 4, 5), generator=g)
    lab[0, 0, :] = 255
    loss = create_loss('ce', ignore_index=255)(z, lab)
    logp = torch.log_softmax(z.detach(), 1)
    terms = [-logp[b, lab[b, i, j], i, j] for b in range(2) for i in range(4) for j in range(5) if lab[b, i, j] != 255]
    assert loss.item() == pytest.approx(sum(terms).item() / len(terms), rel=1e-12)
    assert torch.autograd.gradcheck(lambda t: create_loss('ce', ignore_index=255)(t, lab), (z,))


def test_soft_ce_hand_and_gradcheck():
    P, _ = logits_labels()
    T = soft_targets()
    loss = create_loss('soft_ce')(P, T)
    hand = -(T * torch.log(softmax_rows(P))).sum() / P.shape[0]
    assert loss.item() == pytest.approx(hand.item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda z: create_loss('soft_ce')(z, T), (P.clone().requires_grad_(),))
    with pytest.raises(ValueError, match='soft targets'):
        create_loss('soft_ce')(P, torch.zeros(5, dtype=torch.long))


# --- Alg. 4 --------------------------------------------------------------------------------------

def test_fdt_value_and_gradient_follow_alg4():
    P, _ = logits_labels()
    T = soft_targets()
    P.requires_grad_(True)
    loss = create_loss('fdt')(P, T)
    loss.backward()
    L, E = alg4(P.detach(), T)
    assert loss.item() == pytest.approx(L, rel=1e-12)
    torch.testing.assert_close(P.grad, E, rtol=0, atol=1e-12)
    # the gradient is exactly (softmax - GT)/B, i.e. soft_ce's gradient (rows sum to 1) ...
    torch.testing.assert_close(P.grad, (softmax_rows(P.detach()) - T) / 5, rtol=0, atol=1e-12)
    P2 = P.detach().clone().requires_grad_(True)
    create_loss('soft_ce')(P2, T).backward()
    torch.testing.assert_close(P.grad, P2.grad, rtol=0, atol=1e-12)
    # ... but not the derivative of the reported value (the paper's value and gradient differ)
    # d/dz_i sum_{a present} -log p_a = m p_i - [i present] (m = number of present classes)
    m = (T > 1e-6).sum(1, keepdim=True)
    value_grad = (m * softmax_rows(P.detach()) - (T > 1e-6).double()) / 5
    numeric = torch.zeros_like(value_grad)
    for idx in [(b, c) for b in range(5) for c in range(4)]:      # finite differences of the value
        Pp, Pm = P.detach().clone(), P.detach().clone()
        Pp[idx] += 1e-6
        Pm[idx] -= 1e-6
        numeric[idx] = (fdt_loss(Pp, T) - fdt_loss(Pm, T)) / 2e-6
    torch.testing.assert_close(numeric, value_grad, rtol=0, atol=1e-7)
    assert (m > 1).any() and (numeric - P.grad).abs().max() > 1e-2


def test_fdt_reductions_onehot_and_low_precision():
    P, y = logits_labels()
    T = soft_targets()
    per = create_loss('fdt', reduction='none')(P, T)
    hand = torch.stack([-torch.log(softmax_rows(P[b:b + 1]))[0][T[b] > 1e-6].sum() for b in range(5)])
    torch.testing.assert_close(per, hand, rtol=1e-12, atol=1e-12)
    assert create_loss("fdt", reduction="sum")(P, T).item() == pytest.approx(hand.sum().item(), rel=1e-12)
    # one-hot targets (or indices): Alg. 4 is Alg. 3
    L3, E3 = alg3(P, y.tolist())
    for target in (y, F.one_hot(y, 4).double()):
        z = P.clone().requires_grad_(True)
        v = create_loss('fdt')(z, target)
        v.backward()
        assert v.item() == pytest.approx(L3, rel=1e-6)
        torch.testing.assert_close(z.grad, E3, rtol=0, atol=1e-7)
    zb = P.to(torch.bfloat16).requires_grad_(True)
    create_loss('fdt')(zb, T.float()).backward()
    assert zb.grad.dtype == torch.bfloat16 and torch.isfinite(zb.grad.float()).all()


def test_fdt_value_with_label_smoothing_counts_every_class():
    P, _ = logits_labels()
    T = soft_targets() * 0.9 + 0.1 / 4
    L, E = alg4(P, T)
    z = P.clone().requires_grad_(True)
    v = create_loss('fdt')(z, T)
    v.backward()
    assert v.item() == pytest.approx(L, rel=1e-6)
    assert v.item() == pytest.approx(-torch.log(softmax_rows(P)).sum().item() / 5, rel=1e-6)
    torch.testing.assert_close(z.grad, E, rtol=0, atol=1e-7)


# --- MCEL ----------------------------------------------------------------------------------------

def test_mcel_matches_eq4_and_gradcheck():
    P, y = logits_labels()
    A = random_similarity(4)
    eps = 0.3
    loss_fn = create_loss('mcel', similarity=A, eps=eps)
    p = softmax_rows(P)
    hand = 0.0
    for b in range(5):
        for i in range(4):
            w = (1 - eps) * (i == y[b]) + eps * A[y[b], i]
            hand += -float(w) * math.log(p[b, i])  # a float: pytest 9.2's approx iterates a 0-d tensor
    assert loss_fn(P, y).item() == pytest.approx(hand / 5, rel=1e-6)
    f64 = MCELoss(A, eps).double()
    assert torch.autograd.gradcheck(lambda z: f64(z, y), (P.clone().requires_grad_(),))
    # gradient w.r.t. the logits: softmax - target (eq. 5 chained through the softmax)
    z = P.clone().requires_grad_(True)
    f64(z, y).backward()
    q = (1 - eps) * F.one_hot(y, 4).double() + eps * A[y]
    torch.testing.assert_close(z.grad, (p - q) / 5, rtol=0, atol=1e-7)


def test_mcel_soft_targets_combine_with_fdt():
    P, _ = logits_labels()
    T = soft_targets()
    A = random_similarity(4, seed=2)
    loss = MCELoss(A, 0.2).double()(P, T)
    target = 0.8 * T + 0.2 * T @ A
    torch.testing.assert_close(target.sum(1), torch.ones(5, dtype=torch.float64))
    hand = -(target * torch.log(softmax_rows(P))).sum() / 5
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)


def test_mcel_special_cases():
    P, y = logits_labels()
    # eps = 0 is plain CE; uniform similarity is label smoothing eps' = eps k/(k-1)
    assert create_loss('mcel', num_classes=4, eps=0.0)(P, y).item() == pytest.approx(F.cross_entropy(P, y).item())
    u = create_loss('mcel', num_classes=4, eps=0.3)(P, y).item()
    assert u == pytest.approx(F.cross_entropy(P, y, label_smoothing=0.3 * 4 / 3).item(), rel=1e-6)


def test_mcel_per_pixel_with_ignore_index():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 4, (2, 3, 3), generator=g)
    lab[1, :, 0] = -100
    A = random_similarity(4, seed=4)
    fn = MCELoss(A, 0.25).double()
    logp = torch.log_softmax(z.detach(), 1)
    terms = []
    for b in range(2):
        for i in range(3):
            for j in range(3):
                c = int(lab[b, i, j])
                if c != -100:
                    q = 0.75 * F.one_hot(torch.tensor(c), 4).double() + 0.25 * A[c]
                    terms.append(-(q * logp[b, :, i, j]).sum())
    assert fn(z, lab).item() == pytest.approx((sum(terms) / len(terms)).item(), rel=1e-6)
    assert torch.autograd.gradcheck(lambda t: fn(t, lab), (z,))
    all_ignored = torch.full_like(lab, -100)
    v = fn(z, all_ignored)
    v.backward()
    assert v.item() == 0.0 and torch.all(z.grad == 0), 'an all-ignored crop contributes nothing, not NaN'


# --- SG-MCEL / GMCEL -----------------------------------------------------------------------------

def sg_penalty_hand(eps, A, alpha, beta, gamma, p):
    k = len(eps)
    total = 0.0
    for i in range(k):
        row = [(1 - eps[i]) if j == i else eps[i] * A[i][j] for j in range(k)]
        total += alpha * (sum(abs(v) for v in row) - 1) ** 2
    total += beta * sum(abs(e - 0.5) ** p for e in eps) + gamma * sum(abs(e) ** p for e in eps)
    return total


def test_sg_mcel_eq6_eq10_hand_and_gradients():
    P, y = logits_labels()
    A = random_similarity(4, seed=5)
    fn = SGMCELoss(A, eps=torch.tensor([0.1, 0.2, 0.3, 0.4]), alpha=0.7, beta=0.3, gamma=0.2, p=1.5).double()
    with torch.no_grad():
        fn.eps.copy_(torch.tensor([-0.2, 0.2, 0.6, 1.3]))     # outside [0, .5] so every term is active
    eps = fn.eps.tolist()
    p = softmax_rows(P)
    data = 0.0
    for b in range(5):
        c = int(y[b])
        row = [(1 - eps[c]) if j == c else eps[c] * A[c, j].item() for j in range(4)]
        data += -sum(row[j] * math.log(p[b, j]) for j in range(4))
    hand = data / 5 + sg_penalty_hand(eps, A.tolist(), 0.7, 0.3, 0.2, 1.5)
    z = P.clone().requires_grad_(True)
    loss = fn(z, y)
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert fn.eps.grad is not None and torch.all(fn.eps.grad != 0) and z.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda zz, e: torch.func.functional_call(fn, {'eps': e}, (zz, y)),
                                    (P.clone().requires_grad_(), fn.eps.detach().clone().requires_grad_()))


def test_sg_mcel_equals_mcel_for_equal_eps_and_gmcel_equivalence():
    P, y = logits_labels()
    A = random_similarity(4, seed=6)
    sg = SGMCELoss(A, eps=0.2).double()
    mcel = MCELoss(A, eps=0.2).double()
    assert (sg(P, y) - sg.penalty()).item() == pytest.approx(mcel(P, y).item(), rel=1e-6)
    gm = GMCELoss(A, eps=0.2).double()                        # E starts at (1 - eps) I + eps A
    assert (gm(P, y) - gm.penalty()).item() == pytest.approx(mcel(P, y).item(), rel=1e-6)
    torch.testing.assert_close(gm.margin, torch.full((4,), 0.15, dtype=gm.margin.dtype))


def test_gmcel_eq11_hand_and_gradients():
    P, y = logits_labels()
    A = random_similarity(4, seed=7)
    fn = GMCELoss(A, eps=0.2, margin=0.1, alpha=0.5, beta=0.2, gamma=0.3, eta=0.4, p=2).double()
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        fn.E.copy_(torch.rand(4, 4, generator=g, dtype=torch.float64) * 2 - 0.5)
    E = fn.E.detach()
    p = softmax_rows(P)
    data = sum(-sum(E[y[b], j].item() * math.log(p[b, j]) for j in range(4)) for b in range(5)) / 5
    pen = 0.0
    for i in range(4):
        pen += 0.5 * (E[i].sum().item() - 1) ** 2
        pen += 0.4 * (3 * (E[i, i].item() - 0.1) - (E[i].sum().item() - E[i, i].item())) ** 2
        for j in range(4):
            pen += 0.2 * (E[i, j].item() - 1) ** 2 + 0.3 * E[i, j].item() ** 2
    loss = fn(P, y)
    assert loss.item() == pytest.approx(data + pen, rel=1e-6)
    loss.backward()
    assert fn.E.grad is not None and torch.isfinite(fn.E.grad).all() and fn.E.grad.abs().min() > 0


@pytest.mark.parametrize('p', [1.0, 2.0])
def test_sg_mcel_penalty_moves_eps_into_range(p):
    fn = SGMCELoss(random_similarity(5), eps=0.2, alpha=1.0, beta=0.5, gamma=0.5, p=p)
    with torch.no_grad():
        fn.eps.copy_(torch.tensor([-0.4, -0.05, 0.7, 0.9, 1.5]))
    opt = torch.optim.SGD(fn.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        fn.penalty().backward()
        opt.step()
    e = fn.eps.detach()
    assert (e >= -0.02).all() and (e <= 0.52).all(), e.tolist()


def test_gmcel_penalty_moves_E_to_stochastic_rows_with_margins():
    k = 6
    fn = GMCELoss(num_classes=k, eps=0.2, margin=0.1, alpha=1.0, beta=0.05, gamma=0.05, eta=1.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fn.E.copy_(torch.rand(k, k, generator=g) * 2 - 0.5)   # rows far from distributions
    opt = torch.optim.SGD(fn.parameters(), lr=0.02)
    for _ in range(2000):
        opt.zero_grad()
        fn.penalty().backward()
        opt.step()
    E = fn.E.detach()
    assert (E.sum(1) - 1).abs().max() < 0.1, E.sum(1)
    assert E.min() > 0 and E.max() < 1
    off = (E.sum(1) - E.diagonal()) / (k - 1)
    assert (E.diagonal() - off > 0.05).all(), 'diagonal exceeds the off-diagonal mean by about the margin'


def test_learnable_losses_train_with_an_optimizer_group():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    for name in ('sg_mcel', 'gmcel'):
        loss_fn = create_loss(name, num_classes=4)
        groups = loss_param_groups(loss_fn, lr=0.05)
        assert len(groups) == 1 and groups[0]['weight_decay'] == 0.0 and groups[0]['wcgc'] is False
        opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)
        for grp in groups:
            opt.add_param_group(grp)
        before = [q.detach().clone() for q in loss_fn.parameters()]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(not torch.equal(b, q) for b, q in zip(before, loss_fn.parameters()))
    assert loss_param_groups(create_loss('mcel', num_classes=4)) == []


def test_wcgc_optimizers_never_centralize_learnable_loss_parameters():
    from timm.optim import create_optimizer_v2
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 16),
                                torch.nn.Linear(16, 4))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    loss_fn = create_loss('gmcel', num_classes=4)
    opt = create_optimizer_v2(model, opt='adamw_wcgc', lr=0.01, wcgc_scope='all')
    for grp in loss_param_groups(loss_fn):
        opt.add_param_group(grp)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    # 'all' centralizes every >1-D weight of the model ...
    assert model[2].weight.mean(1).abs().max() < 1e-6
    # ... but the loss's E keeps rows summing to ~1 (centralized rows would sum to 0)
    assert (loss_fn.E.sum(1) - 1).abs().max() < 0.2


# --- factory and errors --------------------------------------------------------------------------

def test_factory_names_and_similarity_file(tmp_path):
    assert list_losses() == ['ce', 'soft_ce', 'fdt', 'mcel', 'sg_mcel', 'gmcel']
    P, y = logits_labels()
    A = random_similarity(4)
    path = save_similarity(tmp_path / 'A.safetensors', A)
    from_file = create_loss('mcel', similarity=str(path), eps=0.2)(P, y)
    assert from_file.item() == pytest.approx(create_loss('mcel', similarity=A, eps=0.2)(P, y).item(), rel=1e-6)
    for name in list_losses():                    # a recipe may pass num_classes to every loss
        target = soft_targets().float() if name == 'soft_ce' else y
        assert torch.isfinite(create_loss(name, num_classes=4)(P.float(), target))
        with pytest.raises(ValueError, match=r'4 classes|\(4, 4\)'):
            create_loss(name, num_classes=4)(torch.randn(5, 6), torch.rand(5, 6) if name == 'soft_ce' else y)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        create_loss('focal')
    with pytest.raises(TypeError, match="loss 'fdt'"):
        create_loss('fdt', similarity=A)


def test_bad_inputs_raise():
    P, y = logits_labels()
    A = random_similarity(4)
    for name in ('ce', 'fdt', 'mcel'):
        fn = create_loss(name, num_classes=4) if name == 'mcel' else create_loss(name)
        with pytest.raises(ValueError, match=r'must lie in \[0, 3\]'):
            fn(P, torch.tensor([0, 1, 2, 4, 0]))
        with pytest.raises(ValueError, match='must lie in'):
            fn(P, torch.tensor([0, 1, 2, -3, 0]))
        with pytest.raises(ValueError, match='shape'):
            fn(P, y[:4])
        with pytest.raises(ValueError, match='shape'):
            fn(P, torch.rand(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r'class-index target must have shape \(2, 4, 4\)'):
        create_loss('ce')(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='square k x k'):
        MCELoss(torch.rand(4, 3))
    with pytest.raises(ValueError, match='negative'):
        MCELoss(torch.tensor([[0, 1.5, -0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]))
    with pytest.raises(ValueError, match='rows must sum to 1'):
        MCELoss(torch.tensor([[0, 0.5, 0.4], [0.5, 0, 0.5], [0.5, 0.5, 0]]))
    with pytest.raises(ValueError, match='zero diagonal'):
        MCELoss(torch.tensor([[0.2, 0.4, 0.4], [0.5, 0, 0.5], [0.5, 0.5, 0]]))
    with pytest.raises(ValueError, match='4 x 4 but there are 5 classes'):
        MCELoss(A, num_classes=5)
    with pytest.raises(ValueError, match='logits have 4 classes'):
        MCELoss(uniform_similarity(3))(P, torch.zeros(5, dtype=torch.long))
    for bad in (-0.1, 0.5, 0.7, float('nan')):
        for cls in (MCELoss, SGMCELoss, GMCELoss):
            with pytest.raises(ValueError, match=r'eps must lie in \[0, 0.5\)'):
                cls(A, eps=bad)
    with pytest.raises(ValueError, match='eps has 3 entries for 4 classes'):
        SGMCELoss(A, eps=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match='margins'):
        GMCELoss(A, margin=0.0)
    with pytest.raises(ValueError, match='p must be >= 1'):
        SGMCELoss(A, p=0.5)
    with pytest.raises(ValueError, match='penalty weight alpha'):
        GMCELoss(A, alpha=-1)
    with pytest.raises(ValueError, match='num_classes'):
        MCELoss()
    with pytest.raises(ValueError, match='reduction'):
        create_loss('ce', reduction='avg')
    with pytest.raises(FileNotFoundError):
        MCELoss('/nonexistent/A.safetensors')
