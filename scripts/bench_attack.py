#!/usr/bin/env python3
""" PGD throughput: torchattacks' PGD and the package's PaperPGD against a minimal hand-written loop.

All three attack the same pixel-space model (eval mode, frozen parameters) on the same images with
the same ε, α and steps, no random start and iterates clamped to valid pixels [0, 1] (PaperPGD with
``clamp=True``; its default, eq. 6, leaves that clamp out and so moves every pixel within ε of 0 or 1
differently), so they do identical arithmetic: the script checks that their adversarial images agree,
then reports the median time of each and the ratios to the hand loop from this one run. Runs are
interleaved in a rotating order so that load drifts on a shared machine hit all three alike; the minimum
is reported next to the median because such noise only ever adds time.

    python scripts/bench_attack.py                                   # GPU if present: 1024 images, PGD-40
    python scripts/bench_attack.py --device cpu --batch-size 8 --threads 1
    python scripts/bench_attack.py --model resnet34_tn --model-kwargs '{"layers": [1, 1, 1, 1]}'
    python scripts/bench_attack.py --device cpu --batch-size 2 --steps 2 --repeats 1 --model cifar_resnet20_tn
"""
import argparse
import json
import platform

from bench import measure, time_call  # also puts this checkout's package first on sys.path

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
    our_pgd = paper_pgd(model, eps=eps, abs_stepsize=alpha, steps=args.steps, clamp=True)
    runs = {
        'hand loop': lambda: hand_pgd(model, x, y, eps, alpha, args.steps),
        'torchattacks.PGD': lambda: ta_pgd(x, y),
        'PaperPGD (clamp, +eq. 7 record)': lambda: our_pgd(x, y),
    }

    with attack_guard(model):  # eval mode, parameters frozen: gradients only w.r.t. the input
        outputs = {k: time_call(fn, device)[1] for k, fn in runs.items()}  # warm-up, and the agreement check
        ref = outputs['hand loop']
        for k, out in outputs.items():
            # identical arithmetic: equal on the CPU; CUDA's backward may sum in another order, which can flip
            # the sign of a near-zero gradient element (that pixel then moves by 2α), so allow a few such pixels
            frac = ((out - ref).abs() > 1e-6).float().mean().item()
            if frac > (1e-3 if device.type == 'cuda' else 0.0):
                raise SystemExit(f'{k} disagrees with the hand loop on {frac:.2%} of the pixels')
        timing = measure(runs, args.repeats, device=device, baseline='hand loop', rotate=True)

    dev = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'{platform.machine()} CPU, {torch.get_num_threads()} thread(s)'
    print(f'{args.model} {args.model_kwargs} | {batch_size} images {args.img_size}px | PGD-{args.steps} | {dev} | '
          f'torch {torch.__version__}, torchattacks {torchattacks.__version__}')
    print(f'| attack | median s ({args.repeats} runs) | min s | images/s (median) | ratio (median) | ratio (min) |')
    print('| --- | ---: | ---: | ---: | ---: | ---: |')
    result = {}
    for k, t in timing.items():
        result[k] = dict(t, images_per_s=batch_size / t['median_s'])
        print(f"| {k} | {t['median_s']:.3f} | {t['min_s']:.3f} | {batch_size / t['median_s']:.1f} | "
              f"{t['ratio_median']:.3f} | {t['ratio_min']:.3f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), device=dev, batch_size=batch_size, results=result), f, indent=2)


if __name__ == '__main__':
    main()
