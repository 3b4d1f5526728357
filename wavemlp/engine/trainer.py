"""The training loop: a recipe in, a run folder out.

The parts of the run, the training step included, come from :mod:`.components`; this module is the
loop around them: epochs, records, evaluation, checkpoints, resume and preemption.

Determinism, so that a resumed run equals an uninterrupted one bit for bit (on the CPU):
- augmentation of each sample is seeded from (seed, epoch, rank, position) by the data package;
- mixup/cutmix draws from numpy, reseeded per step from (seed, rank, global step);
- dropout and drop-path draw from torch's global generator, whose state the checkpoint carries;
- a mid-epoch resume continues the same epoch order at the next batch.

Runs inside images: Python 3.8 syntax, torch >= 1.13, timm >= 0.9.16.
"""

import hashlib
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..errors import KitError
from ..recipe import Recipe, dump_recipe, parse_recipe
from . import components, devices, distributed
from .checkpoint import CheckpointManager, load_state, rng_state, set_rng_state
from .evaluate import evaluate
from .records import EPOCH_FIELDS, append_jsonl, capture_environment, read_jsonl, truncate_jsonl, write_csv
from .runlog import RunLog
from .signals import NONFINITE_EXIT_CODE, REQUEUE_EXIT_CODE, STOP_FILE_NAME, StopRequest


@dataclass
class Position:
    epoch: int = 0  # the epoch in progress
    step: int = 0  # optimizer steps finished within it
    global_step: int = 0


def weights_checksum(model: nn.Module) -> str:
    """sha256 over the state_dict in order: equal on every rank when DDP kept them in sync."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        resume: str = "",
        recipe_name: str = "recipe",
        argv: Optional[List[str]] = None,
        recipe_file: Optional[Path] = None,
    ):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.recipe_name = recipe_name
        self.argv = list(argv if argv is not None else sys.argv)
        # The file the recipe was read from (a resolved recipe beside a launch script, or a shipped one).
        self.recipe_file = Path(recipe_file).absolute() if recipe_file is not None else None
        self.recipe_sha256 = file_sha256(self.recipe_file) if self.recipe_file is not None else None

    # --- set-up -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        r = self.recipe
        self.dist = distributed.from_environment()
        self.device = devices.resolve_device(r.hardware.device, self.dist.local_rank)
        distributed.init(self.dist, r.hardware.dist_backend, self.device)
        self.is_main = self.dist.is_main
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        self.log = RunLog(
            self.run_dir / "train.log" if self.is_main else None,
            rank=self.dist.rank,
            show_progress=self.is_main and r.train.progress and sys.stderr.isatty(),
        )
        self.precision = devices.resolve_precision(r.train.precision, self.device)
        self.device_info = devices.detect()
        if r.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True
        seed = r.train.seed + self.dist.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        import random

        random.seed(seed)
        self.ckpt = CheckpointManager(
            self.run_dir, keep_best=r.train.checkpoint_hist, higher_is_better=r.train.eval_metric != "loss"
        )
        self.stop = StopRequest(r.train.requeue_signals, self.run_dir / STOP_FILE_NAME,
                                on_signal=self._signal_noticed).install()

    def _signal_noticed(self, name: str) -> None:
        again = "; Ctrl-C again aborts without it" if name == "SIGINT" else ""
        self.log.info(f"{name} received: a checkpoint after this step, then exit {REQUEUE_EXIT_CODE}{again}")

    def _build_data(self) -> None:
        r = self.recipe
        self.train_set = components.build_train_set(r)
        self.val_set = components.build_val_set(r, class_to_idx=self.train_set.class_to_idx)
        self.normalize = components.build_normalize(r, self.device, is_training=True)
        components.check_classes(self.train_set, r)
        self.sampler, self.train_loader = components.build_train_loader(r, self.train_set, self.dist, self.device)
        self.val_loader = components.build_val_loader(r, self.val_set, self.dist, self.device)
        self.steps_per_epoch = self.sampler.epoch_length // r.train.batch_size
        if r.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, r.train.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise KitError(
                f"train.batch_size: {r.train.batch_size} is more than the "
                f"{self.sampler.epoch_length} training samples per rank"
            )

    def _build_model(self) -> None:
        r = self.recipe
        self.model = components.build_model(r, self.device, distributed=self.dist.enabled)
        self.train_step = components.build_train_step(
            r, self.model, self.device, self.precision, self.dist, normalize=self.normalize, warn=self.log.warn
        )
        self.net = self.train_step.net
        self.optimizer, self.scaler, self.ema = self.train_step.optimizer, self.train_step.scaler, self.train_step.ema
        self.scheduler, self.num_epochs = components.build_scheduler(self.optimizer, r)

    # --- state ------------------------------------------------------------------------------------
    def _state(self, pos: Position, rng_ranks: List[Dict[str, object]]) -> Dict[str, object]:
        """The checkpoint rank 0 writes; ``rng_ranks``: every rank's random state, gathered by all ranks
        (``distributed.all_gather_object(rng_state())``), so each resumes with its own draws."""
        state = {
            "arch": self.recipe.model.name,
            "epoch": pos.epoch,
            "step": pos.step,
            "global_step": pos.global_step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(consumed=pos.step * self.recipe.train.batch_size),
            "rng": rng_state(),
            "rng_ranks": rng_ranks,
            "best_metric": self.best_metric,
            "recipe": dump_recipe(self.recipe),
            "world_size": self.dist.world_size,
        }
        if self.ema is not None:
            state["state_dict_ema"] = self.ema.module.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def _restore(self) -> Position:
        if self.resume in ("", "none"):
            if self.ckpt.last_files():
                raise KitError(
                    f"run folder {self.run_dir} already holds checkpoints: pass --resume auto to continue it, or "
                    "choose another --run-dir"
                )
            return Position()
        if self.resume == "auto":
            found = self.ckpt.latest_valid(log=self.log.warn)
            if found is None:
                self.log.info(f"resume auto: no checkpoint in {self.ckpt.dir}, starting fresh")
                return Position()
            path, state = found
        else:
            path = Path(self.resume)
            state = load_state(path)
        if state.get("world_size", self.dist.world_size) != self.dist.world_size and state["step"]:
            raise KitError(
                "{}: saved mid-epoch with {} ranks; resume it with the same number of ranks".format(
                    path, state["world_size"]
                )
            )
        self._check_compatible(path, state)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and "state_dict_ema" in state:
            self.ema.module.load_state_dict(state["state_dict_ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        ranks = state.get("rng_ranks") or []
        set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state["rng"])
        self.best_metric = state.get("best_metric")
        pos = Position(int(state["epoch"]), int(state["step"]), int(state["global_step"]))
        self.log.info(f"resumed from {path} at epoch {pos.epoch} step {pos.step} (global step {pos.global_step})")
        if self.is_main:  # records after the checkpoint belong to a run that is being replayed
            truncate_jsonl(self.run_dir / "steps.jsonl", lambda rec: rec["global_step"] <= pos.global_step)
            truncate_jsonl(self.run_dir / "metrics.jsonl", lambda rec: rec["epoch"] < pos.epoch)
        return pos

    def _check_compatible(self, path: Path, state: Dict[str, object]) -> None:
        """Settings whose change would make the saved optimizer/model state meaningless."""
        text = state.get("recipe")
        if not text:
            return
        saved = parse_recipe(str(text), f"{path} (its saved recipe)")
        for section, key in (("model", "name"), ("model", "num_classes"), ("optim", "opt")):
            before = getattr(getattr(saved, section), key)
            now = getattr(getattr(self.recipe, section), key)
            if before != now:
                raise KitError(
                    f"{section}.{key}: the checkpoint {path} was trained with {before!r}, "
                    f"the recipe now says {now!r}; resume "
                    "needs the same value (or start a new run folder)"
                )

    def _write_run_files(self) -> None:
        if not self.is_main:
            return
        (self.run_dir / "recipe.yaml").write_text(dump_recipe(self.recipe))
        with open(str(self.run_dir / "command.txt"), "a") as fh:
            fh.write(" ".join(shlex.quote(a) for a in self.argv) + "\n")
        import json

        env = capture_environment(self.device_info.to_dict())
        env.update(world_size=self.dist.world_size, precision=self.precision, launcher=self.dist.launcher)
        env.update(recipe_file=str(self.recipe_file) if self.recipe_file else None, recipe_sha256=self.recipe_sha256)
        (self.run_dir / "env.json").write_text(json.dumps(env, indent=2))

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        try:
            self._build_data()
            self._build_model()
            self.best_metric = None
            pos = self._restore()
            self._write_run_files()
            if self.recipe_file is not None:
                self.log.info(f"recipe {self.recipe_file} sha256 {self.recipe_sha256}")
            self.log.info(
                f"training {self.recipe.model.name} on {self.dist.world_size} x {self.device.type} "
                f"({self.device_info.vendor}, {self.precision}), {self.steps_per_epoch} steps/epoch, "
                f"epochs {pos.epoch}..{self.num_epochs - 1}"
            )
            code = self._loop(pos)
            self.log.info(f"rank {self.dist.rank} weights sha256 {weights_checksum(self.model)}", all_ranks=True)
            return code
        finally:
            self._close_loaders()
            self.stop.uninstall()
            self.log.close()
            distributed.shutdown()

    def _close_loaders(self) -> None:
        """End the data-loader workers here: persistent ones would otherwise outlive a stopped loop until
        garbage collection, and they ignore the SIGTERM torch sends laggards (see wavemlp.data.loader)."""
        from ..data import close_loader

        for name in ("train_loader", "val_loader"):
            loader = getattr(self, name, None)
            if loader is not None:
                close_loader(loader)

    def _loop(self, pos: Position) -> int:
        if pos.epoch > 0 or pos.step > 0:
            self.scheduler.step(pos.epoch)
        while pos.epoch < self.num_epochs:
            outcome, stats = self._train_epoch(pos)
            if outcome == "nonfinite":
                return NONFINITE_EXIT_CODE
            if outcome == "stop":
                return self._save_and_requeue(pos)
            record = dict(epoch=pos.epoch, **stats)
            record.update(self._evaluate_all())
            pos.epoch, pos.step = pos.epoch + 1, 0
            metric = self._pick_metric(record)
            self.scheduler.step(pos.epoch, metric)
            rngs = distributed.all_gather_object(rng_state())
            if self.is_main:
                self._save_epoch_end(pos, metric, rngs)
                append_jsonl(self.run_dir / "metrics.jsonl", record)
                write_csv(self.run_dir / "metrics.csv", read_jsonl(self.run_dir / "metrics.jsonl"), EPOCH_FIELDS)
            self.log.info(self._epoch_line(record))
            distributed.barrier()
            if distributed.any_rank(self.stop.requested, self._reduce_device()):
                return self._save_and_requeue(pos, already_saved=True)
        self.stop.clear_stop_file()
        return 0

    def _reduce_device(self) -> Optional[torch.device]:
        return self.device if (self.dist.enabled and self.device.type == "cuda") else None

    def _train_epoch(self, pos: Position):
        r = self.recipe
        self.sampler.set_epoch(pos.epoch)
        self.net.train()
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss_sum, seen, skipped, data_time, n_steps = 0.0, 0, 0, 0.0, 0
        t_epoch = time.perf_counter()
        progress = self.log.progress(total=self.steps_per_epoch, initial=pos.step, desc=f"epoch {pos.epoch}")
        t_data = time.perf_counter()
        for batch in self.train_loader:
            if pos.step >= self.steps_per_epoch:
                break
            images, targets, n_bad = batch[0], batch[1], int(batch[2])
            data_time += time.perf_counter() - t_data
            skipped += n_bad
            loss_value = self.train_step(images, targets, pos.global_step)
            pos.step += 1
            pos.global_step += 1
            n = int(images.shape[0])
            seen += n
            n_steps += 1
            nonfinite = loss_value is not None and not math.isfinite(loss_value)
            stop, bad = distributed.all_reduce_sum(
                [float(self.stop.requested), float(nonfinite)], self._reduce_device()
            )
            if bad:
                last = self.ckpt.last_files()
                self.log.error(
                    "non-finite loss ({}) at epoch {} step {}; stopping. The last good checkpoint is {}".format(
                        loss_value, pos.epoch, pos.step, last[0] if last else "(none yet)"
                    )
                )
                progress.close()
                return "nonfinite", {}
            if loss_value is not None:
                loss_sum += loss_value * n
            if self.is_main:
                append_jsonl(
                    self.run_dir / "steps.jsonl",
                    dict(
                        epoch=pos.epoch,
                        step=pos.step,
                        global_step=pos.global_step,
                        loss=loss_value,
                        lr=lr,
                        batch=n,
                        skipped=n_bad,
                    ),
                )
            progress.update(loss=loss_value, lr=lr, img_s=seen / max(time.perf_counter() - t_epoch, 1e-9))
            if (
                r.train.checkpoint_every_steps
                and pos.global_step % r.train.checkpoint_every_steps == 0
                and pos.step < self.steps_per_epoch
            ):
                rngs = distributed.all_gather_object(rng_state())
                if self.is_main:
                    self.ckpt.save_last(self._state(pos, rngs), pos.epoch, pos.step)
            if stop:
                progress.close()
                return "stop", {}
            t_data = time.perf_counter()
        progress.close()
        devices.synchronize(self.device)
        elapsed = time.perf_counter() - t_epoch
        totals = distributed.all_reduce_sum([loss_sum, float(seen), float(skipped)], self._reduce_device())
        world = self.dist.world_size
        return "done", dict(
            global_step=pos.global_step,
            lr=lr,
            train_loss=totals[0] / max(totals[1], 1.0),
            img_s_per_device=seen / elapsed if elapsed else 0.0,
            img_s_total=totals[1] / elapsed if elapsed else 0.0,
            data_time_share=data_time / elapsed if elapsed else 0.0,
            peak_mem_mb=devices.peak_memory_mb(self.device),
            epoch_time_s=elapsed,
            skipped_images=int(totals[2]),
            world_size=world,
            precision=self.precision,
            steps=n_steps,
        )

    def _evaluate_all(self) -> Dict[str, object]:
        from timm.utils import distribute_bn

        if self.dist.enabled and self.recipe.train.dist_bn:
            distribute_bn(self.model, self.dist.world_size, self.recipe.train.dist_bn == "reduce")
        out = {}
        m = evaluate(self.model, self.val_loader, self.device, self.precision, self.recipe.model.channels_last)
        out.update(top1=m["top1"], top5=m["top5"], eval_loss=m["loss"])
        if self.ema is not None:
            e = evaluate(self.ema.module, self.val_loader, self.device, self.precision, self.recipe.model.channels_last)
            out.update(ema_top1=e["top1"], ema_top5=e["top5"], ema_eval_loss=e["loss"])
        return out

    def _pick_metric(self, record: Dict[str, object]) -> float:
        key = {"top1": "top1", "top5": "top5", "loss": "eval_loss"}[self.recipe.train.eval_metric]
        if self.ema is not None and self.recipe.train.eval_ema:
            key = "ema_" + key
        return float(record[key])

    def _save_epoch_end(self, pos: Position, metric: float, rngs: List[Dict[str, object]]) -> None:
        better = self.best_metric is None or (
            metric > self.best_metric if self.recipe.train.eval_metric != "loss" else metric < self.best_metric
        )
        if better:
            self.best_metric = metric
        state = self._state(pos, rngs)
        state["metric_source"] = "ema" if (self.ema is not None and self.recipe.train.eval_ema) else "model"
        state["eval_metric"] = metric
        self.ckpt.save_last(state, pos.epoch, 0)
        self.ckpt.save_best(state, pos.epoch - 1, metric)

    def _save_and_requeue(self, pos: Position, already_saved: bool = False) -> int:
        if not already_saved:
            rngs = distributed.all_gather_object(rng_state())
            if self.is_main:
                self.ckpt.save_last(self._state(pos, rngs), pos.epoch, pos.step)
        distributed.barrier()
        if self.is_main:
            self.stop.clear_stop_file()
        self.log.info(
            f"preempted ({self.stop.received}): checkpoint at epoch {pos.epoch} step {pos.step} saved; "
            f"exiting {REQUEUE_EXIT_CODE} for requeue"
        )
        return REQUEUE_EXIT_CODE

    @staticmethod
    def _epoch_line(rec: Dict[str, object]) -> str:
        parts = [
            "epoch {}".format(rec["epoch"]),
            "loss {:.4f}".format(rec["train_loss"]),
            "lr {:.3g}".format(rec["lr"]),
            "top1 {:.2f}".format(rec["top1"]),
            "top5 {:.2f}".format(rec["top5"]),
        ]
        if "ema_top1" in rec:
            parts.append("ema top1 {:.2f}".format(rec["ema_top1"]))
        parts += ["{:.1f} img/s".format(rec["img_s_total"]), "{:.1f}s".format(rec["epoch_time_s"])]
        if rec.get("skipped_images"):
            parts.append("{} images skipped".format(rec["skipped_images"]))
        return ", ".join(parts)


def train(
    recipe: Recipe,
    run_dir: Path,
    resume: str = "",
    recipe_name: str = "recipe",
    argv: Optional[List[str]] = None,
    recipe_file: Optional[Path] = None,
) -> int:
    return Trainer(recipe, run_dir, resume, recipe_name, argv, recipe_file).run()
