""" Every paper config builds its model, data pipeline, mixer, optimizer and loss (no training). """
import copy
import filecmp
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import timm
import yaml

import timm_normplugins  # noqa: F401
from timm_normplugins.data import create_transform, dataset_info
from timm_normplugins.loss import save_similarity, uniform_similarity
from timm_normplugins.models import error_norm_modules, weight_reparam_modules
from timm_normplugins.training import (
    apply_normalization_flags, build_loss, build_mixer, build_optimizer, build_scheduler, parse_args,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'recipes' / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.glob('*/*.yaml') if p.name != 'tables.yaml')


def test_configs_are_what_the_generator_writes(tmp_path):
    sys.path.insert(0, str(REPO / 'scripts'))
    import make_configs
    make_configs.main(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.glob('*/*.yaml'))
    assert generated == sorted(p.relative_to(CONFIG_DIR) for p in CONFIG_DIR.glob('*/*.yaml'))
    mismatch = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, CONFIG_DIR / p, shallow=False)]
    assert not mismatch, f'regenerate with python scripts/make_configs.py: {mismatch}'


def test_every_table_row_has_a_config_or_a_reason():
    for tables in CONFIG_DIR.glob('*/tables.yaml'):
        for table in yaml.safe_load(tables.read_text()).values():
            for row in table['rows']:
                assert ('config' in row) != ('unsupported' in row), row
                if 'config' in row:
                    assert (tables.parent / row['config']).exists()
                assert bool(row.get('paper')) != bool(row.get('control')), row  # the paper's numbers, or why none


@lru_cache(maxsize=None)
def _model(name, kwargs, num_classes, in_chans):
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **dict(kwargs))


@pytest.fixture(scope='module')
def similarity_file(tmp_path_factory):
    files = {}
    for k in (10, 100, 1000):
        files[k] = tmp_path_factory.mktemp('sim') / f'uniform{k}.safetensors'
        save_similarity(files[k], uniform_similarity(k))
    return files


@pytest.mark.parametrize('path', CONFIGS, ids=[f'{p.parent.name}/{p.stem}' for p in CONFIGS])
def test_config_builds(path, similarity_file):
    args = parse_args(['--config', str(path), '--data-dir', '/data'])
    assert args.reproduces
    info = dataset_info(args.dataset, root=None) if args.dataset != 'imagefolder' else None
    num_classes = info.num_classes if info else 1000
    in_chans = info.in_chans if info else 3
    for train in (True, False):
        pipeline = create_transform(args.dataset, train=train, img_size=(224, 224) if info is None else None)
        assert pipeline.transforms
    model = _model(args.model, tuple(sorted(args.model_kwargs.items())), num_classes, in_chans)
    if args.weight_reparam != 'none' or args.error_norm != 'none':
        model = apply_normalization_flags(args, copy.deepcopy(model))  # the cached model stays plain
    if args.loss in ('mcel', 'sg_mcel', 'gmcel'):
        args.similarity = str(similarity_file[num_classes])
    loss_fn = build_loss(args, info or _ImageNetInfo())
    optimizer = build_optimizer(args, model, loss_fn)
    scheduler, epochs = build_scheduler(args, optimizer)
    assert epochs == args.epochs
    mixer = build_mixer(args, num_classes)
    assert (mixer is None) == (args.mix_method == 'none')
    if args.weight_reparam != 'none':
        assert weight_reparam_modules(model)
        if hasattr(optimizer, 'wcgc'):  # "WS, GC": GC acts on the trained tensors behind the parametrization
            assert optimizer.wcgc.names
            assert all(n.endswith('parametrizations.weight.original') for n in optimizer.wcgc.names)
    if args.error_norm != 'none':
        assert error_norm_modules(model)


class _ImageNetInfo:
    name, task, num_classes, in_chans, img_size, ignore_index = 'imagefolder', 'cls', 1000, 3, (224, 224), None
