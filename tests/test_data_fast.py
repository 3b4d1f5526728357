"""The fast training pipeline against timm's: same draws, same pixels at full scale, broken files handled."""

import io
import os
import warnings
from dataclasses import replace

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from wavemlp.data import (
    BadImageWarning,
    DataError,
    DeviceNormalize,
    build_dataset,
    build_transforms,
    collate_skip_bad,
    device_normalize,
    fast,
)
from wavemlp.recipe.schema import AugmentCfg, DataCfg

PHOTO = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")


def _photo_jpeg(size, seed=0, quality=90) -> bytes:
    """A crop of a real photograph at ``size``: decode and downscale behave as on real data."""
    src = Image.open(PHOTO).convert("RGB")
    rng = np.random.RandomState(seed)
    x0, y0 = rng.randint(0, 100), rng.randint(0, 100)
    img = src.crop((x0, y0, x0 + 400, y0 + 480)).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _photo_root(root, size, per_class=3):
    for c in ("a", "b"):
        folder = root / "train" / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{c}_{i}.JPEG").write_bytes(_photo_jpeg(size, seed=i + 10 * (c == "b")))
    return root


@pytest.fixture
def pillow_only(monkeypatch):
    monkeypatch.setattr(fast, "simplejpeg", None)


def test_fast_pipeline_equals_timm_at_full_scale_with_pillow(tmp_path, pillow_only):
    # Images under twice the output size never get a reduced DCT scale: every pixel must be timm's.
    root = _photo_root(tmp_path, (120, 90))
    data, augment = DataCfg(), replace(AugmentCfg(), reprob=0.0)
    timm_set = build_dataset(root, "train", replace(data, pipeline="timm"), augment, 64, True)
    fast_set = build_dataset(root, "train", replace(data, pipeline="fast"), augment, 64, True)
    normalize = DeviceNormalize(data.mean, data.std, torch.device("cpu"))
    for index in range(len(timm_set)):
        for seed in range(8):
            expected, label = timm_set[(index, seed)]
            got, fast_label = fast_set[(index, seed)]
            assert got.dtype == torch.uint8 and got.shape == (3, 64, 64) and label == fast_label
            assert torch.allclose(normalize(got[None])[0], expected, atol=1e-5), (index, seed)


@pytest.mark.parametrize("decoder", ["simplejpeg", "pillow"])
def test_large_jpeg_is_decoded_at_reduced_scale_close_to_timm(tmp_path, monkeypatch, decoder):
    calls = []
    if decoder == "pillow":
        monkeypatch.setattr(fast, "simplejpeg", None)
    else:
        assert fast.simplejpeg is not None, "simplejpeg is part of the dev install"
        real = fast.simplejpeg.decode_jpeg
        monkeypatch.setattr(fast.simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(k) or real(*a, **k))
    photo = _photo_jpeg((1600, 1200))
    assert fast.decode_scaled(fast.open_lazy(photo), 4).size == (400, 300)
    assert fast.decode_scaled(fast.open_lazy(photo), 1).size == (1600, 1200)
    assert fast.dct_factor(1600, 1200, 224, 224) == 4 and fast.dct_factor(447, 900, 224, 224) == 1

    # Crops of 90-100% of the image: decoded at 1/4, then resized to 224 like timm's full-size resize.
    data, augment = DataCfg(), replace(AugmentCfg(), reprob=0.0, auto_augment="", hflip=0.0, scale=[0.9, 1.0])
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "big.JPEG").write_bytes(photo)
    timm_set = build_dataset(tmp_path, "train", replace(data, pipeline="timm"), augment, 224, True)
    fast_set = build_dataset(tmp_path, "train", replace(data, pipeline="fast"), augment, 224, True)
    normalize = DeviceNormalize(data.mean, data.std, torch.device("cpu"))
    std = torch.tensor(data.std).view(3, 1, 1) * 255
    for seed in range(4):
        expected = timm_set[(0, seed)][0]
        got = normalize(fast_set[(0, seed)][0][None])[0]
        mean_abs = float(((got - expected) * std).abs().mean())  # in 0..255 pixel levels
        assert mean_abs < 2.0, (seed, mean_abs)
    assert (len(calls) > 0) == (decoder == "simplejpeg")


def _broken_root(root):
    _photo_root(root, (120, 90), per_class=2)
    corrupt = root / "train" / "a" / "a_1.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)
    truncated = root / "train" / "b" / "b_1.JPEG"
    good = truncated.read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    return str(corrupt), str(truncated)


@pytest.mark.parametrize("decoder", ["simplejpeg", "pillow"])
def test_fast_pipeline_skips_broken_files_or_fails_on_them(tmp_path, monkeypatch, decoder):
    if decoder == "pillow":
        monkeypatch.setattr(fast, "simplejpeg", None)
    corrupt, truncated = _broken_root(tmp_path)
    data, augment = replace(DataCfg(), pipeline="fast"), AugmentCfg()
    ds = build_dataset(tmp_path, "train", data, augment, 32, True)
    assert ds.lazy_decode
    paths = [p for p, _ in ds.samples]
    with pytest.warns(BadImageWarning) as record:
        assert ds[(paths.index(corrupt), 0)] is None  # the header does not parse: found when opening
        assert ds[(paths.index(truncated), 0)] is None  # found only when the transform decodes
    assert corrupt in str(record[0].message) and truncated in str(record[1].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, targets, skipped = collate_skip_bad([ds[(i, 0)] for i in range(len(ds))])
    assert skipped == 2 and images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)

    strict = build_dataset(tmp_path, "train", replace(data, on_bad_image="fail"), augment, 32, True)
    with pytest.raises(DataError) as info:
        strict[(paths.index(truncated), 0)]
    assert str(info.value).startswith(f"cannot decode image {truncated}: ") and "\n" not in str(info.value)


def test_device_normalize_leaves_float_batches_and_erases_when_training():
    data, augment = DataCfg(), replace(AugmentCfg(), reprob=1.0)
    step = device_normalize(data, augment, torch.device("cpu"), is_training=True)
    floats = torch.randn(2, 3, 8, 8)
    assert step(floats) is floats  # timm's pipeline and evaluation batches are already normalised

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    plain = (images.float() / 255 - mean) / std
    unerased = device_normalize(data, augment, torch.device("cpu"), is_training=False)
    assert torch.allclose(unerased(images), plain, atol=1e-5)
    erased = step(images)
    assert erased.dtype == torch.float32 and torch.isfinite(erased).all()
    for i in range(4):  # probability 1: every image has an erased (replaced) patch
        assert not torch.allclose(erased[i], plain[i], atol=1e-5)


def test_unknown_pipeline_is_refused():
    with pytest.raises(ValueError, match="pipeline must be one of timm, fast"):
        build_transforms(replace(DataCfg(), pipeline="dali"), AugmentCfg(), 224, True)
