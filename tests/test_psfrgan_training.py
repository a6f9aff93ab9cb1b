"""Training side of PSFR-GAN: the parsing-network pre-training task (Eq. 11) and the GAN task (Eq. 4-9).

Tiny networks (the 64 px fixture configuration), random parser and random VGG19, CPU only.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _helpers import table_psnr_from_restorer
from torch.utils.data import DataLoader

from bfrzoo.cli import main
from bfrzoo.errors import BfrzooError, CheckpointMismatchError
from bfrzoo.interface import to_model_range
from bfrzoo.losses.semantic_style import SemanticStyleLoss
from bfrzoo.models.parsenet import load_parser_weights, save_parser
from bfrzoo.registry import export_restorer, load_restorer
from bfrzoo.tasks.parsenet import ParseNetTask, colorize_parsing
from bfrzoo.tasks.psfrgan import PSFRGANTask

SIZE = 64
TINY_PSFRGAN = {
    "out_size": SIZE, "ch_range": (32, 64), "parser_min_feat_size": 16, "parser_base_ch": 16,
    "parser_res_depth": 3, "parser_ch_range": (16, 64),
}
TINY_PARSENET = {"in_size": SIZE, "out_size": SIZE, "min_feat_size": 16, "base_ch": 16, "res_depth": 3, "ch_range": (16, 64)}
TINY_DISC = {"disc_base_ch": 16, "disc_max_ch": 64, "disc_depth": 2}


def _psfrgan_task(seed: int = 0, **kwargs: object) -> PSFRGANTask:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random parser" warning: expected here
        return PSFRGANTask(restorer_args=TINY_PSFRGAN, pretrained_losses=False, metrics=("psnr",), **TINY_DISC, **kwargs)


def _batch(n: int = 2, seed: int = 0, masks: bool = True) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    hq = torch.rand(n, 3, SIZE, SIZE, generator=g)
    batch: dict[str, object] = {"hq": hq, "lq": (hq + 0.2 * torch.randn(hq.shape, generator=g)).clamp(0, 1)}
    if masks:
        labels = torch.zeros(n, SIZE, SIZE, dtype=torch.int64)
        labels[:, 16:48, 16:48] = 1  # skin
        labels[:, 24:30, 20:28] = 4  # an eye
        labels[:, :10] = 13  # hair
        batch["mask"] = labels
    return batch


def _loader(n: int = 2, masks: bool = True) -> DataLoader:
    batch = _batch(n, masks=masks)
    items = [{k: v[i] for k, v in batch.items()} for i in range(n)]  # type: ignore[index]
    return DataLoader(items, batch_size=n)


def _trainer(tmp_path: Path) -> pl.Trainer:
    return pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
    )


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------- PSFR-GAN


def test_one_step_updates_generator_and_discriminator_and_keeps_the_parser_frozen(tmp_path: Path) -> None:
    task = _psfrgan_task()
    gen, disc, parser = _snapshot(task.net.generator), _snapshot(task.disc), _snapshot(task.net.parser)
    _trainer(tmp_path).fit(task, train_dataloaders=_loader())
    def moved(net: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
        return [k for k, v in net.state_dict().items() if k.endswith("weight_orig") and not torch.equal(v, before[k])]

    gen_changed, disc_changed = moved(task.net.generator, gen), moved(task.disc, disc)
    assert len(gen_changed) == sum(k.endswith("weight_orig") for k in gen)  # every generator conv moved
    assert len(disc_changed) == sum(k.endswith("weight_orig") for k in disc)  # every discriminator conv moved
    # The frozen prior: weights AND BatchNorm statistics unchanged (eval mode), no gradients, not optimised.
    for k, v in task.net.parser.state_dict().items():
        assert torch.equal(v, parser[k]), k
    assert not any(p.requires_grad for p in task.net.parser.parameters())
    opt_g, opt_d = task.optimizer_groups()
    ids = {id(p) for group in opt_g.param_groups for p in group["params"]}
    assert ids == {id(p) for p in task.net.generator.parameters()}
    assert opt_g.defaults["lr"] == 1e-4 and opt_d.defaults["lr"] == 4e-4 and opt_g.defaults["betas"] == (0.5, 0.999)
    logged = task.trainer.logged_metrics
    for key in ("train/d_loss", "train/g_loss", "train/g_pixel", "train/g_feature_matching", "train/g_adv", "train/g_style"):
        assert key in logged, key


def test_generator_loss_is_eq9_with_paper_weights() -> None:
    task = _psfrgan_task()
    batch = _batch()
    restored = task.restore_train(batch["lq"])
    loss, logs = task.generator_loss(batch, restored)
    hq = to_model_range(batch["hq"])
    assert logs["pixel"].item() == pytest.approx(F.mse_loss(restored, hq).item(), rel=1e-6)  # Eq. 6: MSE
    assert logs["rec"].item() == pytest.approx((logs["pixel"] + logs["feature_matching"]).item(), rel=1e-6)
    expected = 10 * logs["rec"] + 100 * logs["style"] + 1 * logs["adv"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Style masks: the ground-truth mask of the batch ("auto" with masks) as one-hot.
    onehot = task.hq_parsing(batch)
    assert torch.equal(onehot.argmax(1), batch["mask"]) and torch.equal(onehot.sum(1), torch.ones(2, SIZE, SIZE))
    # The generator step does not touch the discriminator's gradients.
    loss.backward()
    assert all(p.grad is None for p in task.disc.parameters())
    assert all(p.grad is not None for p in task.net.generator.parameters())


def test_released_conventions_rescale_the_terms() -> None:
    paper, released = _psfrgan_task(seed=1), _psfrgan_task(seed=1, pixel_loss="l1", average_scales=True)
    batch = _batch()
    with torch.no_grad():
        restored = paper.restore_train(batch["lq"])
    _, a = paper.generator_loss(batch, restored)
    _, b = released.generator_loss(batch, restored)
    assert b["feature_matching"].item() == pytest.approx(a["feature_matching"].item() / 3, rel=1e-5)
    assert b["adv"].item() == pytest.approx(a["adv"].item() / 3, rel=1e-5)
    assert b["pixel"].item() == pytest.approx(F.l1_loss(restored, to_model_range(batch["hq"])).item(), rel=1e-6)


def test_style_loss_normalisations_differ_by_regions_times_channels_squared() -> None:
    torch.manual_seed(0)
    paper = SemanticStyleLoss(layers=("relu3_1",), pretrained=False, normalization="paper")
    released = SemanticStyleLoss(layers=("relu3_1",), vgg=paper.vgg, normalization="released")
    batch = _batch()
    x, y = to_model_range(batch["lq"]), to_model_range(batch["hq"])
    ratio = paper(x, y, batch["mask"]) / released(x, y, batch["mask"])
    assert ratio.item() == pytest.approx(19 * 256**2, rel=1e-4)  # relu3_1 has C = 256
    with pytest.raises(BfrzooError, match="normalization"):
        SemanticStyleLoss(vgg=paper.vgg, layers=("relu3_1",), normalization="gatys")  # type: ignore[arg-type]


def test_style_loss_ablation_removes_the_term(tmp_path: Path) -> None:
    task = _psfrgan_task(use_style_loss=False)
    assert task.style_loss is None
    batch = _batch()
    restored = task.restore_train(batch["lq"])
    loss, logs = task.generator_loss(batch, restored)
    assert "style" not in logs
    assert loss.item() == pytest.approx((10 * logs["rec"] + logs["adv"]).item(), rel=1e-5)
    _trainer(tmp_path).fit(task, train_dataloaders=_loader())
    assert "train/g_style" not in task.trainer.logged_metrics and "train/g_adv" in task.trainer.logged_metrics


def test_parsing_ablation_lq_only_generator_and_unconditioned_discriminator(tmp_path: Path) -> None:
    task = _psfrgan_task(use_parsing=False)
    assert task.restorer_args["use_parsing"] is False
    assert task.net.generator.parse_ch == 0 and task.disc.D_pool[0].model[0].conv2d.in_channels == 3
    _trainer(tmp_path).fit(task, train_dataloaders=_loader(masks=False))
    # The exported restorer rebuilds the LQ-only variant, and its output does not depend on the parser.
    net = load_restorer(export_restorer(task.eval_net, task.restorer_name, task.restorer_args, tmp_path / "a.pt"))
    lq = to_model_range(_batch()["lq"])
    out = net(lq)
    with torch.no_grad():
        for p in net.parser.parameters():
            p.add_(1.0)
    assert torch.equal(net(lq), out)
    with pytest.raises(ValueError, match="use_parsing"):
        PSFRGANTask(restorer_args={**TINY_PSFRGAN, "use_parsing": True}, use_parsing=False, pretrained_losses=False)


def test_hq_parsing_sources_and_errors() -> None:
    task = _psfrgan_task(style_masks="parser")
    batch = _batch()
    with torch.no_grad():
        expected = task.net.parser(to_model_range(batch["hq"]))[0].argmax(1)
    assert torch.equal(task.hq_parsing(batch).argmax(1), expected)  # the FPN on HQ, not the GT mask
    gt_only = _psfrgan_task(style_masks="gt")
    with pytest.raises(BfrzooError, match="with_masks"):
        gt_only.hq_parsing(_batch(masks=False))
    with pytest.warns(UserWarning, match="RANDOMLY"):
        PSFRGANTask(restorer_args=TINY_PSFRGAN, pretrained_losses=False, metrics=("psnr",), **TINY_DISC)


# --------------------------------------------------------------------------------------- parsing network


def test_parsenet_metrics_perfect_prediction_is_one_and_partial_is_exact() -> None:
    task = ParseNetTask(restorer_args=TINY_PARSENET)
    mask = _batch()["mask"]
    image = torch.rand(2, 3, SIZE, SIZE)
    perfect = F.one_hot(mask, 19).permute(0, 3, 1, 2).float()
    task.val_metrics.update(perfect, mask, image, image)
    values = task.val_metrics.compute()
    assert values["miou"].item() == 1.0 and values["pixel_acc"].item() == 1.0
    task.val_metrics.reset()
    # Predict "skin" everywhere: pixel accuracy = skin fraction; mIoU over the 4 classes present = (skin IoU) / 4.
    skin = torch.ones_like(mask)
    task.val_metrics.update(skin, mask, image, image)
    values = task.val_metrics.compute()
    frac = (mask == 1).float().mean().item()
    assert values["pixel_acc"].item() == pytest.approx(frac)
    assert values["miou"].item() == pytest.approx(frac / 4)


def test_parsenet_loss_is_eq11_and_needs_masks() -> None:
    torch.manual_seed(0)
    task = ParseNetTask(restorer_args=TINY_PARSENET, parse_weight=1.0, pixel_weight=1.0)
    batch = _batch()
    loss, logs = task.training_loss(batch)
    logits, image = task.net(to_model_range(batch["lq"]))
    ce = F.cross_entropy(logits, batch["mask"])
    l2 = F.mse_loss(image, to_model_range(batch["hq"]))
    assert logs["parse_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx((ce + l2).item(), rel=1e-5)
    with pytest.raises(BfrzooError, match="with_masks"):
        task.training_loss(_batch(masks=False))
    colours = colorize_parsing(batch["mask"])
    assert colours.shape == (2, 3, SIZE, SIZE) and colours[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.0, 0.8])  # hair


def test_parser_weights_round_trip_into_psfrgan(tmp_path: Path) -> None:
    torch.manual_seed(3)
    parse_task = ParseNetTask(restorer_args=TINY_PARSENET)
    path = save_parser(parse_task.net, TINY_PARSENET, tmp_path / "parser.pt")
    task = _psfrgan_task(parser_checkpoint=str(path))
    for k, v in parse_task.net.state_dict().items():
        assert torch.equal(task.net.parser.state_dict()[k], v)
    # The authors' layout (a plain state dict with a DataParallel prefix) loads too.
    official = tmp_path / "parse_multi_iter_90000.pth"
    torch.save({f"module.{k}": v for k, v in parse_task.net.state_dict().items()}, official)
    assert torch.equal(load_parser_weights(_psfrgan_task().net.parser, official).encoder[0].conv2d.weight,
                       parse_task.net.encoder[0].conv2d.weight)
    wrong = ParseNetTask(restorer_args={**TINY_PARSENET, "base_ch": 32})
    with pytest.raises(CheckpointMismatchError):
        load_parser_weights(wrong.net, path)


# ------------------------------------------------------------------------------------------ CLI, end to end

CLI_TINY = ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--data.limit_train", "4", "--data.size", "64"]


def test_cli_parsenet_then_psfrgan_demo_fit_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--recipe", "parsenet", "--demo", *CLI_TINY])
    (parse_report,) = (tmp_path / "runs" / "parsenet").rglob("test_metrics.json")
    report = json.loads(parse_report.read_text())
    assert report["restorer"] == "parsenet" and report["num_images"] == 8
    assert set(report["metrics"]) == {"miou", "pixel_acc"} and report["higher_is_better"]["miou"] is True
    assert all(0.0 < v <= 1.0 for v in report["metrics"].values())
    assert (parse_report.parent / "test_grid.png").is_file()
    assert "| parsenet |" in (parse_report.parent / "test_metrics.md").read_text()
    parser_file = parse_report.parent / "parser.pt"
    assert not (parse_report.parent / "restorer.pt").exists()  # a parsing network is not a restorer
    with pytest.raises(BfrzooError, match="restorer.pt"):
        load_restorer(parser_file)

    main(["fit", "--recipe", "psfrgan", "--demo", *CLI_TINY, "--model.parser_checkpoint", str(parser_file)])
    (gan_report,) = (tmp_path / "runs" / "psfrgan").rglob("test_metrics.json")
    report = json.loads(gan_report.read_text())
    assert report["restorer"] == "psfrgan" and set(report["metrics"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert report["restorer_args"]["use_parsing"] is True
    table, recomputed = table_psnr_from_restorer(gan_report.parent, 64)  # the table reproduces from restorer.pt
    assert abs(table - recomputed) < 1e-3
    # The trained restorer carries the pre-trained parser unchanged.
    net = load_restorer(gan_report.parent / "restorer.pt")
    parser_state = torch.load(parser_file, weights_only=True)["parser"]
    for k, v in parser_state.items():
        assert torch.equal(net.parser.state_dict()[k], v), k


def test_cli_size_mismatch_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "parsenet", "--demo", *CLI_TINY[:-1], "128"])
    assert exit_info.value.code == 2 and "--data.size 64" in capsys.readouterr().err


def test_cli_discriminator_too_deep_for_the_size_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "psfrgan", "--demo", *CLI_TINY, "--model.init_args.disc_depth", "4"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "too small for the 3-scale discriminator of depth 4" in err
    assert not list(tmp_path.rglob("*.ckpt"))
