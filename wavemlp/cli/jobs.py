"""``wmlp launch`` (torchrun on this node) and ``wmlp slurm render|submit``. Torch-free: login nodes run them."""

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from ..render.launch import dry_run_text, plan_launch, recipe_beside, run_script, write_job, write_script
from ..render.sbatch import RUNTIMES, SlurmOptions, render_sbatch, submit_parsable
from ..render.target import Target, load_target, missing_paths
from .core import option, recipe_options, site_option
from .slurm_jobs import COMMANDS as _JOB_COMMANDS
from .slurm_jobs import record_job

_GPUS_HELP = "Devices per node, one process each [default: the recipe's hardware.devices_per_node]; " \
             "processes on the cpu recipe."


@click.command()
@recipe_options
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes of the job.")
@click.option("--gpus", type=click.IntRange(1), help=_GPUS_HELP)
@click.option("--node-rank", default=0, show_default=True, type=click.IntRange(0), help="This node's rank.")
@click.option(
    "--master-addr", envvar="MASTER_ADDR", help="Address of the rank-0 node (required with --nodes > 1)."
)
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    help="Rendezvous port (recipe: cluster.master_port). With --nodes 1 and no port, torchrun picks a free one.",
)
@click.option("--run-dir", help="Run folder (default: <train.output>/<train.experiment or recipe name>).")
@click.option("--dry-run", is_flag=True, help="Print the script and the command that would run it; run nothing.")
@option("-o", "--output", type=click.Path(dir_okay=False), help="Write the script to this file; run nothing.")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def launch(recipe, sets, nodes, gpus, node_rank, master_addr, master_port, run_dir, dry_run, output, train_args):
    """Train on this node with torchrun (one process per device; run it on every node with its --node-rank).

    Arguments after `--` go to `wmlp train`. The exit status is the trainers' (0, 2 bad input, 3 non-finite
    loss, 75 stopped with a checkpoint), else torchrun's. TERM or Ctrl-C makes the trainers checkpoint and stop.
    """
    if dry_run and output:
        raise click.UsageError("--dry-run and -o/--output exclude each other")
    target = load_target(recipe, sets)
    plan = plan_launch(target, nodes, gpus, node_rank, master_addr, master_port, run_dir, train_args)
    if dry_run:
        click.echo(dry_run_text(plan), nl=False)
        return
    if output:
        write_job(plan, Path(output))
        click.echo("wrote {} (and the resolved recipe beside it)".format(output), err=True)
        return
    click.echo("wmlp launch: {} (log: {}/logs/node{}.log)".format(plan.script_path, plan.run_dir, node_rank), err=True)
    sys.exit(run_script(plan))


def slurm_options(func):
    options = [
        recipe_options,
        click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes of the job."),
        option("--gpus", "gpus", type=click.IntRange(1), aliases=["--gpus-per-node"], help=_GPUS_HELP),
        site_option,
        click.option("--time", help="Time limit (recipe: cluster.time)."),
        click.option("--partition", help="Partition (site: partition)."),
        click.option("--account", help="Account (site: account)."),
        click.option("--qos", help="QOS (site: qos)."),
        click.option("--constraint", help="Node features, e.g. 'a100|h100' (site: constraint)."),
        click.option("--exclusive", is_flag=True, default=False, help="Whole nodes (site: exclusive)."),
        click.option("--mem", help="Memory per node, e.g. 500G; 0 = all (recipe: cluster.mem; default: not asked)."),
        click.option(
            "--sbatch-arg",
            "sbatch_args",
            multiple=True,
            metavar="--NAME[=VALUE]",
            help="Another sbatch option, e.g. --sbatch-arg=--reservation=x; repeatable (site: sbatch_args).",
        ),
        click.option(
            "--container-image",
            help="Image for pyxis, apptainer or docker (site: image_prefix + recipe: image.name:image.tag).",
        ),
        click.option(
            "--container-mounts",
            multiple=True,
            metavar="SRC:DST[,SRC:DST]",
            help="Extra mounts; repeatable (site: mounts).",
        ),
        click.option(
            "--runtime",
            type=click.Choice(RUNTIMES),
            help="Container runtime on the nodes (site: runtime; default none).",
        ),
        click.option("--run-dir", help="Run folder (default: <train.output>/<experiment or recipe>-<job id>)."),
    ]
    for decorate in reversed(options):
        func = decorate(func)
    return func


def _render(target: Target, gpus, container_mounts, sbatch_args, script: Optional[Path], **flags) -> str:
    """The script to be kept at ``script``; the resolved recipe it trains from is written beside it
    (for a script printed to standard output: in this folder, named by recipe and content)."""
    if script is None:
        digest = hashlib.sha256(target.resolved_text().encode("utf-8")).hexdigest()[:10]
        recipe_path = Path("wmlp-{}-{}.recipe.yaml".format(target.name, digest)).absolute()
    else:
        recipe_path = recipe_beside(script)
    opts = SlurmOptions(gpus_per_node=gpus, container_mounts=tuple(container_mounts), recipe_path=str(recipe_path),
                        sbatch_args=tuple(sbatch_args), **flags)
    text = render_sbatch(target, opts)
    for line in missing_paths(target.recipe):
        click.echo("wmlp: warning: " + line, err=True)
    target.write_resolved(recipe_path)
    click.echo("wrote the resolved recipe {}".format(recipe_path), err=True)
    return text


@click.group()
def slurm() -> None:
    """Slurm batch scripts: render one, or render and submit it."""


@slurm.command("render")
@slurm_options
@option("-o", "--output", default="-", show_default=True, help="File to write ('-': standard output).")
def slurm_render(recipe, sets, site, output, **flags) -> None:
    """Write the batch script of a recipe (sbatch it as it is)."""
    text = _render(load_target(recipe, sets, site), script=None if output == "-" else Path(output), **flags)
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_script(text, Path(output))
        click.echo("wrote {}".format(output), err=True)


@slurm.command("submit")
@slurm_options
@option("-o", "--output", help="Also keep the script in this file (the job keeps a copy in its run folder).")
def slurm_submit(recipe, sets, site, output, **flags) -> None:
    """Render the batch script, submit it with `sbatch --parsable`, print the job id."""
    target = load_target(recipe, sets, site)
    if output:
        script = Path(output)
    else:
        # Kept with the run folders, not in a temporary folder: the job reads the recipe beside it.
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        script = Path(target.recipe.train.output) / "jobs" / "{}-{}-{}.sbatch".format(target.name, stamp, os.getpid())
    text = _render(target, script=script, **flags)
    parsable = submit_parsable(str(write_script(text, script)))
    record_job(target, flags["run_dir"], parsable, script, recipe_beside(script), flags["sbatch_args"])
    click.echo(parsable.split(";", 1)[0])


for _command in _JOB_COMMANDS:
    slurm.add_command(_command)
