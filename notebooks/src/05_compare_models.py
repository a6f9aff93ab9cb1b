# Source of notebooks/05_compare_models.ipynb: edit here, then run `python notebooks/build.py`.

# %% [markdown]
# # Compare the zoo's models on the same faces
#
# Every restorer in the zoo follows one contract, so comparing them is a loop: the same LQ faces go through each
# network, and the same metrics score each result. This notebook compares them
# 1. on **aligned faces with ground truth** (HQ sample faces, degraded with a preset): PSNR, SSIM (higher is
#    better) and NIQE (no-reference, lower is better), as a table, a picture grid and a bar plot;
# 2. on **the faces of a whole photo** (detected and aligned by the photo pipeline), side by side.
#
# Offline, with an empty weight cache, each configurable model is built in its **tiny** configuration with random
# weights (what the contract test uses), and the U-Net is additionally trained for a few dozen steps so that one
# row shows what training changes. Released weights found in the cache are used automatically (the `*_512`
# variants). The numbers therefore show the plumbing and the protocol, not the papers' results.

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import bfrzoo
from bfrzoo.data import degrade
from bfrzoo.errors import WeightsNotFoundError
from bfrzoo.face.detect import load_detector
from bfrzoo.face.photo import PhotoOptions
from bfrzoo.interface import Restorer, from_model_range, to_model_range
from bfrzoo.io import read_image, sample_root
from bfrzoo.metrics import niqe, psnr, ssim
from bfrzoo.registry import restorer_entry

torch.manual_seed(0)
OUT = Path(tempfile.mkdtemp(prefix="bfrzoo-compare-"))
SIZE = 64  # tiny configurations work at 32-64 px; released ones at their input_size (Restorer resizes)

# %% [markdown]
# ## 1. The models
#
# `bfrzoo.list_restorers()` names every registered network. Configurable ones declare a tiny configuration;
# fixed variants (`gpen_512`, `psfrgan_512`, ...) have released weights, used when the cache has them.

# %%
models: dict[str, torch.nn.Module] = {}
for name in bfrzoo.list_restorers():
    entry = restorer_entry(name)
    if entry.tiny is not None:
        models[f"{name} (tiny, random)"] = bfrzoo.create_restorer(name, **entry.tiny)
    elif entry.pretrained is not None:
        try:
            models[f"{name} (released)"] = bfrzoo.create_restorer(name, pretrained=True)
        except WeightsNotFoundError:
            print(f"{name}: released weights not in the cache ({entry.pretrained.filename}); skipped")
print("comparing:", list(models))

# %% [markdown]
# ## 2. The same faces for every model
#
# Eight aligned HQ faces of the embedded sample, degraded with the `common` preset and a fixed seed: every model
# sees exactly the same LQ batch. Then the tiny U-Net is trained for 40 steps (L1, Adam) on other sample faces,
# degraded on the fly; an untrained U-Net is the identity, so its row equals the LQ row.

# %%
names = sorted((sample_root("aaf128") / "images").glob("*"))
hq = F.interpolate(torch.stack([read_image(f) for f in names[:8]]), size=(SIZE, SIZE), mode="area")
lq = degrade(hq, "common", seed=0)
train_hq = F.interpolate(torch.stack([read_image(f) for f in names[8:72]]), size=(SIZE, SIZE), mode="area")

unet = bfrzoo.create_restorer("unet", **restorer_entry("unet").tiny)
opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
for step in range(40):
    batch = train_hq[torch.randint(0, len(train_hq), (16,))]
    loss = F.l1_loss(from_model_range(unet(to_model_range(degrade(batch, "common", seed=step)))), batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
models["unet (tiny, 40 steps)"] = unet.eval()
print(f"U-Net L1 after 40 steps: {loss.item():.4f}")

# %%
restored = {name: Restorer(net, device="cpu", batch_size=8).restore(lq) for name, net in models.items()}
table = {"LQ": {"psnr": psnr(lq, hq).mean().item(), "ssim": ssim(lq, hq).mean().item()}}
for name, out in restored.items():
    table[name] = {"psnr": psnr(out, hq).mean().item(), "ssim": ssim(out, hq).mean().item()}
# NIQE needs at least 96 px: score the faces upsampled to 192 px (the same for every row)
for name, images in {"LQ": lq, **restored}.items():
    table[name]["niqe"] = niqe(F.interpolate(images, size=(192, 192), mode="bicubic").clamp(0, 1)).mean().item()
print(f"{'':28s} {'PSNR':>7s} {'SSIM':>7s} {'NIQE':>7s}")
for name, row in table.items():
    print(f"{name:28s} {row['psnr']:7.2f} {row['ssim']:7.3f} {row['niqe']:7.2f}")

# %% [markdown]
# ## 3. Pictures and plots
#
# Rows: HQ, LQ, then each model on the same eight faces. The bar plots put the table side by side.

# %%
from torchvision.utils import make_grid, save_image  # noqa: E402

rows = [hq, lq, *restored.values()]
grid = make_grid(torch.cat(rows), nrow=len(hq), padding=2, pad_value=1.0)
save_image(grid, OUT / "faces_by_model.png")
try:
    import matplotlib.pyplot as plt

    plt.figure(figsize=(12, 1.6 * len(rows)))
    plt.imshow(grid.permute(1, 2, 0))
    plt.yticks([(i + 0.5) * (SIZE + 2) for i in range(len(rows))], ["HQ", "LQ", *restored])
    plt.xticks([])
    plt.title("the same faces through every model")
    plt.show()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    labels = list(table)
    for ax, metric, better in zip(axes, ("psnr", "ssim", "niqe"), ("higher", "higher", "lower")):
        ax.barh(labels, [table[k][metric] for k in labels], color=["gray"] + ["tab:blue"] * (len(labels) - 1))
        ax.set_title(f"{metric.upper()} ({better} is better)")
    fig.tight_layout()
    fig.savefig(OUT / "metrics.png")
    plt.show()
except ImportError:
    print("(no matplotlib here) grid saved to", OUT / "faces_by_model.png")

# %% [markdown]
# ## 4. The faces of a whole photo, model by model
#
# The photo pipeline detects and aligns the faces once; each model then restores the same aligned crops
# (`Restorer.restore_photo` with each network). Columns: the aligned input, then one column per model.

# %%
class DetectOnce:
    """A detector that runs MTCNN on the first photo it sees and returns the same faces afterwards: every model then
    restores exactly the same aligned crops (and the notebook detects once, not once per model)."""

    name, note = "mtcnn (cached)", ""

    def __init__(self) -> None:
        self.mtcnn, self.found = load_detector("mtcnn"), None

    def detect(self, image: np.ndarray) -> list:
        if self.found is None:
            self.found = self.mtcnn.detect(image)
        return self.found


photo = Image.open(sample_root("whole") / "psfrgan_test_hzgg.jpg")
options = PhotoOptions(crop_size=SIZE * 2)
detector = DetectOnce()
per_model = {}
for name, net in models.items():
    _, faces = Restorer(net, device="cpu").restore_photo(photo, options, detector=detector, parser=None)
    per_model[name] = faces
first = next(iter(per_model.values()))
columns = [torch.stack([torch.from_numpy(f.crop).permute(2, 0, 1) for f in first]).float() / 255]
columns += [torch.stack([torch.from_numpy(f.restored).permute(2, 0, 1) for f in faces]).float() / 255 for faces in per_model.values()]
photo_grid = make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns), padding=2, pad_value=1.0)
save_image(photo_grid, OUT / "photo_faces_by_model.png")
same_faces = len({len(faces) for faces in per_model.values()}) == 1 and all(
    np.allclose(a.landmarks, b.landmarks) for faces in per_model.values() for a, b in zip(first, faces)
)
print(f"{len(first)} faces, the same detections for every model: {same_faces}")
try:
    import matplotlib.pyplot as plt

    plt.figure(figsize=(2 * len(columns), 2.2 * len(first)))
    plt.imshow(photo_grid.permute(1, 2, 0))
    plt.xticks([(i + 0.5) * (SIZE * 2 + 2) for i in range(len(columns))], ["input", *per_model], rotation=30, ha="right")
    plt.yticks([])
    plt.show()
except ImportError:
    pass
figures = sorted(p.name for p in OUT.glob("*.png"))
