# Source of notebooks/01_quickstart.ipynb: edit here, then run `python notebooks/build.py`.

# %% [markdown]
# # bfrzoo quickstart: what is in the zoo, and what the papers' degradations look like
#
# Blind face restoration (BFR) networks are trained on **synthetic** low-quality (LQ) faces made from clean
# high-quality (HQ) ones, and every paper uses its own degradation model. bfrzoo implements all of them as
# seeded, batched tensor code, so that every network can be trained and scored on the same LQ images.
#
# This notebook
# 1. lists what the installed version offers: restorers, degradation presets, metrics;
# 2. degrades a few of the embedded sample faces with each paper's preset and shows them side by side;
# 3. scores the LQ images against their HQ originals with PSNR, SSIM (full reference) and NIQE (no reference).
#
# It needs no download and no GPU: the faces ship inside the package (`bfrzoo/assets/sample`), and it runs in
# well under a minute on a 2-core CPU (most of it importing torch and torchmetrics).

# %%
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import bfrzoo
from bfrzoo.data import PRESETS, degrade
from bfrzoo.io import read_image, sample_root
from bfrzoo.metrics import METRICS, niqe, psnr, ssim
from bfrzoo.registry import list_converters, restorer_entry

torch.manual_seed(0)
OUT = Path(tempfile.mkdtemp(prefix="bfrzoo-quickstart-"))  # where the figure PNGs go
print("bfrzoo", bfrzoo.__version__, "| torch", torch.__version__)

# %% [markdown]
# ## 1. What is in the zoo
#
# **Restorers** are networks behind one registry: `bfrzoo.create_restorer(name, **arch_kwargs)` builds one with
# random weights (`pretrained=True` resolves a variant's released checkpoint; see notebook 02). A plain name such
# as `gpen` or `psfrgan` is the configurable architecture (tiny defaults, for tests and CPU demos), a suffixed
# name such as `gpen_512` is a published variant. Every network maps `(N, 3, H, W)` in `[-1, 1]` to the same.
#
# **Converters** load the original authors' released checkpoints (`bfrzoo.from_official(arch, file)`).

# %%
for name in bfrzoo.list_restorers():
    entry = restorer_entry(name)
    released = f"  [released weights: {entry.pretrained.filename}]" if entry.pretrained else ""
    print(f"{name:<12} {entry.summary}{released}")
print("\nofficial-checkpoint converters:", ", ".join(list_converters()))

# %% [markdown]
# **Degradation presets** (`bfrzoo.data.PRESETS`) are the papers' LQ models
# `LQ = up_s(JPEG_q(down_s(HQ * k) + n_sigma))`: a blur kernel `k`, a downsampling factor `s`, Gaussian noise of
# standard deviation `sigma` (0..255 scale) and JPEG quality `q`, one value of each drawn per image from the
# preset's ranges. `common` is bfrzoo's own moderate preset on which all networks are compared.

# %%
print(f"{'preset':<9} {'blur':<34} {'scale s':<14} {'noise':<11} {'JPEG q':<10} source")
for name, p in PRESETS.items():
    blur = "+".join(p.blur_kinds)
    print(f"{name:<9} {blur:<34} {str(p.scale):<14} {str(p.noise_sigma):<11} {str(p.jpeg_quality):<10} {p.citation}")

# %% [markdown]
# **Metrics** (`bfrzoo.metrics`) each come as a function (`psnr(preds, target)` -> one value per image) and as a
# torchmetrics `Metric` class; `METRICS` says which direction is better. LPIPS and FID need pretrained feature
# networks (resolved like weights); PSNR, SSIM and NIQE need nothing.

# %%
for name, spec in METRICS.items():
    print(f"{name:<10} {'higher' if spec.higher_is_better else 'lower '} is better   {spec.description}")

# %% [markdown]
# ## 2. Degrade the sample faces with each paper's preset
#
# The embedded sample holds 80 aligned 512 px faces with a train/val split (`split.json`). We take four
# validation faces and resize them to 256 px to keep the demo fast (NIQE needs at least 96 px).
# `bfrzoo.io.read_image` returns `(3, H, W)` float in `[0, 1]`.

# %%
faces = sample_root("faces512")  # the embedded sample (bfrzoo/assets/sample; licences in bfrzoo/assets/LICENSES.md)
split = json.loads((faces / "split.json").read_text())
names = split["val"][:4]
hq = torch.stack([read_image(faces / "images" / n) for n in names])  # (4, 3, 512, 512) in [0, 1]
hq = F.interpolate(hq, size=(256, 256), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
print(hq.shape, f"range [{hq.min():.2f}, {hq.max():.2f}]")

# %% [markdown]
# `degrade(hq, preset, seed)` takes a batch `(N, 3, H, W)` in `[0, 1]` on any device and returns the LQ batch at
# the **same size** (degraded, then resized back up), so LQ and HQ pair pixel for pixel. The same seed gives the
# same images: that is how bfrzoo keeps its test sets fixed.

# %%
lq = {name: degrade(hq, name, seed=0) for name in PRESETS}
same_again = torch.equal(degrade(hq, "gpen", seed=0), lq["gpen"])
print("same seed, same LQ:", same_again, "| another seed differs:", not torch.equal(degrade(hq, "gpen", seed=1), lq["gpen"]))


# %%
def show(images: torch.Tensor, nrow: int, filename: str, title: str = "") -> Path:
    """Save ``images`` (N, 3, H, W) in [0, 1] as one grid PNG and display it (matplotlib, else IPython)."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images, nrow=nrow, padding=4, pad_value=1.0)
    path = OUT / filename
    save_image(grid, path)
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        try:
            from IPython.display import Image, display
        except ImportError:
            print(f"(no matplotlib / IPython here) figure saved to {path}")
            return path
        display(Image(filename=str(path)))
        return path
    plt.figure(figsize=(2.2 * nrow, 2.2 * len(images) / nrow))
    plt.imshow(grid.permute(1, 2, 0).numpy())
    plt.title(title)
    plt.axis("off")
    plt.show()
    return path


# One row per face: HQ, then the LQ of each preset in the order of PRESETS.
columns = [hq] + [lq[name] for name in PRESETS]
rows = torch.stack(columns, dim=1).flatten(0, 1)  # (4 * 6, 3, 256, 256)
show(rows, nrow=len(columns), filename="presets.png", title="HQ | " + " | ".join(PRESETS))

# %% [markdown]
# ## 3. How far is each LQ from its HQ?
#
# PSNR (dB) and SSIM compare an image with its reference (higher is better; PSNR of an image with itself is
# infinite). NIQE is a no-reference naturalness score (lower is better) computed from the image alone, the only
# kind of metric that applies to real photos without a clean original.

# %%
print("PSNR(hq, hq) =", psnr(hq, hq).tolist(), "| SSIM(hq, hq) =", ssim(hq, hq).tolist())
table = {"psnr": {}, "ssim": {}, "niqe": {}}
table["niqe"]["HQ"] = niqe(hq).mean().item()
for name, x in lq.items():
    table["psnr"][name] = psnr(x, hq).mean().item()
    table["ssim"][name] = ssim(x, hq).mean().item()
    table["niqe"][name] = niqe(x).mean().item()

print("| images | PSNR ↑ | SSIM ↑ | NIQE ↓ |\n|---|---|---|---|")
print(f"| HQ | inf | 1.000 | {table['niqe']['HQ']:.2f} |")
for name in PRESETS:
    print(f"| LQ {name} | {table['psnr'][name]:.2f} | {table['ssim'][name]:.3f} | {table['niqe'][name]:.2f} |")

# %% [markdown]
# Reading the table: GPEN's model is by far the harshest (it downsamples by `s` drawn from [10, 200], written for
# 1024 px training; at 256 px that leaves faces of a few pixels), which is why GPEN leans on a generative prior.
# PSFR-GAN's and MPCNet's presets blur hard (sigma up to 15) but keep more pixels; `common` is moderate. Scores are
# means over only four faces: they illustrate, they do not benchmark.
#
# NIQE also scores **real** degraded photos, which have no HQ reference. The sample ships four aligned crops
# (`assets/sample/real_lq`, from the CelebA, LFW-Test, WebPhoto-Test and WIDER-Test real-world test sets, via the
# NTIRE 2025 real-world face restoration challenge; see `bfrzoo/assets/LICENSES.md`).

# %%
real_files = sorted(sample_root("real_lq").glob("*.png"))
real = torch.stack([read_image(f) for f in real_files])
real = F.interpolate(real, size=(256, 256), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
real_niqe = niqe(real)
for f, v in zip(real_files, real_niqe.tolist()):
    print(f"NIQE {v:6.2f}  {f.name}")
show(real, nrow=len(real), filename="real_lq.png", title="real LQ faces")

# %% [markdown]
# ## Next
# * `02_restore_and_evaluate.ipynb`: build a restorer, restore tensors / arrays / PIL images, save and reload it,
#   and load the original authors' checkpoints with `bfrzoo.from_official`.
# * `03_train_demo.ipynb`: train the U-Net baseline on these faces and read its metrics table.
# * From a shell: `bfrzoo list` prints the lists above, and `bfrzoo degrade --preset common --seed 0 HQ LQ`
#   writes a fixed LQ test set.
