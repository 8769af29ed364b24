""" Data: datasets, the papers' augmentation pipelines and the Full Distribution Training mixers. """
from .readers import DataFileError, DatasetNotFoundError, balanced_subset, read_idx
from .datasets import DatasetInfo, ImageClassificationDataset, SegmentationDataset, create_dataset, dataset_info, segmentation_collate
from .transforms import RandomColorOffset, create_transform
from .fdt_mixup import FDT_LABELS, FDT_WEIGHTS, FDTMixup, fdt_weights
from .fdt_dataset import FDTDataset
from .fdt_options import FDTOptions
