"""ImageNet-layout image folders, checked up front, with per-sample seeded augmentation.

Layout: ``<root>/<split>/<class>/<image>`` where the sorted class folder names give the label order
(ImageNet's wnids). An optional ``<root>/<split>_list.txt`` holds one ``relative/path label`` per line;
the paths are relative to the split folder (``<root>/<split>``), e.g. ``n01440764/x.JPEG 0`` in
``train_list.txt`` names ``<root>/train/n01440764/x.JPEG``. When the list exists it is the source of
truth for the samples; the class folders (or ``class_to_idx``) still define the classes.

Everything that can be checked without decoding is checked in the constructor, so a bad layout stops
the run before any worker starts, with a one-line :class:`DataError` naming the path (and the line of
the list file). Images that exist but do not decode are only found while training: they are skipped
(``on_bad_image="skip"``, the item becomes ``None`` and :func:`collate_skip_bad` counts it) or stop
the run (``"fail"``).
"""

import contextlib
import os
import random
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import KitError
from .fast import ImageDecodeError, open_lazy

try:  # public since torch 1.11; the private path covers older vendor builds
    from torch.utils.data import default_collate
except ImportError:  # pragma: no cover
    from torch.utils.data._utils.collate import default_collate

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
BAD_IMAGE_MODES = ("skip", "fail")


class DataError(KitError, ValueError):
    """A dataset that cannot be used as given; the message is one line and names the path."""


class BadImageWarning(UserWarning):
    """An image file that exists but cannot be decoded, skipped."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, NumPy's global RNG and torch's CPU generator, restore them on exit.

    timm's transforms draw from all three (crop/interpolation and RandAugment magnitudes from
    ``random``, RandAugment's op choice from NumPy, flips/jitter/erasing from torch), so all three are
    pinned. Only the CPU generator is touched: ``torch.manual_seed`` would also reseed CUDA
    generators, which this context does not restore.
    """
    seed = int(seed) & 0xFFFFFFFF
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def _class_folders(split_dir: str) -> List[str]:
    names = []
    with os.scandir(split_dir) as it:
        for entry in it:
            if not entry.name.startswith(".") and entry.is_dir():
                names.append(entry.name)
    return sorted(names)


def _image_files(folder: str) -> List[str]:
    names = []
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if entry.is_file():
                names.append(name)
    return sorted(names)


def _check_class_to_idx(class_to_idx: Dict[str, int], where: str) -> List[str]:
    """Return the classes in label order; labels must be exactly 0..K-1."""
    if not class_to_idx:
        raise DataError(f"class_to_idx given for {where} is empty")
    by_idx = {}
    for name, idx in class_to_idx.items():
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise DataError(f"class_to_idx given for {where}: label of {name!r} is not an int: {idx!r}")
        if int(idx) in by_idx:
            raise DataError(f"class_to_idx given for {where}: label {idx} used by {by_idx[int(idx)]!r} and {name!r}")
        by_idx[int(idx)] = name
    if sorted(by_idx) != list(range(len(by_idx))):
        raise DataError(
            f"class_to_idx given for {where}: labels must be 0..{len(by_idx) - 1}, got {min(by_idx)}..{max(by_idx)}"
        )
    return [by_idx[i] for i in range(len(by_idx))]


class ImageDataset(Dataset):
    """Images of one split of an ImageNet-layout folder; items are ``(image, label)`` or ``None``.

    ``dataset[i]`` applies ``transform`` with whatever RNG state the caller has;
    ``dataset[(i, sample_seed)]`` (what :class:`~wavemlp.data.sampler.EpochSampler` yields) runs the
    transform under :func:`seeded_rng`, so the augmentation of a sample depends only on its seed:
    not on the worker that loads it, nor on what was loaded before (exact mid-epoch resume).

    Pass the train split's ``class_to_idx`` when building the val split, so both agree on labels even
    if val lacks a class folder or is flat with its labels in ``val_list.txt``.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        transform=None,
        on_bad_image: str = "skip",
        class_to_idx: Optional[Dict[str, int]] = None,
        lazy_decode: bool = False,
    ):
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_MODES}, got {on_bad_image!r}")
        self.root = os.fspath(root)
        self.split = split
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.lazy_decode = lazy_decode
        self.split_dir = os.path.join(self.root, split)
        self.list_file = os.path.join(self.root, f"{split}_list.txt")
        use_list = os.path.isfile(self.list_file)

        if not os.path.isdir(self.split_dir):
            raise DataError(f"missing split folder: {self.split_dir}")
        folders = _class_folders(self.split_dir)
        if class_to_idx is None:
            if not folders:
                hint = ""
                if use_list:
                    hint = f" (for a flat split listed in {self.list_file}, pass the train split's class_to_idx)"
                raise DataError(f"no class folders in {self.split_dir}{hint}")
            class_to_idx = {name: i for i, name in enumerate(folders)}
            self.classes = list(folders)
        else:
            self.classes = _check_class_to_idx(class_to_idx, self.split_dir)
            class_to_idx = {name: int(idx) for name, idx in class_to_idx.items()}
            if not use_list:
                for name in folders:
                    if name not in class_to_idx:
                        folder = os.path.join(self.split_dir, name)
                        raise DataError(f"class folder not in the given class_to_idx: {folder}")
        self.class_to_idx = class_to_idx
        self.num_classes = len(self.classes)

        if use_list:
            self.samples = self._read_list()
        else:
            self.samples = self._scan(folders)
        self.targets = [label for _, label in self.samples]
        self._warned = set()

    def _scan(self, folders: Sequence[str]) -> List[Tuple[str, int]]:
        samples = []
        for name in sorted(folders, key=lambda n: self.class_to_idx[n]):
            folder = os.path.join(self.split_dir, name)
            files = _image_files(folder)
            if not files:
                raise DataError("empty class folder (no {} files): {}".format("/".join(IMAGE_EXTENSIONS), folder))
            label = self.class_to_idx[name]
            samples.extend((os.path.join(folder, f), label) for f in files)
        return samples

    def _read_list(self) -> List[Tuple[str, int]]:
        where = self.list_file
        listings = {}  # one listdir per folder instead of one stat per image: ImageNet has 1.28M files

        def exists(path: str) -> bool:
            parent, name = os.path.split(path)
            if parent not in listings:
                listings[parent] = set(os.listdir(parent)) if os.path.isdir(parent) else set()
            return name in listings[parent]

        samples = []
        first_line = {}
        with open(where, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line:
                    continue
                parts = line.rsplit(None, 1)  # the path may contain spaces, the label cannot
                if len(parts) != 2:
                    raise DataError(f"{where}:{lineno}: expected 'relative/path label', got {line!r}")
                rel, label_text = parts
                try:
                    label = int(label_text)
                except ValueError:
                    raise DataError(f"{where}:{lineno}: label is not an int: {label_text!r}") from None
                if not 0 <= label < self.num_classes:
                    n = self.num_classes
                    raise DataError(f"{where}:{lineno}: label {label} out of range 0..{n - 1} ({n} classes)")
                key = os.path.normpath(rel)
                if key in first_line:
                    raise DataError(f"{where}:{lineno}: duplicate entry {rel} (first on line {first_line[key]})")
                first_line[key] = lineno
                path = os.path.join(self.split_dir, rel)
                if not exists(path):
                    raise DataError(
                        f"{where}:{lineno}: file not found: {path} (list paths are relative to {self.split_dir})"
                    )
                head = key.split(os.sep)[0]
                if head != key and head in self.class_to_idx and self.class_to_idx[head] != label:
                    # the usual cause is a list written with another class order than the folders'
                    raise DataError(
                        f"{where}:{lineno}: label {label} does not match class folder {head!r} "
                        f"(label {self.class_to_idx[head]})"
                    )
                samples.append((path, label))
        if not samples:
            raise DataError(f"empty list file: {where}")
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, path: str) -> Optional[Image.Image]:
        """Decode fully to RGB (with ``lazy_decode``, read the file and its header only: the transform
        decodes); ``None`` for a file that does not decode (``"skip"``), else DataError."""
        try:
            if self.lazy_decode:
                with open(path, "rb") as f:
                    return open_lazy(f.read())
            with open(path, "rb") as f:
                img = Image.open(f)
                img.load()  # a truncated file fails here, not later inside a transform
                return img.convert("RGB")
        except MemoryError:
            raise
        except Exception as e:  # PIL reports broken files with many exception types
            return self._bad_image(path, e)

    def _bad_image(self, path: str, e: BaseException) -> None:
        if self.on_bad_image == "fail":
            raise DataError(f"cannot decode image {path}: {_one_line(e)}") from e
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipping image that does not decode: {path}: {_one_line(e)}", BadImageWarning, stacklevel=4)
        return None

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, sample_seed = item
        else:
            index, sample_seed = item, None
        path, label = self.samples[index]
        img = self.load_image(path)
        if img is None:
            return None
        if self.transform is not None:
            try:
                if sample_seed is None:
                    img = self.transform(img)
                else:
                    with seeded_rng(sample_seed):
                        img = self.transform(img)
            except ImageDecodeError as e:  # a lazily opened image that turned out broken
                return self._bad_image(path, e)
        return img, label

    def __repr__(self) -> str:
        return "{}(root={!r}, split={!r}, samples={}, classes={}, source={})".format(
            type(self).__name__,
            self.root,
            self.split,
            len(self.samples),
            self.num_classes,
            "list" if os.path.isfile(self.list_file) else "folders",
        )


def collate_skip_bad(batch: Sequence) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Batch the items that decoded; return ``(images, targets, n_skipped)``.

    A batch where nothing decoded gives empty tensors (``targets.numel() == 0``) and
    ``n_skipped == len(batch)``: callers must skip such a step. A batch with skips is smaller than
    asked, possibly odd-sized.
    """
    good = [item for item in batch if item is not None]
    n_skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), n_skipped
    # default_collate writes into shared memory inside workers, saving a copy per batch
    images, targets = default_collate(good)
    return images, targets, n_skipped
