""" Evaluation metrics. """
from .segmentation import SegmentationMetric, segmentation_scores
