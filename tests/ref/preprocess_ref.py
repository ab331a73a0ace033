#!/usr/bin/python3
"""Reference outputs for tests/preprocess_test.cpp and tests/npy_test.cpp.

Usage: /usr/bin/python3 tests/ref/preprocess_ref.py OUTDIR

Writes into OUTDIR/preprocess/:
  images/NAME.{png,jpg}    synthetic test images (RGB, grayscale, RGBA; odd sizes)
  decoded/NAME_EXT.npy     the pixels PIL decodes from each file (uint8, HWC)
  cases/CASE.npy           torchvision's Compose([Resize, CenterCrop, ToTensor, Normalize])
                           output (float32, C x S x S) for every image and recipe
  manifest.json            one entry per case: image, decoded, output and the recipe
  npy/*.npy                arrays written by numpy for the .npy reader tests
Only Debian's torch, torchvision, PIL and numpy are used; no network.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
HALF = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
FASHION = ([0.2860], [0.3530])
CIFAR = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])

# name: (channels, resize, crop, interpolation, (mean, std)); resize 0 means
# vitkit's "resize to the crop size", which torchvision spells Resize(crop).
RECIPES = {
    "vit_b_16": (3, 256, 224, "bilinear", IMAGENET),
    "vit_b_16_bicubic": (3, 256, 224, "bicubic", IMAGENET),
    "down_bilinear": (3, 24, 24, "bilinear", HALF),
    "down_bicubic": (3, 24, 24, "bicubic", HALF),
    "up_bicubic": (3, 96, 96, "bicubic", HALF),
    "gray_28": (1, 28, 28, "bilinear", FASHION),
    "pad_crop": (3, 20, 32, "bilinear", HALF),
    "odd_crop": (3, 45, 31, "bicubic", IMAGENET),
    "nearest": (3, 50, 50, "nearest", HALF),
    "resize0": (3, 0, 32, "bilinear", CIFAR),
}
REAL_RECIPES = ["vit_b_16", "vit_b_16_bicubic", "resize0", "gray_28"]
MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
         "bicubic": InterpolationMode.BICUBIC}


def synthetic(width, height, mode, seed):
    """Gradients, waves, noise, saturated blocks and hard edges: every filter tap matters."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1),
              128 + 127 * np.sin(x / 3.0) * np.cos(y / 5.0), 255 - (x + y) * 2.0]
    img = np.stack(planes, axis=-1) + rng.randint(-40, 41, size=(height, width, 4))
    checker = ((x // 7 + y // 5) % 2 == 0) & (x > width / 2)
    img[checker] = np.where(rng.rand(3 + 1) > 0.5, 255.0, 0.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = img[:, :, :channels]
    return Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)


def write_images(out):
    """Saves the synthetic images; returns [(name, path, ext)]."""
    specs = [("rgb_37x53", 37, 53, "RGB"), ("rgb_500x333", 500, 333, "RGB"), ("gray_64x64", 64, 64, "L"),
             ("rgb_20x300", 20, 300, "RGB"), ("gray_301x45", 301, 45, "L"), ("rgba_50x41", 50, 41, "RGBA")]
    files = []
    for seed, (name, w, h, mode) in enumerate(specs):
        img = synthetic(w, h, mode, seed)
        path = os.path.join(out, "images", name + ".png")
        img.save(path)
        files.append((name, path, "png"))
        if mode != "RGBA":
            path = os.path.join(out, "images", name + ".jpg")
            img.save(path, quality=90)
            files.append((name, path, "jpg"))
    return files


def real_images():
    """A few CIFAR-10 JPEGs from ../shared/data when present."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data",
                        "cifar10-test")
    picks = [("airplane", "0000.jpg"), ("cat", "0003.jpg"), ("truck", "0007.jpg")]
    out = []
    for cls, f in picks:
        path = os.path.normpath(os.path.join(root, cls, f))
        if os.path.exists(path):
            out.append(("cifar_" + cls + "_" + f[:-4], path, "jpg"))
    return out


def transform(recipe):
    channels, resize, crop, interp, (mean, std) = RECIPES[recipe]
    return transforms.Compose([
        transforms.Resize(resize or crop, interpolation=MODES[interp]),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(mean[:channels], std[:channels]),
    ])


def write_case(out, name, path, ext, recipe):
    channels, resize, crop, interp, (mean, std) = RECIPES[recipe]
    with Image.open(path) as im:
        pil = im.convert("L" if channels == 1 else "RGB")
        x = transform(recipe)(pil).numpy().astype(np.float32)
    case = f"{name}_{ext}_{recipe}"
    np.save(os.path.join(out, "cases", case + ".npy"), x)
    return {"case": case, "image": os.path.abspath(path), "format": ext,
            "decoded": os.path.abspath(os.path.join(out, "decoded", f"{name}_{ext}.npy")),
            "output": os.path.abspath(os.path.join(out, "cases", case + ".npy")),
            "channels": channels, "resize": resize, "crop": crop, "interpolation": interp,
            "mean": mean[:channels], "std": std[:channels]}


def write_decoded(out, name, path, ext):
    """The pixels PIL decodes (alpha dropped, gray kept), as vitkit's decode_image returns them."""
    with Image.open(path) as im:
        im = im.convert("L" if im.mode in ("L", "LA") else "RGB")
        np.save(os.path.join(out, "decoded", f"{name}_{ext}.npy"), np.asarray(im, dtype=np.uint8))


def write_npy_files(out):
    """Arrays of every supported dtype written by numpy; the C++ test rebuilds the same values."""
    d = os.path.join(out, "npy")
    i = np.arange(24).reshape(2, 3, 4)
    arrays = {
        "f4": ((i - 8) / 4.0).astype("<f4"), "f8": ((i - 8) / 4.0).astype("<f8"),
        "f2": ((i - 8) / 4.0).astype("<f2"), "u1": (i * 10 % 256).astype("|u1"),
        "i1": (i * 5 - 60).astype("|i1"), "i2": (i * 1000 - 12000).astype("<i2"),
        "i4": (i * 100000 - 1200000).astype("<i4"), "i8": (i * 10**12 - 5 * 10**12).astype("<i8"),
        "b1": (i % 3 == 0),
    }
    for k, a in arrays.items():
        np.save(os.path.join(d, k + ".npy"), a)
    np.save(os.path.join(d, "scalar.npy"), np.float32(3.5))
    np.save(os.path.join(d, "empty.npy"), np.zeros((0, 3), np.float32))
    np.save(os.path.join(d, "vector.npy"), np.arange(5, dtype=np.int32))
    np.save(os.path.join(d, "fortran.npy"), np.asfortranarray(arrays["f4"]))
    np.save(os.path.join(d, "bigendian.npy"), arrays["f4"].astype(">f4"))
    np.save(os.path.join(d, "complex.npy"), np.zeros(3, np.complex64))
    for version in [(2, 0), (3, 0)]:
        with open(os.path.join(d, f"v{version[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, arrays["f4"], version=version)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: preprocess_ref.py OUTDIR")
    torch.manual_seed(0)
    out = os.path.join(sys.argv[1], "preprocess")
    for sub in ["images", "decoded", "cases", "npy"]:
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    cases = []
    for name, path, ext in write_images(out):
        write_decoded(out, name, path, ext)
        cases += [write_case(out, name, path, ext, r) for r in RECIPES]
    for name, path, ext in real_images():
        write_decoded(out, name, path, ext)
        cases += [write_case(out, name, path, ext, r) for r in REAL_RECIPES]
    write_npy_files(out)
    tmp = os.path.join(out, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(cases, f, indent=1)
    os.replace(tmp, os.path.join(out, "manifest.json"))
    print(f"preprocess_ref: {len(cases)} cases in {out}")


if __name__ == "__main__":
    main()
