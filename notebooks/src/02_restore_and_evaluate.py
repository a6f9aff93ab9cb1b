# Source of notebooks/02_restore_and_evaluate.ipynb: edit here, then run `python notebooks/build.py`.

# %% [markdown]
# # Restore and evaluate: the restorer contract, `Restorer`, `restorer.pt` and the authors' checkpoints
#
# This notebook shows how a researcher uses a bfrzoo network once it exists:
# 1. the **network contract** every restorer follows (`(N, 3, H, W)` in `[-1, 1]`);
# 2. `bfrzoo.interface.Restorer`, which hides that contract: `[0, 1]` tensors, uint8 arrays and PIL images in,
#    the same type out, any size;
# 3. loading the original authors' released checkpoints with `bfrzoo.from_official`, checked here against
#    outputs recorded from the authors' own code (tiny random-weight models in `tests/fixtures`);
# 4. saving a network as a self-describing `restorer.pt` and loading it back.
#
# Everything uses tiny networks on the CPU (well under a minute on 2 cores); nothing is downloaded.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bfrzoo
from bfrzoo.data import degrade
from bfrzoo.errors import UnknownNameError, WeightsNotFoundError
from bfrzoo.interface import Restorer, from_model_range, to_model_range
from bfrzoo.io import read_image, sample_root
from bfrzoo.metrics import psnr
from bfrzoo.registry import export_restorer, load_restorer, restorer_arguments

os.environ["BFRZOO_OFFLINE"] = "1"  # this notebook never downloads: a missing weight file is an error instead
torch.manual_seed(0)
OUT = Path(tempfile.mkdtemp(prefix="bfrzoo-restore-"))

# %% [markdown]
# ## 1. The network contract
#
# `bfrzoo.create_restorer(name, **arch_kwargs)` returns a plain `torch.nn.Module`. Every one of them takes a
# batch `(N, 3, H, W)` of RGB in **`[-1, 1]`** and returns a tensor of the same shape and range, as the published
# code of every model does. Two optional attributes describe the input a network accepts:
# * `input_size`: fixed-size networks (GPEN, PSFR-GAN) need exactly `input_size x input_size`;
# * `size_divisor`: fully convolutional networks (the U-Net) need `H` and `W` divisible by it.
#
# The architecture is configured by the factory's typed keyword arguments; a wrong name is one clear error.

# %%
print("unet arguments:", restorer_arguments("unet"))
net = bfrzoo.create_restorer("unet", base_channels=8, depth=3)
print(f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters,",
      "size_divisor =", getattr(net, "size_divisor", 1), "| input_size =", getattr(net, "input_size", None))
try:
    bfrzoo.create_restorer("unet", channels=8)
except UnknownNameError as err:
    print("UnknownNameError:", err)

# %%
x01 = torch.rand(2, 3, 64, 64)  # images in [0, 1]
with torch.no_grad():
    y = net(to_model_range(x01))  # the network sees [-1, 1] ...
restored = from_model_range(y)    # ... and the caller converts back (clamped to [0, 1])
print("output:", tuple(y.shape), f"range [{y.min():.2f}, {y.max():.2f}]")
# The U-Net's last convolution starts at zero, so an untrained U-Net returns its input unchanged.
print("untrained U-Net is the identity:", torch.allclose(restored, x01, atol=1e-6))

# %% [markdown]
# ## 2. `Restorer`: images in, images out
#
# `Restorer(net)` does the conversions: it accepts a `(N, 3, H, W)` or `(3, H, W)` float tensor in `[0, 1]`, a
# uint8 `(H, W, 3)` array, a PIL image, or a list of them (sizes may differ), and returns the same kind of object.
# It pads to `size_divisor` (and crops back), resizes to `input_size` (and back), batches, and picks the device
# (`device="cuda"` and `dtype=torch.bfloat16` on a GPU). Here, one real LQ face cropped to an odd 250 x 190 pixels:

# %%
restorer = Restorer(net, device="cpu", batch_size=4)
photo = Image.open(sample_root("real_lq") / "Wider-Test_0020.png").convert("RGB").crop((100, 120, 350, 310))
as_array = np.array(photo)  # (190, 250, 3) uint8
as_tensor = torch.from_numpy(as_array).permute(2, 0, 1).float() / 255  # (3, 190, 250) in [0, 1]

out_pil = restorer.restore(photo)
out_array = restorer.restore(as_array)
out_tensor = restorer.restore(as_tensor)
out_list = restorer.restore([photo, photo.resize((128, 96))])
print("PIL   ->", type(out_pil).__name__, out_pil.size)
print("uint8 ->", out_array.dtype, out_array.shape)
print("float ->", out_tensor.dtype, tuple(out_tensor.shape), f"[{out_tensor.min():.2f}, {out_tensor.max():.2f}]")
print("list  ->", [im.size for im in out_list])
# Still the identity network: padding 190 -> 192 and cropping back loses nothing, to the last 8-bit level.
identity_uint8_max_diff = int(np.abs(out_array.astype(int) - as_array.astype(int)).max())
print("max |restored - input| in 8-bit levels:", identity_uint8_max_diff)

# %% [markdown]
# ## 3. The original authors' checkpoints: `bfrzoo.from_official`
#
# Released GPEN and PSFR-GAN files use the authors' parameter names. `bfrzoo.from_official(arch, file_or_state,
# **arch_kwargs)` maps every key (a missing or surplus key is an error, never a silent partial load) and returns
# the bfrzoo network in eval mode. `bfrzoo list` names the converters.
#
# The real checkpoints are hundreds of MB, so the repository carries **tiny** models instead: random weights run
# through the authors' own code, with the inputs and outputs it produced (`tests/fixtures/gpen_tiny.pt`,
# `psfrgan_tiny.pt`; see `tests/fixtures/README.md`). `tests/fixtures` belongs to the source checkout, not to the
# installed package, so we look for it **relative to this notebook** (Jupyter runs a notebook in its own folder,
# `notebooks/`) and, failing that, next to the `bfrzoo` package of an editable install (`pip install -e .`).

# %%
candidates = [
    Path.cwd().parent / "tests" / "fixtures",  # Jupyter started in notebooks/
    Path(bfrzoo.__file__).resolve().parents[1] / "tests" / "fixtures",  # source checkout of an editable install
]
FIXTURES = next((p for p in candidates if (p / "gpen_tiny.pt").is_file()), None)
if FIXTURES is None:
    raise FileNotFoundError("tests/fixtures not found: run this notebook from notebooks/ in a bfrzoo checkout")
print("fixtures:", FIXTURES)
gpen_ref = torch.load(FIXTURES / "gpen_tiny.pt", weights_only=True)
psfr_ref = torch.load(FIXTURES / "psfrgan_tiny.pt", weights_only=True)
print("GPEN fixture config:", gpen_ref["config"])

# %% [markdown]
# **GPEN.** The architecture hyper-parameters are read from the checkpoint's shapes, so no arguments are needed
# (`bfrzoo.from_official("gpen", "GPEN-BFR-512.pth")` works the same way for the released file). The output must
# match what the authors' code produced for the same input.

# %%
gpen = bfrzoo.from_official("gpen", gpen_ref["generator_state_dict"])
with torch.no_grad():
    gpen_out = gpen(gpen_ref["input"])
gpen_max_abs = (gpen_out - gpen_ref["output"]).abs().max().item()
print(f"GPEN: input_size {gpen.input_size}, max |bfrzoo - official| = {gpen_max_abs:.2e}")

# %% [markdown]
# **PSFR-GAN** is two networks: a face-parsing network (ParseNet) predicts a 19-class parsing map from the LQ
# face, and the generator restores the face guided by LQ + parsing. Each converts on its own (checked against the
# authors' outputs), and `from_official("psfrgan", generator_file, parser_state_dict=parser_file, ...)` assembles
# the restorer that runs both. The fixture's configuration names map onto the `psfrgan` factory's arguments.

# %%
gen_cfg, pcfg = psfr_ref["config"], psfr_ref["parsenet_config"]
print("generator config:", gen_cfg, "\nparser config:", pcfg)
generator = bfrzoo.from_official("psfrgan_generator", psfr_ref["generator_state_dict"], **gen_cfg)
parser = bfrzoo.from_official("parsenet", psfr_ref["parsenet_state_dict"], **pcfg)
with torch.no_grad():
    gen_out = generator(psfr_ref["input_lq"], psfr_ref["input_parsing_onehot"])
    mask_logits = parser(psfr_ref["parsenet_input"])[0]
psfrgan_max_abs = (gen_out - psfr_ref["output"]).abs().max().item()
parsenet_max_abs = (mask_logits - psfr_ref["parsenet_output_mask_logits"]).abs().max().item()
print(f"PSFR-GAN generator: max |bfrzoo - official| = {psfrgan_max_abs:.2e}")
print(f"ParseNet mask logits: max |bfrzoo - official| = {parsenet_max_abs:.2e}")

psfrgan = bfrzoo.from_official(
    "psfrgan", psfr_ref["generator_state_dict"], parser_state_dict=psfr_ref["parsenet_state_dict"],
    out_size=gen_cfg["out_size"], min_feat_size=gen_cfg["min_feat_size"], ch_range=gen_cfg["ch_range"],
    parser_min_feat_size=pcfg["min_feat_size"], parser_base_ch=pcfg["base_ch"],
    parser_res_depth=pcfg["res_depth"], parser_ch_range=pcfg["ch_range"],
)
print("assembled PSFR-GAN restorer, input_size", psfrgan.input_size)

# %% [markdown]
# Both converted networks work behind the same `Restorer`: a 512 px face goes in, the `Restorer` resizes it to the
# network's 64 px and the result back to 512 px. With random (tiny) weights the faces are of course not restored:
# this shows the plumbing, not quality. Real weights go through exactly the same calls. Rows of the figure:
# the real LQ faces, the tiny GPEN's output, the tiny PSFR-GAN's output.

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
            from IPython.display import Image as IPImage
            from IPython.display import display
        except ImportError:
            print(f"(no matplotlib / IPython here) figure saved to {path}")
            return path
        display(IPImage(filename=str(path)))
        return path
    plt.figure(figsize=(2.5 * nrow, 2.5 * len(images) / nrow))
    plt.imshow(grid.permute(1, 2, 0).numpy())
    plt.title(title)
    plt.axis("off")
    plt.show()
    return path


faces = torch.stack([read_image(f) for f in sorted(sample_root("real_lq").glob("*.png"))[:2]])  # (2, 3, 512, 512)
by_gpen = Restorer(gpen, device="cpu").restore(faces)
by_psfrgan = Restorer(psfrgan, device="cpu").restore(faces)
print("restored:", tuple(by_gpen.shape), tuple(by_psfrgan.shape))
show(torch.cat([faces, by_gpen, by_psfrgan]), nrow=2, filename="tiny_restorers.png",
     title="real LQ / tiny GPEN / tiny PSFR-GAN (random weights)")

# %% [markdown]
# ## 4. `restorer.pt`: one file that rebuilds the network
#
# `export_restorer(net, name, args, path)` writes `{"restorer": name, "args": {...}, "state_dict": {...}}`:
# strings, numbers and tensors only, so `torch.load(path, weights_only=True)` reads it safely, and
# `load_restorer(path)` rebuilds the network through the registry with no recipe or code of the training run.
# `bfrzoo fit` writes one into every run folder; `bfrzoo restore --weights restorer.pt IN OUT` uses it.
# Here we ship the converted GPEN as a `restorer.pt` (its registry name is `gpen`, its arguments the config):

# %%
path = export_restorer(gpen, "gpen", dict(gpen_ref["config"]), OUT / "restorer.pt")
print("file:", path.name, f"{path.stat().st_size / 1e6:.1f} MB", "| keys:", sorted(torch.load(path, weights_only=True)))
reloaded = load_restorer(path)
with torch.no_grad():
    reload_max_abs = (reloaded(gpen_ref["input"]) - gpen_out).abs().max().item()
print("reloaded network reproduces the converted one exactly:", reload_max_abs == 0.0)
# The same file also loads as `pretrained=` weights of a registry name:
same = bfrzoo.create_restorer("gpen", pretrained=path, **gpen_ref["config"]).eval()
with torch.no_grad():
    print("create_restorer(pretrained=restorer.pt) agrees:", torch.equal(same(gpen_ref["input"]), gpen_out))

# %% [markdown]
# ## 5. Released weights by name, and what happens offline
#
# `bfrzoo.create_restorer("gpen_512", pretrained=True)` looks for the released file in the cache
# (`$BFRZOO_HOME`, else `$TORCH_HOME/bfrzoo`) and otherwise downloads it. Offline (here, on purpose, with an empty
# cache) it raises ONE error that names the file, where it comes from, its licence and where to put it:

# %%
os.environ["BFRZOO_HOME"] = tempfile.mkdtemp(prefix="bfrzoo-empty-cache-")
try:
    bfrzoo.create_restorer("gpen_512", pretrained=True)
except WeightsNotFoundError as err:
    print("WeightsNotFoundError:", err)

# %% [markdown]
# ## 6. Scoring a restorer
#
# Full-reference metrics need HQ/LQ pairs: degrade HQ faces with a preset (notebook 01), restore, compare. An
# untrained U-Net is the identity, so its PSNR equals the LQ's: the floor a trained network must beat. Notebook 03
# trains one and reads the table `bfrzoo fit` writes.

# %%
hq = torch.stack([read_image(f) for f in sorted((sample_root("aaf128") / "images").glob("*"))[:8]])  # (8, 3, 128, 128)
lq = degrade(hq, "common", seed=0)
unet_psnr = psnr(restorer.restore(lq), hq).mean().item()
lq_psnr = psnr(lq, hq).mean().item()
print(f"PSNR of LQ {lq_psnr:.2f} dB | untrained U-Net {unet_psnr:.2f} dB")
