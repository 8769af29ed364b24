""" Which implementation an op runs: its Triton kernel or the PyTorch path, resolved once per (device, dtype).

Like torch's ``foreach`` / ``fused`` optimizer flags, the choice is made once and then read cheaply. Each op
(``'tn'``: fused ReLU+TN, ``'wcgc'``: WC/GC's rows kernel) owns one :class:`KernelSelector`; its mode is

* ``'auto'`` (default): the op's default where Triton runs (a CUDA device; the CPU only under
  ``TRITON_INTERPRET=1``) -- the PyTorch path for TN, the Triton kernel for WC/GC (measurements:
  docs/BENCHMARKS.md, docs/TN.md) -- and the PyTorch path elsewhere.
* ``'triton'``: the kernel; an input it cannot take, or a failed check, raises instead of silently falling
  back, so a benchmark never measures the wrong path.
* ``'torch'``: the PyTorch path.

The first time the kernel would run for a (device, dtype), it is run against the PyTorch path on a small
input. If it fails to compile or disagrees, ``'auto'`` falls back to PyTorch for that (device, dtype) with one
warning per op; ``'triton'`` raises.

Environment (read at import): ``TIMM_NORMPLUGINS_KERNELS`` holds ``op=mode`` pairs or a bare mode for every
op, e.g. ``tn=triton,wcgc=torch`` or ``torch``. The older ``TIMM_NORMPLUGINS_TN_KERNEL`` and
``TIMM_NORMPLUGINS_WCGC_KERNEL`` still work as aliases for one op each (the new variable wins).
"""
import os
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch

__all__ = ['KERNEL_MODES', 'ENV_VAR', 'ENV_ALIASES', 'KernelSelector', 'env_kernel_mode']

KERNEL_MODES = ('auto', 'triton', 'torch')
ENV_VAR = 'TIMM_NORMPLUGINS_KERNELS'
ENV_ALIASES = {'tn': 'TIMM_NORMPLUGINS_TN_KERNEL', 'wcgc': 'TIMM_NORMPLUGINS_WCGC_KERNEL'}


def env_kernel_mode(op: str, environ=None) -> str:
    """The mode the environment asks for ``op`` (``'auto'`` when it says nothing)."""
    environ = os.environ if environ is None else environ
    mode = None
    for item in environ.get(ENV_VAR, '').split(','):
        key, sep, value = item.strip().lower().rpartition('=')
        if not value:
            continue
        if sep and key not in ENV_ALIASES:
            raise ValueError(f'{ENV_VAR}: unknown op {key!r} (ops: {sorted(ENV_ALIASES)})')
        if not sep or key == op:
            mode = value
    if mode is None and op in ENV_ALIASES:
        mode = environ.get(ENV_ALIASES[op], '').strip().lower() or None
    return mode or 'auto'


class KernelSelector:
    """The Triton-or-PyTorch choice of one op.

    Args:
        op: short name (``'tn'``, ``'wcgc'``), also its key in the environment variable.
        label: how messages name it.
        load: imports the kernel module and returns the kernel entry point (raises if Triton is unusable).
        check: ``check(kernel, device, dtype)`` runs the kernel and the PyTorch path on a small input and
            returns None when they agree, else a description of the difference. Exceptions count as failures.
        default: what ``'auto'`` picks where Triton runs, ``'triton'`` or ``'torch'``.
        dtypes: the dtypes the kernel takes.
    """

    def __init__(self, op: str, label: str, load: Callable[[], Callable], check: Callable,
                 default: str, dtypes: Tuple[torch.dtype, ...]):
        self.op, self.label, self._load_fn, self._check = op, label, load, check
        self.default = self._valid(default)
        self.dtypes = dtypes
        self.interpret = os.environ.get('TRITON_INTERPRET') == '1'  # the CPU runs Triton through its interpreter
        self.kernel: Optional[Callable] = None
        self.load_error: Optional[str] = None
        self.verdicts: Dict[tuple, bool] = {}  # (device, dtype) -> the kernel passed its first-use check
        self.warned = False
        self.mode = 'auto'
        self.set(env_kernel_mode(op))

    def _valid(self, mode: str) -> str:
        if mode not in KERNEL_MODES:
            raise ValueError(f'{self.label} kernel must be one of {KERNEL_MODES}, got {mode!r}')
        return mode

    def set(self, mode: str) -> None:
        self._valid(mode)
        if mode == 'triton' and self.load() is None:  # the mode stays what it was
            raise RuntimeError(f'{self.label} kernel "triton" requested but the Triton kernels did not load '
                               f'({self.load_error})')
        self.mode = mode
        # load where it will run, outside any compiled region (registering custom ops inside a trace fails)
        if self.wants_triton() and torch.cuda.is_available():
            self.load()

    def wants_triton(self) -> bool:
        return self.mode == 'triton' or (self.mode == 'auto' and self.default == 'triton')

    def load(self) -> Optional[Callable]:
        if self.kernel is None and self.load_error is None:
            try:
                self.kernel = self._load_fn()
            except Exception as e:  # no Triton, or one this torch cannot register ops with
                self.load_error = f'{type(e).__name__}: {e}'
        return self.kernel

    def runs_on(self, device: torch.device) -> bool:
        return device.type == 'cuda' or (self.interpret and device.type == 'cpu')

    def use_kernel(self, device: torch.device, dtype: torch.dtype, strict_dtype: bool = True) -> bool:
        """Whether a tensor on ``device`` of ``dtype`` runs the kernel (runs the first-use check if due)."""
        if self.mode == 'torch' or not self.wants_triton():
            return False
        forced = self.mode == 'triton'
        if not self.runs_on(device) or dtype not in self.dtypes:
            if forced and (strict_dtype or not self.runs_on(device)):
                raise RuntimeError(
                    f'{self.label} kernel "triton" requested for a {dtype} tensor on {device}: the kernels take '
                    f'{"/".join(str(d).replace("torch.", "") for d in self.dtypes)} CUDA tensors (CPU ones only '
                    f'under TRITON_INTERPRET=1)' + (f'; not loaded: {self.load_error}' if self.load_error else ''))
            return False
        if self.load() is None:
            return self._fail(None, f'the Triton kernels did not load ({self.load_error})')
        key = (str(device), dtype)
        verdict = self.verdicts.get(key)
        if verdict is None:
            if torch.compiler.is_compiling():  # no check inside a trace: a forced kernel is trusted there
                return forced
            try:
                problem = self._check(self.kernel, device, dtype)
            except Exception as e:  # a compile error surfaces at the first launch
                problem = f'it failed to run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
            verdict = self.verdicts[key] = problem is None
            if problem is not None:
                return self._fail(key, problem)
        return verdict

    def _fail(self, key, problem: str) -> bool:
        where = f' for {key[1]} on {key[0]}' if key else ''
        if self.mode == 'triton':
            raise RuntimeError(f'{self.label} kernel "triton" requested, but {problem}{where}')
        if not self.warned:
            self.warned = True
            warnings.warn(f'{self.label}: the Triton kernel is not used{where}: {problem}; the PyTorch path '
                          f'runs instead', RuntimeWarning, stacklevel=3)
        return False

    def reset_checks(self) -> None:
        """Forget the first-use verdicts (the next use checks again)."""
        self.verdicts.clear()
        self.warned = False
