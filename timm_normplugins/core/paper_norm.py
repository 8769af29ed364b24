""" The input normalisation both Fuhl & Kasneci papers use, in timm's units.

Both papers feed ``(pixel - (122, 117, 104)) / 256`` to their networks. In timm's units (pixels scaled to
[0, 1] first) that is ``mean = (122, 117, 104) / 255`` and ``std = 256 / 255``. Models (pretrained cfgs), data
(transforms, dataset info) and robustness (pixel-space wrappers) all need it, so it lives below them.

Grey (1-channel) inputs such as Fashion-MNIST use the BT.601 luma of that RGB mean, 117
(0.299*122 + 0.587*117 + 0.114*104 = 117.01), and the same divisor 256.
"""
__all__ = ['PAPER_MEAN_PIXELS', 'PAPER_GREY_MEAN_PIXELS', 'PAPER_STD_PIXELS', 'PAPER_MEAN', 'PAPER_STD',
           'paper_mean_std']

PAPER_MEAN_PIXELS = (122.0, 117.0, 104.0)
PAPER_GREY_MEAN_PIXELS = (117.0,)
PAPER_STD_PIXELS = 256.0

PAPER_MEAN = tuple(m / 255.0 for m in PAPER_MEAN_PIXELS)
PAPER_STD = (PAPER_STD_PIXELS / 255.0,) * 3


def paper_mean_std(in_chans: int = 3):
    """(mean, std) in timm's [0, 1] units for 3-channel or 1-channel inputs."""
    if in_chans == 3:
        return PAPER_MEAN, PAPER_STD
    if in_chans == 1:
        return (PAPER_GREY_MEAN_PIXELS[0] / 255.0,), (PAPER_STD_PIXELS / 255.0,)
    raise ValueError(f'the papers define a normalisation for 1 or 3 input channels, got in_chans={in_chans}')
