""" Self-describing safetensors checkpoints.

``save_model`` writes the weights plus, in the safetensors metadata, the timm architecture name, the
creation arguments and the data config (mean/std/input size), so ``load_model(path)`` rebuilds the
model with nothing else. The files are plain safetensors state dicts, so timm reads them too::

    timm.create_model('resnet34_tn', pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=10)

Retrofits are recorded in the metadata and redone by ``load_model``: ``add_tensor_norm``,
``apply_weight_reparam`` (WN/WS; the file stores the normalised weights under the plain
``<layer>.weight`` keys, so timm loads it as the plain architecture with the same outputs) and
``add_error_normalization`` (identity in the forward pass; no tensors of its own).

Class names (``save_model(..., label_names=...)``) are stored as metadata ``timm_normplugins.label_names``, a
JSON list of strings; ``read_checkpoint_info`` returns them and ``load_model`` (and timm's factory, for our
models) puts them in ``model.pretrained_cfg['label_names']``, where timm keeps its own.
"""
import json
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import safetensors
import safetensors.torch
import timm
import torch
import torch.nn as nn
from timm.models import adapt_input_conv, get_model_args

from .core.files import new_file_mode
from .version import __version__

__all__ = ['save_model', 'load_model', 'read_checkpoint_info', 'load_state_dict_checked', 'CheckedLoadMixin',
           'CheckpointError', 'read_weights', 'load_weights', 'read_safetensors_header']

_logger = logging.getLogger(__name__)

_PREFIX = 'timm_normplugins.'
_DATA_KEYS = ('input_size', 'mean', 'std', 'interpolation', 'crop_pct')


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked (wrong architecture, class count, format)."""


def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch = cfg.get('architecture')
    if not arch:
        raise CheckpointError(
            f'{type(model).__name__} has no timm architecture name (pretrained_cfg["architecture"]); '
            'create it with timm.create_model(...) so the checkpoint can describe it')
    return arch


# model attribute set by a retrofit -> metadata key; load_model redoes them in this order
_RETROFITS = (('weight_reparam_retrofit', 'weight_reparam'), ('error_norm_retrofit', 'error_norm'))


def _plain_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state_dict()`` with every parametrized tensor stored as its value under its plain name.

    A WN/WS model (``parametrizations.weight.original``) becomes an ordinary state dict holding the
    normalised weights: timm loads it into the plain architecture with identical outputs.
    """
    from torch.nn.utils import parametrize
    state = model.state_dict()
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        prefix = f'{module_name}.' if module_name else ''
        for tensor_name in module.parametrizations.keys():
            inner = f'{prefix}parametrizations.{tensor_name}.'
            for key in [k for k in state if k.startswith(inner)]:
                del state[key]
            with torch.no_grad():
                state[prefix + tensor_name] = getattr(module, tensor_name)
    return state


def _check_label_names(label_names: Any, num_classes: Any, where: str) -> List[str]:
    """``label_names`` as a list of strings, one per class; ``TypeError``/``ValueError`` naming ``where``."""
    if isinstance(label_names, (str, bytes)) or not isinstance(label_names, (list, tuple, Sequence)):
        raise TypeError(f'{where}: label_names must be a sequence of strings, got {type(label_names).__name__}')
    names = list(label_names)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f'{where}: label_names must be strings, got {type(bad[0]).__name__} {bad[0]!r}')
    if isinstance(num_classes, int) and num_classes > 0 and len(names) != num_classes:
        raise ValueError(f'{where}: {len(names)} label_names for a model with {num_classes} classes')
    return names


def save_model(model: nn.Module, path: Union[str, Path], metadata: Optional[Mapping[str, str]] = None,
               label_names: Optional[Sequence[str]] = None) -> Path:
    """Write ``model``'s weights and its recipe (architecture + creation args) to a safetensors file.

    ``label_names``: the class names, one per output class, in the classifier's order (stored as metadata
    ``timm_normplugins.label_names``). The write is atomic: an interrupted save leaves any previous file at
    ``path`` intact.
    """
    model = getattr(model, 'module', model)  # DDP / accelerate wrappers
    model = getattr(model, '_orig_mod', model)  # torch.compile wrapper
    arch = _architecture(model)
    if label_names is not None:
        label_names = _check_label_names(label_names, getattr(model, 'num_classes', None), f'save_model({arch})')
    model_args = get_model_args(model)
    for key in ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'checkpoint_path', 'features_only'):
        model_args.pop(key, None)
    try:
        args_json = json.dumps(model_args, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f'creation arguments of {arch} are not JSON-serialisable: {model_args}') from e
    data_cfg = {k: model.pretrained_cfg[k] for k in _DATA_KEYS if model.pretrained_cfg.get(k) is not None}
    meta = {
        'format': 'pt',
        _PREFIX + 'architecture': arch,
        _PREFIX + 'model_args': args_json,
        _PREFIX + 'data_config': json.dumps(data_cfg),
        _PREFIX + 'version': __version__,
    }
    tn_grad = getattr(model, 'tensor_norm_retrofit', None)
    if tn_grad is not None:
        meta[_PREFIX + 'add_tensor_norm'] = tn_grad
    for attr, key in _RETROFITS:
        record = getattr(model, attr, None)
        if record:
            meta[_PREFIX + key] = json.dumps(record)
    if label_names is not None:
        meta[_PREFIX + 'label_names'] = json.dumps(label_names, ensure_ascii=False)
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f'safetensors metadata must map str to str, got {k!r}: {type(v).__name__}')
        meta[k] = v
    tensors = {k: v.detach().contiguous().cpu() for k, v in _plain_state_dict(model).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    try:
        mode = new_file_mode(tmp)
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # safetensors creates its files 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file would only fill the disk
        raise
    return path


# create_model arguments that make timm open a file or download weights: a checkpoint's metadata must not
# choose them (it would make loading one file read another, e.g. a pickle). Nested dicts (a U-Net's
# encoder_kwargs) are searched too; a false value (encoder_pretrained=False) is harmless and allowed.
_FILE_ARGS = {'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'checkpoint_path', 'cache_dir', 'file', 'url',
              'hf_hub_id', 'hf_hub_filename', 'state_dict'}
_FILE_ARG_SUFFIXES = ('_path', '_file', '_dir', '_url', '_pretrained')
_SOURCE_PREFIXES = ('hf-hub:', 'hf_hub:', 'local-dir:')  # model names timm resolves through files


def _file_arg(args: Any, where: str = '') -> Optional[str]:
    """The first key of ``args`` (recursively) that would make model creation read a file, or None."""
    if isinstance(args, dict):
        for key, value in args.items():
            name = str(key)
            if value and (name in _FILE_ARGS or name.endswith(_FILE_ARG_SUFFIXES) or name.startswith('pretrained')):
                return f'{where}{name}={value!r}'
            found = _file_arg(value, f'{where}{name}.')
            if found:
                return found
    elif isinstance(args, str) and args.lower().startswith(_SOURCE_PREFIXES):  # e.g. a U-Net encoder name
        return f'{where[:-1] or "value"}={args!r}'
    elif isinstance(args, list):
        for item in args:
            found = _file_arg(item, where)
            if found:
                return found
    return None


# safetensors dtype -> bytes per element (the library's own list; anything else is refused)
_ST_DTYPE_BYTES = {'BOOL': 1, 'U8': 1, 'I8': 1, 'F8_E5M2': 1, 'F8_E4M3': 1, 'F8_E8M0': 1, 'I16': 2, 'U16': 2,
                   'F16': 2, 'BF16': 2, 'I32': 4, 'U32': 4, 'F32': 4, 'I64': 8, 'U64': 8, 'F64': 8, 'C64': 8}
_ST_TORCH_DTYPE = {'BOOL': torch.bool, 'U8': torch.uint8, 'I8': torch.int8, 'I16': torch.int16, 'F16': torch.float16,
                   'BF16': torch.bfloat16, 'I32': torch.int32, 'F32': torch.float32, 'I64': torch.int64,
                   'F64': torch.float64}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_MAX_NDIM = 8


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def read_safetensors_header(path: Union[str, Path]) -> Tuple[Dict[str, Tuple[str, Tuple[int, ...]]], Dict[str, str]]:
    """``({tensor name: (dtype, shape)}, metadata)`` of a safetensors file, checked before anything is read.

    The header length, its JSON, every entry's dtype, shape and byte range (inside the file, matching
    the shape) and the metadata's types (str -> str) are checked; reading costs the header's bytes only.
    Raises ``CheckpointError`` naming the file: not safetensors, truncated, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    bad = f'{path} is not a safetensors file'
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f'{bad} ({size} bytes, shorter than a header)')
            n = struct.unpack('<Q', head)[0]
            if n > _MAX_HEADER_BYTES:
                raise CheckpointError(f'{bad} (its header claims {n} bytes, more than {_MAX_HEADER_BYTES})')
            if 8 + n > size:
                raise CheckpointError(f'{path} is truncated: its header claims {n} bytes, the file has {size - 8}')
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f'{path} cannot be read ({_first_line(e)})') from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f'{bad} (its header is not JSON: {_first_line(e)})') from None
    if not isinstance(header, dict):
        raise CheckpointError(f'{bad} (its header is not a JSON object)')
    meta = header.pop('__metadata__', None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f'{bad} (its __metadata__ is not a mapping of strings to strings)')
    data_bytes = size - 8 - n
    tensors: Dict[str, Tuple[str, Tuple[int, ...]]] = {}
    for name, entry in header.items():
        where = f'{path}: tensor {name!r}'
        if not isinstance(entry, dict) or set(entry) != {'dtype', 'shape', 'data_offsets'}:
            raise CheckpointError(f'{where} is not a safetensors entry (dtype, shape, data_offsets)')
        dtype, shape, offsets = entry['dtype'], entry['shape'], entry['data_offsets']
        if dtype not in _ST_DTYPE_BYTES:
            raise CheckpointError(f'{where} has unknown dtype {dtype!r}')
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM or \
                not all(type(d) is int and 0 <= d < 2 ** 48 for d in shape):
            raise CheckpointError(f'{where} has an invalid shape {shape!r}')
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) \
                or not 0 <= offsets[0] <= offsets[1]:
            raise CheckpointError(f'{where} has invalid data_offsets {offsets!r}')
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * _ST_DTYPE_BYTES[dtype]:
            raise CheckpointError(f'{where}: shape {shape} of {dtype} needs {numel * _ST_DTYPE_BYTES[dtype]} bytes, '
                                  f'its data_offsets give {offsets[1] - offsets[0]}')
        if offsets[1] > data_bytes:
            raise CheckpointError(f'{path} is truncated: tensor {name!r} ends at byte {offsets[1]} of the data, '
                                  f'the file holds {data_bytes}')
        tensors[name] = (dtype, tuple(shape))
    return tensors, meta


def _metadata_json(path: Path, meta: Mapping[str, str], key: str, default: str, types: Tuple[type, ...]):
    try:
        value = json.loads(meta.get(_PREFIX + key, default))
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f'{path}: metadata {_PREFIX + key} is not valid JSON ({_first_line(e)})') from None
    if not isinstance(value, types):
        raise CheckpointError(f'{path}: metadata {_PREFIX + key} is a {type(value).__name__}, expected '
                              f'{" or ".join("null" if t is type(None) else t.__name__ for t in types)}')
    return value


def read_checkpoint_info(path: Union[str, Path]) -> Dict[str, Any]:
    """Architecture, creation args, data config, class names and raw metadata of a ``save_model`` file.

    ``label_names``: the class names ``save_model`` stored, or None. Also ``tensors``: ``{name: (safetensors
    dtype, shape)}`` from the checked header (nothing is loaded).
    """
    path = Path(path)
    tensors, meta = read_safetensors_header(path)
    if _PREFIX + 'architecture' not in meta:
        raise CheckpointError(
            f'{path} has no timm_normplugins metadata (not written by save_model); load it with '
            f"timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file='{path}'))")
    model_args = _metadata_json(path, meta, 'model_args', '{}', (dict,))
    label_names = _metadata_json(path, meta, 'label_names', 'null', (list, type(None)))
    if label_names is not None:
        try:
            label_names = _check_label_names(label_names, model_args.get('num_classes'),
                                             f'{path}: metadata {_PREFIX}label_names')
        except (TypeError, ValueError) as e:
            raise CheckpointError(str(e)) from None
    return dict(
        architecture=meta[_PREFIX + 'architecture'],
        model_args=model_args,
        data_config=_metadata_json(path, meta, 'data_config', '{}', (dict,)),
        add_tensor_norm=meta.get(_PREFIX + 'add_tensor_norm'),
        **{key: _metadata_json(path, meta, key, 'null', (dict, type(None))) for _, key in _RETROFITS},
        label_names=label_names,
        metadata=meta,
        tensors=tensors,
    )


def _check_fit(model: nn.Module, shapes: Mapping[str, Tuple[int, ...]], source: str,
               source_arch: Optional[str] = None, may_miss: Sequence[str] = ()) -> None:
    """Raise ``CheckpointError`` explaining any key or shape mismatch between ``model`` and ``shapes``.

    ``may_miss``: model keys the file need not hold (a classifier ``load_pretrained`` dropped).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in shapes and k not in may_miss]
    unexpected = [k for k in shapes if k not in own]
    mismatched = [f'{k}: {tuple(shapes[k])} vs model {tuple(own[k].shape)}'
                  for k in own if k in shapes and tuple(shapes[k]) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)
        held = f' (it holds {source_arch})' if source_arch else ''
        lines = [f'{source} does not fit {arch}{held}:']
        for label, items in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatch', mismatched)):
            if items:
                more = f' ... (+{len(items) - 5} more)' if len(items) > 5 else ''
                lines.append(f'  {label} ({len(items)}): {", ".join(items[:5])}{more}')
        classifier = _classifier_weight_key(model)
        if classifier and classifier in shapes and classifier in own and not missing and not unexpected:
            lines.append(f'  (class count: checkpoint {tuple(shapes[classifier])[0]}, '
                         f'model {own[classifier].shape[0]})')
        raise CheckpointError('\n'.join(lines))


def load_state_dict_checked(
        model: nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        source: str = 'checkpoint',
        source_arch: Optional[str] = None,
):
    """Strict load that explains a mismatch (architecture / class count) before touching the model."""
    _check_fit(model, {k: tuple(v.shape) for k, v in state_dict.items()}, source, source_arch)
    model.load_state_dict(state_dict, strict=True)


_WRAPPER_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')  # timm's load_state_dict order (use_ema)


_MAX_ZIP_MEMBERS = 1_000_000


def _check_torch_zip(path: Path) -> None:
    """A torch zip's members, from its central directory, before ``torch.load`` allocates a byte for them.

    ``torch.save`` stores its records uncompressed, so together they fit in the file; torch's reader
    allocates each record's declared uncompressed size and inflates compressed ones, so a small crafted
    archive (a deflated record of zeros, or a size that lies) would otherwise ask for gigabytes.
    """
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f'{path} is not a readable torch checkpoint ({_first_line(e)})') from None
    if len(members) > _MAX_ZIP_MEMBERS:
        raise CheckpointError(f'{path} holds {len(members)} zip members, more than a checkpoint may ({_MAX_ZIP_MEMBERS})')
    declared = sum(m.file_size for m in members)
    if declared > size:
        raise CheckpointError(f'{path} declares {declared} bytes of records in a {size}-byte file (a compressed or '
                              'lying zip; torch.save writes its records uncompressed): refused before loading')


def read_weights(path: Union[str, Path], use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file (``.pth``/``.pt``/``.bin``), never running code.

    torch files are read with ``torch.load(weights_only=True)`` here, not through timm's loader. Like timm,
    a dict holding ``state_dict_ema`` / ``model_ema`` (if ``use_ema``), ``state_dict`` or ``model`` is
    unwrapped and a ``module.`` prefix dropped. Raises ``CheckpointError`` (one line, naming the file) for
    anything that is not a mapping of names to tensors, and ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    with open(path, 'rb') as f:
        magic = f.read(8)
    if path.suffix == '.safetensors' or not (zipfile.is_zipfile(path) or magic[:2] == b'\x80\x02'):
        try:
            read_safetensors_header(path)  # a truncated or malformed file stops here, before safetensors allocates
        except CheckpointError as e:
            if path.suffix == '.safetensors':
                raise
            raise CheckpointError(f'{path} is neither a torch checkpoint nor a safetensors file ({e})') from None
        try:
            return safetensors.torch.load_file(str(path))
        except Exception as e:  # SafetensorError is not an OSError/ValueError
            raise CheckpointError(f'{path} is not a readable safetensors file ({_first_line(e)})') from None
    if zipfile.is_zipfile(path):
        _check_torch_zip(path)
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:  # torch's restricted unpickler refused a global: the file wants to run code
        lines = [ln.strip() for ln in str(e).splitlines() if 'GLOBAL' in ln or 'Unsupported' in ln or 'WeightsUnpickler' in ln]
        why = (lines[0] if lines else _first_line(e))[:300]
        raise CheckpointError(f'{path} holds more than tensors (torch.load(weights_only=True) refused it: '
                              f'{why})') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            zipfile.BadZipFile, struct.error, MemoryError) as e:
        raise CheckpointError(f'{path} is not a readable torch checkpoint ({type(e).__name__}: '
                              f'{_first_line(e)})') from None
    if isinstance(checkpoint, dict):
        for key in _WRAPPER_KEYS[0 if use_ema else 2:]:
            if checkpoint.get(key) is not None:
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a state dict of tensors')
    state_dict = {}
    for key, value in checkpoint.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor')
        state_dict[key[7:] if key.startswith('module.') else key] = value
    return state_dict


def load_weights(model: nn.Module, path: Union[str, Path], use_ema: bool = True) -> nn.Module:
    """Load a weights file (``--initial-checkpoint``) into ``model`` strictly, never running code.

    A safetensors file's tensor shapes are compared with ``model`` from its header, before any tensor is
    read. Mismatches and unreadable files raise ``CheckpointError`` naming the file.
    """
    path = Path(path)
    if path.suffix == '.safetensors':
        tensors, _ = read_safetensors_header(path)
        _check_fit(model, {k: shape for k, (_, shape) in tensors.items()}, str(path))
    load_state_dict_checked(model, read_weights(path, use_ema), str(path))
    return model


def _cfg_names(model: nn.Module, key: str) -> Tuple[str, ...]:
    names = (getattr(model, 'pretrained_cfg', None) or {}).get(key) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _adapt_first_conv(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """timm's ``in_chans`` adaptation (``adapt_input_conv``): a first conv trained on other input channels is
    summed (to 1 channel) or repeated and rescaled (from 1 or 3), in place. Anything else is left for the fit
    check to report."""
    own = model.state_dict()
    for conv in _cfg_names(model, 'first_conv'):
        key = f'{conv}.weight'
        weight, target = state_dict.get(key), own.get(key)
        if weight is None or target is None or weight.ndim != 4 or weight.shape == target.shape \
                or weight.shape[:1] + weight.shape[2:] != target.shape[:1] + target.shape[2:]:
            continue
        try:
            state_dict[key] = adapt_input_conv(target.shape[1], weight, base_chans=weight.shape[1])
        except NotImplementedError:
            continue
        _logger.info(f'{source}: converted first conv {conv} from {weight.shape[1]} to {target.shape[1]} input channels')


def _drop_unfitting_classifier(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Tuple[List[str], str]:
    """timm's fine-tuning rule: the file's classifier is dropped when it does not fit the model's (another class
    count, or ``num_classes=0``). Returns (model keys left at their initialisation, what differed: '' when
    nothing was dropped)."""
    own = model.state_dict()
    kept_init: List[str] = []
    why = ''
    for head in _cfg_names(model, 'classifier'):
        theirs = [k for k in state_dict if k.startswith(f'{head}.')]
        ours = [k for k in own if k.startswith(f'{head}.')]
        if not theirs or (set(theirs) == set(ours) and all(state_dict[k].shape == own[k].shape for k in ours)):
            continue
        weight = state_dict.get(f'{head}.weight')
        held = weight.shape[0] if weight is not None and weight.ndim else '?'
        why = f'checkpoint {held} classes, model {getattr(model, "num_classes", "?")}'
        for k in theirs:
            del state_dict[k]
        kept_init += ours
    return kept_init, why


class CheckedLoadMixin:
    """Gives a model timm's ``load_pretrained`` hook, used when its cfg has ``custom_load=True`` (our registered
    pretrained tags, and any ``pretrained_cfg_overlay=dict(file=...)``).

    timm's semantics, decided from the file rather than from the cfg's class count: a classifier that does not
    fit the model (``num_classes=100`` on a 10-class checkpoint, or ``num_classes=0``) is dropped and stays
    freshly initialised, with one logged line, so ``create_model(name, pretrained=True, num_classes=100)``
    fine-tunes; a first conv trained on other input channels is adapted as timm adapts it. Any other mismatch
    is an error that explains itself, before the model is touched (timm would load the rest non-strictly).
    Class names stored in the file (``save_model(..., label_names=...)``) land in ``pretrained_cfg``.
    """

    def load_pretrained(self, checkpoint_path: str):
        try:
            _, meta = read_safetensors_header(checkpoint_path)
        except (CheckpointError, FileNotFoundError):
            meta = {}  # not safetensors (or not readable): read_weights below reports what it can
        # one of ours: its metadata (class names) is checked as load_model checks it
        info = read_checkpoint_info(checkpoint_path) if _PREFIX + 'architecture' in meta else {}
        source = str(checkpoint_path)
        # a .pth/.bin checkpoint is read with torch's restricted unpickler (read_weights), never as code
        state_dict = dict(read_weights(checkpoint_path))
        _adapt_first_conv(self, state_dict, source)
        kept_init, why = _drop_unfitting_classifier(self, state_dict)
        _check_fit(self, {k: tuple(v.shape) for k, v in state_dict.items()}, source, info.get('architecture'),
                   may_miss=kept_init)
        self.load_state_dict(state_dict, strict=not kept_init)
        cfg = getattr(self, 'pretrained_cfg', None)
        if why:
            _logger.warning(f'{source}: classifier {", ".join(_cfg_names(self, "classifier"))} dropped ({why}); '
                            'it stays freshly initialised for fine-tuning')
            if isinstance(cfg, dict):
                cfg.pop('label_names', None)  # the names were the dropped classifier's
        elif isinstance(cfg, dict) and info.get('label_names'):
            cfg['label_names'] = tuple(info['label_names'])


def _classifier_weight_key(model: nn.Module) -> Optional[str]:
    name = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier')
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return f'{name}.weight' if name else None


def load_model(
        path: Union[str, Path],
        model_name: Optional[str] = None,
        device: Union[str, torch.device] = 'cpu',
        **kwargs,
) -> nn.Module:
    """Rebuild the model a ``save_model`` file describes and load its weights (strictly).

    Args:
        path: the ``.safetensors`` file.
        model_name: if given, the architecture the caller expects; another one is an error.
        device: where to put the model.
        **kwargs: creation arguments that override the saved ones (e.g. ``tn_grad='paper'``,
            ``drop_rate``); architecture-changing ones (``num_classes``) must agree with the weights.

    Class names the file stores (``save_model(..., label_names=...)``) are put in
    ``model.pretrained_cfg['label_names']``.

    Reading the file runs no code and opens no other file: safetensors holds only tensors, and creation
    arguments in the metadata that would make timm read a file (``checkpoint_path``, ``pretrained*``,
    ``*_path``, ...) are refused. The header and metadata are checked first (types, byte ranges, a
    truncated file), and the model the metadata describes is built on the meta device and compared
    with the file's tensor shapes before any memory is allocated for it.
    """
    info = read_checkpoint_info(path)
    arch = info['architecture']
    if model_name is not None and model_name != arch:
        raise CheckpointError(f'{path} holds a {arch} checkpoint, not {model_name}')
    if not timm.is_model(arch):
        raise CheckpointError(
            f'{path} holds architecture {arch!r}, which is not registered in timm '
            '(import the package that defines it first)')
    unsafe = _file_arg(info['model_args'])
    if unsafe:
        raise CheckpointError(f'{path}: its metadata asks timm to create the model with {unsafe}, which would read '
                              'another file; refusing (pass such arguments to load_model yourself if you mean them)')
    args = dict(info['model_args'], **kwargs)
    shapes = {k: shape for k, (_, shape) in info['tensors'].items()}
    _check_before_allocating(path, arch, args, info['add_tensor_norm'], kwargs.get('tn_grad'), shapes)
    try:
        model = timm.create_model(arch, **args)
        if info['add_tensor_norm']:
            from .retrofit.add_tensor_norm import add_tensor_norm
            add_tensor_norm(model, grad=kwargs.get('tn_grad', info['add_tensor_norm']))
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError) as e:
        raise CheckpointError(f'{path}: cannot create {arch} from its metadata ({type(e).__name__}: '
                              f'{_first_line(e)})') from None
    state_dict = read_weights(path)
    load_state_dict_checked(model, state_dict, str(path), arch)
    if info['label_names'] is not None:
        model.pretrained_cfg = dict(model.pretrained_cfg, label_names=tuple(info['label_names']))
        model.default_cfg = model.pretrained_cfg  # timm's alias
    # the file holds the normalised weights under plain keys: they become the parametrizations' originals
    try:
        if info['weight_reparam']:
            from .retrofit.weight_reparam import redo_weight_reparam
            redo_weight_reparam(model, info['weight_reparam'])
        if info['error_norm']:
            from .retrofit.add_error_norm import redo_error_normalization
            redo_error_normalization(model, info['error_norm'])
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError) as e:
        raise CheckpointError(f'{path}: its retrofit metadata cannot be redone ({type(e).__name__}: '
                              f'{_first_line(e)})') from None
    return model.to(device)


def _check_before_allocating(path: Path, arch: str, args: Dict[str, Any], tn: Optional[str], tn_grad: Optional[str],
                             shapes: Mapping[str, Tuple[int, ...]]) -> None:
    """Build the architecture on the meta device (no memory) and compare its tensors with the file's header.

    A file whose metadata asks for a bigger model than its tensors (``num_classes=60000000`` in a 1 MB
    file) is refused before the real model is allocated. Should the architecture not build on the meta
    device, the classifier's size is still compared with the class count asked for.
    """
    try:
        with torch.device('meta'):
            skeleton = timm.create_model(arch, **args)
            if tn:
                from .retrofit.add_tensor_norm import add_tensor_norm
                add_tensor_norm(skeleton, grad=tn_grad or tn)
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError) as e:
        raise CheckpointError(f'{path}: cannot create {arch} from its metadata ({type(e).__name__}: '
                              f'{_first_line(e)})') from None
    except (RuntimeError, NotImplementedError):  # an architecture that computes with tensors while it is built
        cfg = (timm.models.get_pretrained_cfg(arch) if hasattr(timm.models, 'get_pretrained_cfg') else None)
        classifier = getattr(cfg, 'classifier', None) if cfg is not None else None
        if isinstance(classifier, (list, tuple)):
            classifier = classifier[0] if classifier else None
        wanted = args.get('num_classes')
        held = shapes.get(f'{classifier}.weight') if classifier else None
        if held is not None and isinstance(wanted, int) and held[:1] != (wanted,):
            raise CheckpointError(f'{path}: its metadata asks for {wanted} classes, its classifier '
                                  f'{classifier}.weight has shape {held}') from None
        return
    _check_fit(skeleton, shapes, str(path), arch)
