""" Robustness evaluation of one or more checkpoints, side by side.

    python recipes/evaluate.py --checkpoint output/c10_tn_fdt/model.safetensors output/c10_base/model.safetensors \\
        --dataset cifar10 --data-dir ~/data --attack pgd-paper autoattack --num-images 1000 --output reports/c10

Each checkpoint is rebuilt with ``load_model`` and wrapped with the normalisation stored in its
metadata, so attacks run on [0, 1] pixels. Attacks: ``pgd-paper`` (the FDT/TN paper's protocol:
PGD-40, α = ε·0.01/0.3, ε ∈ {1e-1..1e-4} in normalised units, eq. 7 and final-iterate accuracy),
``pgd-foolbox`` (the same read through Foolbox's LinfPGD defaults: random start, valid-pixel clip),
``pgd`` (PGD-20, ε = 8/255, random start), ``autoattack`` (RobustBench's standard configuration),
``autoattack-fast`` (torchattacks' 10-iteration AutoAttack); ``--attack`` alone: clean accuracy only.
Writes report.md (clean accuracy, then the paper's Table 1 layout), report.json (every number and
setting) and, when an attack ran, accuracy_vs_eps.png into ``--output``, all or nothing (a failed write
leaves the previous report whole). ``--output`` is checked before anything runs. Interrupted? Run the same
command again: every finished cell (model × attack × ε) is kept in ``--output``/cells/ with the identity
of the checkpoint, images and settings, and reused only when all of them are the same.

For classification it ends like timm's validate.py: ``--result`` and a JSON dict per checkpoint with
timm's fields (model, top1, top1_err, top5, top5_err, param_count, img_size, crop_pct, interpolation),
also written by ``--results-file`` (CSV or ``--results-format json``).
"""
import argparse
import csv
import functools
import io
import json
import logging
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins.checkpoint import CheckpointError, load_model, read_checkpoint_info
from timm_normplugins.data import DatasetNotFoundError, create_dataset, create_transform, dataset_info
from timm_normplugins.data import segmentation_collate
from timm_normplugins.robust import (
    ATTACK_PRESETS, EPS_UNITS, REPORT_FILES, PixelSpaceModel, check_finite_model, check_mean_std,
    evaluate_robustness, pixel_transform, resolve_attacks)
from timm_normplugins.robust.cells import CELLS_FOLDER
from timm_normplugins.robust.files import ReportOutputError, check_output, write_text_atomic
from timm_normplugins.robust.pgd_paper import PGD_NORMS

_logger = logging.getLogger('evaluate')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--checkpoint', nargs='+', required=True, help='save_model .safetensors files')
    p.add_argument('--name', nargs='+', default=None, help='report names of the checkpoints (default: folder name)')
    p.add_argument('--dataset', default='digits',
                   help='cifar10, cifar100, fashion_mnist, svhn, voc2012, digits, imagefolder')
    p.add_argument('--data-dir', default=None, help='folder holding the dataset files (not needed for digits)')
    p.add_argument('--split', default='test', help="held-out split ('test'; VOC: 'val')")
    p.add_argument('--attack', nargs='*', default=['pgd-paper'], choices=sorted(ATTACK_PRESETS),
                   help='attacks to run (none: clean accuracy only)')
    g = p.add_argument_group('attack settings (override the presets for every selected attack)')
    g.add_argument('--eps', type=float, nargs='+', default=None,
                   help="ε values, in --eps-units (default: each attack's own units)")
    g.add_argument('--eps-units', choices=EPS_UNITS, default=None,
                   help="'normalized': the network's input units, as in the paper (× 256/255 → pixels); "
                        "'pixel': [0, 1]")
    g.add_argument('--steps', type=int, default=None, help='PGD steps / AutoAttack iterations')
    g.add_argument('--rel-stepsize', type=float, default=None, help='PGD α = rel_stepsize · ε (paper: 0.01/0.3)')
    g.add_argument('--abs-stepsize', type=float, default=None, help='PGD α in --eps-units (overrides --rel-stepsize)')
    g.add_argument('--random-start', action=argparse.BooleanOptionalAction, default=None,
                   help='PGD random start (pgd-paper default: off, eq. 6 starts at the clean image; pgd: on)')
    g.add_argument('--norm', choices=PGD_NORMS, default=None)
    g.add_argument('--n-queries', type=int, default=None, help='AutoAttack Square queries (default 5000)')
    p.add_argument('--num-images', type=int, default=None,
                   help='evaluate a deterministic class-balanced subset of this size (quick looks)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--batch-size', type=int, default=None, help='default: 256 (classification), 1 (segmentation)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none',
                   help='autocast for forward passes (off by default: it changes the gradients)')
    p.add_argument('--output', default='reports/robustness')
    p.add_argument('--no-progress', action='store_true')
    g = p.add_argument_group("timm's validate.py output (classification)")
    g.add_argument('--results-file', default='', help="also write timm's validate result fields (model, top1, "
                                                      'top1_err, top5, top5_err, param_count, img_size, crop_pct, '
                                                      'interpolation) to this file')
    g.add_argument('--results-format', default='csv', choices=('csv', 'json'))
    return p


def timm_validate_results(result, checkpoints):
    """timm validate.py's result dict per checkpoint (a list sorted by top-1 when there are several, as
    timm's bulk validation gives), with the checkpoint path as timm adds it."""
    rows = result.timm_results()
    for row, path in zip(rows, checkpoints):
        row['checkpoint'] = str(path)
    return rows[0] if len(rows) == 1 else sorted(rows, key=lambda r: r['top1'], reverse=True)


def write_results(path, results, fmt):
    """timm's write_results: CSV (one row per model) or JSON, written atomically."""
    if fmt == 'json':
        write_text_atomic(path, json.dumps(results, indent=4))
        return
    rows = results if isinstance(results, list) else [results]
    buf = io.StringIO(newline='')
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _check_results_file(path):
    """``--results-file`` must be a new or plain file in an existing folder."""
    p = Path(path)
    if p.is_symlink() or p.is_dir():
        raise ReportOutputError(f'--results-file {p} is a {"symlink" if p.is_symlink() else "folder"}, '
                                'not a plain file')
    folder = p.parent if str(p.parent) else Path('.')
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ReportOutputError(f'--results-file {p}: {folder} is not a writable folder')


def _names(args, parser):
    if args.name is not None:
        if len(args.name) != len(args.checkpoint):
            parser.error(f'--name needs one name per checkpoint ({len(args.checkpoint)}), got {len(args.name)}')
        return list(args.name)
    names = []
    for path in map(Path, args.checkpoint):
        generic = path.stem in ('model', 'model_best', 'last', 'best') and path.parent.name
        name = path.parent.name if generic else path.stem
        while name in names:
            name += "'"
        names.append(name)
    return names


def _load(path, name, info, device):
    """The checkpoint's model behind its own normalisation, checked against the dataset."""
    meta = read_checkpoint_info(path)
    data_cfg = meta['data_config']
    if 'mean' not in data_cfg or 'std' not in data_cfg:
        raise CheckpointError(f'{path} stores no mean/std in its data config; cannot apply its normalisation')
    try:  # std <= 0 or nan: inf/nan inputs, chance accuracy at every ε reported as a result
        check_mean_std(data_cfg['mean'], data_cfg['std'])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: its data config cannot normalise ({e})') from None
    model = load_model(path, device=device).eval()
    try:
        check_finite_model(model, str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    wrapped = PixelSpaceModel(model, data_cfg['mean'], data_cfg['std'])
    num_classes = getattr(model, 'num_classes', None)
    if num_classes is not None and num_classes != info.num_classes:
        raise CheckpointError(f'{name} ({path}) has {num_classes} classes, {info.name} has {info.num_classes}')
    if len(data_cfg['mean']) != info.in_chans:
        raise CheckpointError(f'{name} ({path}) takes {len(data_cfg["mean"])}-channel images, '
                              f'{info.name} has {info.in_chans}')
    return wrapped, meta['architecture']


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    names = _names(args, parser)
    report_names = [REPORT_FILES[k] for k in ('markdown', 'json', 'plot')] + [CELLS_FOLDER + '/']
    try:
        # the output first, without creating it: a bad --output is found before anything is loaded
        check_output(args.output, report_names, create=False)
        if args.results_file:
            _check_results_file(args.results_file)
        specs = resolve_attacks(args.attack, eps=tuple(args.eps) if args.eps else None, eps_units=args.eps_units,
                                steps=args.steps, rel_stepsize=args.rel_stepsize, abs_stepsize=args.abs_stepsize,
                                random_start=args.random_start, norm=args.norm,
                                n_queries=args.n_queries) if args.attack else []
        info = dataset_info(args.dataset, args.data_dir, args.split)
        if info.task == 'seg' and args.results_file:
            raise ValueError("--results-file writes timm's validate.py results, which are for classification")
        models, archs = {}, {}
        for name, path in zip(names, args.checkpoint):
            models[name], archs[name] = _load(path, name, info, args.device)
        # the evaluation pipeline without its normalisation: uint8 pixels; each model normalises itself
        dataset = create_dataset(args.dataset, args.data_dir, args.split, max_samples=args.num_images,
                                 transform=pixel_transform(create_transform(args.dataset, train=False)))
        check_output(args.output, report_names)  # created (and probed) once every input is good
    except (CheckpointError, DatasetNotFoundError, FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')

    seg = info.task == 'seg'
    collate = functools.partial(segmentation_collate, ignore_index=info.ignore_index) if seg else None
    loader = DataLoader(dataset, batch_size=args.batch_size or (1 if seg else 256), shuffle=False,
                        num_workers=args.workers, collate_fn=collate,
                        pin_memory=args.device.startswith('cuda'))
    amp = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]
    source = f' from {dataset.source}' if getattr(dataset, 'source', None) else ''  # an image folder's split
    print(f'{len(dataset)} images of {info.name}/{dataset.split}{source}, models: '
          + ', '.join(f'{n} ({archs[n]})' for n in names))
    for spec in specs:
        print('running', spec.describe(info.num_classes))
    subset = f'class-balanced subset of {args.num_images}' if args.num_images else 'all images'
    try:
        result = evaluate_robustness(
            models, loader, specs, seed=args.seed, device=args.device, amp_dtype=amp,
            ignore_index=info.ignore_index, output=args.output, progress=not args.no_progress,
            info={'data': f'{info.name} {dataset.split} split ({subset}; {args.data_dir or "bundled"})',
                  'checkpoints': {n: str(p) for n, p in zip(names, args.checkpoint)},
                  'architectures': archs,
                  'command': ' '.join(['recipes/evaluate.py'] + list(sys.argv[1:] if argv is None else argv))})
        print(result.markdown())
        print(f'report: {Path(args.output).resolve()}')
        if not seg:
            results = timm_validate_results(result, args.checkpoint)
            if args.results_file:
                write_results(args.results_file, results, args.results_format)
    except ReportOutputError as e:  # e.g. a full disk: the previous report is left as it was
        parser.exit(1, f'error: {e}\n')
    for check in result.failed_checks():
        _logger.warning('sanity check failed: %s / %s: %s (%s)', check['model'], check['attack'], check['check'],
                        check['detail'])
    if not seg:
        # timm's validate.py ends the same way, for scripts that parse its output
        print(f'--result\n{json.dumps(results, indent=4)}')
    return result


def console() -> None:
    """The ``timm-normplugins-evaluate`` command."""
    main()
