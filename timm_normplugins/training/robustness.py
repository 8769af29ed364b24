""" The robustness evaluation the training recipe runs on its final model (``--eval-attack``). """
from pathlib import Path
from typing import Any, Dict, Optional

import torch

__all__ = ['run_robustness']


def run_robustness(args, accelerator, model, val_set, task: str, run_dir: Path) -> Optional[Dict[str, Any]]:
    """Attack the first ``--eval-num-images`` validation images with ``--eval-attack`` (main process).

    The images are the evaluation pipeline's without its Normalize step: the attacks work in pixel
    space on a model wrapped with its normalisation (see ``timm_normplugins.robust``). The report goes
    to ``run_dir/robustness/``; its JSON-able numbers are returned for summary.json.
    """
    if not args.eval_attack:
        return None
    result = None
    if accelerator.is_main_process:
        from ..data import create_transform
        from ..robust import evaluate_robustness, pixel_transform
        images = val_set.subset(range(min(args.eval_num_images, len(val_set)))) if hasattr(val_set, 'subset') \
            else torch.utils.data.Subset(val_set, range(min(args.eval_num_images, len(val_set))))
        base = images.dataset if isinstance(images, torch.utils.data.Subset) else images
        base.transform = pixel_transform(create_transform(val_set, train=False))
        loader = torch.utils.data.DataLoader(images, batch_size=1 if task == 'seg' else 100, shuffle=False)
        net = accelerator.unwrap_model(model).eval()
        report = evaluate_robustness({args.model: net}, loader, attacks=args.eval_attack, seed=args.seed,
                                     output=run_dir / 'robustness', progress=accelerator.is_local_main_process,
                                     info=dict(dataset=args.dataset, split=args.val_split))
        accelerator.print(report.markdown() if hasattr(report, 'markdown') else report)
        result = report.to_dict() if hasattr(report, 'to_dict') else None
    accelerator.wait_for_everyone()
    return result
