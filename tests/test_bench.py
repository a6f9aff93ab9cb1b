"""`bfrzoo bench`: FLOP counting, interleaved timing, the mode chooser, deterministic quality scoring with n/a for
missing weights, the fixed-budget training protocol, bad input, and the GPU workflow's commands."""
from __future__ import annotations

import csv
import io
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from bfrzoo.bench import DEFAULT_TOLERANCE, MODES, fastest_mode
from bfrzoo.bench.modes import apply_mode, mode_unavailable, probe_images, restored_difference
from bfrzoo.bench.peaks import peak_tflops
from bfrzoo.bench.speed import count_flops, render_csv, render_markdown, run_speed
from bfrzoo.bench.timing import Timing, time_interleaved
from bfrzoo.cli import main
from bfrzoo.io import sample_root

REPO = Path(__file__).resolve().parents[1]


class _TinyConvNet(nn.Module):
    """A fully convolutional toy restorer with non-zero weights (its output depends on every layer)."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.body(x))


# ------------------------------------------------------------------------------------------------ speed
def test_flop_count_of_a_single_conv_equals_the_closed_form() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 2 FLOPs per multiply-add: 2 * C_in * C_out * k * k * H_out * W_out (the bias add is not counted)
    assert count_flops(conv, 16) == 2 * 3 * 8 * 3 * 3 * 16 * 16
    strided = nn.Conv2d(3, 6, 5, stride=2, padding=2)
    assert count_flops(strided, 32) == 2 * 3 * 6 * 5 * 5 * 16 * 16
    assert all(p.requires_grad for p in conv.parameters())  # the count leaves the module as it was


def test_interleaved_timing_calls_each_candidate_warmup_plus_repeats_times() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("a", "b", "c")}
    timings = time_interleaved(fns, torch.device("cpu"), repeats=3, warmup=2)
    assert set(timings) == {"a", "b", "c"} and all(t.repeats == 3 for t in timings.values())
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up first, then round-robin, rotated each round
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    t = Timing.of([1.0, 2.0, 3.0, 10.0])
    assert t.median_s == 2.5 and t.min_s == 1.0 and t.max_s == 10.0 and t.iqr_pct > 0


def test_peak_table_knows_datacenter_gpus_and_says_nothing_about_cpus() -> None:
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0  # PCIe matched before the SXM entry
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H200", "fp32") == 67.0
    assert peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta
    assert peak_tflops("CPU (AMD EPYC, 2 threads, AVX2)", "fp32") is None


def test_speed_run_measures_every_available_mode_with_provenance() -> None:
    result = run_speed(["gpen"], "cpu", sizes=(128,), batches=(1, 2), modes=["fp32", "channels_last", "bf16"],
                       repeats=1, warmup=0, train_batch=1, memory=False)
    infer = [r for r in result.rows if r.kind == "infer"]
    modes = {r.mode for r in infer}
    assert {"fp32", "channels_last"} <= modes
    assert ("bf16" in modes) == (mode_unavailable(MODES["bf16"], "cpu") is None)
    assert {(r.mode, r.batch) for r in infer} == {(m, b) for m in modes for b in (1, 2)}
    fp32 = [r for r in infer if r.mode == "fp32"]
    assert all(r.max_abs_diff == 0.0 and r.speedup_vs_fp32 == 1.0 and r.mfu_pct is None for r in fp32)
    assert all(r.gflops_per_image > 0 and r.params == fp32[0].params for r in infer)
    assert any("fixed 64 px input" in s for s in result.skipped)  # --size does not apply to a fixed-size net
    train = [r for r in result.rows if r.kind == "train"]
    assert train and train[0].mode == "fp32" and train[0].images_per_s > 0
    md = render_markdown(result, "bfrzoo bench speed --models gpen")
    for word in ("torch " + torch.__version__, result.provenance["commit"], "UTC", "## Targets", "interleaved"):
        assert word in md
    rows = list(csv.DictReader(io.StringIO(render_csv(result))))
    assert len(rows) == len(result.rows) and rows[0]["device"].startswith("CPU") and rows[0]["commit"]


def test_cpu_peak_memory_is_the_subprocess_own() -> None:
    from bfrzoo.bench.speed import cpu_memory

    ballast = torch.ones(256 * 2**20)  # 1 GiB in THIS process, touched
    parent_mib = ballast.numel() * 4 / 2**20
    mem = cpu_memory("gpen", 64, [1, 2])
    assert "error" not in mem, mem
    assert mem["peak_rss_mib"]["2"] >= mem["peak_rss_mib"]["1"] > 0
    assert mem["rss_after_build_mib"] < parent_mib  # Linux's ru_maxrss would have carried the parent's peak over
    del ballast


# ------------------------------------------------------------------------------------------------ modes
def test_mode_chooser_picks_a_mode_within_tolerance() -> None:
    net = _TinyConvNet().eval()
    choice = fastest_mode(net, "cpu", size=32, repeats=2, cache=False)
    assert choice.max_abs_diff[choice.mode.name] <= DEFAULT_TOLERANCE
    assert "fp32" in choice.images_per_s and choice.mode.name in choice.images_per_s
    assert all(MODES[m].compile is False for m in choice.images_per_s)  # compile only when allowed
    # a zero tolerance leaves only the bit-identical fp32 default
    strict = fastest_mode(net, "cpu", size=32, tolerance=0.0, candidates=["fp32", "channels_last"], repeats=1, cache=False)
    assert strict.mode.name == "fp32"
    assert strict.max_abs_diff["channels_last"] > 0 and "tolerance" in strict.skipped["channels_last"]
    # cached per (architecture, device, size, ...)
    assert fastest_mode(net, "cpu", size=32, repeats=1) is fastest_mode(net, "cpu", size=32, repeats=1)


def test_restorer_auto_mode_stays_within_tolerance_of_fp32() -> None:
    from bfrzoo.interface import Restorer

    net = _TinyConvNet()
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    ref = Restorer(net, "cpu").restore(x)
    auto = Restorer(net, "cpu", mode="auto")
    assert auto.mode in MODES and auto.mode_choice is not None and auto.mode in auto.mode_choice.describe()
    assert float((auto.restore(x) - ref).abs().max()) <= DEFAULT_TOLERANCE
    cl = Restorer(net, "cpu", mode="channels_last")
    assert cl.mode == "channels_last" and float((cl.restore(x) - ref).abs().max()) < 1e-5
    with pytest.raises(KeyError, match="auto, fp32"):
        Restorer(net, "cpu", mode="fp8")
    # the wrapped network keeps the contract and the weights
    wrapped = apply_mode(net, "channels_last")
    assert wrapped.size_divisor == 1 and restored_difference(wrapped(probe_images(1, 16)), net(probe_images(1, 16))) < 1e-5


# ------------------------------------------------------------------------------------------------ quality
def _tiny_run(tmp_path: Path) -> Path:
    import bfrzoo
    from bfrzoo.registry import export_restorer

    torch.manual_seed(0)
    args = {"base_channels": 8, "depth": 2, "max_channels": 16}
    net = bfrzoo.create_restorer("unet", **args)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the identity of a fresh U-Net
    export_restorer(net, "unet", args, tmp_path / "run" / "version_0" / "restorer.pt")
    return tmp_path / "run"


def test_quality_is_identical_on_rerun_and_says_n_a_for_missing_weights(tmp_path: Path) -> None:
    from bfrzoo.bench.quality import load_candidates, prepare_test_set, render_markdown, run_quality

    run = _tiny_run(tmp_path)
    hq = sample_root("faces512")
    test_set = prepare_test_set(hq, tmp_path / "work", "common", 0, 96)
    again = prepare_test_set(hq, tmp_path / "work2", "common", 0, 96)  # built anew: the same bytes
    assert test_set.checksum == again.checksum and len(test_set.names) == 8

    def score() -> list:
        result = run_quality(load_candidates([run], ["gpen_512"]), test_set, "cpu", real_lq=sample_root("real_lq"),
                             real_size=96, fid_hq=sample_root("real_lq"))
        return result, [(r["label"], r["scores"]) for r in result.rows + result.real_rows]

    first, rows1 = score()
    _, rows2 = score()
    assert rows1 == rows2  # same seed, same set, same numbers
    by_label = {r["label"]: r["scores"] for r in first.rows}
    unet = by_label["unet (version_0)"]
    assert isinstance(unet["psnr"], float) and isinstance(unet["ssim"], float) and isinstance(unet["niqe"], float)
    for metric in ("lpips", "lpips_vgg", "fid"):  # the test cache is empty: never a random network
        assert unet[metric] == "n/a (no weights)"
    assert unet["ms_ssim"] == "n/a (image size)"
    assert set(by_label["gpen_512"].values()) == {"n/a (no weights)"}
    assert by_label["lq (the input, no restoration)"]["psnr"] != unet["psnr"]
    real = {r["label"]: r["scores"] for r in first.real_rows}["unet (version_0)"]
    assert isinstance(real["niqe"], float) and real["fid"] == "n/a (no weights)"
    assert real["identity_cos"] == "n/a (no weights)" and str(real["clipiqa"]).startswith("n/a")
    md = render_markdown(first)
    assert test_set.checksum in md and "bfrzoo degrade --preset common --seed 0 --size 96" in md


def test_identity_cosine_is_one_for_the_same_faces() -> None:
    from bfrzoo.bench.quality import identity_cosine

    embed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(3, 3, 8, 8)
    assert identity_cosine(x, x, embed) == pytest.approx(1.0, abs=1e-6)
    assert identity_cosine(x, torch.rand(3, 3, 8, 8), embed) < 1.0


def test_test_set_of_other_settings_is_refused(tmp_path: Path) -> None:
    from bfrzoo.bench.quality import prepare_test_set
    from bfrzoo.errors import BfrzooError

    built = prepare_test_set(sample_root("faces512"), tmp_path, "common", 0, 64)
    with pytest.raises(BfrzooError, match="was made with"):
        prepare_test_set(sample_root("faces512"), tmp_path, "common", 1, 64, lq_dir=built.lq_dir)


# ------------------------------------------------------------------------------------------------ train
def test_protocol_comes_from_the_tasks() -> None:
    from bfrzoo.bench.train import BenchSettings, ablation_direction, plan, protocol_of

    assert protocol_of("unet", 128).prerequisites == ()
    gpen = protocol_of("gpen", 128)
    (prior,) = gpen.prerequisites
    assert (prior.recipe, prior.argument, prior.export) == ("stylegan2_prior", "prior_checkpoint", "prior.pt")
    arch = gpen.overrides["model.init_args.restorer_args"]
    assert all(prior.overrides[f"model.init_args.{k}"] == v for k, v in arch.items())  # the prior fits the GPEN
    assert protocol_of("psfrgan", 128).prerequisites[0].recipe == "parsenet"

    rows = plan(["unet", "gpen", "psfrgan"], BenchSettings(data="DATA", size=128), Path("W"), variants=True)
    labels = [r.label for r in rows]
    stages = [r.stage for r in rows]
    assert stages.index("model") > max(i for i, s in enumerate(stages) if s == "prerequisite")  # stages first
    assert {"gpen_wo_ft", "gpen_wo_noise", "gpen_noise_add", "psfrgan_A", "psfrgan_B", "psfrgan_C"} <= set(labels)
    deps = {r.label: r.budget["depends_on"] for r in rows if r.stage != "prerequisite"}
    assert deps["gpen"] == deps["gpen_wo_ft"] != deps["gpen_wo_noise"]  # w/o-noise needs a prior without noise
    assert deps["psfrgan"] == deps["psfrgan_A"] == deps["psfrgan_B"]  # one parser shared by every PSFR-GAN row
    assert len([s for s in stages if s == "prerequisite"]) == 4  # 3 priors (concat, none, add) + 1 parser
    unet = next(r for r in rows if r.label == "unet")
    assert "--trainer.max_time" in unet.args and unet.args[unet.args.index("--trainer.max_time") + 1] == "00:00:10:00"
    assert not any(r.skipped for r in rows)
    # MMRB w/o identity loss: the protocol already sets lambda_fp 0 without the ArcFace file (none in the tests), so
    # that row would repeat the mmrb row: it is not run, and says why; every other MMRB ablation runs
    mmrb_rows = {r.label: r for r in plan(["mmrb"], BenchSettings(data="DATA", size=128), Path("W"), variants=True)}
    assert mmrb_rows["mmrb_wo_fp"].skipped and "identical to the mmrb row" in mmrb_rows["mmrb_wo_fp"].error
    assert "lambda_fp=0.0" in mmrb_rows["mmrb_wo_fp"].error
    assert [k for k, r in mmrb_rows.items() if r.stage == "variant" and not r.skipped] == [
        "mmrb_wo_mmrb", "mmrb_wo_local_d", "mmrb_wo_ft_freezed", "mmrb_wo_freezed"]
    # the paper: full GPEN PSNR 20.80 > w/o-ft 12.55; ours moved the same way -> agrees
    assert ablation_direction({"psnr": 20.0, "fid": 50.0}, {"psnr": 19.0, "fid": 40.0}, {"psnr": 20.8, "fid": 31.7},
                              {"psnr": 12.55, "fid": 92.7}) == {"psnr": "agrees", "fid": "disagrees"}


@pytest.mark.slow
def test_bench_train_runs_every_row_on_a_tiny_budget(tmp_path: Path) -> None:
    from bfrzoo.bench.train import BenchSettings, run_train_bench

    settings = BenchSettings(data=str(sample_root("faces512")), size=64, minutes=0.02, batch_size=2)
    rows, quality, md = run_train_bench(["unet", "gpen"], settings, tmp_path / "w", out=tmp_path / "train",
                                        allow_dirty=True)
    by_label = {r.label: r for r in rows}
    assert [r.stage for r in rows] == ["prerequisite", "model", "model"]
    for r in rows:
        assert r.error is None, (r.label, r.error)
        assert r.budget["batches"] >= 1 and r.budget["images"] == 2 * r.budget["batches"]
    assert by_label["gpen"].args[by_label["gpen"].args.index("--model.init_args.prior_checkpoint") + 1].endswith("prior.pt")
    assert "small-scale CPU proxy" in md and "What each budget bought" in md and "Did it beat `unet`?" in md
    assert {r["label"] for r in quality.rows} >= {"unet", "gpen"}
    assert (tmp_path / "train.md").is_file() and (tmp_path / "train.csv").read_text().count("\n") > 3


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("argv, message", [
    (["bench", "speed", "--models", "no_such_model", "--no-train"], "unknown restorer 'no_such_model'"),
    (["bench", "speed", "--models", "gpen", "--size", "4"], "--size must be >= 8"),
    (["bench", "speed", "--models", "gpen", "--modes", "fp8"], "unknown inference mode 'fp8'"),
    (["bench", "quality", "--hq", "/no/such/folder", "--models", "gpen_512"], "does not exist"),
    (["bench", "quality", "--hq", "HQ"], "give models to score"),
    (["bench", "train", "--minutes", "1", "--models", "unet", "--data", "/no/such/folder"], "does not exist"),
    (["bench", "train", "--minutes", "1", "--models", "no_such_recipe", "--data", "."], "unknown recipe"),
])
def test_bad_bench_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_gpu_workflow_runs_only_commands_that_exist() -> None:
    from bfrzoo.cli import _zoo_parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "benchmarks.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"workflow_dispatch", "schedule"}  # never on push / pull requests (the CPU CI)
    job = next(iter(workflow["jobs"].values()))
    assert job["runs-on"] == ["self-hosted", "gpu"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any("bash scripts/setup.sh" in r for r in runs)
    assert "bash scripts/setup.sh" in (REPO / "scripts" / "test.sh").read_text()  # the README's install path
    commands = [line.strip() for r in runs for line in r.replace("\\\n", " ").splitlines() if "bin/bfrzoo " in line]
    seen = set()
    for command in commands:
        command = re.sub(r"\$\{\{[^}]*\}\}", "1", command)
        command = re.sub(r'"\$[A-Za-z_{][^"]*"', "x", command)
        tokens = shlex.split(command)
        argv = tokens[tokens.index(next(t for t in tokens if t.endswith("bin/bfrzoo"))) + 1:]
        _zoo_parser().parse_args(argv)  # an unknown command or option exits here
        seen.add(tuple(argv[:2]))
    assert {("bench", "speed"), ("bench", "quality"), ("bench", "train")} <= seen
    assert any("GITHUB_STEP_SUMMARY" in r for r in runs)
    assert any("upload-artifact" in step.get("uses", "") for step in job["steps"])
