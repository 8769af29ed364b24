#!/usr/bin/env python
""" One entry for the package's benchmarks, and the timing helpers they share.

    python scripts/bench.py tn --device cuda --batch-size 256 --iters 20 --dtypes fp32 bf16 --modes eager
    python scripts/bench.py optim --device cpu --iters 20 --bases sgd momentum adamw
    python scripts/bench.py --list

Each subcommand takes exactly the flags of its ``scripts/bench_<name>.py`` (``bench.py tn --help``), which
still run on their own (scripts/gpu_check.sh and docs/BENCHMARKS.md call them so).

Timing (:func:`time_interleaved`): warm-up calls first, then rounds in which every measured function runs
once in turn (so drift and load from other processes hit all alike), CUDA synchronised before and after
each timed call; results are seconds per call, summarised by :func:`summarize` as median and minimum.
"""
import importlib
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Tuple

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


def autorange_ms(fn: Callable[[], Any], min_run_time: float) -> float:
    """Median ms per call from ``torch.utils.benchmark`` (CUDA-synchronised), for calls far below a millisecond."""
    import torch.utils.benchmark as benchmark
    t = benchmark.Timer(stmt='fn()', globals={'fn': fn}).blocked_autorange(min_run_time=min_run_time)
    return t.median * 1e3


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
