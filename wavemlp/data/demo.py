"""A tiny ImageNet-layout dataset made from scikit-learn's handwritten digits, for demos and tests.

The digits (1797 grey 8x8 images, 10 classes) ship inside scikit-learn, so nothing is downloaded.
"""

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

FORMAT_VERSION = 1
MANIFEST = "demo.json"
NUM_CLASSES = 10
_OUR_FILE = re.compile(r"^d[0-9]_[0-9]{4}\.JPEG$")
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC  # Pillow >= 9.1 moved the constants


def class_name(label: int) -> str:
    return f"d{label}"


def _file_name(label: int, index: int) -> str:
    return f"d{label}_{index:04d}.JPEG"


def _split_key(seed: int, index: int) -> bytes:
    # a hash, not an RNG stream: the split stays the same across NumPy/scikit-learn versions and machines
    return hashlib.sha256(f"wavemlp-demo:{seed}:{index}".encode("ascii")).digest()


def _plan_split(labels: np.ndarray, val_fraction: float, seed: int) -> Dict[str, List[Tuple[int, int]]]:
    """Stratified split: per class, round(n_c * val_fraction) images (at least 1, at most n_c - 1) to val."""
    plan = {"train": [], "val": []}
    for label in range(NUM_CLASSES):
        members = [int(i) for i in np.flatnonzero(labels == label)]
        members.sort(key=lambda i: _split_key(seed, i))
        n_val = min(max(int(round(len(members) * val_fraction)), 1), len(members) - 1)
        plan["val"].extend((i, label) for i in sorted(members[:n_val]))
        plan["train"].extend((i, label) for i in sorted(members[n_val:]))
    return plan


def _write_atomic(path: Path, data: bytes) -> None:
    # concurrent writers (several ranks) and readers never see a half-written file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(str(tmp), "wb") as f:
        f.write(data)
    os.replace(str(tmp), str(path))


def _encode(image: np.ndarray, image_size: int) -> bytes:
    grey = np.clip(np.round(image * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # digits hold 0..16
    pil = Image.fromarray(grey).resize((image_size, image_size), _BICUBIC).convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _read_manifest(out: Path) -> Dict[str, object]:
    try:
        with open(str(out / MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _count_files(split_dir: Path) -> int:
    total = 0
    for label in range(NUM_CLASSES):
        folder = split_dir / class_name(label)
        if folder.is_dir():
            total += sum(1 for name in os.listdir(str(folder)) if _OUR_FILE.match(name))
    return total


def _is_complete(out: Path, manifest: Dict[str, object], params: Dict[str, object]) -> bool:
    if manifest.get("params") != params:
        return False
    counts = manifest.get("counts") or {}
    for split in ("train", "val"):
        if not (out / f"{split}_list.txt").is_file():
            return False
        if _count_files(out / split) != counts.get(split):
            return False
    return True


def write_demo_dataset(out_dir, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write the digits as JPEGs in ImageNet layout under ``out_dir``; return the counts.

    Layout: ``train/d<k>/d<k>_<iiii>.JPEG`` and ``val/d<k>/...`` (``k`` the digit, ``iiii`` its index in
    ``sklearn.datasets.load_digits``), grey upscaled bicubic to ``image_size`` and stored as RGB. The
    class folders ``d0``..``d9`` sort in label order. ``train_list.txt`` / ``val_list.txt`` at the root
    hold ``d<k>/d<k>_<iiii>.JPEG <k>`` per line: paths RELATIVE TO THE SPLIT FOLDER, the convention
    :class:`~wavemlp.data.dataset.ImageDataset` reads.

    The split is stratified (per class, ``round(n * val_fraction)`` images go to val) and depends only
    on ``seed``: the same files land in the same split on every machine. ``demo.json`` is written last;
    when it matches the parameters and the files are all there, nothing is rewritten
    (``written: False``). Files of an earlier run with other parameters are replaced or removed.

    Returns ``{"train": n, "val": n, "total": 1797, "num_classes": 10, "written": bool}``.
    """
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (the digits are 8x8), got {image_size!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    out = Path(out_dir)
    params = {
        "format": FORMAT_VERSION,
        "image_size": int(image_size),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
    }
    manifest = _read_manifest(out)
    if manifest and _is_complete(out, manifest, params):
        return dict(manifest["counts"], written=False)

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the demo dataset needs scikit-learn: pip install scikit-learn (or wavemlp-kit[demo])"
        ) from None
    digits = load_digits()
    images, labels = digits.images, np.asarray(digits.target)
    plan = _plan_split(labels, float(val_fraction), int(seed))

    out.mkdir(parents=True, exist_ok=True)
    try:
        (out / MANIFEST).unlink()  # invalid from here until the new one is written
    except FileNotFoundError:
        pass
    for split, items in plan.items():
        split_dir = out / split
        wanted = {(class_name(label), _file_name(label, i)) for i, label in items}
        for label in range(NUM_CLASSES):
            folder = split_dir / class_name(label)
            folder.mkdir(parents=True, exist_ok=True)
            for name in os.listdir(str(folder)):
                # only our own naming pattern is removed: stale files from a run with another split
                if _OUR_FILE.match(name) and (folder.name, name) not in wanted:
                    os.remove(str(folder / name))
        lines = []
        for i, label in items:
            _write_atomic(split_dir / class_name(label) / _file_name(label, i), _encode(images[i], int(image_size)))
            lines.append(f"{class_name(label)}/{_file_name(label, i)} {label}\n")
        _write_atomic(out / f"{split}_list.txt", "".join(lines).encode("ascii"))

    counts = {"train": len(plan["train"]), "val": len(plan["val"]), "total": len(labels), "num_classes": NUM_CLASSES}
    body = json.dumps({"params": params, "counts": counts}, indent=2, sort_keys=True) + "\n"
    _write_atomic(out / MANIFEST, body.encode("utf-8"))
    return dict(counts, written=True)
