"""Pre-training of PSFR-GAN's face parsing network (FPN) on degraded faces: appendix A of the PSFR-GAN paper.

:class:`ParseNetTask` trains :class:`bfrzoo.models.parsenet.ParseNet` with the multi-task objective of Eq. (11),
``L_parse(I_P_hat, I_P) + L_pix(I_H_hat, I_H)`` (parsing cross-entropy on the 19 CelebAMask-HQ classes plus the
pixel L2 loss of the FPN's HQ-image head), on LQ faces synthesised online by the data module (``with_masks=True``
gives the ground-truth parsing). Validation and test report the parsing mean IoU and pixel accuracy
(:class:`bfrzoo.metrics.ParsingMetrics`, logged as ``val/miou`` and ``val/pixel_acc``); the run folder gets
``test_metrics.{json,md}``, a ``LQ | predicted parsing | ground-truth parsing`` grid and ``parser.pt``
(:func:`bfrzoo.models.parsenet.save_parser`), which PSFR-GAN and MPCNet load as ``parser_checkpoint``
(:func:`bfrzoo.models.parsenet.load_parser_weights` also reads this task's Lightning checkpoints and the authors'
released file). A parsing network is not a restorer, so the run writes no ``restorer.pt``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.interface import NUM_PARSING_CLASSES, from_model_range, to_model_range
from bfrzoo.metrics.parsing import ParsingMetrics
from bfrzoo.models.parsenet import ParseNet, load_parser_weights, save_parser
from bfrzoo.tasks.base import Batch, RestorationTask
from bfrzoo.tasks.reporting import RunReport

#: One display colour per CelebAMask-HQ class (0 background, 1 skin, 2 nose, 3 eyeglasses, 4-5 eyes, 6-7 brows,
#: 8-9 ears, 10 mouth, 11-12 lips, 13 hair, 14 hat, 15 earring, 16 necklace, 17 neck, 18 cloth), for the grids only.
PARSING_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204), (0, 255, 255),
    (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0), (0, 0, 153), (0, 0, 204),
    (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0),
)

#: The keys of the parsing metrics in ``compute()`` and in the test report (both higher is better).
PARSING_METRICS = ("miou", "pixel_acc")


def colorize_parsing(labels: torch.Tensor) -> torch.Tensor:
    """Parsing labels ``(N, H, W)`` int64 in ``[0, 19)`` -> colour images ``(N, 3, H, W)`` float in ``[0, 1]``."""
    palette = torch.tensor(PARSING_PALETTE, dtype=torch.float32, device=labels.device) / 255.0
    return palette[labels.long().clamp(0, len(PARSING_PALETTE) - 1)].permute(0, 3, 1, 2)


class _ParsingSuite(nn.Module):
    """The evaluation metrics of the parsing network: mIoU and pixel accuracy of its parsing head and, when
    ``image_metrics`` names any, restoration metrics of its HQ-image head. Duck-types the metric suite of
    :class:`~bfrzoo.tasks.base.RestorationTask` (``compute`` -> ``{name: value}``, ``reset``)."""

    def __init__(self, image_metrics: Sequence[str], pretrained: bool) -> None:
        super().__init__()
        self.parsing = ParsingMetrics(NUM_PARSING_CLASSES)
        self.images: nn.Module | None = None
        if image_metrics:
            from bfrzoo.metrics import build_metric_suite

            self.images = build_metric_suite(tuple(image_metrics), pretrained=pretrained)

    def update(self, logits: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, hq: torch.Tensor) -> None:
        """``logits`` (N, 19, H, W), ``mask`` (N, H, W) int64, ``image`` and ``hq`` (N, 3, H, W) in [0, 1]."""
        self.parsing.update(logits, mask)
        if self.images is not None:
            self.images.update(image, hq)

    def compute(self) -> dict[str, torch.Tensor]:
        values = dict(self.parsing.compute())
        if self.images is not None:
            values.update(self.images.compute())
        return values

    def reset(self) -> None:
        self.parsing.reset()
        if self.images is not None:
            self.images.reset()


class ParseNetTask(RestorationTask):
    """Face parsing network pre-training, Eq. (11) of the PSFR-GAN paper (appendix A).

    ``loss = parse_weight * CE(I_P_hat, I_P) + pixel_weight * MSE(I_H_hat, I_H)``, the FPN fed the degraded face
    ``I_L`` in ``[-1, 1]`` and ``I_H`` the HQ face in ``[-1, 1]``. The paper gives both terms weight 1 and trains
    with Adam, betas (0.9, 0.999), lr 2e-4, batch 8 (appendix A.2). Needs ``batch["mask"]`` (the data module's
    ``with_masks: true``).

    It is not a restorer: ``forward(lq)`` returns parsing logits, and the exported ``restorer.pt`` (name
    ``parsenet``) is meant for :class:`bfrzoo.tasks.psfrgan.PSFRGANTask`'s ``parser_checkpoint``, not for
    ``bfrzoo restore``.

    Args:
        restorer_args: :class:`~bfrzoo.models.parsenet.ParseNet` arguments (``in_size`` and ``out_size`` must
            equal the data size; PSFR-GAN's parser is ``in_size = out_size`` = the generator's ``out_size``).
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: AdamW weight decay (0 = Adam, as in the paper).
        parse_weight: weight of the parsing cross-entropy ``L_parse``.
        pixel_weight: weight of the pixel L2 loss ``L_pix`` of the image head.
        metrics: restoration metrics of the FPN's HQ-image head (the parsing metrics are always computed).
        init_weights: parsing-network weights to start from (see :func:`bfrzoo.models.parsenet.load_parser_weights`).
        **kwargs: the shared task arguments (``ema_decay``, ``metrics_pretrained``, ``grid_images``; see
            :class:`~bfrzoo.tasks.base.BfrzooTask`).
    """

    fixed_arguments = ("restorer", "l1_weight")  # set here, not taken (see BfrzooTask.fixed_arguments)

    def __init__(
        self,
        restorer_args: dict[str, Any] | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        parse_weight: float = 1.0,
        pixel_weight: float = 1.0,
        metrics: Sequence[str] = (),
        init_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        if parse_weight < 0 or pixel_weight < 0 or parse_weight + pixel_weight == 0:
            raise ValueError(f"parse_weight and pixel_weight must be >= 0, not both 0; got {parse_weight}, {pixel_weight}")
        super().__init__(
            restorer="parsenet", restorer_args=restorer_args, lr=lr, betas=betas, weight_decay=weight_decay,
            l1_weight=0.0, metrics=metrics, init_weights=init_weights, **kwargs,
        )

    # -------------------------------------------------------------------------------------- construction
    def build_network(self) -> nn.Module:
        return ParseNet(**self.restorer_args)

    def load_init_weights(self, path: str) -> None:
        load_parser_weights(self.net, path)

    def export_run(self, folder: Path, info: Mapping[str, Any]) -> Path:
        """``parser.pt`` of the evaluation network, for ``--model.parser_checkpoint`` of PSFR-GAN and MPCNet."""
        return save_parser(self.eval_net, self.restorer_args, folder / "parser.pt")

    def _build_metrics(self) -> nn.Module:
        return _ParsingSuite(self._metric_names, self._metrics_pretrained)

    # ------------------------------------------------------------------------------------------ helpers
    def validation_metric_keys(self) -> list[str]:
        return ["val/miou", "val/pixel_acc", *super().validation_metric_keys()]

    def required_data_size(self) -> int | None:
        return int(self.net.in_size)

    @staticmethod
    def _mask(batch: Batch) -> torch.Tensor:
        if "mask" not in batch:
            raise BfrzooError(
                "ParseNetTask needs ground-truth parsing masks in the batch: set `data.with_masks: true` "
                "(--data.with_masks true) and use a data root with masks/"
            )
        return batch["mask"].long()

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """``lq`` (N, 3, H, W) in ``[0, 1]`` -> parsing logits (N, 19, H, W) of the evaluation network."""
        return self.eval_net(to_model_range(lq))[0]

    # ------------------------------------------------------------------------------------------ training
    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (11): parsing cross-entropy + pixel L2 of the image head (both images in ``[-1, 1]``)."""
        mask = self._mask(batch)
        logits, image = self.net(to_model_range(batch["lq"]))
        logs = {
            "parse_ce": F.cross_entropy(logits.float(), mask),
            "pixel_l2": F.mse_loss(image.float(), to_model_range(batch["hq"]).float()),
        }
        loss = self.hparams.parse_weight * logs["parse_ce"] + self.hparams.pixel_weight * logs["pixel_l2"]
        return loss, logs

    # ------------------------------------------------------------------------------- validation and test
    def _evaluate(self, batch: Batch, batch_idx: int, suite: nn.Module, stage: str) -> None:
        mask = self._mask(batch)
        logits, image = self.eval_net(to_model_range(batch["lq"]))
        suite.update(logits.float(), mask, from_model_range(image.float()).clamp(0, 1), batch["hq"].float())
        if not self.trainer.is_global_zero:
            return
        if stage == "val" and batch_idx == 0:
            self._grid = []
        kept = sum(t.shape[0] for t in self._grid) // 3
        n = min(self.grid_images - kept, logits.shape[0])
        if n > 0 and (stage == "test" or batch_idx == 0):
            pred = colorize_parsing(logits[:n].argmax(dim=1))
            self._grid += [batch["lq"][:n].float().cpu(), pred.cpu(), colorize_parsing(mask[:n]).cpu()]

    def make_report(self, values: Mapping[str, float]) -> RunReport:
        image_values = {k: v for k, v in values.items() if k not in PARSING_METRICS}
        report = RunReport.collect(
            restorer=self.restorer_name,
            restorer_args=self.restorer_args,
            metrics=image_values,
            metric_names=tuple(image_values),
            metrics_pretrained=self._metrics_pretrained,
            datamodule=getattr(self.trainer, "datamodule", None),
            trainer=self.trainer,
            num_parameters=sum(p.numel() for p in self.net.parameters()),
        )
        report.metrics = {**{k: float(values[k]) for k in PARSING_METRICS}, **report.metrics}
        report.higher_is_better = {**{k: True for k in PARSING_METRICS}, **report.higher_is_better}
        if not image_values:  # the random-weights note is about image metrics only
            report.notes = [n for n in report.notes if not n.startswith("feature-network")]
        report.notes.insert(
            0,
            f"face parsing network: miou / pixel_acc of its parsing head ({NUM_PARSING_CLASSES} classes) on the "
            "degraded val faces; other metrics are of its HQ-image head",
        )
        return report
