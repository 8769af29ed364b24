""" Pretrained tags (timm's ``<model>.<tag>``) for weights the project trained, shipped as package data.

The weights are the ``model.safetensors`` of the FDT/TN reproduction's Fashion-MNIST runs (seed 0 of each
Table 1 row, ``reproduction/fdt_tn/table1/<row>/e20-s0-resnet20/``), copied byte for byte into
``timm_normplugins/pretrained/<model>.<tag>.safetensors`` (about 1.1 MB each, 5.3 MB for the five), so
``timm.create_model('cifar_resnet20.fdt_fmnist', pretrained=True)`` loads offline from the installed package.

Every number in a cfg is copied from that run's committed result files (``tests/test_pretrained.py`` checks
them against the files); the model cards are in docs/models/. ``PretrainedCfg`` has fixed fields, so the
dataset, the training command and the measured accuracies are ``notes`` lines ("key: value"), and the cfg stays
loadable by timm's own code (e.g. a config.json written by ``push_to_hf_hub``).
"""
from pathlib import Path
from typing import Any, Dict, Tuple

from ..data.datasets import FASHION_MNIST_CLASSES
from ._paper_cfg import paper_mean_std

__all__ = ['PRETRAINED_DIR', 'FMNIST_RUNS', 'fmnist_pretrained_cfgs']

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / 'pretrained'

PAPER_NAME = 'Tensor Normalization and Full Distribution Training (Fuhl & Kasneci)'
RUN_DIR = 'reproduction/fdt_tn/table1/{row}/e20-s0-resnet20'
TRAIN_COMMAND = (
    'python scripts/reproduce.py --dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist '
    '--stand-in resnet34_cifar=cifar_resnet20 resnet34_tn=cifar_resnet20_tn --variant resnet20 --epochs 20 '
    '--seeds 2 --table fdt_tn/table1 --rows {row}  (seed 0; every training argument in {run}/args.yaml)')

# '<model>.<tag>': (reproduction row, what it is, {measured accuracy in %}): clean top-1 on the 10,000 test
# images (summary.json, last epoch = these weights); eq. 7 PGD accuracy on 1,000 class-balanced test images
# (eval/report.json: pgd-paper, eval_foolbox/report.json: pgd-foolbox); AutoAttack on the first 200 (eval_aa)
FMNIST_RUNS: Dict[str, Tuple[str, str, Dict[str, float]]] = {
    'cifar_resnet20.base_fmnist': ('fmnist_baseline', 'baseline (cross-entropy, no superposition)', {
        'clean_top1': 93.05, 'pgd_paper_eq7_eps0.1': 8.275, 'pgd_paper_eq7_eps0.01': 69.5625,
        'pgd_foolbox_eq7_eps0.1': 1.625, 'autoattack_8/255': 0.0}),
    'cifar_resnet20.ov_fmnist': ('fmnist_ov', 'OV (superimposed images, one-hot label of the leading image)', {
        'clean_top1': 89.71, 'pgd_paper_eq7_eps0.1': 23.4925, 'pgd_paper_eq7_eps0.01': 85.17,
        'pgd_foolbox_eq7_eps0.1': 21.365, 'autoattack_8/255': 48.5}),
    'cifar_resnet20.fdt_fmnist': ('fmnist_fdt', 'FDT (superimposed images, weight-distribution target, Alg. 4 loss)', {
        'clean_top1': 90.52, 'pgd_paper_eq7_eps0.1': 12.8375, 'pgd_paper_eq7_eps0.01': 74.1225,
        'pgd_foolbox_eq7_eps0.1': 9.9225, 'autoattack_8/255': 0.5}),
    'cifar_resnet20_tn.base_fmnist': ('fmnist_tn', 'TN (Tensor Normalization after every ReLU, cross-entropy)', {
        'clean_top1': 92.78, 'pgd_paper_eq7_eps0.1': 8.0875, 'pgd_paper_eq7_eps0.01': 70.6425,
        'pgd_foolbox_eq7_eps0.1': 2.115, 'autoattack_8/255': 0.0}),
    'cifar_resnet20_tn.fdt_fmnist': ('fmnist_tn_fdt', 'TN + FDT', {
        'clean_top1': 91.04, 'pgd_paper_eq7_eps0.1': 11.0475, 'pgd_paper_eq7_eps0.01': 72.6625,
        'pgd_foolbox_eq7_eps0.1': 9.1025, 'autoattack_8/255': 0.5}),
}

_METRIC_TEXT = {
    'clean_top1': 'clean top-1 {:.2f} % (10,000 test images; {run}/summary.json)',
    'pgd_paper_eq7_eps0.1': 'PGD eq. 7, eps 0.1 (normalised units), 40 steps, no random start: {:.2f} % '
                            '(1,000 class-balanced test images; {run}/eval/report.json)',
    'pgd_paper_eq7_eps0.01': 'PGD eq. 7, eps 0.01: {:.2f} % (same images; {run}/eval/report.json)',
    'pgd_foolbox_eq7_eps0.1': "PGD eq. 7, eps 0.1, Foolbox's LinfPGD defaults (random start, clamp): {:.2f} % "
                              '(same images; {run}/eval_foolbox/report.json)',
    'autoattack_8/255': 'AutoAttack (standard, Linf 8/255): {:.2f} % (first 200 of those images; '
                        '{run}/eval_aa/report.json)',
}


def _cfg(name: str, row: str, what: str, metrics: Dict[str, float]) -> Dict[str, Any]:
    mean, std = paper_mean_std(1)
    run = RUN_DIR.format(row=row)
    return dict(
        file=str(PRETRAINED_DIR / f'{name}.safetensors'),
        custom_load=True,  # our loader (checkpoint.CheckedLoadMixin): timm's semantics, checked from the file
        num_classes=10, input_size=(1, 28, 28), crop_pct=1.0, interpolation='bilinear', mean=mean, std=std,
        first_conv='stem.0', classifier='fc', pool_size=(7, 7),
        label_names=FASHION_MNIST_CLASSES,
        license='apache-2.0',
        description=f'{name.split(".")[0]} (He et al.\'s CIFAR ResNet-20, 1 input channel) trained on '
                    f'Fashion-MNIST, {what}: the FDT/TN paper\'s Table 1 row on a ResNet-34 stand-in, 20 epochs, '
                    'seed 0. Card: docs/models/' + name + '.md',
        origin_url=run,
        paper_name=PAPER_NAME,
        notes=(
            'dataset: Fashion-MNIST (60,000 train / 10,000 test grey 28x28 images, 10 classes)',
            'train: ' + TRAIN_COMMAND.format(row=row, run=run),
            *('measured: ' + _METRIC_TEXT[k].format(v, run=run) for k, v in metrics.items()),
        ),
    )


def fmnist_pretrained_cfgs(arch: str) -> Dict[str, Dict[str, Any]]:
    """The tagged cfgs of ``arch`` for ``generate_default_cfgs``."""
    return {name: _cfg(name, *run) for name, run in FMNIST_RUNS.items() if name.split('.')[0] == arch}
