"""The fast training input pipeline (``data.pipeline: fast``): timm's augmentation, cheaper around it.

What changes against timm's transform (``data.pipeline: timm``), and why the augmentation is the same:

- The random-resized crop's box (and interpolation) are drawn by timm's own code from the image's
  header size, *before* decoding, so the draws are the same ones in the same order.
- A JPEG is then decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) that keeps the box at least as
  large as the output, and the box is cropped and resized in one pass (no intermediate copy). At scale
  1 with Pillow's decoder the pixels are exactly timm's; a reduced scale is one more anti-aliased
  downscale, like the resize that follows it.
- With simplejpeg installed, JPEGs are decoded by libjpeg-turbo with its fast DCT and upsampling
  (about twice Pillow's decode speed); others (PNG, CMYK JPEG) go through Pillow.
- Images leave the worker as uint8 tensors (a quarter of the bytes to collate and copy), and
  :class:`DeviceNormalize` normalises and randomly erases the whole batch on the device, as timm's
  prefetcher does.

Runs inside images: Python 3.8 syntax.
"""

import io
import math
import random
from typing import Sequence

import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation

from ..recipe.schema import AugmentCfg, DataCfg

try:  # an optional accelerator: the pipeline falls back to Pillow without it
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

DCT_FACTORS = (8, 4, 2, 1)


class ImageDecodeError(Exception):
    """The image's data does not decode (raised by a transform that decodes lazily opened images)."""


def decoder_name() -> str:
    return "simplejpeg" if simplejpeg is not None else "pillow"


def open_lazy(data: bytes) -> Image.Image:
    """A Pillow image over ``data`` with only its header read: size and format are known, pixels are not."""
    return Image.open(io.BytesIO(data))


def dct_factor(box_w: int, box_h: int, out_w: int, out_h: int) -> int:
    """The largest JPEG DCT downscale that keeps a ``box_w`` x ``box_h`` box at least the output size."""
    for f in DCT_FACTORS:
        if box_w >= f * out_w and box_h >= f * out_h:
            return f
    return 1


def _is_lazy(img: Image.Image) -> bool:
    return bool(getattr(img, "tile", None))


def decode_scaled(img: Image.Image, factor: int) -> Image.Image:
    """Decode a lazily opened image to RGB, a JPEG at ``1/factor`` of its size (rounded up)."""
    if not _is_lazy(img):
        return img if img.mode == "RGB" else img.convert("RGB")
    w, h = img.size
    need = (int(math.ceil(w / factor)), int(math.ceil(h / factor)))
    try:
        if img.format == "JPEG":
            fp = getattr(img, "fp", None)
            if simplejpeg is not None and img.mode in ("RGB", "L") and isinstance(fp, io.BytesIO):
                try:
                    arr = simplejpeg.decode_jpeg(
                        fp.getvalue(), "RGB", fastdct=True, fastupsample=True, min_height=need[1], min_width=need[0]
                    )
                except ValueError:
                    pass  # strict simplejpeg refuses what Pillow may still read; Pillow decides below
                else:  # over the array's memory: no copy
                    return Image.frombuffer("RGB", (arr.shape[1], arr.shape[0]), arr, "raw", "RGB", 0, 1)
            if factor > 1:
                img.draft("RGB", need)
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # Pillow's ways of saying "broken file"
        raise ImageDecodeError(str(e) or type(e).__name__) from e


def _pil_interpolation(mode):
    if isinstance(mode, int):
        return mode
    from timm.data.transforms import interp_mode_to_str, str_to_pil_interp

    return str_to_pil_interp(interp_mode_to_str(mode))


class ScaledDecodeRandomResizedCrop(RandomResizedCropAndInterpolation):
    """timm's random-resized crop that decodes a lazily opened JPEG only as large as the box needs."""

    def __call__(self, img):
        i, j, h, w = self.get_params(img, self.scale, self.ratio)
        if isinstance(self.interpolation, (tuple, list)):
            interpolation = random.choice(self.interpolation)
        else:
            interpolation = self.interpolation
        out_h, out_w = self.size
        full_w, full_h = img.size
        img = decode_scaled(img, dct_factor(w, h, out_w, out_h))
        resample = _pil_interpolation(interpolation)
        if img.size == (full_w, full_h):  # crop, then resize: timm's pixels exactly
            return img.crop((j, i, j + w, i + h)).resize((out_w, out_h), resample)
        # The box in the reduced image's (fractional) coordinates; resize reads it without a copy.
        sx, sy = img.size[0] / full_w, img.size[1] / full_h
        return img.resize((out_w, out_h), resample, box=(j * sx, i * sy, (j + w) * sx, (i + h) * sy))

    @classmethod
    def replacing(cls, crop) -> "ScaledDecodeRandomResizedCrop":
        """This crop with ``crop``'s settings (size, scale, ratio, interpolation)."""
        new = cls.__new__(cls)
        new.__dict__.update(crop.__dict__)
        return new


def fast_train_transform(timm_kwargs: dict):
    """timm's training transform in prefetcher form (uint8 out) with the scaled-decode crop first."""
    from timm.data import create_transform

    transform = create_transform(is_training=True, use_prefetcher=True, **timm_kwargs)
    first = transform.transforms[0]
    if not isinstance(first, RandomResizedCropAndInterpolation):
        raise TypeError(f"timm's training transform starts with {type(first).__name__}, not a random-resized crop")
    transform.transforms[0] = ScaledDecodeRandomResizedCrop.replacing(first)
    return transform


class DeviceNormalize:
    """uint8 NCHW batches on the device to normalised floats, randomly erased when training.

    Float batches (timm's pipeline, evaluation) pass through untouched, so callers apply it to every
    batch without knowing which pipeline made it.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device,
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        re_count: int = 1,
    ):
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor([255.0 * m for m in mean], device=device).view(shape)
        self.std = torch.tensor([255.0 * s for s in std], device=device).view(shape)
        self.erase = None
        if re_prob > 0.0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(re_prob, mode=re_mode, max_count=re_count, device=device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        x = images.float().sub_(self.mean).div_(self.std)
        if self.erase is not None:
            x = self.erase(x)
        return x


def device_normalize(data: DataCfg, augment: AugmentCfg, device, is_training: bool) -> DeviceNormalize:
    """The :class:`DeviceNormalize` of the recipe's ``data`` and ``augment`` sections (erasing when training)."""
    re_prob = augment.reprob if is_training else 0.0
    return DeviceNormalize(data.mean, data.std, device, re_prob, augment.remode, augment.recount)
