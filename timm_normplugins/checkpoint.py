""" Self-describing safetensors checkpoints.

``save_model`` writes the weights plus, in the safetensors metadata, the timm architecture name, the
creation arguments and the data config (mean/std/input size), so ``load_model(path)`` rebuilds the
model with nothing else. The files are plain safetensors state dicts, so timm reads them too::

    timm.create_model('resnet34_tn', pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=10)

Retrofits are recorded in the metadata and redone by ``load_model``: ``add_tensor_norm``,
``apply_weight_reparam`` (WN/WS; the file stores the normalised weights under the plain
``<layer>.weight`` keys, so timm loads it as the plain architecture with the same outputs) and
``add_error_normalization`` (identity in the forward pass; no tensors of its own).
"""
import inspect
import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import safetensors
import safetensors.torch
import timm
import torch
import torch.nn as nn
try:
    from timm.models import get_model_args
except ImportError:  # timm < 1.0.20 does not record creation args itself
    get_model_args = None

from .version import __version__

__all__ = ['save_model', 'load_model', 'read_checkpoint_info', 'load_state_dict_checked', 'CheckedLoadMixin',
           'CheckpointError']

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


def _model_args(model: nn.Module) -> Dict[str, Any]:
    if get_model_args is not None:
        return get_model_args(model)
    args = dict(getattr(model, '_model_args', {}))  # recorded by our entrypoints (records_creation_args)
    args['num_classes'] = model.num_classes
    cfg_chans = (getattr(model, 'pretrained_cfg', None) or {}).get('input_size', (3,))[0]
    args.setdefault('in_chans', getattr(model, 'in_chans', cfg_chans))
    return args


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


def save_model(model: nn.Module, path: Union[str, Path], metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``model``'s weights and its recipe (architecture + creation args) to a safetensors file.

    The write is atomic: an interrupted save leaves any previous file at ``path`` intact.
    """
    model = getattr(model, 'module', model)  # DDP / accelerate wrappers
    model = getattr(model, '_orig_mod', model)  # torch.compile wrapper
    arch = _architecture(model)
    model_args = _model_args(model)
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
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f'safetensors metadata must map str to str, got {k!r}: {type(v).__name__}')
        meta[k] = v
    tensors = {k: v.detach().contiguous().cpu() for k, v in _plain_state_dict(model).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    try:
        mode = _new_file_mode(tmp)
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, mode)  # safetensors creates its files 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file would only fill the disk
        raise
    return path


def _new_file_mode(path: Path) -> int:
    """Create ``path`` empty and return its mode: what the process umask gives new files (0644 under 022)."""
    with open(path, 'wb'):
        pass
    return stat.S_IMODE(os.stat(path).st_mode)


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


def _metadata_json(path: Path, meta: Mapping[str, str], key: str, default: str):
    try:
        return json.loads(meta.get(_PREFIX + key, default))
    except json.JSONDecodeError as e:
        raise CheckpointError(f'{path}: metadata {_PREFIX + key} is not valid JSON ({e})') from None


def read_checkpoint_info(path: Union[str, Path]) -> Dict[str, Any]:
    """Architecture, creation args, data config and raw metadata of a ``save_model`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        with safetensors.safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(f'{path} is not a safetensors file ({e})') from e
    if _PREFIX + 'architecture' not in meta:
        raise CheckpointError(
            f'{path} has no timm_normplugins metadata (not written by save_model); load it with '
            f"timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file='{path}'))")
    model_args = _metadata_json(path, meta, 'model_args', '{}')
    if not isinstance(model_args, dict):
        raise CheckpointError(f'{path}: metadata {_PREFIX}model_args is not a mapping of creation arguments')
    return dict(
        architecture=meta[_PREFIX + 'architecture'],
        model_args=model_args,
        data_config=_metadata_json(path, meta, 'data_config', '{}'),
        add_tensor_norm=meta.get(_PREFIX + 'add_tensor_norm'),
        **{key: _metadata_json(path, meta, key, 'null') for _, key in _RETROFITS},
        metadata=meta,
    )


def load_state_dict_checked(
        model: nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        source: str = 'checkpoint',
        source_arch: Optional[str] = None,
):
    """Strict load that explains a mismatch (architecture / class count) before touching the model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k}: {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)
        held = f' (it holds {source_arch})' if source_arch else ''
        lines = [f'{source} does not fit {arch}{held}:']
        for label, items in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatch', mismatched)):
            if items:
                more = f' ... (+{len(items) - 5} more)' if len(items) > 5 else ''
                lines.append(f'  {label} ({len(items)}): {", ".join(items[:5])}{more}')
        classifier = _classifier_weight_key(model)
        if classifier and classifier in state_dict and classifier in own and not missing and not unexpected:
            lines.append(f'  (class count: checkpoint {state_dict[classifier].shape[0]}, '
                         f'model {own[classifier].shape[0]})')
        raise CheckpointError('\n'.join(lines))
    model.load_state_dict(state_dict, strict=True)


class CheckedLoadMixin:
    """Gives a model timm's ``load_pretrained`` hook, used when its cfg has ``custom_load=True``.

    timm's default file loader drops the classifier and loads non-strictly whenever ``num_classes``
    differs from the pretrained cfg, which would silently half-load e.g. a 100-class checkpoint into a
    model whose cfg says 10 classes. Our models load files strictly instead and explain any mismatch;
    to fine-tune on another class count, load with the original count and call ``reset_classifier``.
    """

    def load_pretrained(self, checkpoint_path: str):
        from timm.models import load_state_dict
        try:
            source_arch = read_checkpoint_info(checkpoint_path)['architecture']
        except (CheckpointError, FileNotFoundError):
            source_arch = None  # not one of ours: timm's loader below reports what it can
        # weights_only: a .pth/.bin checkpoint is read with torch's restricted unpickler, never as code
        if 'weights_only' in inspect.signature(load_state_dict).parameters:
            state_dict = load_state_dict(checkpoint_path, weights_only=True)
        else:  # older timm: torch >= 2.6 loads with weights_only=True by default
            state_dict = load_state_dict(checkpoint_path)
        load_state_dict_checked(self, state_dict, str(checkpoint_path), source_arch)


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

    Reading the file runs no code and opens no other file: safetensors holds only tensors, and creation
    arguments in the metadata that would make timm read a file (``checkpoint_path``, ``pretrained*``,
    ``*_path``, ...) are refused.
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
    model = timm.create_model(arch, **dict(info['model_args'], **kwargs))
    if info['add_tensor_norm']:
        from .retrofit.add_tensor_norm import add_tensor_norm
        add_tensor_norm(model, grad=kwargs.get('tn_grad', info['add_tensor_norm']))
    state_dict = safetensors.torch.load_file(str(path))
    load_state_dict_checked(model, state_dict, str(path), arch)
    # the file holds the normalised weights under plain keys: they become the parametrizations' originals
    if info['weight_reparam']:
        from .retrofit.weight_reparam import redo_weight_reparam
        redo_weight_reparam(model, info['weight_reparam'])
    if info['error_norm']:
        from .retrofit.add_error_norm import redo_error_normalization
        redo_error_normalization(model, info['error_norm'])
    return model.to(device)
