""" Datasets and the papers' augmentation pipelines. """
from .readers import DatasetNotFoundError, balanced_subset, read_idx
from .datasets import DatasetInfo, ImageClassificationDataset, SegmentationDataset, create_dataset, dataset_info, segmentation_collate
from .transforms import RandomColorOffset, create_transform
