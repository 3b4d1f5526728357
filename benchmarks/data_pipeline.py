"""timm's training transform against the fast pipeline, per worker, on ImageNet-sized JPEG photos.

Without ``--data`` it writes a stand-in set first: crops of a real photograph (matplotlib's sample
Grace Hopper portrait) resized to the sizes ImageNet's training images mostly have (around 500 x 375,
some larger) and saved as JPEG at quality 90, so decode cost is that of real photos, not of flat
synthetic images. Point ``--data`` at an ImageNet root to measure the real thing.

    python benchmarks/data_pipeline.py [--data DIR] [--images 400] [--recipe imagenet]
"""

import argparse
import json
import os
import platform
import random
import sys
import tempfile

# ImageNet training images: most are 500 px on the long side; a tail is larger.
SIZES = [(500, 375)] * 6 + [(500, 333)] * 3 + [(375, 500)] * 2 + [(500, 400), (640, 480), (800, 600), (1024, 768)]


def write_photo_set(root: str, images: int, classes: int = 10, seed: int = 0, sizes=SIZES) -> None:
    import matplotlib
    from PIL import Image

    photo = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    src = Image.open(photo).convert("RGB")
    rng = random.Random(seed)
    for k in range(images):
        folder = os.path.join(root, "train", f"n{k % classes:08d}")
        os.makedirs(folder, exist_ok=True)
        w, h = rng.choice(sizes)
        cw, ch = rng.randint(300, src.width), rng.randint(300, src.height)
        x0, y0 = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img.save(os.path.join(folder, f"img_{k:06d}.JPEG"), quality=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="an ImageNet-layout root (default: write a stand-in set)")
    parser.add_argument("--images", type=int, default=400, help="images timed per pipeline")
    parser.add_argument("--recipe", default="imagenet")
    parser.add_argument("--size", default=None, help="WxH: every stand-in image this size (default: ImageNet's mix)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers for the loader-level rate")
    args = parser.parse_args(argv)

    import PIL
    import timm
    import torch

    from wavemlp.bench.data_pipeline import run_data_bench
    from wavemlp.recipe import load_recipe

    recipe = load_recipe(args.recipe, ["data.pipeline=fast"]).recipe
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = tmp
            sizes = SIZES
            if args.size:
                w, _, h = args.size.partition("x")
                sizes = [(int(w), int(h))]
            write_photo_set(root, args.images + 5, sizes=sizes)
        r = run_data_bench(recipe, root, steps=args.images, workers=args.workers)
    r["machine"] = "{} ({} CPUs), Python {}, torch {}, timm {}, Pillow {}".format(
        platform.processor() or platform.machine(),
        os.cpu_count(),
        platform.python_version(),
        torch.__version__,
        timm.__version__,
        PIL.__version__,
    )
    print(json.dumps(r, indent=2))
    print(
        f"\nper worker, {r['images_timed']} images: timm {r['timm_img_s_per_worker']:.0f} img/s, "
        f"fast ({r['decoder']}) {r['fast_img_s_per_worker']:.0f} img/s: x{r['fast_vs_timm']:.2f}; "
        f"device-side normalise+erase {r['device_normalize_ms_per_img']:.3f} ms/img"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
