""" timm's optimizer-factory contract on every WC/GC name this package registers.

The checks follow timm's own tests/test_optim.py: the class from ``get_optimizer_class`` is a real
``torch.optim.Optimizer`` subclass, it converges on a small problem, it takes every param-group form,
its state_dict round-trips, and it behaves exactly like ``create_optimizer_v2`` with the same name.
The full list (~260 names) is slow-marked; the default run takes a sample of every suffix.
"""
import copy

import pytest
import torch
from timm.optim import create_optimizer_v2, get_optimizer_class, get_optimizer_info, list_optimizers

import timm_normplugins  # noqa: F401  (registers the names)
from timm_normplugins.optim import WCGC_SUFFIXES
from timm_normplugins.optim.timm_registry import _import_class

OURS = sorted(n for n in list_optimizers() if n.rsplit('_', 1)[-1] in WCGC_SUFFIXES)
SAMPLE = [f'{b}_{s}' for b in ('sgd', 'momentum', 'adamw', 'adam', 'lamb', 'lion') for s in WCGC_SUFFIXES]
ALL = [pytest.param(n, marks=pytest.mark.slow) if n not in SAMPLE else n for n in OURS]


def _problem(seed=0):
    """Least squares with a reachable centred solution, so WC cannot keep the loss from falling."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(4, 6, generator=g)
    w_true -= w_true.mean(1, keepdim=True)
    x = torch.randn(32, 6, generator=g)
    y = x @ w_true.T + 0.5
    weight = torch.nn.Parameter(torch.randn(4, 6, generator=g))
    bias = torch.nn.Parameter(torch.zeros(4))
    return weight, bias, lambda: ((x @ weight.T + bias - y) ** 2).mean()


def _kwargs(name):
    # weight decay given: create_optimizer_v2 defaults it to 0, the classes to their own (AdamW: 1e-2)
    kwargs = dict(lr=1e-2, weight_decay=1e-4)
    if get_optimizer_info(name).has_momentum:
        kwargs['momentum'] = 0.9
    return kwargs


def _run(opt, loss_fn, steps, name):
    torch.manual_seed(0)  # Kron draws its preconditioner probes from torch's global generator
    second_order = get_optimizer_info(name).second_order
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward(create_graph=second_order)  # AdaHessian's Hessian probes need the gradient's graph
        opt.step()
    return loss_fn().item()


def test_the_sample_is_registered_and_everything_is_a_class():
    # every base whose class imports here gets its three names (timm 1.0.12: 162 names, 1.0.31: 258)
    bases = {n for n in list_optimizers() if '_' not in n
             and _import_class(get_optimizer_info(n).opt_class) is not None}
    assert set(SAMPLE) <= set(OURS) and len(bases) >= 40
    assert set(OURS) == {f'{b}_{s}' for b in bases for s in WCGC_SUFFIXES}
    for name in OURS:
        cls = get_optimizer_class(name, bind_defaults=False)
        assert isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer), name
        assert get_optimizer_info(name).opt_class is cls
        suffix = name.rsplit('_', 1)[1].upper()
        assert cls.__name__ == f'{cls.wcgc_base.__name__}_{suffix}' and issubclass(cls, cls.wcgc_base)


@pytest.mark.parametrize('name', ALL)
def test_timm_contract(name):
    cls = get_optimizer_class(name)  # bound with the name's defaults, as timm hands it out
    weight, bias, loss_fn = _problem()
    opt = cls([weight, bias], **_kwargs(name))
    assert isinstance(opt, torch.optim.Optimizer) and type(opt) is get_optimizer_class(name, bind_defaults=False)
    assert (opt.wcgc.gc, opt.wcgc.wc) == WCGC_SUFFIXES[name.rsplit('_', 1)[1]]
    start = loss_fn().item()
    assert _run(opt, loss_fn, 100, name) < start, 'no progress on a convex problem'

    # same behaviour as create_optimizer_v2 with the same name and arguments
    w1, b1, f1 = _problem(1)
    w2, b2, f2 = _problem(1)
    _run(cls([w1, b1], **_kwargs(name)), f1, 5, name)
    built = create_optimizer_v2([w2, b2], name, **_kwargs(name))
    assert type(built) is type(opt)
    _run(built, f2, 5, name)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)

    # param-group forms: a list of dicts with their own lr
    w3, b3, f3 = _problem(2)
    grouped = cls([{'params': [w3]}, {'params': [b3], 'lr': 1e-3}], **_kwargs(name))
    assert grouped.param_groups[1]['lr'] == 1e-3
    _run(grouped, f3, 3, name)

    # state_dict round trip, in a resume's order: build the optimizer, restore the weights, then its state
    resumed_w, resumed_b, resumed_f = _problem(2)
    resumed = cls([{'params': [resumed_w]}, {'params': [resumed_b], 'lr': 1e-3}], **_kwargs(name))
    with torch.no_grad():
        resumed_w.copy_(w3)
        resumed_b.copy_(b3)
    resumed.load_state_dict(copy.deepcopy(grouped.state_dict()))  # live buffers otherwise shared
    if hasattr(grouped, 'generator'):  # AdaHessian keeps its probe generator outside state_dict (timm's own)
        resumed.generator.set_state(grouped.generator.get_state())
    _run(grouped, f3, 3, name)
    _run(resumed, resumed_f, 3, name)
    assert torch.equal(w3, resumed_w) and torch.equal(b3, resumed_b)
