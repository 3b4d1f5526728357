"""``wmlp train``, ``wmlp eval``, ``wmlp smoke`` and ``wmlp doctor``: the commands that run the model.

torch loads inside each command, never at import: ``wmlp --help`` stays fast and works without it.
"""

import json
import os
import sys
import time
from pathlib import Path

import click

from .core import device_option, img_size_option, recipe_options, write_text


def default_run_dir(recipe, recipe_name: str) -> Path:
    """runs/<experiment>, else runs/<recipe>-<job id or time>: the same on every rank of one launch."""
    if recipe.train.experiment:
        name = recipe.train.experiment
    else:
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        name = "{}-{}".format(recipe_name, job if job and job != "none" else time.strftime("%Y%m%d-%H%M%S"))
    return Path(recipe.train.output) / name


@click.command()
@recipe_options
@click.option("--data", "data_path", default=None, help="Dataset root (overrides data.path).")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder [default: train.output/train.experiment, or <recipe>-<job id|time>].",
)
@click.option(
    "--resume",
    default=None,
    metavar="auto|none|FILE",
    help="auto: newest valid checkpoint in the run folder; none: fresh [default: train.resume].",
)
def train(recipe, sets, data_path, run_dir, resume) -> None:
    """Train a model from a recipe. Exits 75 after a preemption checkpoint (requeue and --resume auto).

    Exit status: 0 done, 2 bad input, 3 non-finite loss, 75 stopped with a checkpoint; each rank also
    records it in <run folder>/.exit/rank<R> for launch scripts (see wavemlp.engine.signals).
    """
    from ..engine.signals import BAD_INPUT_EXIT_CODE, record_exit
    from ..errors import KitError

    rank = _rank_from_environment()
    try:
        from ..engine.trainer import train as run_training
        from ..recipe import load_recipe

        overrides = list(sets) + (["data.path={}".format(data_path)] if data_path else [])
        loaded = load_recipe(recipe, overrides)
        run_dir = run_dir or default_run_dir(loaded.recipe, loaded.name)
        resume = resume if resume is not None else loaded.recipe.train.resume
        code = run_training(loaded.recipe, run_dir, resume=resume, recipe_name=loaded.name, argv=sys.argv,
                            recipe_file=loaded.chain[-1])
    except KitError:
        record_exit(run_dir, rank, BAD_INPUT_EXIT_CODE)  # KitGroup prints it and exits with that status
        raise
    record_exit(run_dir, rank, code)
    sys.exit(code)


def _rank_from_environment() -> int:
    """This process's global rank as wavemlp.engine.distributed.from_environment finds it, without torch."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"])
    return 0


@click.command("eval")
@click.option("--model", "model_name", default=None,
              help="Variant name, e.g. WaveMLP_T_dw [default: the architecture a kit checkpoint records].")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint file.")
@click.option("--data", "data_path", required=True, type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--use-ema", is_flag=True, help="Evaluate the EMA weights of a training checkpoint.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(0))
@device_option
@img_size_option(help="Override the input size (divisible by 32).")
@click.option("--crop-pct", default=None, type=click.FloatRange(0.1, 1.0), help="Override the crop fraction.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Also write the result here.")
def eval_cmd(
    model_name, checkpoint, data_path, split, batch_size, use_ema, workers, device, img_size, crop_pct, json_out
) -> None:
    """Top-1/top-5 of a checkpoint (released or trained) with the model's preprocessing."""
    from ..engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(
        model_name,
        checkpoint,
        data_path,
        split=split,
        batch_size=batch_size,
        use_ema=use_ema,
        workers=workers,
        device=device,
        img_size=img_size,
        crop_pct=crop_pct,
    )
    click.echo(
        "{} ({} weights) on {} [{} images]: top-1 {:.2f}  top-5 {:.2f}  loss {:.4f}".format(
            m["model"], m["weights"], Path(data_path) / split, m["count"], m["top1"], m["top5"], m["loss"]
        )
    )
    if json_out:
        write_text(json_out, json.dumps(m, indent=2))


@click.command()
@recipe_options
@device_option
@click.option("--batch-size", default=2, show_default=True, type=click.IntRange(1))
@img_size_option()
def smoke(recipe, sets, device, batch_size, img_size) -> None:
    """One real training step, a checkpoint round trip and an eval step; prints a JSON verdict."""
    from ..engine.smoke import run_smoke
    from ..recipe import load_recipe

    verdict = run_smoke(load_recipe(recipe, sets).recipe, device=device, batch_size=batch_size, img_size=img_size)
    click.echo(json.dumps({k: v for k, v in verdict.items() if k != "traceback"}, indent=2))
    if not verdict["ok"]:
        click.echo(verdict.get("traceback", ""), err=True)
        sys.exit(1)


@click.command()
@click.option("--data", "data_path", default=None, type=click.Path(file_okay=False), help="Check a data set too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Old spelling of --format json.")
def doctor(data_path, fmt, as_json) -> None:
    """Environment report: Python, torch, timm, vendor, devices, SDK, NCCL, smi tools, data set."""
    from ..engine.doctor import diagnose, format_report

    report = diagnose(data_path)
    click.echo(json.dumps(report, indent=2) if (as_json or fmt == "json") else "\n".join(format_report(report)))
    failed = [split for split, s in (report.get("data") or {}).items() if isinstance(s, dict) and "error" in s]
    if failed:
        # The report is printed whole; the status tells a script that the data set is not usable.
        click.echo("wmlp: doctor: the data check failed ({})".format(", ".join(failed)), err=True)
        sys.exit(1)
