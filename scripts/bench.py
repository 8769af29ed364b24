#!/usr/bin/env python
""" One entry for the package's benchmarks, and the timing helpers they share.

    python scripts/bench.py tn --device cuda --batch-size 256 --iters 20 --dtypes fp32 bf16 --modes eager
    python scripts/bench.py optim --device cpu --iters 20 --bases sgd momentum adamw
    python scripts/bench.py --list

Each subcommand takes exactly the flags of its ``scripts/bench_<name>.py`` (``bench.py tn --help``), which
still run on their own (scripts/gpu_check.sh and docs/BENCHMARKS.md call them so).

Timing: every script measures through :func:`measure` -- warm-up calls first, then rounds in which every
measured function runs once in turn (so drift and load from other processes hit all alike), CUDA
synchronised before and after each timed call; per function the seconds per call, their median and
minimum (the least disturbed call: noise on a shared machine only ever adds time) and both as ratios to
a baseline. A script is then its workload, its baseline and its table. :func:`time_call` times a single
call (a one-off such as decoding a dataset, or a first epoch that includes compilation).
"""
import importlib
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Tuple, Union

_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
for _path in (_SCRIPTS, os.path.dirname(_SCRIPTS)):  # the bench modules; this checkout's package
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

# subcommand -> (module in scripts/, one line)
SUBCOMMANDS = {
    'tn': ('bench_tn', 'train-step time and activation memory of TN models vs their ReLU twins'),
    'optim': ('bench_optim', 'step time of <base>_wcgc vs the base optimizer'),
    'mix': ('bench_mix', "FDTMixup vs timm's Mixup, time per call"),
    'train': ('bench_train', 'input pipeline, full stack vs plain training step'),
    'epoch': ('bench_epoch', 'whole CIFAR-10 epochs on device-resident data'),
    'data': ('bench_data', "in-memory datasets vs timm's decode-per-item ImageDataset"),
    'device-data': ('bench_device_data', 'images/s of the device-resident input pipeline'),
    'attack': ('bench_attack', 'PGD-40: torchattacks vs the package vs a hand loop'),
    'main-eval': ('bench_main_eval', 'the eq. 7 evaluation, stacked vs one epsilon at a time'),
}


def sync(device) -> None:
    """Wait for the device's queued work (CUDA only; a no-op elsewhere)."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device='cpu') -> Tuple[float, Any]:
    """``(seconds, fn())`` for one call, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def time_interleaved(fns: Mapping[Hashable, Callable[[], Any]], iters: int, warmup: int = 0, device='cpu',
                     before: Optional[Callable[[Hashable], None]] = None,
                     rotate: bool = False) -> Dict[Hashable, List[float]]:
    """Seconds per call of each of ``fns``: ``warmup`` untimed calls each, then ``iters`` rounds calling
    each once in turn (``rotate``: round r starts at the r-th function, for long calls whose order may
    matter). ``before(name)``, if given, runs untimed before every call (e.g. to select a kernel)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            if before is not None:
                before(name)
            fns[name]()
    times: Dict[Hashable, List[float]] = {name: [] for name in names}
    for r in range(iters):
        k = r % len(names) if rotate and names else 0
        for name in names[k:] + names[:k]:
            if before is not None:
                before(name)
            times[name].append(time_call(fns[name], device)[0])
    return times


def summarize(seconds: List[float]) -> Dict[str, float]:
    """Median (the typical call) and minimum (the least disturbed one, robust on a shared machine)."""
    return {'median_s': statistics.median(seconds), 'min_s': min(seconds)}


def measure(fns: Mapping[Hashable, Callable[[], Any]], iters: int, warmup: int = 0, device='cpu',
            baseline: Optional[Hashable] = None, number: Union[int, Mapping[Hashable, int]] = 1,
            before: Optional[Callable[[Hashable], None]] = None,
            rotate: bool = False) -> Dict[Hashable, Dict[str, Any]]:
    """Time each of ``fns`` (see :func:`time_interleaved` for ``iters``, ``warmup``, ``before``, ``rotate``).

    ``number``: calls per timed sample (one int, or one per name; :func:`calls_per_sample` picks it for
    calls far below a millisecond, where one call is near the timer's overhead). Returns per name
    ``median_s``, ``min_s`` (seconds per call) and ``all_s`` (every sample), plus ``ratio_median`` and
    ``ratio_min`` to ``baseline``'s if one is named.
    """
    counts = {name: number[name] if isinstance(number, Mapping) else number for name in fns}
    if any(n < 1 for n in counts.values()):
        raise ValueError(f'number must be >= 1, got {counts}')
    calls = {name: fn if counts[name] == 1 else _repeat(fn, counts[name]) for name, fn in fns.items()}
    times = time_interleaved(calls, iters, warmup, device, before=before, rotate=rotate)
    result = {}
    for name, ts in times.items():
        per_call = [t / counts[name] for t in ts]
        result[name] = {**summarize(per_call), 'all_s': per_call}
    if baseline is not None:
        ref = result[baseline]
        for r in result.values():
            r['ratio_median'] = r['median_s'] / ref['median_s']
            r['ratio_min'] = r['min_s'] / ref['min_s']
    return result


def _repeat(fn: Callable[[], Any], n: int) -> Callable[[], Any]:
    def calls():
        for _ in range(n):
            out = fn()
        return out
    return calls


def calls_per_sample(fn: Callable[[], Any], seconds: float, device='cpu') -> int:
    """How many calls of ``fn`` fill about ``seconds`` (one call timed after one untimed)."""
    fn()
    once = time_call(fn, device)[0]
    return max(1, int(seconds / max(once, 1e-9)))


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', '--list'):
        print(__doc__.strip().split('\n\n')[0] + '\n')
        print('usage: bench.py SUBCOMMAND [flags of scripts/bench_<name>.py]\n')
        for name, (module, what) in SUBCOMMANDS.items():
            print(f'  {name:12s} {what} ({module}.py)')
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        sys.exit(f'bench.py: unknown subcommand {name!r}; one of {", ".join(SUBCOMMANDS)}')
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv = [f'bench.py {name}', *rest]  # for the modules whose main() parses sys.argv
    module.main()


if __name__ == '__main__':
    main()
