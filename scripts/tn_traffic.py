#!/usr/bin/env python
""" Global-memory traffic per activation element of ReLU, ReLU+TN on PyTorch ops and the fused Triton kernels.

    python scripts/tn_traffic.py [--channels 16 64 512 2048]

Needs no GPU: the PyTorch paths are counted op by op, the kernels' loads and stores in Triton's interpreter
(see scripts/relu_tn_traffic.py). Prints the docs/BENCHMARKS.md table, in activation passes
(1.0 = the activation read or written once).
"""
import argparse
import os
import sys

os.environ['TRITON_INTERPRET'] = '1'  # before anything imports Triton
os.environ['TIMM_NORMPLUGINS_KERNELS'] = 'tn=triton'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package

import torch  # noqa: E402

import timm_normplugins.layers.tensor_norm_triton as tnt  # noqa: E402
from relu_tn_traffic import relu_tn_traffic  # noqa: E402  (beside this script)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--channels', type=int, nargs='+', default=[16, 64, 512, 2048])
    p.add_argument('--dtype', default='bf16', choices=['fp32', 'bf16', 'fp16'])
    args = p.parse_args()
    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.dtype]
    print(f'| C | path | grad | forward | backward | total | x ReLU |\n|---:|---|---|---:|---:|---:|---:|')
    for C in args.channels:
        shape = (1, C, 3, 3)
        relu = relu_tn_traffic(shape, dtype, relu_only=True)
        rows = [('ReLU', '', relu)]
        for grad in ('exact', 'paper'):
            rows.append(('ReLUTN, PyTorch ops', grad, relu_tn_traffic(shape, dtype, grad)))
            rows.append(('ReLUTN, fused kernels', grad, relu_tn_traffic(shape, dtype, grad, fused=True)))
        if C > 16:  # what C wider than MAX_BLOCK_C costs: the channel-chunked kernels
            saved, tnt.MAX_BLOCK_C = tnt.MAX_BLOCK_C, 16
            for grad in ('exact', 'paper'):
                rows.append(('ReLUTN, fused, C chunked', grad, relu_tn_traffic(shape, dtype, grad, fused=True)))
            tnt.MAX_BLOCK_C = saved
        for name, grad, r in rows:
            print(f'| {C} | {name} | {grad} | {r["forward"]:.3f} | {r["backward"]:.3f} | {r["total"]:.3f} | '
                  f'{r["total"] / relu["total"]:.3f} |')


if __name__ == '__main__':
    main()
