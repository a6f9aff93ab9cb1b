"""MPCNet (Front. Neurorobot. 2022): the architecture of Sec. 3.2-3.3 at 512 px, the priors it fuses, the Table 1
ablations, the losses of Eq. (8)-(10) with their weights, the LR plateau schedule, the prior files it loads, and the
three-stage demo chain (prior, parser, MPCNet) through the CLI."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import table_psnr_from_restorer

import bfrzoo
from bfrzoo.cli import main
from bfrzoo.errors import BfrzooError, CheckpointMismatchError, WeightsNotFoundError
from bfrzoo.interface import to_model_range
from bfrzoo.models.gan_prior import save_gan_prior
from bfrzoo.models.mpcnet import MPCNet
from bfrzoo.models.parsenet import save_parser
from bfrzoo.registry import restorer_entry

TINY = dict(restorer_entry("mpcnet").tiny)
TASK_TINY = dict(require_priors=False, pretrained_losses=False, metrics=("psnr",), metrics_pretrained=False,
                 disc_base_ch=8, disc_max_ch=16, disc_depth=1, disc_num_scales=1, restorer_args=TINY)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _task(**kw: object):
    from bfrzoo.tasks.mpcnet import MPCNetTask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MPCNetTask(**{**TASK_TINY, **kw})  # type: ignore[arg-type]


def test_paper_architecture_at_512() -> None:
    """Sec. 3.2: 7 APFF blocks (8 ... 512, F_decode^7 -> ToRGB), the StyleGAN2 prior without noise inputs, the
    parsing network with 7 down, 10 residual and 7 up blocks, decoder widths = the prior's at every scale."""
    with torch.device("meta"):
        net = bfrzoo.create_restorer("mpcnet_512")
    assert sorted(int(k) for k in net.apff) == [8, 16, 32, 64, 128, 256, 512]
    assert net.prior.noise_mode == "none" and not any("noise" in n for n, _ in net.prior.named_parameters())
    assert net.prior.size == 512 and net.prior.n_latent == 16
    assert len(net.parser.encoder) - 1 == 7 and len(net.parser.body) == 10 and len(net.parser.decoder) == 7
    for r, block in net.apff.items():
        assert block.channels == net.prior.channels[int(r)] and block.use_sft and block.use_adain
    assert len(net.encoder) == 7 and net.to_latent[-1].weight.shape[0] == 16 * 512
    own = sum(p.numel() for n, p in net.named_parameters() if not n.startswith(("prior.", "parser.")))
    assert 100e6 < own < 200e6  # documented in docs/models/mpcnet.md
    # spectral norm on every conv of MPCNet's own layers, none on the pretrained priors
    from bfrzoo.blocks.common import SpectralNormConv2d

    own_convs = [m for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith(("prior", "parser"))]
    assert own_convs == [] and any(isinstance(m, SpectralNormConv2d) for m in net.apff.modules())
    assert not any(isinstance(m, SpectralNormConv2d) for m in net.parser.modules())


def test_other_sizes_are_resized_bicubically_and_returned_at_the_callers_size() -> None:
    torch.manual_seed(0)
    net = bfrzoo.create_restorer("mpcnet", **TINY).eval()
    x = torch.rand(1, 3, 24, 20) * 2 - 1
    with torch.no_grad():
        out = net(x)
        inner = net.forward_with_priors(F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1))
        ref = F.interpolate(inner.image, size=(24, 20), mode="bicubic", align_corners=False).clamp(-1, 1)
    assert out.shape == x.shape and torch.allclose(out, ref, atol=1e-6)


def test_the_priors_are_the_gan_features_of_the_latents_and_the_parsers_decoder() -> None:
    torch.manual_seed(1)
    net = bfrzoo.create_restorer("mpcnet", **TINY).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        out = net.forward_with_priors(x)
        spatial, _ = net.encode(x)
        latent = net.to_latent(spatial.mean((2, 3))).view(2, net.prior.n_latent, -1)
        gan = net.prior(latent, input_is_latent=True, return_features=True).features
        parse = net.parser.forward_features(x)
    assert sorted(out.gan_features) == sorted(out.parse_features) == [8, 16]
    for r in (8, 16):
        assert torch.equal(out.gan_features[r], gan[r])
        expected = parse.features.get(r, F.adaptive_avg_pool2d(parse.features[min(parse.features)], r))
        assert torch.equal(out.parse_features[r], expected)
    assert torch.equal(out.parse_logits, parse.mask_logits)


def test_table1_ablations_remove_exactly_their_part() -> None:
    full = MPCNet(**TINY)
    no_gan = MPCNet(**TINY, use_gan_prior=False)
    no_parse = MPCNet(**TINY, use_parsing_prior=False)
    no_adain = MPCNet(**TINY, use_adain=False)
    no_sft = MPCNet(**TINY, use_sft=False)
    g_convs = sum(_count(b.g_conv1) + _count(b.g_conv2) for b in full.apff.values())
    assert no_gan.prior is None and no_gan.to_latent is None
    assert _count(full) - _count(no_gan) == _count(full.prior) + _count(full.to_latent) + g_convs
    sft = sum(_count(b.sft) for b in full.apff.values())
    assert no_parse.parser is None and _count(full) - _count(no_parse) == _count(full.parser) + sft
    assert _count(no_adain) == _count(full)
    fuse = sum(_count(b.parse_fuse) for b in no_sft.apff.values())
    assert _count(full) - _count(no_sft) == sft - fuse
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.manual_seed(2)
    for ablated in (no_gan, no_parse, no_adain, no_sft):
        ablated.load_state_dict({k: v for k, v in full.state_dict().items() if k in ablated.state_dict()
                                 and v.shape == ablated.state_dict()[k].shape}, strict=False)
    with torch.no_grad():
        reference = full.eval()(x)
        for ablated in (no_gan, no_parse, no_adain, no_sft):
            assert not torch.allclose(ablated.eval()(x), reference)


def test_frozen_priors_get_no_gradient_and_finetuning_unfreezes_the_prior() -> None:
    torch.manual_seed(3)
    net = MPCNet(**TINY).train()
    assert not net.parser.training and not net.prior.training  # frozen priors stay in eval mode
    (net(torch.rand(2, 3, 16, 16) * 2 - 1) * torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None for p in [*net.prior.parameters(), *net.parser.parameters()])
    assert net.to_latent[-1].weight.grad is not None  # the latents learn through the frozen GAN
    groups = net.trainable_groups()
    assert set(groups) == {"restorer"} and _count(net) - sum(p.numel() for p in groups["restorer"]) == _count(net.prior) + _count(net.parser)
    tuned = MPCNet(**TINY, finetune_prior=True)
    assert set(tuned.trainable_groups()) == {"restorer", "prior"} and all(p.requires_grad for p in tuned.prior.parameters())


def test_latents_start_at_the_priors_mean_latent() -> None:
    torch.manual_seed(4)
    net = MPCNet(**TINY)
    spatial, _ = net.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    before = net.to_latent(spatial.mean((2, 3))).view(net.prior.n_latent, -1)
    torch.manual_seed(5)
    net.init_latents_from_prior(n=256)
    torch.manual_seed(5)
    mean = net.prior.mean_latent(256)  # the same 256 codes
    latent = net.to_latent(spatial.mean((2, 3))).view(net.prior.n_latent, -1)
    assert (latent - mean).abs().mean() < 0.05 * mean.abs().mean() < (before - mean).abs().mean()


def test_one_step_trains_mpcnet_and_the_discriminator_only(tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    torch.manual_seed(6)
    task = _task()
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    g = torch.Generator().manual_seed(0)
    batches = [{"hq": torch.rand(2, 3, 16, 16, generator=g), "lq": torch.rand(2, 3, 16, 16, generator=g), "name": ["a", "b"]}]
    pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path).fit(
        task, train_dataloaders=DataLoader(batches, batch_size=None))
    changed = {n for n, p in task.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(n.startswith("net.apff.") for n in changed) and any(n.startswith("disc.") for n in changed)
    assert not any(n.startswith(("net.prior.", "net.parser.")) for n in changed)
    opt_g, opt_d = task.optimizer_groups()
    assert opt_g.defaults["betas"] == (0.9, 0.99) and all(grp["eps"] == 1e-8 for grp in opt_g.param_groups)
    assert [grp["lr"] for grp in opt_g.param_groups] == [2e-4] and opt_d.param_groups[0]["lr"] == 2e-4


def test_generator_loss_is_eq8_plus_weighted_eq9_and_eq10() -> None:
    torch.manual_seed(7)
    task = _task(lambda_l1=2.0, lambda_perc=3.0, lambda_style=5.0, lambda_adv=0.5, loss_network="vgg19")
    batch = {"hq": torch.rand(2, 3, 16, 16), "lq": torch.rand(2, 3, 16, 16)}
    restored = task.restore_train(batch["lq"])
    loss, logs = task.generator_loss(batch, restored)
    assert set(logs) >= {"l1", "perceptual", "style", "adv", "rec"}
    assert torch.allclose(logs["rec"], 2.0 * logs["l1"] + 3.0 * logs["perceptual"])
    assert torch.allclose(loss.detach(), logs["rec"] + 0.5 * logs["adv"] + 5.0 * logs["style"])
    hq = to_model_range(batch["hq"])
    assert torch.allclose(logs["l1"], F.l1_loss(restored, hq).detach())
    assert torch.allclose(logs["style"], task.style_loss(restored, hq).detach(), rtol=1e-5)
    plain = _task(loss_network="none")
    _, logs = plain.generator_loss(batch, plain.restore_train(batch["lq"]))
    assert "perceptual" not in logs and "style" not in logs


def test_learning_rates_halve_when_the_validation_reconstruction_loss_plateaus() -> None:
    task = _task(plateau_patience=1)
    optimizers, schedulers = task.configure_optimizers()
    assert len(schedulers) == 2 and all(s["interval"] == "epoch" for s in schedulers)

    class _Config:
        def __init__(self, spec: dict) -> None:
            self.scheduler, self.interval = spec["scheduler"], spec["interval"]

    class _Trainer:
        lr_scheduler_configs = [_Config(s) for s in schedulers]
        callback_metrics: dict = {}

    task._trainer = _Trainer()  # type: ignore[assignment]
    for value in (1.0, 0.9, 0.95, 0.95):  # improves once, then stalls for 2 validations (> patience 1)
        task.monitored_values = {"val/rec": value}
        task._step_schedulers("epoch")
    assert [o.param_groups[0]["lr"] for o in optimizers] == [pytest.approx(1e-4), pytest.approx(1e-4)]
    task._trainer = None


def test_missing_priors_and_vggface_are_one_clear_error_each() -> None:
    with pytest.raises(BfrzooError, match="mpcnet_prior.*mpcnet_parser") as info:
        _task(require_priors=True)
    assert "require_priors false" in str(info.value)
    _task(require_priors=True, restorer_args={**TINY, "use_gan_prior": False, "use_parsing_prior": False})  # none needed
    with pytest.raises(WeightsNotFoundError, match="vgg_face_dag.pth.*loss_network vgg19.*none"):
        _task(pretrained_losses=True, loss_network="vggface")


def test_prior_and_parser_files_load_and_a_noise_prior_is_refused(tmp_path: Path) -> None:
    from bfrzoo.blocks.stylegan2 import Generator
    from bfrzoo.models.parsenet import ParseNet

    torch.manual_seed(8)
    gen_args = dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, narrow=1 / 32)
    prior = Generator(**gen_args, noise_mode="none")
    prior_file = save_gan_prior(prior, None, {**gen_args, "noise_mode": "none"}, tmp_path / "prior.pt")
    parser_args = dict(in_size=16, out_size=16, min_feat_size=4, base_ch=4, res_depth=1, ch_range=(4, 8))
    parser = ParseNet(**parser_args)
    parser_file = save_parser(parser, parser_args, tmp_path / "parser.pt")
    task = _task(prior_checkpoint=str(prior_file), parser_checkpoint=str(parser_file), require_priors=True)
    for mine, ref in ((task.net.prior, prior), (task.net.parser, parser)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), ref.state_dict().values()))
    concat = save_gan_prior(Generator(**gen_args, noise_mode="concat"), None, {**gen_args, "noise_mode": "concat"},
                            tmp_path / "gpen_prior.pt")
    with pytest.raises(CheckpointMismatchError, match="noise_mode='concat'.*'none'"):
        _task(prior_checkpoint=str(concat), parser_checkpoint=str(parser_file))


def test_demo_chain_prior_parser_mpcnet_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command: the StyleGAN2 prior, the parsing network, then MPCNet with both, each stage's
    file feeding the next; the restorer carries the (frozen) priors unchanged and its table reproduces."""
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--data.limit_train", "4",
             "--trainer.enable_progress_bar", "false"]
    main(["fit", "--recipe", "mpcnet_prior", "--demo", *quick])
    (prior,) = (tmp_path / "runs" / "mpcnet_prior").rglob("prior.pt")
    main(["fit", "--recipe", "mpcnet_parser", "--demo", *quick])
    (parser,) = (tmp_path / "runs" / "mpcnet_parser").rglob("parser.pt")
    main(["fit", "--recipe", "mpcnet", "--demo", *quick, "--model.init_args.prior_checkpoint", str(prior),
          "--model.init_args.parser_checkpoint", str(parser), "--model.init_args.require_priors", "true"])
    (report,) = (tmp_path / "runs" / "mpcnet").rglob("test_metrics.json")
    assert json.loads(report.read_text())["restorer"] == "mpcnet"
    saved = torch.load(report.parent / "restorer.pt", weights_only=True)["state_dict"]
    prior_state = torch.load(prior, weights_only=True)["generator"]
    assert all(torch.equal(saved[f"prior.{k}"], v) for k, v in prior_state.items())
    parser_state = torch.load(parser, weights_only=True)["parser"]
    assert all(torch.equal(saved[f"parser.{k}"], v) for k, v in parser_state.items())
    table, recomputed = table_psnr_from_restorer(report.parent, 64)
    assert abs(table - recomputed) < 1e-3
