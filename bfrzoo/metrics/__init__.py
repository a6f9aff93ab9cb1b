"""Image-quality metrics: each a functional twin (per image, (N,) values) plus a torchmetrics ``Metric`` class.

Inputs are (N, 3, H, W) float RGB in [0, 1] on any device. Full reference: :func:`psnr`, :func:`psnr_y`,
:func:`ssim`, :func:`ssim_y`, :func:`ms_ssim`, :func:`lpips`; sets: :func:`fid`; no reference: :func:`niqe`;
face parsing: :class:`ParsingMetrics`, :func:`parsing_metrics` (mIoU, pixel accuracy). :func:`build_metric_suite` assembles registered
metrics into one ``MetricCollection`` updated with ``suite.update(restored, hq)``.
"""
from __future__ import annotations

# Eager on purpose: the submodules niqe/lpips/fid/imresize share names with the functions they define, and a
# lazy import would let ``import bfrzoo.metrics.niqe`` replace the function ``bfrzoo.metrics.niqe`` by the module.
# (Only listing names? ``bfrzoo.metrics.suite`` alone does not import torchmetrics.)
from bfrzoo.metrics.base import FrozenFeatureNet, PerImageMean, rgb_to_y
from bfrzoo.metrics.fid import FID, INCEPTION_CFG, InceptionFeatures, fid
from bfrzoo.metrics.imresize import imresize
from bfrzoo.metrics.lpips import BACKBONE_CFGS, LPIPS, LPIPSNetwork, lpips
from bfrzoo.metrics.niqe import NIQE, niqe
from bfrzoo.metrics.parsing import (
    NUM_PARSING_CLASSES,
    ParsingMetrics,
    ParsingMIoU,
    PixelAccuracy,
    confusion_matrix,
    parsing_metrics,
    parsing_miou,
    pixel_accuracy,
)
from bfrzoo.metrics.psnr_ssim import MSSSIM, PSNR, PSNRY, SSIM, SSIMY, ms_ssim, psnr, psnr_y, ssim, ssim_y
from bfrzoo.metrics.suite import (
    METRICS,
    MetricSpec,
    build_metric_suite,
    format_markdown_row,
    list_metrics,
    markdown_header,
    metric_higher_is_better,
)

__all__ = [
    "BACKBONE_CFGS", "FID", "FrozenFeatureNet", "INCEPTION_CFG", "InceptionFeatures", "LPIPS", "LPIPSNetwork",
    "METRICS", "MSSSIM", "MetricSpec", "NIQE", "NUM_PARSING_CLASSES", "PSNR", "PSNRY", "ParsingMIoU",
    "ParsingMetrics", "PerImageMean", "PixelAccuracy", "SSIM", "SSIMY", "build_metric_suite", "confusion_matrix", "fid",
    "format_markdown_row", "imresize", "list_metrics", "lpips", "markdown_header", "metric_higher_is_better",
    "ms_ssim", "niqe", "parsing_metrics", "parsing_miou", "pixel_accuracy", "psnr", "psnr_y", "rgb_to_y", "ssim", "ssim_y",
]
