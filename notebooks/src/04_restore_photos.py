# Source of notebooks/04_restore_photos.ipynb: edit here, then run `python notebooks/build.py`.

# %% [markdown]
# # Restore whole photos: detect, align, restore, paste back
#
# `bfrzoo restore` and `Restorer.restore_photo` take **whole photos** (unaligned, any size, several faces) and
# return the photo with every face restored:
# 1. **detect** the faces and their five landmarks (facexlib's RetinaFace when its weight file is present, else
#    facenet-pytorch's MTCNN, whose weights ship inside its wheel, so this works offline);
# 2. **align** each face to the 5-point FFHQ template with a least-squares similarity transform;
# 3. **restore** the aligned crops in batches with any zoo network;
# 4. **paste back** with the inverse transform and a feathered (or face-parsing) mask.
#
# This notebook runs on the three small photos shipped in `bfrzoo/assets/sample/whole/` (licences in
# `bfrzoo/assets/LICENSES.md`). Released restorer weights are used when they are in the bfrzoo cache; offline
# with an empty cache it falls back to an untrained tiny U-Net, which is the identity, so what you see is the
# pipeline (detection, alignment, blending), not restoration quality.

# %%
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bfrzoo
from bfrzoo.errors import WeightsNotFoundError
from bfrzoo.face.photo import PhotoOptions
from bfrzoo.interface import Restorer
from bfrzoo.io import sample_root

torch.manual_seed(0)
OUT = Path(tempfile.mkdtemp(prefix="bfrzoo-photos-"))
PHOTOS = sorted(sample_root("whole").glob("*.jpg"))
print([p.name for p in PHOTOS])

# %% [markdown]
# ## 1. A restorer
#
# Any zoo network works: `Restorer` meets its input contract (fixed `input_size` or `size_divisor`). With network
# access or a filled cache, `create_restorer("gpen_512", pretrained=True)` gives the released GPEN; here the
# notebook stays offline, so the released file is missing and we say so, then use a tiny untrained U-Net.

# %%
try:
    net = bfrzoo.create_restorer("gpen_512", pretrained=True)
    model_name = "gpen_512 (released weights)"
except WeightsNotFoundError as err:
    print("no released weights here:", str(err).split(". ")[0])
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2)
    model_name = "unet (untrained: the identity)"
restorer = Restorer(net, device="cuda" if torch.cuda.is_available() else "cpu", batch_size=4)
print("restorer:", model_name, "on", restorer.device)

# %% [markdown]
# ## 2. `restore_photo`: one call per photo
#
# `restorer.restore_photo(image)` accepts a PIL image, a uint8 array or a `(3, H, W)` tensor and returns
# `(restored image of the same kind, faces)`. Each face carries its box, its five landmarks, the detector's score,
# the `(2, 3)` similarity that aligns it, and (with `keep_crops`, the default) its aligned input and restored
# crops. `PhotoOptions` holds the knobs of `bfrzoo restore` (upscale, face filters, crop size, ...); a 256 px crop
# keeps this notebook fast on a CPU.

# %%
options = PhotoOptions(crop_size=256)
results = {}
for path in PHOTOS:
    photo = Image.open(path)
    restored, faces = restorer.restore_photo(photo, options, detector="mtcnn", parser=None)
    results[path.name] = (photo, restored, faces)
    print(f"{path.name}: {photo.size[0]}x{photo.size[1]}, {len(faces)} faces,",
          "eye distances", [round(float(np.linalg.norm(f.landmarks[1] - f.landmarks[0]))) for f in faces])
faces_per_photo = {name: len(r[2]) for name, r in results.items()}
output_sizes_match = all(r[1].size == r[0].size for r in results.values())

# %% [markdown]
# ## 3. Before and after, with the detected faces marked
#
# Red boxes are the detections, green dots the five landmarks (eyes, nose tip, mouth corners). With the identity
# network the right column equals the left up to the resampling of the two warps; with released weights the faces
# inside the boxes are the restored ones.

# %%
def show_before_after(name: str, filename: str) -> Path:
    """Save (and display, when matplotlib is there) the photo and its restoration side by side, faces marked."""
    from PIL import ImageDraw

    photo, restored, faces = results[name]
    marked = photo.convert("RGB")
    draw = ImageDraw.Draw(marked)
    for face in faces:
        draw.rectangle([float(v) for v in face.box], outline=(255, 0, 0), width=3)
        for x, y in face.landmarks:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(0, 255, 0))
    pair = Image.new("RGB", (marked.width * 2 + 8, marked.height), (255, 255, 255))
    pair.paste(marked, (0, 0))
    pair.paste(restored.convert("RGB"), (marked.width + 8, 0))
    path = OUT / filename
    pair.save(path)
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no matplotlib here) figure saved to {path}")
        return path
    plt.figure(figsize=(12, 12 * pair.height / pair.width))
    plt.imshow(pair)
    plt.title(f"{name}: detected faces (left), restored with {model_name} (right)")
    plt.axis("off")
    plt.show()
    return path


for i, name in enumerate(results):
    show_before_after(name, f"before_after_{i}.png")

# %% [markdown]
# ## 4. The aligned crops
#
# Every face, aligned to the template: the network's input (top) and output (bottom). The five template points
# (FFHQ 512 template scaled to the crop) are where every face's eyes, nose and mouth corners land.

# %%
from torchvision.utils import make_grid, save_image  # noqa: E402

crops = [f for r in results.values() for f in r[2]]
inputs = torch.stack([torch.from_numpy(f.crop).permute(2, 0, 1) for f in crops]).float() / 255
outputs = torch.stack([torch.from_numpy(f.restored).permute(2, 0, 1) for f in crops]).float() / 255
save_image(make_grid(torch.cat([inputs, outputs]), nrow=len(crops), padding=2, pad_value=1.0), OUT / "aligned_crops.png")
print(f"{len(crops)} aligned crops of {inputs.shape[-1]} px -> {OUT / 'aligned_crops.png'}")
try:
    import matplotlib.pyplot as plt

    plt.figure(figsize=(2 * len(crops), 4.4))
    plt.imshow(make_grid(torch.cat([inputs, outputs]), nrow=len(crops), padding=2, pad_value=1.0).permute(1, 2, 0))
    plt.axis("off")
    plt.title("aligned inputs (top) and restored crops (bottom)")
    plt.show()
except ImportError:
    pass

# %% [markdown]
# ## 5. The same from the command line
#
# `bfrzoo restore INPUT... --weights restorer.pt --out DIR` (or `--model NAME` for released weights) does this for
# files, folders and globs, writes every output atomically (never over an input, never over a file it did not
# write), skips finished outputs on a rerun, and prints a summary; `--compare` adds side-by-side images,
# `--save-faces` the crops, `--upscale 2` doubles the whole photo. Here, from Python, on one sample photo:

# %%
from bfrzoo.cli import main  # noqa: E402
from bfrzoo.registry import export_restorer  # noqa: E402

weights = export_restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), "unet",
                          {"base_channels": 8, "depth": 2}, OUT / "restorer.pt")
cli_out = OUT / "restored"
one_photo = str(sample_root("whole") / "psfrgan_test_hzgg.jpg")  # a folder, several files or a glob work the same
main(["restore", one_photo, "--weights", str(weights), "--out", str(cli_out), "--device", "cpu",
      "--crop-size", "256", "--compare", "--quiet"])
summary = json.loads((cli_out / "bfrzoo_restore.json").read_text())
cli_counts = summary["counts"]
cli_faces = {Path(item["input"]).name: item["faces"] for item in summary["items"]}
print("written:", sorted(p.name for p in cli_out.rglob("*") if p.is_file() and not p.name.startswith(".")))
main(["restore", one_photo, "--weights", str(weights), "--out", str(cli_out), "--device", "cpu", "--quiet"])
rerun_skipped = json.loads((cli_out / "bfrzoo_restore.json").read_text())["counts"]["skipped"]
print("rerun: skipped", rerun_skipped, "finished outputs")
figures = sorted(p.name for p in OUT.glob("*.png"))
