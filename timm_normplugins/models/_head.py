""" timm's classifier-head contract (``get_classifier``, ``reset_classifier``) for the package's models.

timm's scripts call ``get_classifier`` (WC/GC and error normalization use it to leave the classifier alone)
and ``reset_classifier`` (fine-tuning to another class count). The models differ only in what the head is
and how it is built, so each names its head attribute and builds it in ``_build_head``; ``PooledHeadMixin``
is the global-pool + linear head of the ResNets (timm's ``create_classifier``), ``forward_head`` included.
"""
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier

__all__ = ['ClassifierHeadMixin', 'PooledHeadMixin']


class ClassifierHeadMixin:
    head_attr: str = 'fc'  # the attribute holding the classifier

    def _build_head(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        raise NotImplementedError

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return self.head_attr if name_only else getattr(self, self.head_attr)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        self._build_head(num_classes, global_pool)


class PooledHeadMixin(ClassifierHeadMixin):
    """``self.global_pool`` + dropout (``self.drop_rate``) + linear ``self.fc`` on ``self.num_features`` channels."""

    def _build_head(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)
