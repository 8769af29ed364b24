""" Robustness evaluation with torchattacks: the FDT/TN paper's PGD protocol, AutoAttack, reports. """
from .attacks import ATTACK_PRESETS, AutoAttackSpec, PGDSpec, resolve_attacks
from .autoattack import AUTOATTACK_VERSIONS, autoattack, describe_autoattack
from .evaluate import evaluate_robustness
from .files import ReportOutputError
from .guard import attack_guard
from .normalize import (
    EPS_UNITS, PixelSpaceModel, check_finite_model, check_mean_std, eps_to_pixels, pixel_space_model, pixel_transform,
    resolve_mean_std)
from .pgd_paper import FOOLBOX_REL_STEPSIZE, PaperPGD, PaperPGDL2, paper_pgd
from .report import REPORT_FILES, RobustnessResult
