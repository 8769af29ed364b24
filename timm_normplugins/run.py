""" Run one of timm's scripts with this package's models and optimizers registered.

timm's ``train.py``, ``validate.py``, ``inference.py`` and ``benchmark.py`` (in a pytorch-image-models
checkout; the timm wheel does not ship them) import only timm, so ``--model cifar_resnet20_tn`` or
``--opt sgd_wcgc`` are unknown to them. This imports ``timm_normplugins`` first, then runs the script
as ``__main__`` with the remaining arguments::

    python -m timm_normplugins.run ~/pytorch-image-models/validate.py --model resnet34_tn \\
        --checkpoint output/RUN/model_best.safetensors --num-classes 10 --dataset torch/cifar10 --data-dir ~/data
    python -m timm_normplugins.run ~/pytorch-image-models/train.py --model cifar_resnet20_tn --opt sgd_wcgc \\
        --grad-checkpointing ...

Full Distribution Training is not selectable there: timm's ``--mixup`` is a float alpha (docs/RECIPES.md).
"""
import os
import runpy
import sys
from typing import List, Optional

__all__ = ['main']


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    script = argv[0]
    if not os.path.isfile(script):
        raise SystemExit(f'error: {script} is not a file; give the path of one of timm\'s scripts (e.g. validate.py '
                         'in a pytorch-image-models checkout: the timm wheel does not ship them)')
    import timm_normplugins  # noqa: F401  (registers the models and the WC/GC optimizers)
    sys.argv = [script] + argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # the script's own imports, as python script.py
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
