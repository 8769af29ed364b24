""" The robustness evaluation the training recipe runs on its final model (``--eval-attack``). """
import copy
from pathlib import Path
from typing import Any, Dict, Optional

import torch

__all__ = ['run_robustness']


def run_robustness(args, accelerator, model, val_set, task: str, run_dir: Path) -> Optional[Dict[str, Any]]:
    """Attack ``--eval-num-images`` validation images with ``--eval-attack`` (main process).

    Classification takes a deterministic class-balanced subset (``balanced_subset``, the one
    ``evaluate.py --num-images`` takes), so a small default still sees every class; segmentation the first n.

    The images are the evaluation pipeline's without its Normalize step: the attacks work in pixel
    space on a model wrapped with its normalisation (see ``timm_normplugins.robust``). The report goes
    to ``run_dir/robustness/``; its JSON-able numbers are returned for summary.json.
    """
    if not args.eval_attack:
        return None
    result = None
    if accelerator.is_main_process:
        from ..data import balanced_subset, create_transform
        from ..robust import evaluate_robustness, pixel_transform
        n = min(args.eval_num_images, len(val_set))
        if hasattr(val_set, 'subset'):  # a new dataset object: the training run's val_set keeps its transform
            images = val_set.subset(balanced_subset(val_set.targets, n))
        else:  # segmentation sets read per item: first n
            images = copy.copy(val_set)
            images.images, images.masks = val_set.images[:n], val_set.masks[:n]
        images.transform = pixel_transform(create_transform(val_set, train=False))
        same_size = task == 'cls' and getattr(val_set, 'img_size', None) is not None  # else: one image at a time
        loader = torch.utils.data.DataLoader(images, batch_size=100 if same_size else 1, shuffle=False)
        net = accelerator.unwrap_model(model).eval()
        report = evaluate_robustness({args.model: net}, loader, attacks=args.eval_attack, seed=args.seed,
                                     output=run_dir / 'robustness', progress=accelerator.is_local_main_process,
                                     info=dict(dataset=args.dataset, split=args.val_split))
        accelerator.print(report.markdown())
        result = report.to_dict()
    accelerator.wait_for_everyone()
    return result
