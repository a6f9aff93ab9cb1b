"""The metric registry and the evaluation suite a task updates with ``suite.update(restored, hq)``.

Every registered metric is a torchmetrics ``Metric`` whose ``update(preds, target)`` takes the restored images
and the references, (N, 3, H, W) in [0, 1]; no-reference metrics (NIQE) ignore ``target``, and FID adds
``target`` to its real set and ``preds`` to its fake set. The parsing metrics take parsing maps instead
(``update(logits_or_labels, mask)``), so they are not registered here: use
:class:`bfrzoo.metrics.parsing.ParsingMetrics` directly.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from bfrzoo.errors import UnknownNameError

if TYPE_CHECKING:  # torchmetrics takes seconds to import: listing names must not need it
    from torchmetrics import Metric, MetricCollection


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: how to build it, which direction is better, and what it is."""

    build: Callable[[bool], Metric]
    higher_is_better: bool
    description: str


def _psnr(_: bool) -> Metric:
    from bfrzoo.metrics.psnr_ssim import PSNR

    return PSNR()


def _psnr_y(_: bool) -> Metric:
    from bfrzoo.metrics.psnr_ssim import PSNRY

    return PSNRY()


def _ssim(_: bool) -> Metric:
    from bfrzoo.metrics.psnr_ssim import SSIM

    return SSIM()


def _ssim_y(_: bool) -> Metric:
    from bfrzoo.metrics.psnr_ssim import SSIMY

    return SSIMY()


def _ms_ssim(_: bool) -> Metric:
    from bfrzoo.metrics.psnr_ssim import MSSSIM

    return MSSSIM()


def _lpips(pretrained: bool) -> Metric:
    from bfrzoo.metrics.lpips import LPIPS

    return LPIPS("alex", pretrained=pretrained)


def _lpips_vgg(pretrained: bool) -> Metric:
    from bfrzoo.metrics.lpips import LPIPS

    return LPIPS("vgg", pretrained=pretrained)


def _fid(pretrained: bool) -> Metric:
    from bfrzoo.metrics.fid import FID

    return FID(pretrained=pretrained)


def _niqe(_: bool) -> Metric:
    from bfrzoo.metrics.niqe import NIQE

    return NIQE()


#: Known metric names. ``pretrained`` only matters for the feature-network metrics (LPIPS, FID).
METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(_psnr, True, "PSNR (dB) on RGB, per image, averaged"),
    "psnr_y": MetricSpec(_psnr_y, True, "PSNR (dB) on the BT.601 luma of MATLAB rgb2ycbcr"),
    "ssim": MetricSpec(_ssim, True, "SSIM on RGB (11x11 Gaussian window, sigma 1.5), per image, averaged"),
    "ssim_y": MetricSpec(_ssim_y, True, "SSIM on the BT.601 luma of MATLAB rgb2ycbcr"),
    "ms_ssim": MetricSpec(_ms_ssim, True, "multi-scale SSIM on RGB (images >= 161 px)"),
    "lpips": MetricSpec(_lpips, False, "LPIPS v0.1 with AlexNet features"),
    "lpips_vgg": MetricSpec(_lpips_vgg, False, "LPIPS v0.1 with VGG16 features"),
    "fid": MetricSpec(_fid, False, "FID, InceptionV3 pool3 (2048) features, restored vs reference set"),
    "niqe": MetricSpec(_niqe, False, "NIQE of the restored images (no reference; images >= 96 px)"),
}


def list_metrics() -> list[str]:
    """The names :func:`build_metric_suite` accepts."""
    return list(METRICS)


def _spec(name: str) -> MetricSpec:
    if name not in METRICS:
        raise UnknownNameError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    return METRICS[name]


def metric_higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the known ones).
    """
    return _spec(name).higher_is_better


def build_metric_suite(
    names: Sequence[str] = ("psnr", "ssim", "lpips"), pretrained: bool = True, prefix: str | None = None
) -> MetricCollection:
    """A ``MetricCollection`` of the named metrics, each updated with ``(preds, target)`` in [0, 1].

    Args:
        names: registered names (:func:`list_metrics`); ``compute()``'s dict is keyed by these names (torchmetrics
            sorts them alphabetically).
        pretrained: ``False`` builds LPIPS/FID with random-init feature networks (smoke runs; their values
            are then meaningless); ``True`` resolves their weight files (cache, else download; offline ->
            :class:`~bfrzoo.errors.WeightsNotFoundError`).
        prefix: optional key prefix of ``compute()``'s dict (e.g. ``"val/"``).

    Raises:
        UnknownNameError: a name that is not registered (the message lists the known ones).
    """
    from torchmetrics import MetricCollection

    specs = {name: _spec(name) for name in names}
    if not specs:
        raise UnknownNameError(f"no metric names given; known metrics: {', '.join(METRICS)}")
    return MetricCollection({n: s.build(pretrained) for n, s in specs.items()}, prefix=prefix, compute_groups=False)


def markdown_header(names: Sequence[str], label: str = "method") -> str:
    """Header and separator lines of a markdown table, an arrow after each known metric (↑ higher is better);
    rendered by :func:`bfrzoo.tables.markdown_table`."""
    from bfrzoo.tables import markdown_table, metric_header

    arrows = {n: (METRICS[n].higher_is_better if n in METRICS else None) for n in names}
    return markdown_table([label, *metric_header(names, arrows)], [])


def format_markdown_row(
    results: Mapping[str, float | Tensor], names: Sequence[str] | None = None, label: str = "", precision: int = 4
) -> str:
    """One markdown table row: ``| label | v1 | v2 |`` with ``precision`` decimals, '-' for missing names.

    Args:
        results: metric name -> value (e.g. ``suite.compute()``).
        names: column order (default: the order of ``results``).
        label: the first cell (the method / run name).
        precision: decimals.
    """
    from bfrzoo.tables import markdown_row

    cols = list(results) if names is None else list(names)
    cells = [float(results[n]) if n in results else None for n in cols]
    return markdown_row([label, *cells], precision)
