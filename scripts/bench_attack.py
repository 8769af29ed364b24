#!/usr/bin/env python3
""" PGD throughput: torchattacks' PGD and the package's PaperPGD against a minimal hand-written loop.

All three attack the same pixel-space model (eval mode, frozen parameters) on the same images with
the same ε, α and steps and no random start, so they do identical arithmetic: the script checks that
their adversarial images agree, then reports the median time of each and the ratios to the hand
loop from this one run. Runs are interleaved in a rotating order so that load drifts on a shared
machine hit all three alike; the minimum is reported next to the median because such noise only ever
adds time.

    python scripts/bench_attack.py                                   # GPU if present: 1024 images, PGD-40
    python scripts/bench_attack.py --device cpu --batch-size 8 --threads 1
    python scripts/bench_attack.py --model resnet34_tn --model-kwargs '{"layers": [1, 1, 1, 1]}'
"""
import argparse
import json
import platform

from bench import summarize, time_call, time_interleaved  # also puts this checkout's package first on sys.path

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchattacks  # noqa: E402

import timm_normplugins  # noqa: F401,E402  (registers the models)
from timm_normplugins.robust import attack_guard, paper_pgd, pixel_space_model  # noqa: E402


def hand_pgd(model, x, y, eps, alpha, steps):
    """The minimal L∞ PGD loop (eq. 6), no random start."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.clamp(x + torch.clamp(adv.detach() + alpha * grad.sign() - x, -eps, eps), 0, 1)
    return adv


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='resnet34_tn')
    parser.add_argument('--model-kwargs', default='{}', help='JSON dict of timm.create_model arguments')
    parser.add_argument('--num-classes', type=int, default=10)
    parser.add_argument('--img-size', type=int, default=32)
    parser.add_argument('--batch-size', type=int, default=None, help='default: 1024 on GPU, 8 on CPU')
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--eps', type=float, default=8 / 255, help='pixel units')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--json', default=None, help='also write the numbers to this file')
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.batch_size or (1024 if device.type == 'cuda' else 8)
    model = timm.create_model(args.model, num_classes=args.num_classes, **json.loads(args.model_kwargs))
    model = pixel_space_model(model).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, args.num_classes, (batch_size,), generator=g).to(device)
    eps, alpha = args.eps, args.eps / 4

    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=False)
    our_pgd = paper_pgd(model, eps=eps, abs_stepsize=alpha, steps=args.steps)
    runs = {
        'hand loop': lambda: hand_pgd(model, x, y, eps, alpha, args.steps),
        'torchattacks.PGD': lambda: ta_pgd(x, y),
        'PaperPGD (+eq. 7 record)': lambda: our_pgd(x, y),
    }

    with attack_guard(model):  # eval mode, parameters frozen: gradients only w.r.t. the input
        outputs = {k: time_call(fn, device)[1] for k, fn in runs.items()}  # warm-up, and the agreement check
        ref = outputs['hand loop']
        for k, out in outputs.items():
            # identical arithmetic; allow a rare sign flip of a near-zero gradient element
            frac = ((out - ref).abs() > 1e-6).float().mean().item()
            if frac > 1e-3:
                raise SystemExit(f'{k} disagrees with the hand loop on {frac:.2%} of the pixels')
        times = time_interleaved(runs, args.repeats, device=device, rotate=True)

    base, base_min = summarize(times['hand loop']).values()
    dev = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'{platform.machine()} CPU, {torch.get_num_threads()} thread(s)'
    print(f'{args.model} {args.model_kwargs} | {batch_size} images {args.img_size}px | PGD-{args.steps} | {dev} | '
          f'torch {torch.__version__}, torchattacks {torchattacks.__version__}')
    print(f'| attack | median s ({args.repeats} runs) | min s | images/s (median) | ratio (median) | ratio (min) |')
    print('| --- | ---: | ---: | ---: | ---: | ---: |')
    result = {}
    for k, ts in times.items():
        med, low = summarize(ts).values()
        result[k] = dict(median_s=med, min_s=low, all_s=ts, images_per_s=batch_size / med,
                         ratio_median=med / base, ratio_min=low / base_min)
        print(f'| {k} | {med:.3f} | {low:.3f} | {batch_size / med:.1f} | {med / base:.3f} | {low / base_min:.3f} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), device=dev, batch_size=batch_size, results=result), f, indent=2)


if __name__ == '__main__':
    main()
