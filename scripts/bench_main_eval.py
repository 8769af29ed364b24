#!/usr/bin/env python3
""" The main job's closing evaluation: time of pgd-paper on N digits test images, ε stacked or one by one.

Runs ``evaluate_robustness`` exactly as the training recipe does at the end of the main job (the first N
test images, the evaluation pipeline without its Normalize, batches of 100, pgd-paper: 4 ε × 40 steps) on
a trained checkpoint, for each (N, stacking) setting, in a rotating order so that load drifts on a shared
machine hit all settings alike; prints the median wall time and eq. 7 accuracies (stacked and one-by-one
runs must agree).

    python recipes/train.py --eval-attack                                # the main job, without its PGD
    python scripts/bench_main_eval.py output/digits-cifar_resnet20_tn-sgd_wcgc-fdt-fdt-s42/model.safetensors
"""
import argparse

from bench import measure  # also puts this checkout's package first on sys.path

import torch  # noqa: E402

from timm_normplugins import load_model  # noqa: E402
from timm_normplugins.data import create_dataset, create_transform  # noqa: E402
from timm_normplugins.robust import evaluate_robustness, pixel_transform  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help="the main job's model.safetensors")
    parser.add_argument('--num-images', type=int, nargs='+', default=[20, 100])
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args()

    model = load_model(args.checkpoint).eval()
    val = create_dataset('digits', split='test')
    eq7 = {}

    def run(n, stack):
        images = val.subset(range(n))
        images.transform = pixel_transform(create_transform(val, train=False))
        loader = torch.utils.data.DataLoader(images, batch_size=100)

        def evaluate():
            report = evaluate_robustness({'m': model}, loader, 'pgd-paper', progress=False, stack_eps=stack)
            eq7[n, stack] = [round(row['accuracy_eq7'], 2) for row in report.models['m']['attacks']['pgd-paper']]
        return evaluate

    runs = {(n, stack): run(n, stack) for n in args.num_images for stack in (True, False)}
    timing = measure(runs, args.repeats, rotate=True)
    print(f'| images | ε | median s ({args.repeats} runs) | min s | eq. 7 accuracy at ε = 0.1, 0.01, 0.001, 0.0001 |')
    print('| ---: | --- | ---: | ---: | --- |')
    for (n, stack), t in timing.items():
        print(f"| {n} | {'stacked' if stack else 'one by one'} | {t['median_s']:.1f} | {t['min_s']:.1f} | "
              f'{eq7[n, stack]} |')


if __name__ == '__main__':
    main()
