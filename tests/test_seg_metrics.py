import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from timm_normplugins.metrics import SegmentationMetric, segmentation_scores

# 3 x 4 image, 4 classes (class 3 never appears), two ignored pixels
TARGET = torch.tensor([[[0, 0, 1, 255],
                        [1, 1, 2, 2],
                        [0, 2, 2, 255]]])
PRED = torch.tensor([[[0, 1, 1, 2],
                      [1, 0, 2, 2],
                      [0, 2, 1, 0]]])


def _logits(pred, num_classes=4):
    return torch.nn.functional.one_hot(pred, num_classes).permute(0, 3, 1, 2).float()


def test_hand_count():
    metric = SegmentationMetric(4)
    metric.update(_logits(PRED), TARGET)
    s = metric.compute()
    # 10 labelled pixels, 7 right
    assert s['pixel_acc'] == pytest.approx(0.7)
    # IoU: class 0: TP 2, 3 targets, 3 predictions -> 2 / 4; class 1: 2 / (3 + 4 - 2); class 2: 3 / (4 + 3 - 3)
    np.testing.assert_allclose(s['iou'][:3].numpy(), [0.5, 0.4, 0.75])
    assert torch.isnan(s['iou'][3])  # absent everywhere: not part of the mean
    assert s['mean_iou'] == pytest.approx((0.5 + 0.4 + 0.75) / 3)
    assert s['mean_class_acc'] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert metric.confusion.sum() == 10 and metric.confusion.dtype == torch.int64


def test_batches_accumulate_and_ids_work_like_logits():
    whole = SegmentationMetric(4)
    whole.update(PRED, TARGET)
    parts = SegmentationMetric(4)
    for rows in (slice(0, 1), slice(1, 3)):
        parts.update(_logits(PRED[:, rows]), TARGET[:, rows])
    assert torch.equal(whole.confusion, parts.confusion)
    parts.reset()
    assert parts.confusion.sum() == 0


def test_matches_sklearn_confusion_matrix():
    from sklearn.metrics import confusion_matrix, jaccard_score
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 17, 19), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    logits = torch.randn(3, 6, 17, 19, generator=g)
    metric = SegmentationMetric(6)
    metric.update(logits, target)
    keep = target != 255
    t, p = target[keep].numpy(), logits.argmax(1)[keep].numpy()
    np.testing.assert_array_equal(metric.confusion.numpy(), confusion_matrix(t, p, labels=range(6)))
    s = metric.compute()
    assert s['pixel_acc'] == pytest.approx((t == p).mean())
    assert s['mean_iou'] == pytest.approx(jaccard_score(t, p, average='macro'))


def test_bad_input_errors():
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match='out of range'):
        metric.update(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match='out of range'):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match='channels'):
        metric.update(torch.randn(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='shape'):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='ignore_index'):
        SegmentationMetric(300, ignore_index=255)
    with pytest.raises(RuntimeError, match='update'):
        SegmentationMetric(3).compute()


def test_segmentation_scores_on_empty_matrix_is_nan():
    s = segmentation_scores(torch.zeros(3, 3, dtype=torch.int64))
    assert np.isnan(s['pixel_acc']) and np.isnan(s['mean_iou'])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, use_accelerate: bool, out_dir: str):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    if use_accelerate:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        # a forked child inherits the parent's Accelerate singleton (set by any earlier in-process test)
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(cpu=True)
        assert accelerator.num_processes == world
    else:
        torch.distributed.init_process_group('gloo', rank=rank, world_size=world)
        accelerator = None
    metric = SegmentationMetric(4, device='cpu')
    if rank == 0:  # rank 1 gets the other rows; a rank with no batch still takes part
        metric.update(PRED[:, :2], TARGET[:, :2])
    else:
        metric.update(PRED[:, 2:], TARGET[:, 2:])
    synced = metric.sync(accelerator)
    torch.save(synced.confusion, os.path.join(out_dir, f'{rank}.pt'))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize('use_accelerate', [False, True])
def test_sync_sums_over_processes(tmp_path, use_accelerate):
    world = 2
    # fork: the children inherit the imported modules instead of re-importing torch and timm
    mp.start_processes(_worker, args=(world, _free_port(), use_accelerate, str(tmp_path)), nprocs=world,
                       start_method='fork')
    full = SegmentationMetric(4)
    full.update(PRED, TARGET)
    for rank in range(world):
        assert torch.equal(torch.load(tmp_path / f'{rank}.pt'), full.confusion)


def test_single_process_sync_is_a_copy():
    metric = SegmentationMetric(4)
    metric.update(PRED, TARGET)
    synced = metric.sync()
    assert torch.equal(synced.confusion, metric.confusion) and synced.confusion is not metric.confusion
