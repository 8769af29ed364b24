""" timm's feature contract for the package's stem → stages → head CNNs.

timm's ``train.py --grad-checkpointing`` calls ``set_grad_checkpointing``; ``features_only=True,
feature_cls='getter'`` and timm's downstream wrappers call ``forward_intermediates`` and
``prune_intermediate_layers``. ``HeCifarResNet``, ``WideResNet`` and ``WcgcCNN`` share one layout, so
they share one implementation (timm's ResNet is the style anchor):

* ``self.stem`` (whose output is feature 0 when ``_stem_is_tap``), ``self.stages`` (an ``nn.Sequential``
  of ``nn.Sequential`` stages, one feature after each), ``_final(x)`` applied after the last stage (the
  pre-activation WRN's closing BN-ReLU belongs to its last feature);
* ``feature_info``: the taps in that order. It always describes the unpruned model, as timm's does, so
  ``features_only`` wrappers index it with the indices ``prune_intermediate_layers`` returns.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

__all__ = ['StagedFeaturesMixin']


class StagedFeaturesMixin:
    _stem_is_tap: bool = True
    # checkpoint segments: one per block (ResNets), or whole stages where a stage is a flat list of
    # layers whose in-place activations must stay in the segment that made their input (WcgcCNN)
    _checkpoint_whole_stages: bool = False
    grad_checkpointing: bool = False

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _prune_final(self) -> None:
        """Drop what ``_final`` runs (called when the last stage is pruned away)."""

    def _prune_head(self) -> None:
        """Drop the classifier (and any layer sized for the full model's features)."""
        self.reset_classifier(0, '')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (timm's ``--grad-checkpointing``)."""
        self.grad_checkpointing = enable

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing:
            return checkpoint_seq(stage, x, every=len(stage) if self._checkpoint_whole_stages else 1)
        return stage(x)

    def _tap_offset(self) -> int:
        return 1 if self._stem_is_tap else 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = self._run_stage(stage, x)
            else:  # (inline: TorchScript takes no module arguments)
                x = stage(x)
        return self._final(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features at the ``feature_info`` taps, timm's signature.

        Args:
            x: input images.
            indices: last n taps if an int, these taps if a list (negative: from the end), all if None.
            norm: accepted for timm compatibility; these models have no separate final norm to apply.
            stop_early: stop after the last requested tap (the returned final features are then that tap's).
            output_fmt: only 'NCHW'.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"{type(self).__name__} gives NCHW features only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        offset = self._tap_offset()
        last_stage = len(self.feature_info) - 1 - offset  # in the unpruned model
        intermediates = []
        x = self.stem(x)
        if offset and 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index + 1 - offset] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i == last_stage:
                x = self._final(x)
            if i + offset in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the stages after the last tap in ``indices`` (and the head); returns the kept tap indices.

        ``prune_norm`` is accepted for timm compatibility: no tap has a separable final norm.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        num_stages = max_index + 1 - self._tap_offset()
        prune_end = num_stages < len(self.feature_info) - self._tap_offset()
        self.stages = self.stages[:num_stages]
        if prune_end:
            self._prune_final()
            # the features now end at the last kept tap; the head was sized for the final ones
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self._prune_head()
        return take_indices
