# Source of notebooks/03_train_demo.ipynb: edit here, then run `python notebooks/build.py`.

# %% [markdown]
# # Train the U-Net baseline at demo scale, then read what the run left behind
#
# Every model in bfrzoo trains through one command, `bfrzoo fit --recipe NAME`, which is Lightning's own CLI
# (`LightningCLI`) fed with the recipe's YAML. A **recipe** (`bfrzoo/recipes/NAME.yaml`) is one flat file whose
# keys are the typed constructor arguments of a task (`bfrzoo.tasks`) and of the `FaceDataModule`; `--demo` adds
# `recipes/demo.yaml` (the embedded sample faces, small images, weight-free metrics) and, when it exists, a
# per-recipe overlay `recipes/demo/NAME.yaml` (a small architecture).
#
# Here we call the same entry point from Python, `bfrzoo.cli.main([...])`, with a few more overrides so the
# notebook trains for seconds, not minutes: one epoch on 8 training faces at 64 px. The resulting network is
# barely trained; the point is what a run produces and how to read it. For the real demo run
# `bash scripts/demo.sh` or `bfrzoo fit --recipe unet --demo` (6 epochs at 128 px, a few minutes on a CPU).

# %%
import contextlib
import json
import math
import tempfile
from pathlib import Path

import torch

from bfrzoo.cli import list_recipes, main, recipe_path, recipes_dir
from bfrzoo.data import FaceDataModule
from bfrzoo.interface import Restorer
from bfrzoo.metrics import psnr
from bfrzoo.registry import load_restorer

print("recipes:", ", ".join(list_recipes()))
print(recipe_path("unet").read_text().split("seed_everything")[0])  # the recipe's header comment
print("demo overlay for unet:\n" + (recipes_dir() / "demo" / "unet.yaml").read_text())

# %% [markdown]
# ## 1. Train
#
# A run writes into `runs/unet/` under the **current directory**, so we train inside a fresh temporary folder.
# Any recipe key can be overridden on the command line (`--data.size 64`, `--trainer.max_epochs 1`, ...); a
# misspelt key or a wrong type is rejected with the list of valid ones. After `fit`, the best checkpoint is tested
# on the fixed test set (the validation faces degraded with per-image seeds) and the run folder receives the
# metrics table, a grid of test images and an exported `restorer.pt`.

# %%
WORK = Path(tempfile.mkdtemp(prefix="bfrzoo-train-demo-"))
overrides = [
    "--trainer.max_epochs", "1",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--data.size", "64",
    "--data.batch_size", "4",
    "--data.limit_train", "8",
]
with contextlib.chdir(WORK):
    main(["fit", "--recipe", "unet", "--demo", *overrides])

# %% [markdown]
# ## 2. The run folder
#
# The CSV logger's version folder (`runs/unet/logs/version_N/`) is the run folder:
# * `checkpoints/` — Lightning checkpoints (`best-*.ckpt` by validation PSNR, `last.ckpt`);
# * `restorer.pt` — the network alone (EMA weights when the recipe keeps an EMA), loadable with
#   `weights_only=True` and `bfrzoo.registry.load_restorer` (notebook 02);
# * `test_metrics.md` / `test_metrics.json` — the test table with its provenance: device, torch version, bfrzoo
#   commit, date, data, degradation preset and seed;
# * `test_grid.png` — one row per test face: `LQ | restored | HQ`;
# * `metrics.csv`, `config.yaml`, `hparams.yaml` — the training curves and the fully resolved configuration.

# %%
run = sorted(WORK.rglob("test_metrics.json"))[-1].parent
print("run folder:", run.relative_to(WORK))
for f in sorted(run.rglob("*")):
    if f.is_file():
        print(f"  {str(f.relative_to(run)):<32} {f.stat().st_size / 1024:8.1f} KiB")

# %%
print((run / "test_metrics.md").read_text())
report = json.loads((run / "test_metrics.json").read_text())
test_psnr = report["metrics"]["psnr"]
print(f"test PSNR {test_psnr:.2f} dB on {report['num_images']} faces, preset {report['preset']}, size {report['size']}")


# %%
def show_file(path: Path) -> None:
    """Display a PNG file (matplotlib, else IPython; otherwise print where it is)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        try:
            from IPython.display import Image, display
        except ImportError:
            print(f"(no matplotlib / IPython here) see {path}")
            return
        display(Image(filename=str(path)))
        return
    from PIL import Image as PILImage

    img = PILImage.open(path)
    plt.figure(figsize=(img.width / 40, img.height / 40))
    plt.imshow(img)
    plt.axis("off")
    plt.title("LQ | restored | HQ")
    plt.show()


show_file(run / "test_grid.png")

# %% [markdown]
# ## 3. The table's number is reproducible from `restorer.pt`
#
# The test set is fixed: the `FaceDataModule` degrades each validation face with a seed that depends only on the
# run's seed and the file name, so the same LQ comes back on any machine, batch size or number of processes.
# Restoring it with the exported network gives the PSNR of the table again, and scoring the LQ itself gives the
# floor a restorer must beat (an untrained U-Net is the identity, so it starts exactly there).

# %%
net = load_restorer(run / "restorer.pt")
restorer = Restorer(net, device="cpu")
dm = FaceDataModule(size=report["size"], batch_size=4, preset=report["preset"], seed=report["seed"])
dm.setup("test")
restored_psnr, lq_psnr = [], []
for batch in dm.test_dataloader():
    batch = dm.on_after_batch_transfer(batch, 0)  # the LQ is synthesised here, on the batch's device
    restored_psnr.append(psnr(restorer.restore(batch["lq"]), batch["hq"]))
    lq_psnr.append(psnr(batch["lq"], batch["hq"]))
reproduced_psnr = torch.cat(restored_psnr).mean().item()
lq_baseline_psnr = torch.cat(lq_psnr).mean().item()
print(f"restorer.pt: {reproduced_psnr:.4f} dB (table: {test_psnr:.4f} dB) | LQ itself: {lq_baseline_psnr:.4f} dB")
assert math.isclose(reproduced_psnr, test_psnr, abs_tol=1e-3)

# %% [markdown]
# `bfrzoo table` merges the `test_metrics.json` of several runs into one markdown table (one row per run, the
# provenance kept), as in `benchmarks/results/`:

# %%
main(["table", str(WORK / "runs")])

# %% [markdown]
# ## 4. The other recipes
#
# The same command trains the other models; each has a demo overlay with a tiny architecture that runs on a CPU
# in minutes (with random priors / parsers and random VGG features, so the images only show that the pipeline
# runs). They are not run here:
#
# ```bash
# bfrzoo fit --recipe gpen --demo              # GPEN: GAN prior in a U-shaped network (add --model.prior_checkpoint)
# bfrzoo fit --recipe stylegan2_prior --demo   # the StyleGAN2 prior GPEN starts from (writes prior.pt)
# bfrzoo fit --recipe parsenet --demo          # PSFR-GAN's face-parsing network
# bfrzoo fit --recipe psfrgan --demo           # PSFR-GAN (add --model.parser_checkpoint RUN/restorer.pt)
# ```
#
# At full scale, point `--data.root` at a folder with `images/` and `split.json` (e.g. `../shared/data/faces512`),
# drop `--demo`, and add Lightning options as needed (`--trainer.devices 2 --trainer.strategy ddp`,
# `--trainer.precision bf16-mixed`). `bfrzoo fit --recipe NAME --help` lists every option.
