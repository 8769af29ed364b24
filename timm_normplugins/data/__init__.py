""" Data: the Full Distribution Training mixers (batch level and dataset level). """
from .fdt_mixup import FDT_LABELS, FDT_WEIGHTS, FDTMixup, fdt_weights
from .fdt_dataset import FDTDataset
