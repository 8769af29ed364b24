""" Predict with a trained model: top-k classes of images, or colour masks from a segmenter.

    timm-normplugins-predict --checkpoint output/run/model.safetensors photos/ 'more/*.png' --output preds.csv
    python -m timm_normplugins predict --checkpoint model.safetensors shirt.png --topk 3 --label-names classes.txt
    timm-normplugins-predict --model resnet18 --pretrained cat.jpg          # a timm model, as timm's inference.py
    timm-normplugins-predict --model resnet34_tn --checkpoint weights.pth --num-classes 10 img.png
    timm-normplugins-predict --checkpoint output/voc/model.safetensors street.jpg --output-dir masks/

The model: a ``save_model`` checkpoint (``--checkpoint`` alone; its metadata rebuilds the architecture and
holds its data config), or a timm model name (``--model``) with timm's ``--pretrained`` weights and/or a
``--checkpoint`` weights file (.safetensors, .pth; read without running code). Inputs: image files, folders
(searched recursively for timm's image extensions) and glob patterns (quote them; ``**`` recurses).

Images are read by the package's restricted decoder (raster formats only) and preprocessed like timm's
evaluation (``resolve_data_config`` + ``create_transform`` of the model's data config; the ``--img-size``,
``--crop-pct``, ``--mean``, ... flags override it as in timm's scripts). A 1-channel model gets grey images.

Classifiers: a table of the top-k class names and probabilities per image. Names: ``--label-names FILE``
(one per line), else the model's ``pretrained_cfg['label_names']`` (checkpoints that store them; timm's
pretrained cfgs), else timm's ImageNet names for an ImageNet-sized classifier, else class indices.
Segmenters (a model whose logits are ``(N, C, H, W)``, e.g. ``unet_resnet34``): each whole image at its own
size; one palette PNG of class ids per input in ``--output-dir`` (VOC's colours) and the fraction of pixels
of each class. ``--output FILE.csv|FILE.json`` writes every result too. Files are written atomically.

A bad input (missing file, non-image, a folder without images, a model taking neither 1 nor 3 channels)
stops the run with one line naming it and exit status 2; the ``--output`` file is not replaced (masks of the
images before it stay written).
"""
import argparse
import csv
import difflib
import json
import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config

from ..checkpoint import CheckpointError, load_model, load_weights, read_checkpoint_info, read_safetensors_header
from ..data.readers import IMAGE_FORMATS, DataFileError, decode_image

__all__ = ['main', 'console', 'build_parser', 'PredictError', 'expand_inputs', 'image_extensions',
           'resolve_label_names', 'read_label_names', 'voc_palette', 'load_predict_model', 'write_atomic']

OUTPUT_FORMATS = ('.csv', '.json')
_GLOB_CHARS = '*?['
_METADATA_PREFIX = 'timm_normplugins.'  # the metadata namespace of save_model files


class PredictError(ValueError):
    """A bad input or option: the message names the file or flag."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', nargs='+', metavar='INPUT', help='image files, folders (recursive) or glob patterns')
    g = p.add_argument_group('model')
    g.add_argument('--checkpoint', default=None,
                   help='a save_model .safetensors file, or a weights file for --model (.safetensors, .pth)')
    g.add_argument('--model', default=None, help='timm model name (with --pretrained and/or --checkpoint)')
    g.add_argument('--pretrained', action='store_true', help="timm's pretrained weights for --model")
    g.add_argument('--num-classes', type=int, default=None, help='class count of --model (default: its own)')
    g.add_argument('--in-chans', type=int, default=None, help='input channels of --model (1: grey, 3: RGB)')
    g.add_argument('--label-names', default=None, metavar='FILE',
                   help='class names, one per line (overrides the names the model carries)')
    g = p.add_argument_group("preprocessing (default: the model's data config; timm's flags)")
    g.add_argument('--img-size', type=int, default=None, help='input height and width (classifiers)')
    g.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                   help='input channels, height and width (classifiers)')
    g.add_argument('--crop-pct', type=float, default=None, help='centre crop fraction (classifiers)')
    g.add_argument('--crop-mode', default=None, choices=('center', 'squash', 'border'))
    g.add_argument('--interpolation', default=None, help='resize interpolation (bilinear, bicubic, ...)')
    g.add_argument('--mean', type=float, nargs='+', default=None, help='normalisation mean, [0, 1] units')
    g.add_argument('--std', type=float, nargs='+', default=None, help='normalisation std, [0, 1] units')
    g = p.add_argument_group('run and output')
    g.add_argument('--topk', type=int, default=5, help='classes shown per image (capped at the class count)')
    g.add_argument('-b', '--batch-size', type=int, default=32)
    g.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda', 'cuda:1', ...")
    g.add_argument('--output', default=None, metavar='FILE', help='also write the results to FILE.csv or FILE.json')
    g.add_argument('--output-dir', default=None, metavar='DIR', help='segmenters: folder for the mask PNGs')
    return p


# ---------------------------------------------------------------------------------------------- inputs

def image_extensions() -> Tuple[str, ...]:
    """The file extensions of the formats the decoder reads (``readers.IMAGE_FORMATS``), as PIL registers them."""
    from PIL import Image
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in IMAGE_FORMATS))


def _walk_images(folder: Path, extensions) -> List[Path]:
    """Image files under ``folder``, sorted; symlinked folders are followed (as timm's folder reader does),
    each real folder once, so a link loop ends."""
    seen, found = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames if os.path.splitext(f)[1].lower() in extensions]
    return sorted(p for p in found if p.is_file())


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard: output names are relative to it."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if any(c in part for c in _GLOB_CHARS):
            break
        parts.append(part)
    return Path(*parts) if parts else Path('.')


def expand_inputs(inputs: Sequence[str]) -> List[Tuple[Path, str]]:
    """``(file, relative name)`` for every image the inputs name, in order, each file once.

    A file is taken as it is (a non-image fails when it is read); a folder gives its images (by extension)
    recursively, named relative to it; a glob gives the image files it matches. A missing path, a folder
    without images or a glob matching none is a ``PredictError`` naming it.
    """
    import glob
    extensions = set(image_extensions())
    found: List[Tuple[Path, str]] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            images = _walk_images(path, extensions)
            if not images:
                raise PredictError(f'{spec}: folder holds no image file ({", ".join(sorted(extensions))})')
            found += [(p, p.relative_to(path).as_posix()) for p in images]
        elif path.is_file():
            found.append((path, path.name))
        elif any(c in spec for c in _GLOB_CHARS):
            base = _glob_base(spec)
            matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))]
            images = [m for m in matches if m.is_file() and m.suffix.lower() in extensions]
            if not images:
                raise PredictError(f'{spec}: no image file matches this pattern')
            found += [(m, os.path.relpath(m, base)) for m in images]
        elif os.path.lexists(spec):
            raise PredictError(f'{spec}: not a file or folder (a broken link?)')
        else:
            raise PredictError(f'{spec}: no such file or folder')
    unique, seen = [], set()
    for path, name in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append((path, name))
    return unique


# ----------------------------------------------------------------------------------------------- model

def _unknown_model(name: str) -> PredictError:
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ' (timm.list_models() lists the names)'
    return PredictError(f'--model {name}: not a timm model{hint}')


def _is_save_model_file(path: str) -> bool:
    """Whether ``path`` carries save_model's metadata (else it is plain weights for ``--model``)."""
    if Path(path).suffix != '.safetensors':
        return False
    _, meta = read_safetensors_header(path)  # a malformed file stops here, named
    return any(k.startswith(_METADATA_PREFIX) for k in meta)


def load_predict_model(args: argparse.Namespace) -> Tuple[nn.Module, Dict[str, Any], str]:
    """``(model in eval mode on the CPU, its pretrained cfg with the checkpoint's data config, description)``."""
    if args.checkpoint is None and args.model is None:
        raise PredictError('give the model: --checkpoint FILE (a save_model file), or --model NAME '
                           '[--pretrained] [--checkpoint WEIGHTS]')
    if args.model is not None and not timm.is_model(args.model):
        raise _unknown_model(args.model)
    kwargs = {k: v for k, v in (('num_classes', args.num_classes), ('in_chans', args.in_chans)) if v is not None}
    checkpoint = args.checkpoint
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise PredictError(f'--checkpoint {checkpoint}: no such file')
    if checkpoint is not None and _is_save_model_file(checkpoint):
        info = read_checkpoint_info(checkpoint)
        if args.pretrained:
            raise PredictError(f'--pretrained: {checkpoint} holds the whole model (its weights replace any '
                               'pretrained ones); drop --pretrained')
        model = load_model(checkpoint, model_name=args.model, **kwargs)
        cfg = dict(model.pretrained_cfg or {})
        cfg.update(info['data_config'])  # the normalisation the model was trained with
        return model.eval(), cfg, f'{info["architecture"]} from {checkpoint}'
    if args.model is None:
        raise PredictError(f'--checkpoint {checkpoint} has no save_model metadata (architecture); '
                           'name the architecture with --model NAME')
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    except (RuntimeError, ValueError, TypeError, KeyError, OSError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise PredictError(f'--model {args.model}: cannot create it ({type(e).__name__}: {first})') from None
    what = f'{args.model}' + (' (pretrained)' if args.pretrained else '')
    if checkpoint is not None:
        load_weights(model, checkpoint)
        what += f' with weights from {checkpoint}'
    return model.eval(), dict(model.pretrained_cfg or {}), what


# ----------------------------------------------------------------------------------------- class names

def read_label_names(path: str, num_classes: int) -> List[str]:
    """One class name per line of ``path`` (trailing blank lines ignored); exactly ``num_classes`` of them."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        raise PredictError(f'--label-names {path}: no such file') from None
    except (OSError, UnicodeDecodeError) as e:
        raise PredictError(f'--label-names {path}: cannot be read as UTF-8 text ({e})') from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if len(names) != num_classes:
        raise PredictError(f'--label-names {path}: {len(names)} names, the model has {num_classes} classes')
    return names


def resolve_label_names(model: nn.Module, num_classes: int, label_names_file: Optional[str] = None) -> List[str]:
    """The name of each class index: the file, else ``pretrained_cfg['label_names']``, else timm's ImageNet
    names for a model with an ImageNet subset's class count (what timm's inference.py shows), else indices.

    Names the model carries for another class count (its classifier was replaced) are not used.
    """
    if label_names_file is not None:
        return read_label_names(label_names_file, num_classes)
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names')
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return [str(i) for i in range(num_classes)]


# ------------------------------------------------------------------------------------------ preprocess

def _data_config(args: argparse.Namespace, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """timm's ``resolve_data_config`` of the model's cfg and the preprocessing flags, for grey or RGB input."""
    in_chans = args.input_size[0] if args.input_size else args.in_chans or int((cfg.get('input_size') or (3,))[0])
    if in_chans not in (1, 3):
        raise PredictError(f'the model takes {in_chans}-channel input; images are read as grey (1) or RGB (3)')
    for flag in ('mean', 'std'):
        values = getattr(args, flag)
        if values is not None and len(values) not in (1, in_chans):
            raise PredictError(f'--{flag}: {len(values)} values for {in_chans}-channel input (give 1 or {in_chans})')
    overrides = dict(in_chans=in_chans, img_size=args.img_size, input_size=args.input_size, crop_pct=args.crop_pct,
                     crop_mode=args.crop_mode, interpolation=args.interpolation, mean=args.mean, std=args.std)
    config = resolve_data_config(args=overrides, pretrained_cfg=cfg)
    # timm keeps an RGB cfg (3 channels, 3 means) for a model created with in_chans=1: take the channel
    # count the model was built for, and grey statistics as the mean of the RGB ones
    config['input_size'] = (in_chans, *config['input_size'][1:])
    for key in ('mean', 'std'):
        values = tuple(config[key])
        if len(values) == 3 and in_chans == 1:
            values = (sum(values) / 3,)
        if len(values) != in_chans:
            raise PredictError(f'the data config has {len(values)} {key} values for {in_chans}-channel input')
        config[key] = values
    return config


def _probe(model: nn.Module, config: Dict[str, Any], device: torch.device) -> Tuple[str, int]:
    """``('cls' | 'seg', class count)`` from the shape of the model's output for one blank input."""
    try:
        with torch.inference_mode():
            out = model(torch.zeros((1, *config['input_size']), device=device))
    except RuntimeError as e:  # e.g. a channel count the first conv does not take
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise PredictError(f'the model cannot run on a {tuple(config["input_size"])} input ({first})') from None
    if isinstance(out, torch.Tensor) and out.ndim == 2:
        return 'cls', out.shape[1]
    if isinstance(out, torch.Tensor) and out.ndim == 4:
        return 'seg', out.shape[1]
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise PredictError(f'the model gives {shape}; predict reads class logits (N, C) or per-pixel logits (N, C, H, W)')


def _read(path: Path, mode: str) -> np.ndarray:
    try:
        return decode_image(str(path), str(path), mode=mode)
    except DataFileError as e:
        raise PredictError(str(e)) from None


def _batches(items: Sequence, size: int, key: Callable[[Any], Any] = lambda _: None) -> Iterator[List]:
    """Consecutive runs of at most ``size`` items sharing ``key`` (a segmenter batches same-sized images)."""
    batch: List = []
    for item in items:
        if batch and (len(batch) == size or key(item) != key(batch[-1])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------ prediction

def predict_classes(model, files, config, device, topk, batch_size) -> List[Tuple[List[int], List[float]]]:
    """Top-k indices and softmax probabilities of each file, in order."""
    from PIL import Image
    transform = create_transform(**config)
    mode = 'L' if config['input_size'][0] == 1 else 'RGB'
    results = []
    for batch in _batches(files, batch_size):
        x = torch.stack([transform(Image.fromarray(_read(path, mode))) for path in batch]).to(device)
        with torch.inference_mode():
            probs = model(x).float().softmax(dim=1)
        top = probs.topk(topk, dim=1)
        results += list(zip(top.indices.tolist(), top.values.tolist()))
    return results


def predict_masks(model, files, config, device, batch_size) -> Iterator[np.ndarray]:
    """Per-pixel argmax class ids ``(H, W)`` of each file, in order, every image at its own size."""
    mode = 'L' if config['input_size'][0] == 1 else 'RGB'
    mean = torch.tensor(config['mean'], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(config['std'], dtype=torch.float32).view(-1, 1, 1)

    def tensors():
        for path in files:
            pixels = _read(path, mode)
            pixels = pixels[..., None] if pixels.ndim == 2 else pixels
            yield (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std

    # a batch holds images of one size (consecutive ones): no padding, which would change the border pixels
    for batch in _batches(tensors(), batch_size, key=lambda t: t.shape):
        with torch.inference_mode():
            ids = model(torch.stack(batch).to(device)).argmax(dim=1).cpu().numpy()
        yield from ids


def voc_palette(n: int = 256) -> List[int]:
    """PASCAL VOC's colour map (the one its mask PNGs use), flat ``[r, g, b, ...]`` for ``n`` ids."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _mask_image(ids: np.ndarray, num_classes: int):
    from PIL import Image
    if num_classes > 256:  # more ids than a palette holds: 16-bit grey of class ids
        return Image.fromarray(ids.astype(np.uint16))
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(voc_palette())  # grey 'L' becomes palette 'P', the ids kept as they are
    return image


def _mask_paths(files: Sequence[Tuple[Path, str]], output_dir: Path) -> List[Path]:
    """``output_dir/<input's relative name>.png`` per input; a name taken twice gets ``-2``, ``-3``, ...;
    a mask that would replace one of the inputs is refused."""
    inputs = {os.path.realpath(p) for p, _ in files}
    taken, paths = set(), []
    for _, name in files:
        target = output_dir / Path(name).with_suffix('.png')
        stem, n = target.with_suffix(''), 1
        while target in taken:
            n += 1
            target = stem.with_name(f'{stem.name}-{n}').with_suffix('.png')
        if os.path.realpath(target) in inputs:
            raise PredictError(f'--output-dir {output_dir}: its mask {target} would replace that input image; '
                               'choose another folder')
        taken.add(target)
        paths.append(target)
    return paths


# -------------------------------------------------------------------------------------------- writing

def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename to ``path``: an interrupted or failed write leaves an old ``path`` whole."""
    tmp = path.with_name(path.name + '.tmp')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise PredictError(f'could not write {path}: {why}') from None


def _write_results(path: Path, header: List[str], rows: List[List[Any]], records: List[Dict[str, Any]]) -> None:
    if path.suffix.lower() == '.json':
        text = '[\n' + ',\n'.join('  ' + json.dumps(r) for r in records) + '\n]\n'  # one image per line
        write_atomic(path, lambda tmp: tmp.write_text(text))
        return

    def write_csv(tmp: Path):
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    write_atomic(path, write_csv)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Text columns two spaces apart, left-aligned except the ``right`` ones (numbers)."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return '\n'.join('  '.join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in cells)


# ----------------------------------------------------------------------------------------------- main

def _check_folder_path(folder: Path, flag: str, value: str) -> None:
    """Refuse, before any work, a folder to write into that is (or lies below) an existing file."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise PredictError(f'{flag} {value}: {part} is a file, not a folder')
            return


def _check_args(args: argparse.Namespace) -> None:
    if args.topk < 1:
        raise PredictError(f'--topk {args.topk}: must be at least 1')
    if args.batch_size < 1:
        raise PredictError(f'--batch-size {args.batch_size}: must be at least 1')
    if args.output is not None:
        output = Path(args.output)
        if output.suffix.lower() not in OUTPUT_FORMATS:
            raise PredictError(f'--output {args.output}: name a .csv or .json file')
        if output.is_dir():
            raise PredictError(f'--output {args.output}: is a folder; name a .csv or .json file')
        _check_folder_path(output.parent, '--output', args.output)
    if args.output_dir is not None:
        _check_folder_path(Path(args.output_dir), '--output-dir', args.output_dir)
    if args.label_names is not None and not Path(args.label_names).is_file():
        raise PredictError(f'--label-names {args.label_names}: no such file')


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise PredictError(f'--device {name}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise PredictError(f'--device {name}: CUDA is not available on this machine')
    return device


def _classify(args, model, files, config, device, names, named) -> None:
    if args.output_dir is not None:
        raise PredictError('--output-dir: holds masks of a segmenter; this model is a classifier (use --output)')
    paths = [p for p, _ in files]
    k = min(args.topk, len(names))
    results = predict_classes(model, paths, config, device, k, args.batch_size)
    table = []
    for path, (indices, probs) in zip(paths, results):
        for rank, (i, p) in enumerate(zip(indices, probs), 1):
            table.append([str(path) if rank == 1 else '', rank] + ([names[i]] if named else []) + [i, f'{p:.4f}'])
    header = ['image', 'rank'] + (['class'] if named else []) + ['index', 'prob']
    print(format_table(header, table, right=(1, len(header) - 2, len(header) - 1)))
    if args.output is not None:
        header = ['file'] + [f'{c}_{r}' for r in range(1, k + 1) for c in ('label', 'prob', 'index')]
        rows = [[str(path)] + [v for i, p in zip(indices, probs) for v in (names[i], f'{p:.6f}', i)]
                for path, (indices, probs) in zip(paths, results)]
        records = [dict(file=str(path), index=indices, label=[names[i] for i in indices],
                        prob=[round(p, 6) for p in probs]) for path, (indices, probs) in zip(paths, results)]
        _write_results(Path(args.output), header, rows, records)


def _segment(args, model, files, config, device, names, named) -> None:
    for flag in ('img_size', 'input_size', 'crop_pct', 'crop_mode', 'interpolation'):
        if getattr(args, flag) is not None:
            raise PredictError(f'--{flag.replace("_", "-")}: a segmenter predicts each whole image at its own '
                               'size (no resize or crop)')
    masks_to = _mask_paths(files, Path(args.output_dir)) if args.output_dir is not None else None
    paths = [p for p, _ in files]
    table, rows, records = [], [], []
    for n, (path, ids) in enumerate(zip(paths, predict_masks(model, paths, config, device, args.batch_size))):
        fractions = np.bincount(ids.ravel(), minlength=len(names)) / ids.size
        mask = None
        if masks_to is not None:
            mask = masks_to[n]
            image = _mask_image(ids, len(names))
            write_atomic(mask, lambda tmp: image.save(tmp, format='PNG'))
        present = [int(i) for i in np.argsort(-fractions, kind='stable') if fractions[i] > 0]
        for j, i in enumerate(present):
            table.append([str(path) if j == 0 else ''] + ([names[i]] if named else []) + [i, f'{fractions[i]:.4f}'])
        rows.append([str(path), str(mask or '')] + [f'{f:.6f}' for f in fractions])
        records.append(dict(file=str(path), mask=str(mask) if mask else None, size=list(ids.shape),
                            fractions={names[i]: round(float(fractions[i]), 6) for i in present}))
    header = ['image'] + (['class'] if named else []) + ['index', 'pixels']
    print(format_table(header, table, right=(len(header) - 2, len(header) - 1)))
    if masks_to is None:
        print('masks not written: pass --output-dir DIR to save one palette PNG per image', file=sys.stderr)
    else:
        print(f'masks: {Path(args.output_dir).resolve()}', file=sys.stderr)
    if args.output is not None:
        _write_results(Path(args.output), ['file', 'mask'] + names, rows, records)


def run(args: argparse.Namespace) -> int:
    """Predict for ``args`` (``build_parser``'s); raises ``PredictError`` and the readers' errors."""
    _check_args(args)
    device = _device(args.device)
    files = expand_inputs(args.inputs)
    model, cfg, what = load_predict_model(args)
    model.to(device)
    config = _data_config(args, cfg)
    task, num_classes = _probe(model, config, device)
    names = resolve_label_names(model, num_classes, args.label_names)
    named = names != [str(i) for i in range(num_classes)]  # else a class column would repeat the index
    print(f'{len(files)} image{"s" if len(files) != 1 else ""}, {what}, '
          f'{"segmentation" if task == "seg" else "classification"} into {num_classes} classes, on {device}',
          file=sys.stderr)
    (_segment if task == 'seg' else _classify)(args, model, files, config, device, names, named)
    if args.output is not None:
        print(f'results: {Path(args.output).resolve()}', file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (PredictError, CheckpointError, DataFileError, FileNotFoundError) as e:
        # one line: a checkpoint mismatch explains itself over several lines (keys, shapes, class count)
        message = '; '.join(line.strip() for line in str(e).splitlines() if line.strip())
        parser.exit(2, f'{parser.prog}: error: {message}\n')


def console() -> None:
    """The ``timm-normplugins-predict`` command."""
    sys.exit(main())


if __name__ == '__main__':
    sys.exit(main())
