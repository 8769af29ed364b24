#!/usr/bin/env python3
""" Step time of ``<base>_wcgc`` vs the base optimizer (foreach), on resnet34_tn's parameters.

All variants run in one process on the same device, interleaved step by step (so machine noise hits
them alike), with the same fixed random gradients; the ratios are of medians (and of minima, the
least disturbed steps, more robust on a shared machine) from this one run.

Variants per base optimizer:
  base        timm's ``<base>`` with ``foreach=True``
  wcgc        timm's ``<base>_wcgc`` with ``foreach=True`` (this package)
  wcgc_wc1    the same with ``wcgc_wc_every=1`` (WC after every step, also for SGD)
  loop        the base plus straightforward per-parameter GC/WC loops (the issue's anchor)
  wcgc_torch  ``wcgc`` with the multi-tensor path on torch ops (per-tensor means + ``_foreach_sub_``)
              instead of the Triton rows kernel that ``wcgc`` uses on CUDA (identical to ``wcgc`` on CPU)

    python scripts/bench_optim.py --device cpu --iters 30
    python scripts/bench_optim.py --device cuda --iters 200 --bases sgd momentum adamw
"""
import argparse

from bench import measure  # also puts this checkout's package first on sys.path

import timm  # noqa: E402
import torch  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

import timm_normplugins  # noqa: F401,E402  (registers resnet34_tn and the *_wcgc names)
from timm_normplugins.optim.centralization import set_wcgc_kernel  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu')
    p.add_argument('--iters', type=int, default=30, help='timed steps per variant')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--model', default='resnet34_tn')
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--bases', nargs='+', default=['sgd', 'momentum', 'adamw'])
    p.add_argument('--variants', nargs='+', default=['base', 'wcgc', 'wcgc_wc1', 'loop'])
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    return p.parse_args()


def add_loop_centralization(optimizer, model):
    """GC/WC as a per-parameter Python loop around the step: the baseline the issue measured."""
    classifier = {id(p) for p in model.get_classifier().parameters()}
    weights = [m.weight for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and id(m.weight) not in classifier]

    def gc(opt, args, kwargs):
        for w in weights:
            g = w.grad
            g.sub_(g.mean(dim=tuple(range(1, g.ndim)), keepdim=True))

    @torch.no_grad()
    def wc(opt, args, kwargs):
        for w in weights:
            w.sub_(w.mean(dim=tuple(range(1, w.ndim)), keepdim=True))

    optimizer.register_step_pre_hook(gc)
    optimizer.register_step_post_hook(wc)
    return optimizer


def build(variant, base, args, grads):
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=args.num_classes).to(args.device)
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    lr = 0.1 if base in ('sgd', 'momentum', 'nesterov', 'sgdw') else 1e-3
    kw = dict(lr=lr, weight_decay=5e-4, foreach=True)
    if variant == 'base':
        return create_optimizer_v2(model, base, **kw)
    if variant in ('wcgc', 'wcgc_torch'):
        return create_optimizer_v2(model, f'{base}_wcgc', **kw)
    if variant == 'wcgc_wc1':
        return create_optimizer_v2(model, f'{base}_wcgc', wcgc_wc_every=1, **kw)
    if variant == 'loop':
        return add_loop_centralization(create_optimizer_v2(model, base, **kw), model)
    raise ValueError(f'unknown variant {variant!r}')


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(1)
    shapes = [p.shape for p in timm.create_model(args.model, num_classes=args.num_classes).parameters()]
    grads = [torch.randn(s, device=device) * 1e-2 for s in shapes]
    n_params = sum(g.numel() for g in grads)
    print(f'{args.model}: {n_params / 1e6:.1f}M params, device={device}, torch {torch.__version__}, '
          f'timm {timm.__version__}, threads={torch.get_num_threads()}, iters={args.iters}')

    ref = 'base' if 'base' in args.variants else args.variants[0]
    others = [v for v in args.variants if v != ref]
    rows = []
    for base in args.bases:
        opts = {v: build(v, base, args, grads) for v in args.variants}
        timing = measure({v: opt.step for v, opt in opts.items()}, args.iters, args.warmup, device, baseline=ref,
                         before=lambda v: set_wcgc_kernel('torch' if v == 'wcgc_torch' else 'auto'))
        rows.append((base, timing))
        del opts

    # median: typical step; min: least disturbed step (more robust on a shared, busy machine)
    header = '| optimizer | ' + ' | '.join(f'{v} ms (median / min)' for v in args.variants) + ' | ' + \
        ' | '.join(f'{v}/{ref} (median / min)' for v in others) + ' |'
    print(header)
    print('|' + '---|' * (header.count('|') - 1))
    for base, t in rows:
        cells = [f"{1e3 * t[v]['median_s']:.1f} / {1e3 * t[v]['min_s']:.1f}" for v in args.variants] + \
                [f"{t[v]['ratio_median']:.2f}x / {t[v]['ratio_min']:.2f}x" for v in others]
        print(f'| {base} | ' + ' | '.join(cells) + ' |')
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump([{'base': base, 'median_ms': {v: 1e3 * t[v]['median_s'] for v in args.variants},
                        'min_ms': {v: 1e3 * t[v]['min_s'] for v in args.variants},
                        'ratio_median': {v: t[v]['ratio_median'] for v in others}}
                       for base, t in rows], f, indent=1)


if __name__ == '__main__':
    main()
