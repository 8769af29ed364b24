""" curves.png: one panel per kind of number, markers, the run's name as title. """
import matplotlib
import matplotlib.pyplot as plt
import pytest

from timm_normplugins.training.outputs import plot_curves


@pytest.fixture
def figures(monkeypatch):
    kept = []
    close = plt.close
    monkeypatch.setattr(plt, 'close', lambda fig=None: (kept.append(fig), close(fig)))
    return kept


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes}


def test_one_epoch_run_shows_and_losses_do_not_share_an_axis(tmp_path, figures):
    run = tmp_path / 'digits-cifar_resnet20_tn-sgd_wcgc-fdt-fdt-s42'
    run.mkdir()
    rows = [dict(epoch=1, lr=0.1, train_loss=12.8, epoch_time=9.0, val_loss=2.26, val_top1=18.6, val_top5=69.6,
                 val_count=355)]
    plot_curves(rows, run / 'curves.png')
    assert (run / 'curves.png').read_bytes()[:4] == b'\x89PNG'
    fig, = figures
    assert fig._suptitle.get_text() == run.name
    panels = _panels(fig)
    assert set(panels) == {'training objective (--loss)', 'validation cross-entropy', 'validation scores',
                           'learning rate'}
    train, val = panels['training objective (--loss)'], panels['validation cross-entropy']
    assert [list(ln.get_ydata()) for ln in train.lines] == [[12.8]]
    assert [list(ln.get_ydata()) for ln in val.lines] == [[2.26]]
    for ax in fig.axes:  # a single epoch is a visible marker, not an invisible zero-length line
        assert all(ln.get_marker() == 'o' for ln in ax.lines)
    assert panels['learning rate'].get_yscale() == 'log'


def test_segmentation_rows(tmp_path, figures):
    rows = [dict(epoch=e, lr=0.1, train_loss=1.0 / e, epoch_time=1.0, val_pixel_acc=40.0 + e, val_miou=20.0,
                 val_count=9) for e in (1, 2)]
    plot_curves(rows, tmp_path / 'curves.png', title='voc run')
    panels = _panels(figures[0])
    assert 'validation cross-entropy' not in panels
    assert [ln.get_label() for ln in panels['validation scores'].lines] == ['pixel acc', 'mIoU']
    assert figures[0]._suptitle.get_text() == 'voc run' and matplotlib.get_backend().lower() == 'agg'
