"""Per-epoch index order for one rank, resumable mid-epoch, with a seed per sample.

:class:`EpochSampler` yields ``(index, sample_seed)``; :class:`~wavemlp.data.dataset.ImageDataset`
seeds the augmentation of that sample from ``sample_seed``. The order depends only on
``(seed, epoch, rank, num_replicas, dataset_len)``, so a run resumed with :meth:`EpochSampler.set_start`
sees exactly the samples (and augmentations) an uninterrupted run would have seen.

Repeated augmentation is timm's :class:`timm.data.distributed_sampler.RepeatAugSampler`, which keeps
the semantics of the sampler the Wave-MLP authors trained with (DeiT's): the epoch's permutation
(seeded with the epoch number alone) has every index repeated ``num_repeats`` times in a row, is padded
and dealt round-robin over the ranks, and each rank keeps only the first
``floor(len(dataset) // 256 * 256 / num_replicas)`` of its share.
"""

import math
from typing import Dict, Iterator, List, Tuple

import torch
from torch.utils.data import Sampler

RA_SELECTED_ROUND = 256
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    # splitmix64 finaliser: cheap, portable across Python/NumPy/torch versions, well mixed
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _seed_prefix(seed: int, epoch: int, rank: int) -> int:
    h = _mix64(int(seed) & _MASK64)
    h = _mix64(h ^ (int(epoch) & _MASK64))
    return _mix64(h ^ (int(rank) & _MASK64))


def _seed_at(prefix: int, position: int) -> int:
    return _mix64(prefix ^ position) >> 32


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The 32-bit augmentation seed of the sample at ``position`` of ``rank``'s sequence in ``epoch``."""
    return _seed_at(_seed_prefix(seed, epoch, rank), int(position))


def ra_samples_per_rank(dataset_len: int, num_replicas: int) -> int:
    """Samples each rank sees per epoch under the authors' repeated augmentation."""
    return dataset_len // RA_SELECTED_ROUND * RA_SELECTED_ROUND // num_replicas


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class EpochSampler(Sampler):
    """The training/eval sampler of one rank; yields ``(index, sample_seed)`` tuples.

    * ``repeated_aug=False``: the order of ``torch.utils.data.DistributedSampler`` (permutation from a
      generator seeded with ``seed + epoch``, padded by wrapping or, with ``drop_last``, cut to a
      multiple of ``num_replicas``, then every ``num_replicas``-th index from ``rank``).
    * ``repeated_aug=True``: timm's ``RepeatAugSampler`` as the authors used it (see the module doc);
      its permutation is seeded with the epoch alone, as theirs was, so ``seed`` only enters the
      sample seeds. ``drop_last`` does not apply. Fewer than 256 samples is an error, because the
      authors' rule keeps ``floor(n // 256 * 256 / world_size)`` = 0 samples.

    ``sample_seed`` hashes ``(seed, epoch, rank, position)``: the repeats of an index get different
    augmentations, and resuming at a position reproduces the seeds of the uninterrupted run.

    Resume: ``set_start(k)`` skips the first ``k`` samples of this epoch's sequence of this rank. The
    start survives ``set_epoch`` with the same epoch and resets to 0 when the epoch changes, so the
    usual ``load_state_dict(...)`` then ``for epoch ...: set_epoch(epoch)`` loop resumes where it
    stopped. Iterating never touches the global torch RNG.
    """

    def __init__(
        self,
        dataset_len: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 42,
        repeated_aug: bool = False,
        num_repeats: int = 3,
        drop_last: bool = True,
    ):
        self.dataset_len = _check_int("dataset_len", dataset_len, 1)
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank {rank} out of range for num_replicas {num_replicas}")
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.repeated_aug = bool(repeated_aug)
        self.num_repeats = _check_int("num_repeats", num_repeats, 1)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start = 0
        self._ra = None
        if self.repeated_aug:
            self.num_samples = self._make_ra_sampler()
        elif self.drop_last:
            self.num_samples = self.dataset_len // self.num_replicas
        else:
            self.num_samples = int(math.ceil(self.dataset_len / self.num_replicas))
        if self.num_samples == 0:
            raise ValueError(
                f"{self.dataset_len} samples over {self.num_replicas} ranks with drop_last leaves 0 per rank"
            )

    def _make_ra_sampler(self) -> int:
        from timm.data.distributed_sampler import RepeatAugSampler

        expected = ra_samples_per_rank(self.dataset_len, self.num_replicas)
        if expected == 0:
            r = RA_SELECTED_ROUND
            raise ValueError(
                f"repeated augmentation keeps floor(n // {r} * {r} / world_size) samples per rank: "
                f"n={self.dataset_len} over {self.num_replicas} rank(s) gives 0; it needs n >= {r} and "
                f"n // {r} * {r} >= world_size (or use repeated_aug=False)"
            )
        # timm only needs len() of the dataset; selected_ratio=num_replicas is the authors' divisor
        self._ra = RepeatAugSampler(
            range(self.dataset_len),
            num_replicas=self.num_replicas,
            rank=self.rank,
            shuffle=self.shuffle,
            num_repeats=self.num_repeats,
            selected_round=RA_SELECTED_ROUND,
            selected_ratio=self.num_replicas,
        )
        if len(self._ra) != expected:
            raise RuntimeError(
                f"timm's RepeatAugSampler keeps {len(self._ra)} samples per rank, the authors' rule "
                f"{expected}: "
                "this timm version changed its semantics"
            )
        return expected

    @property
    def epoch_length(self) -> int:
        """Samples of a whole epoch for this rank (``len(self)`` is what is left after the start)."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def set_start(self, position: int) -> None:
        position = _check_int("position", position, 0)
        if position > self.num_samples:
            raise ValueError(f"start {position} is past the end of the epoch ({self.num_samples} samples per rank)")
        self.start = position

    def epoch_indices(self) -> List[int]:
        """The whole sequence of dataset indices of this rank for the current epoch (ignores the start)."""
        if self._ra is not None:
            self._ra.set_epoch(self.epoch)
            indices = list(iter(self._ra))
        else:
            if self.shuffle:
                g = torch.Generator()
                g.manual_seed(self.seed + self.epoch)
                indices = torch.randperm(self.dataset_len, generator=g).tolist()
            else:
                indices = list(range(self.dataset_len))
            total = self.num_samples * self.num_replicas
            if total > len(indices):
                indices = (indices * int(math.ceil(total / len(indices))))[:total]
            else:
                indices = indices[:total]
            indices = indices[self.rank : total : self.num_replicas]
        if len(indices) != self.num_samples:  # pragma: no cover - guards the arithmetic above
            raise RuntimeError(f"sampler produced {len(indices)} indices, expected {self.num_samples}")
        return indices

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        indices = self.epoch_indices()
        prefix = _seed_prefix(self.seed, self.epoch, self.rank)
        start = self.start
        return ((indices[pos], _seed_at(prefix, pos)) for pos in range(start, len(indices)))

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self, consumed: int = 0) -> Dict[str, object]:
        """Position to resume from; ``consumed``: samples this rank took from the current iteration.

        The sampler cannot see how far the loader got (workers prefetch ahead), so pass
        ``batches_done * batch_size`` when saving mid-epoch; at an epoch boundary save after
        ``set_epoch(next_epoch)`` (start 0).
        """
        start = self.start + _check_int("consumed", consumed, 0)
        if start > self.num_samples:
            raise ValueError(
                f"consumed {consumed} goes past the end of the epoch ({len(self)} of {self.num_samples} samples left)"
            )
        return {
            "epoch": self.epoch,
            "start": start,
            "dataset_len": self.dataset_len,
            "num_replicas": self.num_replicas,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "repeated_aug": self.repeated_aug,
            "num_repeats": self.num_repeats,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore epoch and start; a mid-epoch start is refused if the order it indexes has changed."""
        start = _check_int("start", state.get("start", 0), 0)
        if start:
            for key in ("dataset_len", "num_replicas", "seed", "shuffle", "repeated_aug", "num_repeats", "drop_last"):
                if key in state and state[key] != getattr(self, key):
                    raise ValueError(
                        f"cannot resume mid-epoch (start {start}): sampler {key} was "
                        f"{state[key]!r}, now {getattr(self, key)!r}"
                    )
        self.epoch = _check_int("epoch", state["epoch"], 0)
        self.set_start(start)
