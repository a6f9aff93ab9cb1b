"""Every full-scale recipe parses, instantiates on CPU (with weight-free overrides) and holds the papers' numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from bfrzoo.cli import list_recipes, recipe_path
from bfrzoo.training import BfrzooCLI

# no weight file can be resolved offline: feature networks random, no prior / parser checkpoints
WEIGHT_FREE = {
    "unet": ["--model.init_args.metrics_pretrained", "false"],
    "gpen": ["--model.init_args.metrics_pretrained", "false"],
    "stylegan2_prior": ["--model.init_args.metrics_pretrained", "false"],
    "parsenet": [],
    "psfrgan": ["--model.init_args.metrics_pretrained", "false", "--model.init_args.pretrained_losses", "false"],
    "mpcnet": ["--model.init_args.metrics_pretrained", "false", "--model.init_args.pretrained_losses", "false",
               "--model.init_args.require_priors", "false"],
    "mpcnet_prior": ["--model.init_args.metrics_pretrained", "false"],
    "mpcnet_parser": [],
    "mmrb": ["--model.init_args.metrics_pretrained", "false", "--model.init_args.pretrained_losses", "false",
             "--model.init_args.require_pretrained", "false"],
}


def _instantiate(name: str, extra: list[str], tmp_path: Path) -> BfrzooCLI:
    args = ["--config", str(recipe_path(name)), "--trainer.accelerator", "cpu", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), *extra]
    return BfrzooCLI(args, run=False)


def test_every_recipe_is_covered_here() -> None:
    assert sorted(WEIGHT_FREE) == list_recipes()


@pytest.mark.parametrize("name", sorted(WEIGHT_FREE))
def test_full_recipe_instantiates_with_the_papers_settings(name: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning) if name in ("gpen", "psfrgan", "mpcnet", "mmrb") else _nothing():  # no prior / parser checkpoint
        cli = _instantiate(name, WEIGHT_FREE[name], tmp_path)
    hp, data = cli.model.hparams, cli.datamodule
    assert data.size == 512  # full scale (the data root defaults to the embedded sample; real runs pass --data.root)
    if name == "gpen":  # GPEN Sec. 4.2, Eq. (3)
        assert cli.model.restorer_name == "gpen_512" and (hp.alpha, hp.beta) == (1.0, 0.02)
        assert data.preset == "gpen" and data.batch_size == 1
        lrs = {g["name"]: g["lr"] for opt in cli.model.optimizer_groups() for g in opt.param_groups}
        assert lrs == pytest.approx({"encoder": 0.002, "decoder": 0.0002, "discriminator": 0.00002})
        assert sum(p.numel() for p in cli.model.net.parameters()) == pytest.approx(71.0e6, rel=0.01)
    elif name == "psfrgan":  # PSFR-GAN Sec. 4.3
        assert (hp.lambda_rec, hp.lambda_ss, hp.lambda_adv) == (10.0, 100.0, 1.0)
        assert (hp.lr, hp.lr_d, tuple(hp.betas)) == (1e-4, 4e-4, (0.5, 0.999))
        assert data.preset == "psfrgan" and data.batch_size == 4 and hp.disc_num_scales == 3
    elif name == "parsenet":  # PSFR-GAN appendix A
        assert (hp.lr, tuple(hp.betas)) == (2e-4, (0.9, 0.999)) and data.batch_size == 8 and data.with_masks
        assert hp.restorer_args["res_depth"] == 10 and data.preset == "psfrgan"
    elif name == "mpcnet":  # MPCNet Sec. 3.2-3.4 and 4.1
        net = cli.model.net
        assert cli.model.restorer_name == "mpcnet" and net.size == 512 and sorted(map(int, net.apff)) == [8, 16, 32, 64, 128, 256, 512]
        assert net.prior.noise_mode == "none" and len(net.parser.body) == 10 and len(net.parser.decoder) == 7
        assert (hp.lr, tuple(hp.betas), hp.eps) == (2e-4, (0.9, 0.99), 1e-8) and hp.loss_network == "vggface"
        assert data.preset == "mpcnet" and data.batch_size == 8 and data.flip
        opts, scheds = cli.model.configure_optimizers()
        assert [type(s["scheduler"]).__name__ for s in scheds] == ["ReduceLROnPlateau"] * 2
        assert scheds[0]["scheduler"].factor == 0.5
    elif name == "mmrb":  # journal Sec. III-IV, preprint Sec. 4.2
        net, task = cli.model.net, cli.model
        assert net.size == 512 and sum(type(m).__name__ == "MMRB" for m in net.modules()) == 6
        assert (hp.lambda_g, hp.lambda_l, hp.lambda_l1, hp.lambda_fm, hp.lambda_fp) == (0.5, 3.0, 8.0, 0.02, 10.0)
        lrs = {g["name"]: g["lr"] for o in task.optimizer_groups() for g in o.param_groups}
        assert lrs == {"codec": 2e-3, "prior": 2e-4, "noise": 2e-3, "global_d": 2e-5, "local_d_left_eye": 2e-3,
                       "local_d_right_eye": 2e-3, "local_d_mouth": 2e-3}
        assert len(task.frozen_d) > 0 and not any(p.requires_grad for m in task.disc.conv_layers()[4] for p in m.parameters())
        assert all(p.requires_grad for m in task.disc.conv_layers()[5] for p in m.parameters())
        assert data.preset == "mmrb" and data.batch_size == 4 and data.with_masks
    elif name == "mpcnet_prior":  # the prior MPCNet embeds: StyleGAN2 512 without noise inputs
        assert (hp.size, hp.style_dim, hp.n_mlp, hp.channel_multiplier, hp.noise_mode) == (512, 512, 8, 2, "none")
    elif name == "mpcnet_parser":  # 7 down-sample, 10 residual, 7 up-sample residual blocks at 512 (Sec. 3.2.3)
        net = cli.model.net
        assert len(net.encoder) - 1 == 7 and len(net.body) == 10 and len(net.decoder) == 7
        assert data.preset == "mpcnet" and data.with_masks
    elif name == "stylegan2_prior":  # StyleGAN2 config F as GPEN's prior
        assert (hp.lr, tuple(hp.betas), hp.r1_gamma, hp.d_reg_every) == (0.002, (0.0, 0.99), 10.0, 16)
        assert (hp.size, hp.channel_multiplier, hp.noise_mode) == (512, 2, "concat")
    else:
        assert cli.model.restorer_name == "unet" and data.preset == "common"


def test_full_recipe_without_weights_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The full psfrgan recipe needs released weights (LPIPS, VGG19); offline with an empty cache the user gets
    ONE line naming the file and where to put it, exit status 2, no traceback (LightningCLI's wrapping removed)."""
    from bfrzoo.cli import main

    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info, pytest.warns(UserWarning):
        main(["fit", "--recipe", "psfrgan", "--trainer.accelerator", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("bfrzoo: error: weight file")
    assert str(tmp_path / "empty_cache") in err[0] and "Union subtypes" not in err[0]


def test_bad_constructor_value_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bfrzoo.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "unet", "--demo", "--model.init_args.lr", "-1"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == "bfrzoo: error: lr must be > 0, got -1.0"


def test_checkpoint_monitor_of_an_uncomputed_metric_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bfrzoo.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "unet", "--demo", "--model.init_args.metrics", "[ssim]"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "monitors 'val/psnr'" in err and "val/ssim" in err
    assert not list(tmp_path.rglob("*.ckpt"))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
