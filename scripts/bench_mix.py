#!/usr/bin/env python3
""" FDTMixup vs timm's Mixup: time per call on one batch, ratios from one run.

    python scripts/bench_mix.py                        # CPU, B=256, 3x32x32, C=10 and C=100
    python scripts/bench_mix.py --device cuda --channels-last
    python scripts/bench_mix.py --batch-size 8 --classes 10 --rounds 2 --min-run-time 0.2

Rows: timm ``Mixup`` (mode 'batch', the baseline of the ratios, and mode 'elem', which loops in
Python), FDTMixup (harmonic/soft = FDT, hard = OV, dirichlet weights), FDTMixup's plan alone
(``sample_plan``: the random draws and the (B, B) mixing matrix), and a straightforward per-sample loop
that follows Alg. 2 (what a direct port of the paper's pseudo code costs). Methods are timed in
``--rounds`` interleaved rounds (scripts/bench.py ``measure``), each round as many calls of a method as fill
its share of ``--min-run-time``; each row reports the median over rounds of the time per call and its ratio
to timm's batch Mixup (the minimum, the least disturbed round, goes to ``--json``).
"""
import argparse

from bench import calls_per_sample, measure  # also puts this checkout's package first on sys.path

import torch  # noqa: E402
from timm.data import Mixup  # noqa: E402

from timm_normplugins.data import FDTMixup, fdt_weights  # noqa: E402


def alg2_loop(x, y, num_classes, g):
    """Direct port of Alg. 2 for each sample (the slow baseline; same distribution as FDTMixup)."""
    B = x.shape[0]
    out = torch.empty_like(x)
    target = torch.zeros(B, num_classes, device=x.device)
    present = torch.unique(y).numel()
    for b in range(B):
        n = min(int(torch.randint(1, num_classes + 1, (), generator=g)), present)
        F = fdt_weights(n, dtype=x.dtype).to(x.device)
        used, picks = {int(y[b])}, [b]
        for j in torch.randperm(B, generator=g).tolist():
            if len(picks) == n:
                break
            if int(y[j]) not in used:
                used.add(int(y[j]))
                picks.append(j)
        out[b] = (F.view(-1, *[1] * (x.dim() - 1)) * x[picks]).sum(0)
        target[b, y[picks]] = F.float()
    return out, target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--classes', type=int, nargs='+', default=[10, 100])
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--min-run-time', type=float, default=2.0, help='seconds per method (all rounds)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds; the median round is reported')
    p.add_argument('--skip-loop', action='store_true', help='leave out the slow Alg. 2 loop')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    B, S = args.batch_size, args.img_size
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# bench_mix: B={B}, 3x{S}x{S}, float32, {"channels_last" if args.channels_last else "NCHW"}, '
          f'{name}, torch {torch.__version__}\n')
    print('| C | method | ms / call | vs timm Mixup (batch) |')
    print('|---|--------|----------:|----------------------:|')
    results = []
    for C in args.classes:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(B, 3, S, S, device=device, generator=g)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, C, (B,), device=device, generator=g)
        timm_batch = Mixup(mixup_alpha=1.0, mode='batch', label_smoothing=0.0, num_classes=C)
        timm_elem = Mixup(mixup_alpha=1.0, mode='elem', label_smoothing=0.0, num_classes=C)
        fdt = FDTMixup(num_classes=C, seed=0)
        ov = FDTMixup(num_classes=C, label='hard', seed=0)
        dirichlet = FDTMixup(num_classes=C, weights='dirichlet', seed=0)
        # timm mixes in place (a convex combination, so repeated calls keep x bounded)
        rows = [
            ('timm Mixup, mode=batch', lambda: timm_batch(x, y)),
            ('timm Mixup, mode=elem', lambda: timm_elem(x, y)),
            ('FDTMixup (FDT, harmonic)', lambda: fdt(x, y)),
            ('FDTMixup (OV, label=hard)', lambda: ov(x, y)),
            ('FDTMixup (dirichlet)', lambda: dirichlet(x, y)),
            ('FDTMixup.sample_plan only', lambda: fdt.sample_plan(y)),
        ]
        if not args.skip_loop:
            lg = torch.Generator().manual_seed(0)
            rows.append(('Alg. 2 per-sample loop', lambda: alg2_loop(x, y, C, lg)))
        fns = dict(rows)
        # the first call is the warm-up (allocations, weight tables, cuBLAS handles)
        number = {k: calls_per_sample(fn, args.min_run_time / args.rounds, device) for k, fn in fns.items()}
        timing = measure(fns, args.rounds, device=device, baseline=rows[0][0], number=number)
        for label, t in timing.items():
            ms = 1e3 * t['median_s']
            print(f"| {C} | {label} | {ms:.3f} | {t['ratio_median']:.2f}x |", flush=True)
            results.append({'classes': C, 'method': label, 'ms': ms, 'vs_timm_batch': t['ratio_median'],
                            'min_ms': 1e3 * t['min_s'], 'min_vs_timm_batch': t['ratio_min']})
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
