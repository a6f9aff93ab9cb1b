"""The task bases: several discriminators with their own optimisers and learning rates, LR schedulers under
manual optimisation, the shared arguments declared once, and images / tables sent to wandb."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from bfrzoo.interface import to_model_range
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

UNET = {"base_channels": 4, "depth": 1, "max_channels": 4}


class TwoDiscriminators(AdversarialTask):
    """A toy GAN restorer with a global and a local discriminator (as MMRB) and a step LR schedule."""

    def __init__(self, lr_global: float = 1e-3, lr_local: float = 1e-1, milestone: int = 2, **kwargs: Any) -> None:
        super().__init__(restorer="unet", restorer_args=UNET, metrics=("psnr",), metrics_pretrained=False, **kwargs)
        self.d_global = nn.Conv2d(3, 1, 3)
        self.d_local = nn.Conv2d(3, 1, 3)

    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, ...]:
        hp = self.hparams
        opt_g = adam({"encoder": (list(self.net.stem.parameters()), hp.lr),
                      "rest": ([p for n, p in self.net.named_parameters() if not n.startswith("stem.")], hp.lr / 10)},
                     (0.5, 0.99))
        return (opt_g, adam({"global": (self.d_global.parameters(), hp.lr_global)}, (0.5, 0.99)),
                adam({"local": (self.d_local.parameters(), hp.lr_local)}, (0.5, 0.99)))

    def lr_scheduler_specs(self, optimizers: Any) -> list[dict[str, Any]]:
        return [{"scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, [self.hparams.milestone], 0.5), "interval": "step"}
                for opt in optimizers]

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hq = to_model_range(batch["hq"])
        terms = {name: F.softplus(-d(hq)).mean() + F.softplus(d(restored)).mean()
                 for name, d in (("global", self.d_global), ("local", self.d_local))}
        return sum(terms.values()), terms

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l1 = F.l1_loss(restored, to_model_range(batch["hq"]))
        return l1, {"l1": l1}


def _batches(n: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    return [{"hq": torch.rand(2, 3, 16, 16, generator=g), "lq": torch.rand(2, 3, 16, 16, generator=g), "name": ["a", "b"]}
            for _ in range(n)]


def _fit(task: pl.LightningModule, tmp_path: Path, steps: int) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(task, train_dataloaders=DataLoader(_batches(steps), batch_size=None))
    return trainer


def test_every_discriminator_steps_with_its_own_rate_and_schedules_decay(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = TwoDiscriminators()
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    opts = task.optimizer_groups()
    assert [[g["name"] for g in o.param_groups] for o in opts] == [["encoder", "rest"], ["global"], ["local"]]
    trainer = _fit(task, tmp_path, steps=3)
    for prefix in ("d_global.", "d_local.", "net.stem.", "net.head."):
        assert any(not torch.equal(before[n], p) for n, p in task.named_parameters() if n.startswith(prefix)), prefix
    # Adam's first step moves each weight by ~lr: the local D (lr 0.1) moves ~100x more than the global (1e-3)
    moved = {k: (getattr(task, k).weight - before[f"{k}.weight"]).abs().max().item() for k in ("d_global", "d_local")}
    assert moved["d_local"] > 30 * moved["d_global"]
    # MultiStepLR(milestone 2, gamma 0.5), stepped once per batch: after 3 batches every rate is halved once
    lrs = [[g["lr"] for g in o.param_groups] for o in trainer.optimizers]
    assert lrs == [[pytest.approx(1e-4), pytest.approx(1e-5)], [pytest.approx(5e-4)], [pytest.approx(5e-2)]]


def test_shared_arguments_are_declared_once_and_reach_the_base() -> None:
    """A model task declares only its own arguments; ema_decay, grid_images, d_every ... come through **kwargs
    (and jsonargparse shows them: see tests/test_recipes.py)."""
    import inspect

    from bfrzoo.tasks import GPENTask, PSFRGANTask
    from bfrzoo.tasks.base import BfrzooTask, RestorationTask

    shared = {"ema_decay", "metrics_pretrained", "grid_images", "d_every", "g_every"}
    for cls in (GPENTask, PSFRGANTask):
        assert not shared & set(inspect.signature(cls.__init__).parameters), cls
    assert {"ema_decay", "grid_images", "metrics", "metrics_pretrained"} <= set(inspect.signature(BfrzooTask.__init__).parameters)
    assert "lpips_weight" in inspect.signature(RestorationTask.__init__).parameters
    task = TwoDiscriminators(ema_decay=0.5, grid_images=3, d_every=2)
    assert task.ema_decay == 0.5 and task.grid_images == 3 and task.d_every == 2 and task.net_ema is not None
    with pytest.raises(ValueError, match="d_every"):
        TwoDiscriminators(d_every=0)


def test_wandb_logger_receives_the_image_grids_and_the_test_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")  # in the test extras; skipped only where bfrzoo is installed without them
    from pytorch_lightning.loggers import WandbLogger

    from bfrzoo.data import FaceDataModule
    from bfrzoo.tasks.base import RestorationTask

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    task = RestorationTask(restorer="unet", restorer_args=UNET, metrics=("psnr",), metrics_pretrained=False, grid_images=2)
    dm = FaceDataModule(size=32, batch_size=4, limit_train=4)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="bfrzoo-test")
    trainer = pl.Trainer(max_epochs=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path, limit_val_batches=1,
                         num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    trainer.test(task, datamodule=dm)
    wandb.finish()
    media = list(tmp_path.rglob("media/images/*.png"))
    tables = list(tmp_path.rglob("media/table/*.table.json"))
    assert any("test_grid" in p.name for p in media) and any("val_grid" in p.name for p in media)
    assert any("test_metrics" in p.name for p in tables)
    import json

    table = json.loads(tables[0].read_text())
    assert table["columns"][:2] == ["restorer", "psnr"] and table["data"][0][0] == "unet"


def _tiny_tasks() -> dict[str, Any]:
    from bfrzoo.tasks import GPENTask, MMRBTask, MPCNetTask, ParseNetTask, PSFRGANTask, StyleGAN2PriorTask
    from bfrzoo.tasks.base import RestorationTask

    quiet = dict(metrics=("psnr",), metrics_pretrained=False)
    return {
        "unet": lambda: RestorationTask(restorer="unet", restorer_args=UNET, **quiet),
        "gpen": lambda: GPENTask(restorer="gpen", restorer_args=dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1,
                                                                      narrow=1 / 32), **quiet),
        "psfrgan": lambda: PSFRGANTask(restorer_args=dict(out_size=32, min_feat_size=16, ch_range=(16, 32), parser_min_feat_size=8,
                                                          parser_base_ch=8, parser_res_depth=1, parser_ch_range=(8, 16)),
                                       pretrained_losses=False, disc_base_ch=8, disc_max_ch=16, disc_depth=1, disc_num_scales=1, **quiet),
        "parsenet": lambda: ParseNetTask(restorer_args=dict(in_size=16, out_size=16, min_feat_size=8, base_ch=8, res_depth=1,
                                                            ch_range=(8, 16)), metrics=()),
        "mpcnet": lambda: MPCNetTask(restorer_args=dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, narrow=1 / 32,
                                                        parser_base_ch=4, parser_res_depth=1, parser_ch_range=(4, 8), num_rcab=1,
                                                        rcab_reduction=4),
                                     require_priors=False, pretrained_losses=False, loss_network="none", disc_base_ch=8,
                                     disc_max_ch=16, disc_depth=1, disc_num_scales=1, **quiet),
        "mmrb": lambda: MMRBTask(restorer_args=dict(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 32),
                                 require_pretrained=False, pretrained_losses=False, local_discriminators=False, lambda_fm=0.0,
                                 lambda_fp=0.0, **quiet),
        "stylegan2_prior": lambda: StyleGAN2PriorTask(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, narrow=1 / 32,
                                                      metrics=(), metrics_pretrained=False),
    }


@pytest.mark.parametrize("name", sorted(_tiny_tasks()))
def test_every_task_rebuilds_from_its_own_checkpoint(name: str, tmp_path: Path) -> None:
    """``Task.load_from_checkpoint`` (weights_only) calls the constructor with the saved hyper-parameters: arguments a
    task sets itself (``l1_weight=alpha`` ...) must not be among them, and the weights must come back."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = _tiny_tasks()[name]()
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
        trainer.strategy.connect(task)
        trainer.save_checkpoint(tmp_path / "task.ckpt", weights_only=False)
        back = type(task).load_from_checkpoint(tmp_path / "task.ckpt", weights_only=True)
    assert type(back) is type(task)
    for (k, a), (_, b) in zip(task.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
