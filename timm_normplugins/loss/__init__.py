""" Losses: Alg. 3/4 of the FDT paper, MCEL / SG-MCEL / GMCEL and the LDA class similarity. """
from .class_similarity import (
    SIMILARITY_NORMALIZATIONS, class_similarity, load_similarity, plot_similarity, save_similarity,
    similarity_from_class_means)
from .cross_entropy import CrossEntropyLoss, SoftTargetCrossEntropy
from .factory import create_loss, list_losses, loss_param_groups
from .fdt_loss import FDTLoss, fdt_loss
from .mcel import GMCELoss, MCELoss, SGMCELoss, mixed_cross_entropy, uniform_similarity
