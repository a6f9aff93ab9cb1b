"""GPEN training: the StyleGAN2 prior task, embedding the prior, the fine-tuning losses (Eq. 1-3), the
100 : 10 : 1 learning rates (Sec. 4.2), the GPEN-w/o-ft ablation and both demo recipes end to end."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bfrzoo.errors import CheckpointMismatchError
from bfrzoo.models.gan_prior import read_gan_prior, save_gan_prior
from bfrzoo.tasks.gpen import GPENTask
from bfrzoo.tasks.stylegan2_prior import StyleGAN2PriorTask

TINY = dict(size=64, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.0625, noise_mode="concat")
TINY_PRIOR = dict(TINY, ema_decay=0.9, metrics=(), metrics_pretrained=False)


def _gpen(**kw: object) -> GPENTask:
    args = dict(restorer="gpen", restorer_args=TINY, metrics=("psnr",), metrics_pretrained=False)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GPENTask(**args)  # type: ignore[arg-type]


def _batches(n: int = 1, batch: int = 2, seed: int = 0) -> list[dict[str, object]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        hq = torch.rand(batch, 3, 64, 64, generator=g)
        out.append({"hq": hq, "lq": (hq + 0.1 * torch.randn(hq.shape, generator=g)).clamp(0, 1), "name": [f"{i}_{j}" for j in range(batch)]})
    return out


def _fit_steps(task: pl.LightningModule, tmp_path: Path, steps: int = 1) -> None:
    loader = DataLoader(_batches(steps), batch_size=None)
    trainer = pl.Trainer(
        max_steps=-1, max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )
    trainer.fit(task, train_dataloaders=loader)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


# ------------------------------------------------------------------------------------------ fine-tuning
def test_one_step_updates_encoder_decoder_and_discriminator_with_lr_ratio_100_10_1(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = _gpen(lr=0.002)
    opt_g, opt_d = task.optimizer_groups()
    lrs = {g["name"]: g["lr"] for g in [*opt_g.param_groups, *opt_d.param_groups]}
    assert lrs == pytest.approx({"encoder": 0.002, "decoder": 0.0002, "discriminator": 0.00002})
    groups = {g["name"]: {id(p) for p in g["params"]} for g in opt_g.param_groups}
    assert groups["decoder"] == {id(p) for p in task.net.generator.parameters()}
    assert groups["encoder"] | groups["decoder"] == {id(p) for p in task.net.parameters()}

    enc, dec, disc = _snapshot(task.net.encoder), _snapshot(task.net.generator), _snapshot(task.disc)
    _fit_steps(task, tmp_path)
    assert _changed(enc, task.net.encoder) == set(enc)
    # every decoder weight with a gradient moved (the first layers' biases etc. included)
    assert len(_changed(dec, task.net.generator)) > 0.9 * len(dec)
    assert _changed(disc, task.disc) == set(disc)
    # Adam's first step moves every parameter by ~lr: the ratio of the typical moves is the lr ratio.
    step_enc = max((task.net.encoder.get_parameter(k) - v).abs().max().item() for k, v in enc.items())
    step_disc = max((task.disc.get_parameter(k) - v).abs().max().item() for k, v in disc.items())
    assert step_enc == pytest.approx(0.002, rel=0.05) and step_disc == pytest.approx(0.00002, rel=0.05)


def test_generator_loss_is_eq3_and_leaves_the_discriminator_without_gradients() -> None:
    torch.manual_seed(1)
    task = _gpen(alpha=1.0, beta=0.02)
    batch = _batches(1)[0]
    restored = task.restore_train(batch["lq"])  # type: ignore[arg-type]
    loss, logs = task.generator_loss(batch, restored)
    hq = batch["hq"] * 2 - 1  # type: ignore[operator]
    with torch.no_grad():
        fake_pred, ff = task.disc.forward_with_features(restored)
        _, rf = task.disc.forward_with_features(hq)
    l_a = torch.log1p(torch.exp(-fake_pred)).mean()  # Eq. (1)
    l_c = (restored - hq).abs().mean()
    l_f = sum(((f - r) ** 2).mean() for f, r in zip(ff, rf))  # Eq. (2), squared L2 per layer
    assert len(ff) == 6  # input conv, 4 residual blocks (64 -> 4), final conv
    assert logs["adv"].item() == pytest.approx(l_a.item(), rel=1e-5)
    assert logs["feature"].item() == pytest.approx(l_f.item(), rel=1e-5)
    assert loss.item() == pytest.approx((l_a + l_c + 0.02 * l_f).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in task.disc.parameters())
    assert all(p.grad is not None for p in task.net.encoder.parameters())


def test_discriminator_loss_is_logistic_plus_lazy_r1() -> None:
    torch.manual_seed(2)
    task = _gpen(r1_gamma=10.0, d_reg_every=4)
    batch = _batches(1)[0]
    fake = task.restore_train(batch["lq"]).detach()  # type: ignore[arg-type]
    hq = (batch["hq"] * 2 - 1).requires_grad_(True)  # type: ignore[operator]
    real_pred = task.disc(hq)
    (grad,) = torch.autograd.grad(real_pred.sum(), hq)
    r1 = grad.pow(2).flatten(1).sum(1).mean()
    logistic = F.softplus(-real_pred).mean() + F.softplus(task.disc(fake)).mean()
    loss0, logs0 = task.discriminator_loss(batch, fake)  # step 0: regularised
    assert logs0["r1"].item() == pytest.approx(r1.item(), rel=1e-4)
    assert loss0.item() == pytest.approx((logistic + 10.0 / 2 * r1 * 4).item(), rel=1e-4)
    loss1, logs1 = task.discriminator_loss(batch, fake)  # step 1: lazy, no R1
    assert "r1" not in logs1 and loss1.item() == pytest.approx(logistic.item(), rel=1e-5)


def test_freeze_prior_keeps_the_decoder_fixed_and_trains_the_encoder(tmp_path: Path) -> None:
    torch.manual_seed(3)
    task = _gpen(freeze_prior=True)
    opt_g, _ = task.optimizer_groups()
    assert [g["name"] for g in opt_g.param_groups] == ["encoder"]
    assert not any(p.requires_grad for p in task.net.generator.parameters())
    enc, dec = _snapshot(task.net.encoder), _snapshot(task.net.generator)
    _fit_steps(task, tmp_path, steps=2)
    assert _changed(dec, task.net.generator) == set()
    assert _changed(enc, task.net.encoder) == set(enc)


def test_noise_modes_of_table1_train(tmp_path: Path) -> None:
    for mode in ("none", "add"):
        task = _gpen(restorer_args=dict(TINY, noise_mode=mode))
        assert task.net.noise_mode == mode
        enc = _snapshot(task.net.encoder)
        _fit_steps(task, tmp_path / mode)
        assert _changed(enc, task.net.encoder)


# ------------------------------------------------------------------------------------------ the prior
def test_prior_step_updates_g_d_ema_and_path_length(tmp_path: Path) -> None:
    torch.manual_seed(4)
    task = StyleGAN2PriorTask(**TINY_PRIOR, path_length_weight=2.0, g_reg_every=1)
    g, d, ema = _snapshot(task.net), _snapshot(task.disc), _snapshot(task.net_ema)
    _fit_steps(task, tmp_path)
    assert len(_changed(g, task.net)) > 0.9 * len(g)
    assert _changed(d, task.disc) == set(d)
    assert _changed(ema, task.net_ema)
    # EMA with decay 0.9 after one step: ema = 0.9 * old + 0.1 * new
    k = "style.1.weight"
    expected = 0.9 * ema[k] + 0.1 * task.net.get_parameter(k).detach()
    assert torch.allclose(task.net_ema.get_parameter(k), expected, atol=1e-6)
    assert task.mean_path_length.item() > 0
    # lazy-regularisation corrected Adam (c = k / (k + 1))
    opt_g, opt_d = task.optimizer_groups()
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)
    assert opt_d.param_groups[0]["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.002 * 1 / 2)


def test_prior_loads_into_gpen_decoder_and_discriminator(tmp_path: Path) -> None:
    torch.manual_seed(5)
    prior = StyleGAN2PriorTask(**TINY_PRIOR)
    with torch.no_grad():  # weights different from any fresh init
        for p in [*prior.net_ema.parameters(), *prior.disc.parameters()]:
            p.add_(torch.randn_like(p))
    path = save_gan_prior(prior.net_ema, prior.disc, prior._gen_args, tmp_path / "prior.pt")
    task = _gpen(prior_checkpoint=str(path), ema_decay=0.99)
    for net in (task.net.generator, task.net_ema.generator):
        for k, v in prior.net_ema.state_dict().items():
            assert torch.equal(net.state_dict()[k], v), k
    for k, v in prior.disc.state_dict().items():
        assert torch.equal(task.disc.state_dict()[k], v), k
    # The embedded decoder synthesises exactly what the prior does for the same z and "noise".
    z = torch.randn(2, TINY["style_dim"])
    noise = [torch.randn(2, c.conv.out_ch, 4 * 2 ** ((i + 1) // 2), 4 * 2 ** ((i + 1) // 2))
             for i, c in enumerate([prior.net_ema.conv1, *prior.net_ema.convs])]
    with torch.no_grad():
        assert torch.equal(task.net.generator(z, noise).image, prior.net_ema(z, noise).image)

    # A prior of another noise mode is one clear error.
    other = StyleGAN2PriorTask(**dict(TINY_PRIOR, noise_mode="add"))
    bad = save_gan_prior(other.net, other.disc, other._gen_args, tmp_path / "add.pt")
    with pytest.raises(CheckpointMismatchError, match="noise_mode='add'"):
        _gpen(prior_checkpoint=str(bad))


def test_prior_lightning_checkpoint_prefers_the_ema_generator(tmp_path: Path) -> None:
    torch.manual_seed(6)
    prior = StyleGAN2PriorTask(**TINY_PRIOR)
    with torch.no_grad():
        for p in prior.net_ema.parameters():
            p.add_(1.0)
    ckpt = tmp_path / "prior.ckpt"
    torch.save({"state_dict": prior.state_dict(), "hyper_parameters": dict(prior.hparams)}, ckpt)
    read = read_gan_prior(ckpt)
    assert read["generator_args"]["noise_mode"] == "concat"
    assert torch.equal(read["generator"]["input.input"], prior.net_ema.input.input)
    assert not torch.equal(read["generator"]["input.input"], prior.net.input.input)
    task = _gpen(prior_checkpoint=str(ckpt))
    assert torch.equal(task.net.generator.input.input, prior.net_ema.input.input)


# ------------------------------------------------------------------------------------------ CLI demos
def test_demo_prior_then_gpen_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bfrzoo.cli import main

    monkeypatch.chdir(tmp_path)
    tiny = ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--data.limit_train", "4", "--data.size", "64",
            "--data.batch_size", "4"]
    main(["fit", "--recipe", "stylegan2_prior", "--demo", *tiny])
    (prior_report,) = (tmp_path / "runs" / "stylegan2_prior").rglob("test_metrics.json")
    assert json.loads(prior_report.read_text())["restorer"] == "stylegan2_prior"
    prior_file = prior_report.parent / "prior.pt"
    assert (prior_report.parent / "test_samples.png").is_file()

    main(["fit", "--recipe", "gpen", "--demo", *tiny, "--model.prior_checkpoint", str(prior_file)])
    (report_file,) = (tmp_path / "runs" / "gpen").rglob("test_metrics.json")
    report = json.loads(report_file.read_text())
    assert report["restorer"] == "gpen" and report["num_images"] == 8
    assert set(report["metrics"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert all(v == v for v in report["metrics"].values())  # no NaN
    # The exported restorer carries a decoder fine-tuned FROM the prior: same keys and shapes as the prior.
    from bfrzoo.registry import load_restorer

    net = load_restorer(report_file.parent / "restorer.pt")
    prior_state = read_gan_prior(prior_file)["generator"]
    assert {k: v.shape for k, v in net.generator.state_dict().items()} == {k: v.shape for k, v in prior_state.items()}
