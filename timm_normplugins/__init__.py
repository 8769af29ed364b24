""" timm-normplugins: Tensor Normalization, Full Distribution Training, MCEL and Weight/Gradient
Centralization as plugins for timm.

``import timm_normplugins`` registers the package's models in timm's model registry.
"""
from .version import __version__
from .layers import TN_GRAD_MODES, ErrorNorm, ReLUTN, TensorNorm, error_norm, relu_tensor_norm, tensor_norm
from .models import CifarResNet, HeCifarResNet, WideResNet, list_plugin_models
from .retrofit import add_error_normalization, add_tensor_norm, apply_weight_reparam
from .checkpoint import CheckpointError, load_model, read_checkpoint_info, save_model
from .metrics import SegmentationMetric
from .data import FDTDataset, FDTMixup, create_dataset, create_transform, dataset_info
from .loss import class_similarity, create_loss, list_losses, load_similarity, loss_param_groups, save_similarity
from .optim import add_centralization, register_wcgc_optimizers
