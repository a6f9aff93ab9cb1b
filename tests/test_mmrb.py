"""The MMRB network (Hu et al.): the MMRB block (Eq. 4-10) alone and in a foreign network, the asymmetric codec and
its StyleGAN2 prior (Eq. 1-3), FreezeD, the local discriminators' crops, the losses of Eq. (11)-(16) with their
weights, the learning rate of every part, the ablation switches, and a demo fit through the CLI."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import table_psnr_from_restorer
from torch import nn

import bfrzoo
from bfrzoo.blocks import MMRB, PlainResBlock, mmrb_parameter_count
from bfrzoo.data.components import boxes_from_landmarks, boxes_from_masks, component_boxes, crop_components
from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.interface import to_model_range
from bfrzoo.losses.identity import IdentityLoss
from bfrzoo.models.mmrbnet import MMRBNet
from bfrzoo.registry import restorer_entry

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(restorer_entry("mmrb").tiny)
TASK_TINY = dict(restorer_args=TINY, require_pretrained=False, pretrained_losses=False, metrics=("psnr",),
                 metrics_pretrained=False, local_channels=4, lambda_fp=0.0)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _task(**kw: object):
    from bfrzoo.tasks.mmrb import MMRBTask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MMRBTask(**{**TASK_TINY, **kw})  # type: ignore[arg-type]


def _mask_batch(n: int = 2, size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, size, size, dtype=torch.long)
    mask[:, 4:6, 3:6] = 4  # an eye on the left
    mask[:, 4:6, 10:13] = 5  # an eye on the right
    mask[:, 11:13, 5:11] = 11  # lips
    return {"hq": torch.rand(n, 3, size, size, generator=g), "lq": torch.rand(n, 3, size, size, generator=g), "mask": mask}


# ---------------------------------------------------------------------------------------------- the block
@pytest.mark.parametrize("channels,share", [(8, False), (8, True), (7, False), (2, False), (64, True)])
def test_mmrb_parameter_count_matches_the_closed_form(channels: int, share: bool) -> None:
    block = MMRB(channels, share_weights=share)
    assert _count(block) == mmrb_parameter_count(channels, share)
    assert block.split == ((channels + 1) // 2, channels // 2)


def test_mmrb_with_a_zeroed_bottleneck_is_the_identity_and_values_follow_eq_4_to_10() -> None:
    torch.manual_seed(0)
    block = MMRB(6)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        x1, x2 = x[:, :3], x[:, 3:]
        p1, p2 = block.act3(block.conv3(x1)), block.act5(block.conv5(x2))
        cat = torch.cat([p1, p2], 1)
        q = torch.cat([block.act3_mix(block.conv3_mix(cat)), block.act5_mix(block.conv5_mix(cat))], 1)
        assert torch.allclose(block(x), x + block.act_out(block.bottleneck(q)), atol=1e-6)
        block.bottleneck.weight.zero_()
        block.bottleneck.bias.zero_()
        assert torch.equal(block(x), x)


def test_shared_weight_reading_applies_the_first_kernels_to_both_halves() -> None:
    torch.manual_seed(1)
    block = MMRB(4, share_weights=True)
    assert not hasattr(block, "conv3_mix")
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        p1, p2 = block.act3(block.conv3(x[:, :2])), block.act5(block.conv5(x[:, 2:]))
        # [W_1 | W_1] on Concat[P_1, P_2] = W_1(P_1) + W_1(P_2) (one bias)
        m1 = block.conv3(p1) + F.conv2d(p2, block.conv3.weight, padding=1)
        m2 = block.conv5(p1) + F.conv2d(p2, block.conv5.weight, padding=2)
        expected = x + block.act_out(block.bottleneck(torch.cat([block.act3_mix(m1), block.act5_mix(m2)], 1)))
        assert torch.allclose(block(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        MMRB(5, share_weights=True)
    with pytest.raises(ValueError, match="at least 2"):
        MMRB(1)


def test_mmrb_plugs_into_a_torchvision_resnet_and_trains() -> None:
    """Plug-and-play: an MMRB after the first stage of torchvision's ResNet-18 (64 channels)."""
    import torchvision

    torch.manual_seed(2)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    net.layer1 = nn.Sequential(net.layer1, MMRB(64))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    before = net.layer1[1].conv5_mix.weight.detach().clone()
    F.cross_entropy(net(x), y).backward()
    assert all(p.grad is not None for p in net.layer1[1].parameters())
    opt.step()
    assert not torch.equal(before, net.layer1[1].conv5_mix.weight)


# ------------------------------------------------------------------------------------------ the network
def test_papers_codec_at_512_reconciles_the_mmrb_counts_and_takes_gpens_prior() -> None:
    with torch.device("meta"):
        net = bfrzoo.create_restorer("mmrb_512")
        plain = MMRBNet(use_mmrb=False)
    blocks = {int(r): len(b) for r, b in net.encoder_blocks.items()}
    assert blocks == {512: 0, 256: 1, 128: 1, 64: 1, 32: 1, 16: 1, 8: 1, 4: 0}  # 6, not at the first and last scale
    assert sum(isinstance(m, MMRB) for m in net.modules()) == 6 and all(len(b) == 0 for b in net.decoder_blocks.values())
    assert sum(isinstance(m, PlainResBlock) for m in plain.modules()) == 6 and not any(isinstance(m, MMRB) for m in plain.modules())
    # GPEN-BFR-512's generator keys and shapes are exactly the prior's ("the Stylegan2 model retrained by [16]")
    manifest = json.loads((FIXTURES / "gpen_512_keys.json").read_text())["generator"]
    gpen_generator = {k.removeprefix("generator."): v for k, v in manifest.items() if k.startswith("generator.")}
    assert {k: list(v.shape) for k, v in net.generator.state_dict().items()} == gpen_generator
    assert net.generator.noise_mode == "concat" and net.input_size == 512


def test_decoder_features_feed_the_noise_branches_and_reconstruct_every_scale() -> None:
    torch.manual_seed(3)
    net = bfrzoo.create_restorer("mmrb", **TINY)
    seen = {}
    for name, m in net.generator.named_modules():
        if type(m).__name__ == "NoiseInjection":
            m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[1]))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = net.forward_with_aux(x)
    _, feats = net.encode(x)
    dec = net.decode(feats)
    assert torch.equal(seen["conv1.noise"], dec[4])
    assert torch.equal(seen["convs.0.noise"], dec[8]) and torch.equal(seen["convs.1.noise"], dec[8])
    assert torch.equal(seen["convs.2.noise"], dec[16])
    assert sorted(out.reconstructions) == [8, 16] and out.reconstructions[8].shape == (2, 3, 8, 8)
    assert torch.allclose(out.reconstructions[16], net.to_rgbs["16"](dec[16]))
    other = MMRBNet(**TINY, decoder_narrow=1 / 16)  # decoder widths of their own: Generator(noise_channels=...)
    assert other.generator.conv1.out_channels == other.generator.channels[4] + other.decoder_channels[4]
    assert other.forward_with_aux(x).image.shape == (2, 3, 16, 16)


# ------------------------------------------------------------------------------------------ components
def test_component_boxes_from_landmarks_and_masks() -> None:
    lm = torch.tensor([[[20.0, 30.0], [40.0, 30.0], [30.0, 40.0], [24.0, 50.0], [36.0, 50.0]]])
    boxes = boxes_from_landmarks(lm, eye_ratio=0.5, mouth_ratio=1.0, min_side=1.0)
    assert torch.allclose(boxes[0], torch.tensor([[15.0, 25, 25, 35], [35, 25, 45, 35], [24, 44, 36, 56]]))
    assert torch.equal(boxes_from_landmarks(lm[:, [1, 0, 2, 3, 4]], 0.5, 1.0, 1.0), boxes)  # left = smaller x
    batch = _mask_batch(1)
    boxes, valid = boxes_from_masks(batch["mask"], eye_margin=1.0, mouth_margin=1.0, min_side=1.0)
    # left eye: x 3..5, y 4..5 -> square of side 3 centred (4.5, 5); mouth: x 5..10, y 11..12 -> side 6
    assert torch.allclose(boxes[0, 0], torch.tensor([3.0, 3.5, 6.0, 6.5])) and valid.all()
    assert torch.allclose(boxes[0, 2], torch.tensor([5.0, 9.0, 11.0, 15.0]))
    batch["mask"][0][batch["mask"][0] == 5] = 0  # the right eye hidden
    assert component_boxes(batch)[1].tolist() == [[True, False, True]]
    with pytest.raises(BfrzooError, match="with_landmarks.*with_masks.*local_discriminators false"):
        component_boxes({"hq": batch["hq"]})


def test_each_local_discriminator_sees_the_crop_of_its_component() -> None:
    image = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    boxes = torch.tensor([[[2.0, 3, 6, 7], [8, 3, 12, 7], [5, 10, 9, 14]]]).repeat(2, 1, 1)
    crops = crop_components(image, boxes, 4)
    assert torch.equal(crops[:, 0], image[:, :, 3:7, 2:6]) and torch.equal(crops[:, 2], image[:, :, 10:14, 5:9])
    task = _task(local_crop=4)
    task.eval()
    seen = {}
    for name, d in task.local_ds.items():
        d.register_forward_hook(lambda mod, inp, out, name=name: seen.setdefault(name, inp[0]))
    batch = _mask_batch(2)
    restored = task.restore_train(batch["lq"])
    task.generator_loss(batch, restored)
    boxes, _ = component_boxes(batch)
    expected = crop_components(restored, boxes, 4)
    for i, name in enumerate(("left_eye", "right_eye", "mouth")):
        assert torch.equal(seen[name], expected[:, i])


# ------------------------------------------------------------------------------------------ losses
def test_every_term_enters_the_total_with_its_weight() -> None:
    torch.manual_seed(4)
    task = _task(lambda_fp=0.0, lambda_g=0.5, lambda_l=3.0, lambda_l1=8.0, lambda_fm=0.02, lambda_ms=1.5)
    task.identity_loss = IdentityLoss(network=nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 8)))
    task.hparams.lambda_fp = 10.0
    batch = _mask_batch(2)
    restored = task.restore_train(batch["lq"])
    recon = dict(task._reconstructions)
    loss, logs = task.generator_loss(batch, restored)
    expected = (0.5 * logs["adv_global"] + 3.0 * logs["adv_local"] + 8.0 * logs["l1"] + 0.02 * logs["feature_matching"]
                + 10.0 * logs["identity"] + 1.5 * logs["multiscale_l1"])
    assert torch.allclose(loss.detach(), expected, rtol=1e-5)
    assert torch.allclose(logs["adv_local"], logs["adv_left_eye"] + logs["adv_right_eye"] + logs["adv_mouth"])
    hq = to_model_range(batch["hq"])
    ms = sum(F.l1_loss(img, F.interpolate(hq, size=img.shape[-2:], mode="bilinear", align_corners=False, antialias=True))
             for img in recon.values())
    assert torch.allclose(logs["multiscale_l1"], ms.detach(), rtol=1e-5)
    assert torch.allclose(logs["adv_global"], F.softplus(-task.disc(restored)).mean().detach(), rtol=1e-5)  # Eq. (11)
    loss.backward()  # the multi-scale RGB heads (auxiliary outputs) learn through the reconstruction L1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.net.to_rgbs.parameters())


def test_identity_loss_is_the_l1_of_arcface_embeddings_of_the_face_box() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 4))
    loss = IdentityLoss(network=net)
    x, y = torch.rand(2, 3, 256, 256) * 2 - 1, torch.rand(2, 3, 256, 256) * 2 - 1
    crop = loss.crop(x)
    assert crop.shape == (2, 3, 112, 112)
    assert torch.allclose(crop, F.interpolate(x[..., 35:223, 32:220], size=(112, 112), mode="bilinear", align_corners=False))
    with torch.no_grad():
        expected = (net(loss.crop(y)) - net(loss.crop(x))).abs().sum(1).mean()
        assert torch.allclose(loss(x, y), expected) and float(loss(x, x)) == 0.0
    assert loss.state_dict() == {}
    with pytest.raises(WeightsNotFoundError, match="recognition_arcface_ir_se50.pth.*lambda_fp 0"):
        _task(pretrained_losses=True, lambda_fm=0.0, lambda_fp=10.0)


def test_freezed_leaves_the_first_five_layers_of_the_global_d_unchanged_after_a_step(tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    torch.manual_seed(5)
    task = _task(freeze_d_layers=5)
    assert task.frozen_d and task.frozen_d[0] == "convs.0.0.weight"
    before = {n: p.detach().clone() for n, p in task.disc.named_parameters()}
    before_local = {n: p.detach().clone() for n, p in task.local_ds.named_parameters()}
    batches = [{**_mask_batch(2), "name": ["a", "b"]}]
    pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path).fit(
        task, train_dataloaders=DataLoader(batches, batch_size=None))
    for name, p in task.disc.named_parameters():
        if name in task.frozen_d:
            assert torch.equal(p, before[name]), name
    moved = [n for n, p in task.disc.named_parameters() if n not in task.frozen_d and not torch.equal(p, before[n])]
    assert moved and all(not n.startswith("convs.0.") for n in moved)
    assert any(not torch.equal(p, before_local[n]) for n, p in task.local_ds.named_parameters())


def test_learning_rate_of_every_part_and_the_piecewise_decay() -> None:
    task = _task()
    opts = task.optimizer_groups()
    lrs = {g["name"]: g["lr"] for o in opts for g in o.param_groups}
    assert lrs == {"codec": 2e-3, "noise": 2e-3, "prior": 2e-4, "global_d": 2e-5,
                   "local_d_left_eye": 2e-3, "local_d_right_eye": 2e-3, "local_d_mouth": 2e-3}
    assert len(opts) == 5  # generator, global D, three local Ds: each D its own optimiser
    specs = task.lr_scheduler_specs(opts)
    assert all(s["interval"] == "step" and list(s["scheduler"].milestones) == [400_000, 600_000] for s in specs)
    noise = {id(p) for p in task.net.parameter_groups()["noise"]}
    assert noise and all(n.endswith("noise.weight") for n, p in task.net.named_parameters() if id(p) in noise)


def test_ablation_switches_remove_exactly_their_part() -> None:
    full, no_local, no_freeze, no_ft = _task(), _task(local_discriminators=False), _task(freeze_d_layers=0), _task(
        finetune_prior=False, freeze_d_layers=0)
    assert len(full.local_ds) == 3 and len(no_local.local_ds) == 0 and len(no_local.optimizer_groups()) == 2
    assert _count(full) - _count(no_local) == _count(full.local_ds)
    assert no_freeze.frozen_d == [] and all(p.requires_grad for p in no_freeze.disc.parameters())
    frozen_g = [n for n, p in no_ft.net.generator.named_parameters() if not p.requires_grad]
    assert frozen_g and not any(n.endswith("noise.weight") for n in frozen_g)
    assert "prior" not in {g["name"] for g in no_ft.optimizer_groups()[0].param_groups}
    assert full.identity_loss is None  # lambda_fp 0 (w/o FP loss): no ArcFace is built
    no_mmrb = _task(restorer_args={**TINY, "use_mmrb": False})
    assert not any(isinstance(m, MMRB) for m in no_mmrb.net.modules())


def test_pretrained_parts_load_from_gpen_layouts_or_are_one_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(6)
    ref = MMRBNet(**TINY)
    from bfrzoo.blocks.stylegan2 import Discriminator
    from bfrzoo.models.gan_prior import discriminator_width

    gpen_file = tmp_path / "GPEN-BFR-16.pth"  # GPEN's FullGenerator layout: generator.* (+ encoder ecd*)
    torch.save({**{f"generator.{k}": v for k, v in ref.generator.state_dict().items()}, "ecd0.0.0.weight": torch.zeros(1)}, gpen_file)
    disc = Discriminator(16, *discriminator_width(ref.generator), stddev_group=None)
    disc_file = tmp_path / "GPEN-BFR-16-D.pth"
    torch.save(disc.state_dict(), disc_file)
    task = _task(prior_checkpoint=str(gpen_file), global_disc_checkpoint=str(disc_file), require_pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(task.net.generator.state_dict().values(), ref.generator.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(task.disc.state_dict().values(), disc.state_dict().values()))
    with pytest.raises(BfrzooError, match="GPEN-BFR-512.pth.*stylegan2_prior.*require_pretrained false"):
        _task(require_pretrained=True)


def test_demo_fit_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bfrzoo.cli import main

    monkeypatch.chdir(tmp_path)
    main(["fit", "--recipe", "mmrb", "--demo", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
          "--data.limit_train", "4", "--trainer.enable_progress_bar", "false"])
    (report,) = (tmp_path / "runs" / "mmrb").rglob("test_metrics.json")
    assert json.loads(report.read_text())["restorer"] == "mmrb"
    table, recomputed = table_psnr_from_restorer(report.parent, 64)
    assert abs(table - recomputed) < 1e-3
