"""The data package on real files: demo writer, dataset checks, bad images, samplers, loaders."""

import io
import itertools
import math
import os
import random
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from wavemlp.data import (
    BadImageWarning,
    DataError,
    EpochSampler,
    ImageDataset,
    build_loader,
    build_transforms,
    collate_skip_bad,
    ra_samples_per_rank,
    sample_seed,
    write_demo_dataset,
)
from wavemlp.recipe.schema import AugmentCfg, DataCfg

SEED_DATA, SEED_AUGMENT = DataCfg(), AugmentCfg()  # the seed recipe's sections

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # sklearn's load_digits per class


def _jpeg_bytes(size=24, seed=0) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _make_folder_dataset(root, classes=("a", "b", "c"), per_class=2, split="train"):
    for c in classes:
        folder = root / split / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{c}_{i}.JPEG").write_bytes(_jpeg_bytes(seed=i))
    return root


def _rng_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def _assert_same_rng(before, after):
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, image_size=32, val_fraction=0.2, seed=0)
    return root


def _tree(root):
    out = {}
    for split in ("train", "val"):
        for dirpath, _, files in os.walk(str(root / split)):
            for name in files:
                out[os.path.relpath(os.path.join(dirpath, name), str(root))] = None
    return sorted(out)


# ---------------------------------------------------------------- demo writer


def test_demo_layout_and_split(demo_root):
    files = _tree(demo_root)
    assert len(files) == 1797
    for split in ("train", "val"):
        assert sorted(os.listdir(str(demo_root / split))) == [f"d{k}" for k in range(10)]
    for k, n in enumerate(DIGIT_COUNTS):
        n_val = len(os.listdir(str(demo_root / "val" / f"d{k}")))
        n_train = len(os.listdir(str(demo_root / "train" / f"d{k}")))
        assert n_val + n_train == n
        assert n_val == round(n * 0.2)


def test_demo_lists_match_folders(demo_root):
    for split in ("train", "val"):
        lines = (demo_root / f"{split}_list.txt").read_text().splitlines()
        listed = {}
        for line in lines:
            rel, label = line.split()
            listed[rel] = int(label)
        on_disk = {}
        for k in range(10):
            for name in os.listdir(str(demo_root / split / f"d{k}")):
                on_disk[f"d{k}/{name}"] = k
        assert listed == on_disk
        assert len(lines) == len(listed)
    train = ImageDataset(demo_root, "train")
    val = ImageDataset(demo_root, "val", class_to_idx=train.class_to_idx)
    assert (len(train), len(val), train.num_classes) == (1438, 359, 10)
    assert train.classes == [f"d{k}" for k in range(10)]
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}


def test_demo_jpegs_decode(demo_root):
    for rel in _tree(demo_root)[::97]:
        with Image.open(str(demo_root / rel)) as img:
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)


def test_demo_idempotent_and_reproducible(demo_root, tmp_path):
    manifest = demo_root / "demo.json"
    stamp = manifest.stat().st_mtime_ns
    some = demo_root / "train" / "d0" / sorted(os.listdir(str(demo_root / "train" / "d0")))[0]
    some_stamp = some.stat().st_mtime_ns
    again = write_demo_dataset(demo_root, image_size=32, val_fraction=0.2, seed=0)
    assert again == {"train": 1438, "val": 359, "total": 1797, "num_classes": 10, "written": False}
    assert manifest.stat().st_mtime_ns == stamp and some.stat().st_mtime_ns == some_stamp

    other = tmp_path / "other"
    first = write_demo_dataset(other, image_size=32, seed=0)
    assert first["written"] is True
    assert _tree(other) == _tree(demo_root)
    assert (other / "val_list.txt").read_text() == (demo_root / "val_list.txt").read_text()


def test_demo_rewrite_with_other_params_leaves_no_stale_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_demo_dataset(a, image_size=16, seed=0)
    before = (a / "val_list.txt").read_text()
    (a / "train" / "d0" / "mine.txt").write_text("not ours")  # foreign files are left alone
    assert write_demo_dataset(a, image_size=16, seed=1)["written"] is True
    write_demo_dataset(b, image_size=16, seed=1)
    assert [p for p in _tree(a) if not p.endswith("mine.txt")] == _tree(b)
    assert (a / "val_list.txt").read_text() == (b / "val_list.txt").read_text() != before
    assert (a / "train" / "d0" / "mine.txt").exists()


def test_demo_incomplete_is_rewritten(tmp_path):
    root = tmp_path / "demo"
    write_demo_dataset(root, image_size=16)
    victim = root / "val" / "d3" / sorted(os.listdir(str(root / "val" / "d3")))[0]
    victim.unlink()
    assert write_demo_dataset(root, image_size=16)["written"] is True
    assert victim.exists()


# ---------------------------------------------------------------- dataset validation


def _case_missing_split(root):
    return root / "train", {}


def _case_no_class_folders(root):
    (root / "train").mkdir()
    (root / "train" / "loose.JPEG").write_bytes(_jpeg_bytes())
    return root / "train", {}


def _case_empty_class(root):
    _make_folder_dataset(root)
    (root / "train" / "zz").mkdir()
    (root / "train" / "zz" / "notes.txt").write_text("x")
    return root / "train" / "zz", {}


def _write_list(root, lines):
    _make_folder_dataset(root)
    (root / "train_list.txt").write_text("".join(line + "\n" for line in lines))
    return root / "train_list.txt"


def _case_list_missing_file(root):
    path = _write_list(root, ["a/a_0.JPEG 0", "a/a_1.JPEG 0", "b/gone.JPEG 1"])
    return "{}:3: file not found: {}".format(path, root / "train" / "b" / "gone.JPEG"), {}


def _case_label_out_of_range(root):
    path = _write_list(root, ["a/a_0.JPEG 0", "b/b_0.JPEG 3"])
    return f"{path}:2: label 3 out of range 0..2", {}


def _case_negative_label(root):
    path = _write_list(root, ["a/a_0.JPEG -1"])
    return f"{path}:1: label -1 out of range", {}


def _case_label_not_int(root):
    path = _write_list(root, ["a/a_0.JPEG zero"])
    return f"{path}:1: label is not an int: 'zero'", {}


def _case_duplicate(root):
    path = _write_list(root, ["a/a_0.JPEG 0", "b/b_0.JPEG 1", "", "a/./a_0.JPEG 0"])
    return f"{path}:4: duplicate entry a/./a_0.JPEG (first on line 1)", {}


def _case_malformed(root):
    path = _write_list(root, ["a/a_0.JPEG"])
    return f"{path}:1: expected 'relative/path label'", {}


def _case_empty_list(root):
    path = _write_list(root, [])
    return f"empty list file: {path}", {}


def _case_label_folder_mismatch(root):
    path = _write_list(root, ["a/a_0.JPEG 0", "c/c_1.JPEG 1"])
    return f"{path}:2: label 1 does not match class folder 'c' (label 2)", {}


def _case_unknown_class_folder(root):
    _make_folder_dataset(root)
    return root / "train" / "c", {"class_to_idx": {"a": 0, "b": 1}}


def _case_bad_class_to_idx(root):
    _make_folder_dataset(root)
    return "labels must be 0..2", {"class_to_idx": {"a": 0, "b": 1, "c": 5}}


@pytest.mark.parametrize(
    "case",
    [
        _case_missing_split,
        _case_no_class_folders,
        _case_empty_class,
        _case_list_missing_file,
        _case_label_out_of_range,
        _case_negative_label,
        _case_label_not_int,
        _case_duplicate,
        _case_malformed,
        _case_empty_list,
        _case_label_folder_mismatch,
        _case_unknown_class_folder,
        _case_bad_class_to_idx,
    ],
)
def test_data_errors(tmp_path, case):
    expected, kwargs = case(tmp_path)
    with pytest.raises(DataError) as info:
        ImageDataset(tmp_path, "train", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(expected) in message
    if "class_to_idx" not in kwargs or "unknown" in case.__name__:
        assert str(tmp_path) in message


def test_flat_val_with_list_needs_train_classes(tmp_path):
    _make_folder_dataset(tmp_path)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "v1.JPEG").write_bytes(_jpeg_bytes())
    (tmp_path / "val" / "v 2.JPEG").write_bytes(_jpeg_bytes(seed=3))
    (tmp_path / "val_list.txt").write_text("v1.JPEG 2\nv 2.JPEG 0\n")
    with pytest.raises(DataError, match="pass the train split's class_to_idx"):
        ImageDataset(tmp_path, "val")
    train = ImageDataset(tmp_path, "train")
    val = ImageDataset(tmp_path, "val", class_to_idx=train.class_to_idx)
    assert [label for _, label in val.samples] == [2, 0]
    assert val.samples[1][0] == str(tmp_path / "val" / "v 2.JPEG")
    assert val[1][1] == 0 and val[1][0].size == (24, 24)


def test_scan_order_and_extensions(tmp_path):
    _make_folder_dataset(tmp_path, classes=("b", "a"))
    (tmp_path / "train" / "a" / "x.PnG").write_bytes(_jpeg_bytes())  # content type is PIL's business
    (tmp_path / "train" / "a" / "readme.txt").write_text("skip me")
    (tmp_path / "train" / "a" / ".hidden.JPEG").write_bytes(_jpeg_bytes())
    ds = ImageDataset(tmp_path, "train")
    assert ds.classes == ["a", "b"] and ds.class_to_idx == {"a": 0, "b": 1}
    assert [os.path.basename(p) for p, _ in ds.samples] == ["a_0.JPEG", "a_1.JPEG", "x.PnG", "b_0.JPEG", "b_1.JPEG"]
    assert ds.targets == [0, 0, 0, 1, 1]


# ---------------------------------------------------------------- bad images


@pytest.fixture
def bad_root(tmp_path):
    _make_folder_dataset(tmp_path, classes=("a", "b"), per_class=3)
    good = _jpeg_bytes(size=64, seed=7)
    corrupt = tmp_path / "train" / "a" / "a_1.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)
    truncated = tmp_path / "train" / "b" / "b_2.JPEG"
    truncated.write_bytes(good[: len(good) // 2])
    return tmp_path, str(corrupt), str(truncated)


def test_bad_images_skipped_and_counted(bad_root):
    root, corrupt, truncated = bad_root
    ds = ImageDataset(root, "train", transform=build_transforms(SEED_DATA, SEED_AUGMENT, 16, False))
    paths = [p for p, _ in ds.samples]
    with pytest.warns(BadImageWarning) as record:
        assert ds[paths.index(corrupt)] is None
        assert ds[paths.index(truncated)] is None
    assert len(record) == 2 and corrupt in str(record[0].message) and truncated in str(record[1].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file: a second read is silent
        assert ds[paths.index(corrupt)] is None

    images, targets, skipped = collate_skip_bad([ds[i] for i in range(len(ds))])
    assert skipped == 2 and images.shape == (4, 3, 16, 16) and targets.tolist() == [0, 0, 1, 1]

    loader = build_loader(
        ds, EpochSampler(len(ds), shuffle=False), batch_size=3, workers=0, pin_memory=False, is_training=True
    )
    batches = list(loader)
    assert [b[2] for b in batches] == [1, 1]
    assert sum(len(b[1]) for b in batches) == 4


def test_all_bad_batch_is_empty(bad_root):
    root, corrupt, truncated = bad_root
    ds = ImageDataset(root, "train")
    paths = [p for p, _ in ds.samples]
    with pytest.warns(BadImageWarning):
        batch = [ds[paths.index(corrupt)], ds[paths.index(truncated)]]
    images, targets, skipped = collate_skip_bad(batch)
    assert skipped == 2 and isinstance(skipped, int)
    assert images.numel() == 0 and targets.numel() == 0 and targets.dtype == torch.long


def test_bad_images_fail_mode(bad_root):
    root, corrupt, truncated = bad_root
    ds = ImageDataset(root, "train", on_bad_image="fail")
    paths = [p for p, _ in ds.samples]
    for bad in (corrupt, truncated):
        with pytest.raises(DataError) as info:
            ds[paths.index(bad)]
        assert str(info.value).startswith(f"cannot decode image {bad}: ") and "\n" not in str(info.value)
    assert ds[0][0].mode == "RGB"
    with pytest.raises(ValueError, match="on_bad_image"):
        ImageDataset(root, "train", on_bad_image="ignore")


# ---------------------------------------------------------------- samplers


def _indices(sampler):
    return [i for i, _ in sampler]


@pytest.mark.parametrize("n,world,drop_last", [(103, 4, True), (103, 4, False), (100, 4, True), (5, 8, False)])
def test_epoch_sampler_matches_distributed_sampler(n, world, drop_last):
    for epoch in (0, 3):
        for rank in range(world):
            ours = EpochSampler(n, num_replicas=world, rank=rank, seed=42, drop_last=drop_last)
            ours.set_epoch(epoch)
            ref = DistributedSampler(
                range(n), num_replicas=world, rank=rank, shuffle=True, seed=42, drop_last=drop_last
            )
            ref.set_epoch(epoch)
            assert _indices(ours) == list(ref)
            assert len(ours) == len(ref)


def test_epoch_sampler_coverage_and_determinism():
    n, world = 120, 4
    per_rank = [_indices(EpochSampler(n, world, r, seed=7)) for r in range(world)]
    assert sorted(itertools.chain(*per_rank)) == list(range(n))  # disjoint and complete
    again = [_indices(EpochSampler(n, world, r, seed=7)) for r in range(world)]
    assert again == per_rank
    s = EpochSampler(n, world, 0, seed=7)
    s.set_epoch(1)
    assert _indices(s) != per_rank[0]
    assert sorted(_indices(EpochSampler(n, world, 2, shuffle=False))) == list(range(2, n, 4))

    seeds = [sd for r in range(world) for _, sd in EpochSampler(n, world, r, seed=7)]
    assert len(set(seeds)) == len(seeds) and all(0 <= sd < 2**32 for sd in seeds)
    assert list(EpochSampler(n, world, 1, seed=7))[5][1] == sample_seed(7, 0, 1, 5)


@pytest.mark.parametrize("repeated_aug", [False, True])
def test_set_start_resumes_exactly(repeated_aug):
    n, world = 700, 3
    for rank in range(world):
        full = EpochSampler(n, world, rank, seed=3, repeated_aug=repeated_aug)
        full.set_epoch(2)
        whole = list(full)
        assert len(whole) == len(full) == full.epoch_length
        for k in (0, 1, 37, len(whole) - 1, len(whole)):
            head = list(itertools.islice(iter(full), k))
            resumed = EpochSampler(n, world, rank, seed=3, repeated_aug=repeated_aug)
            resumed.load_state_dict(full.state_dict(consumed=k))
            resumed.set_epoch(2)  # the engine's loop calls this again: the start must survive it
            assert len(resumed) == len(whole) - k
            assert head + list(resumed) == whole
            resumed.set_epoch(3)
            assert resumed.start == 0 and len(resumed) == resumed.epoch_length


def test_sampler_state_checks():
    s = EpochSampler(100, 2, 0)
    s.set_epoch(4)
    state = s.state_dict(consumed=10)
    assert (state["epoch"], state["start"]) == (4, 10)
    with pytest.raises(ValueError, match="mid-epoch"):
        EpochSampler(100, 4, 0).load_state_dict(state)
    other = EpochSampler(100, 4, 0)
    other.load_state_dict(dict(state, start=0))  # an epoch boundary resumes under any layout
    assert other.epoch == 4
    with pytest.raises(ValueError, match="past the end"):
        s.set_start(51)
    with pytest.raises(ValueError, match="past the end"):
        s.state_dict(consumed=51)
    with pytest.raises(ValueError):
        EpochSampler(100, 2, 2)
    with pytest.raises(ValueError, match="0 per rank"):
        EpochSampler(3, 4, 0, drop_last=True)


def _authors_ra(n, world, rank, epoch, repeats=3):
    """Repeated augmentation as the authors' sampler does it, written out from the spec."""
    g = torch.Generator()
    g.manual_seed(epoch)
    order = torch.randperm(n, generator=g).tolist()
    repeated = [i for i in order for _ in range(repeats)]
    per_rank = int(math.ceil(n * repeats / world))
    total = per_rank * world
    repeated += repeated[: total - len(repeated)]
    mine = repeated[rank:total:world]
    return mine[: int(math.floor(n // 256 * 256 / world))]


@pytest.mark.parametrize("n,world", [(600, 1), (600, 2), (600, 3), (1000, 8), (256, 1), (2000, 7)])
def test_repeated_aug_pins_authors_semantics(n, world):
    for epoch in (0, 1, 5):
        for rank in range(world):
            s = EpochSampler(n, world, rank, seed=123, repeated_aug=True)
            s.set_epoch(epoch)
            assert _indices(s) == _authors_ra(n, world, rank, epoch)
            assert len(s) == n // 256 * 256 // world == ra_samples_per_rank(n, world)


def test_repeated_aug_spreads_repeats_over_ranks():
    per_rank = [list(EpochSampler(600, 3, r, repeated_aug=True)) for r in range(3)]
    idx = [[i for i, _ in seq] for seq in per_rank]
    assert idx[0] == idx[1] == idx[2]  # each rank sees one repeat of the same index at the same step
    seeds = [[sd for _, sd in seq] for seq in per_rank]
    assert all(len({seeds[0][p], seeds[1][p], seeds[2][p]}) == 3 for p in range(len(idx[0])))
    single = _indices(EpochSampler(600, 1, 0, repeated_aug=True))
    assert single[:3] == [single[0]] * 3  # one rank: the three repeats are consecutive
    assert len(single) == 512


def test_repeated_aug_refuses_small_datasets():
    with pytest.raises(ValueError, match="gives 0"):
        EpochSampler(255, 1, 0, repeated_aug=True)
    assert len(EpochSampler(256, 2, 1, repeated_aug=True)) == 128


def test_sampler_leaves_global_rng_alone():
    before = _rng_states()
    for ra in (False, True):
        s = EpochSampler(1000, 2, 1, repeated_aug=ra)
        s.set_epoch(3)
        list(s)
    _assert_same_rng(before, _rng_states())


# ---------------------------------------------------------------- seeded transforms and loaders


def test_seeded_getitem_is_reproducible(demo_root):
    augment = replace(SEED_AUGMENT, reprob=1.0)  # erasing always on: torch's RNG is exercised too
    ds = ImageDataset(demo_root, "train", transform=build_transforms(SEED_DATA, augment, 32, True))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = _rng_states()
    a, label_a = ds[(5, 1234)]
    b, label_b = ds[(5, 1234)]
    _assert_same_rng(before, _rng_states())
    assert torch.equal(a, b) and label_a == label_b
    others = [ds[(5, s)][0] for s in range(1235, 1240)]
    assert not all(torch.equal(a, o) for o in others)
    unseeded = [ds[5][0] for _ in range(3)]
    assert not all(torch.equal(unseeded[0], u) for u in unseeded[1:])


def test_transforms_follow_config():
    data = replace(SEED_DATA, crop_pct=0.875)
    ev = build_transforms(data, SEED_AUGMENT, 32, False)
    resize = ev.transforms[0]
    assert resize.size in (36, [36], (36, 36)) and "BICUBIC" in str(resize.interpolation).upper()
    out = ev(Image.new("RGB", (50, 40)))
    assert out.shape == (3, 32, 32)
    tr = build_transforms(data, SEED_AUGMENT, 32, True)
    names = [type(t).__name__ for t in tr.transforms]
    assert names[0] == "RandomResizedCropAndInterpolation" and "RandomErasing" in names
    assert any("RandAugment" in n for n in names) and "ColorJitter" not in names
    with pytest.raises(ValueError, match="training only"):
        build_transforms(replace(data, interpolation="random"), SEED_AUGMENT, 32, False)
    unerased = build_transforms(data, replace(SEED_AUGMENT, reprob=0.0), 32, True)
    assert "RandomErasing" not in [type(t).__name__ for t in unerased.transforms]


def _batches(loader, limit):
    return [(x.clone(), y.clone(), n) for x, y, n in itertools.islice(iter(loader), limit)]


def test_loader_workers_do_not_change_batches(demo_root):
    ds = ImageDataset(demo_root, "train", transform=build_transforms(SEED_DATA, SEED_AUGMENT, 32, True))
    sampler = EpochSampler(len(ds), num_replicas=2, rank=1, seed=42, repeated_aug=True)
    sampler.set_epoch(1)
    serial = build_loader(ds, sampler, 16, workers=0, pin_memory=False, is_training=True)
    before = _rng_states()
    ref = _batches(serial, 6)
    _assert_same_rng(before, _rng_states())
    parallel = build_loader(ds, sampler, 16, workers=2, pin_memory=False, is_training=True, seed=7)
    got = _batches(parallel, 6)
    _assert_same_rng(before, _rng_states())
    assert len(got) == len(ref) == 6
    for (xa, ya, na), (xb, yb, nb) in zip(ref, got):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and na == nb == 0

    sampler.set_epoch(2)  # persistent workers are reused for the next epoch, in the new order
    next_epoch = _batches(parallel, 2)
    for (xa, ya, _), (xb, yb, _) in zip(_batches(serial, 2), next_epoch):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(next_epoch[0][0], ref[0][0])

    sampler.set_epoch(1)
    sampler.set_start(16 * 3)  # a resumed epoch continues with the fourth batch
    resumed = _batches(build_loader(ds, sampler, 16, workers=2, pin_memory=False, is_training=True), 3)
    for (xa, ya, _), (xb, yb, _) in zip(ref[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_eval_loader_keeps_last_batch(demo_root):
    ds = ImageDataset(demo_root, "val", transform=build_transforms(SEED_DATA, SEED_AUGMENT, 32, False))
    sampler = EpochSampler(len(ds), shuffle=False, drop_last=False)
    loader = build_loader(ds, sampler, 100, workers=0, pin_memory=False, is_training=False, prefetch_factor=4)
    assert len(loader) == 4 and sum(len(y) for _, y, _ in loader) == 359


def test_seed_randaugment_posterize_at_full_magnitude_gives_black_not_an_error():
    # mstd0.5 noise pushes the magnitude to 10, where timm asks PosterizeIncreasing for 0 bits.
    from PIL import Image

    transform = build_transforms(SEED_DATA, SEED_AUGMENT, 224, True)
    ops = [op for t in transform.transforms for op in getattr(t, "ops", []) if op.name.startswith("Posterize")]
    assert ops
    img = Image.new("RGB", (16, 16), (200, 120, 40))
    for op in ops:
        out = op.aug_fn(img, *op.level_fn(10.0, op.hparams))
        assert out.getextrema() == ((0, 0), (0, 0), (0, 0))
