#!/usr/bin/env python
""" Train-step time and activation memory of TN models against their ReLU twins, ratios from one run.

    python scripts/bench_tn.py --device cuda --batch-size 256 --dtypes fp32 bf16 --modes eager compiled
    python scripts/bench_tn.py --device cpu --batch-size 32 --iters 5     # CPU: a few minutes

For every (pair, dtype, mode) it times a full training step (forward, backward, SGD step) of the TN
model and of its twin, alternating them so drift hits all alike, and reports the median-time
ratio. On CUDA the TN model runs once per ReLU+TN implementation (``--tn-kernels``, default the
PyTorch ops and the fused Triton kernels), each against the same twin. Memory: the bytes kept for
backward (saved-tensor hooks, each storage once; exact on any device) and, on CUDA, the peak
memory a step allocates on top of what is resident (activations, gradients, temporaries).
``--json PATH`` also writes the rows.
"""
import argparse
import json
from contextlib import nullcontext

from bench import measure, sync  # also puts this checkout's package first on sys.path

import timm  # noqa: E402
import torch  # noqa: E402

import timm_normplugins  # noqa: F401,E402
from timm_normplugins.layers.tn_backend import tn_kernel  # noqa: E402

PAIRS = {
    'resnet34': ('resnet34_tn', 'resnet34_cifar'),
    'resnet152': ('resnet152_tn', 'resnet152_cifar'),
    'wrn28_10': ('wrn28_10_tn', 'wrn28_10'),
}
DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def saved_bytes(model, x, autocast):
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        model(x)
    return sum(storages.values())


def make_step(model, opt, x, y, autocast, kernel='auto'):
    def step():
        with autocast(), tn_kernel(kernel):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def run_pair(args, tn_name, twin_name, dtype_name, mode, kernels):
    device = torch.device(args.device)
    dtype = DTYPES[dtype_name]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)
    steps, mem = {}, {}
    if mode == 'compiled':
        torch._dynamo.reset()  # every (pair, dtype) compiles afresh: no cache-size limit across the rows
    variants = [(f'{tn_name}[{k}]', tn_name, k) for k in kernels] + [(twin_name, twin_name, 'auto')]
    for key, name, kernel in variants:
        torch.manual_seed(0)
        model = timm.create_model(name).to(device).train()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        with tn_kernel(kernel):
            mem[key] = {'saved': saved_bytes(model, x, autocast)}
        run_model = torch.compile(model) if mode == 'compiled' else model
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
        steps[key] = make_step(run_model, opt, x, y, autocast, kernel)
        for _ in range(args.warmup):
            steps[key]()
        sync(device)
        if device.type == 'cuda':
            # what a step adds on top of what is resident (all models' weights and optimizer states)
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            steps[key]()
            sync(device)
            mem[key]['peak'] = torch.cuda.max_memory_allocated() - resident
    timing = measure(steps, args.iters, device=device, baseline=twin_name)  # warmed up above
    rows = []
    for key, _, kernel in variants[:-1]:
        t_tn, t_twin = timing[key]['median_s'], timing[twin_name]['median_s']
        row = dict(pair=f'{tn_name} / {twin_name}', tn_kernel=kernel, dtype=dtype_name, mode=mode,
                   layout='channels_last' if args.channels_last else 'nchw', batch=args.batch_size,
                   ms_tn=1e3 * t_tn, ms_twin=1e3 * t_twin, time_ratio=timing[key]['ratio_median'],
                   saved_ratio=mem[key]['saved'] / mem[twin_name]['saved'])
        if device.type == 'cuda':
            row['peak_ratio'] = mem[key]['peak'] / mem[twin_name]['peak']
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--models', nargs='+', default=['resnet34', 'wrn28_10'], choices=sorted(PAIRS))
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--modes', nargs='+', default=['eager', 'compiled'], choices=['eager', 'compiled'])
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--tn-kernels', nargs='+', default=None, choices=['auto', 'torch', 'triton'],
                        help='ReLU+TN implementations to time (default: torch and triton on CUDA, torch on CPU)')
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    args = parser.parse_args()
    kernels = args.tn_kernels or (['torch', 'triton'] if args.device.startswith('cuda') else ['torch'])

    print(f'device={args.device} batch={args.batch_size} torch={torch.__version__} '
          f'channels_last={args.channels_last} iters={args.iters}')
    header = (f'{"pair":34s} {"kernel":7s} {"dtype":5s} {"mode":8s} {"ms TN":>9s} {"ms twin":>9s} {"time x":>7s} '
              f'{"saved x":>8s}')
    if args.device.startswith('cuda'):
        header += f' {"peak x":>7s}'
    print(header)
    all_rows = []
    for pair in args.models:
        for dtype_name in args.dtypes:
            for mode in args.modes:
                for r in run_pair(args, *PAIRS[pair], dtype_name, mode, kernels):
                    line = (f'{r["pair"]:34s} {r["tn_kernel"]:7s} {r["dtype"]:5s} {r["mode"]:8s} {r["ms_tn"]:9.1f} '
                            f'{r["ms_twin"]:9.1f} {r["time_ratio"]:7.3f} {r["saved_ratio"]:8.4f}')
                    if 'peak_ratio' in r:
                        line += f' {r["peak_ratio"]:7.3f}'
                    print(line, flush=True)
                    all_rows.append(r)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(all_rows, f, indent=1)


if __name__ == '__main__':
    main()
