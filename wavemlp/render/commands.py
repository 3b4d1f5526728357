"""``wmlp recipes``, ``wmlp launch`` and ``wmlp slurm``: the command-line face of the render package.

Added to the ``wmlp`` group by ``wavemlp/cli.py``. No torch here: these run on login nodes.
Runs inside images too: Python 3.8 syntax.
"""

import functools
import sys
from pathlib import Path

import click

from ..errors import KitError
from ..recipe import dump_recipe, load_recipe, seed_flag_table, shipped_recipes
from ..recipe.loader import find_recipe
from .launch import dry_run_text, plan_launch, render_launch, run_script, write_script
from .sbatch import RUNTIMES, SlurmOptions, render_sbatch, submit
from .target import load_target

# The seed's own run (8 devices x 128): what `wmlp launch --nodes 1 --gpus 8` means without --recipe.
DEFAULT_RECIPE = "imagenet"
RECIPE_ENV = "WMLP_RECIPE"


class KitFailure(click.ClickException):
    """A KitError shown the way ``wmlp`` shows every user error: one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo("wmlp: error: {}".format(self.message), err=True)


def kit_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KitError as exc:
            raise KitFailure(str(exc)) from None

    return wrapper


def recipe_option(func):
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a recipe value (e.g. train.epochs=1); repeatable. Also passed on to the trainer.",
    )(func)
    return click.option(
        "--recipe",
        "-r",
        default=DEFAULT_RECIPE,
        envvar=RECIPE_ENV,
        show_default=True,
        show_envvar=True,
        help="Shipped recipe name (see `wmlp recipes list`) or a recipe file.",
    )(func)


# --------------------------------------------------------------------------------------- recipes


@click.group()
def recipes() -> None:
    """The shipped recipes: list them, show one, check a file, print the seed-flag table."""


@recipes.command("list")
@kit_errors
def recipes_list() -> None:
    """Name and description of every shipped recipe."""
    rows = []
    for name in shipped_recipes():
        try:
            description = load_recipe(name).recipe.description
        except KitError as exc:
            description = "(does not load: {})".format(exc)
        rows.append((name, " ".join(description.split())))
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        click.echo("{}  {}".format(name.ljust(width), description).rstrip())


@recipes.command("show")
@click.argument("name")
@click.option("--resolved", is_flag=True, help="The fully merged recipe (extends chain and --set applied).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value (with --resolved).")
@kit_errors
def recipes_show(name: str, resolved: bool, sets) -> None:
    """A recipe as its file says, or with --resolved every value it runs with."""
    if not resolved:
        if sets:
            raise KitFailure("--set needs --resolved")
        click.echo(find_recipe(name).read_text(encoding="utf-8"), nl=False)
        return
    loaded = load_recipe(name, list(sets))
    chain = " <- ".join(p.name for p in reversed(loaded.chain))
    click.echo("# {} resolved: {}{}".format(loaded.name, chain, "".join(" --set " + s for s in sets)))
    click.echo(dump_recipe(loaded.recipe), nl=False)


@recipes.command("check")
@click.argument("file")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Check with these overrides applied.")
def recipes_check(file: str, sets) -> None:
    """Validate a recipe: prints 'ok' or the one-line error (exit status 2)."""
    try:
        loaded = load_recipe(file, list(sets))
    except KitError as exc:
        click.echo("wmlp: error: {}".format(exc), err=True)
        sys.exit(2)
    click.echo("ok: {} ({})".format(loaded.chain[-1], " <- ".join(p.name for p in reversed(loaded.chain))))


@recipes.command("flags")
def recipes_flags() -> None:
    """The seed's train.py flags and the recipe keys that stand for them, as a Markdown table."""
    click.echo("| seed flag | recipe key | default |")
    click.echo("|---|---|---|")
    for flag, key, default in seed_flag_table():
        click.echo("| `{}` | `{}` | `{}` |".format(flag, key, default))


# ---------------------------------------------------------------------------------------- launch


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@recipe_option
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes of the job.")
@click.option(
    "--gpus",
    type=click.IntRange(1),
    help="Processes on this node, one per device (recipe: hardware.devices_per_node); CPU processes on cpu.",
)
@click.option("--node-rank", default=0, show_default=True, type=click.IntRange(0), help="This node's rank.")
@click.option(
    "--master-addr", envvar="MASTER_ADDR", help="Address of the rank-0 node (required with --nodes > 1)."
)
@click.option("--master-port", type=click.IntRange(1, 65535), help="Rendezvous port (recipe: cluster.master_port).")
@click.option("--run-dir", help="Run folder (default: <train.output>/<train.experiment or recipe name>).")
@click.option("--dry-run", is_flag=True, help="Print the script and the command that would run it; run nothing.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the script to this file; run nothing.")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
@kit_errors
def launch(recipe, sets, nodes, gpus, node_rank, master_addr, master_port, run_dir, dry_run, output, train_args):
    """Train on this node with torchrun (one process per device; run it on every node with its --node-rank).

    Arguments after `--` go to `wmlp train`. The exit status is the launcher's.
    """
    if dry_run and output:
        raise KitFailure("--dry-run and -o/--output exclude each other")
    target = load_target(recipe, sets)
    plan = plan_launch(target, nodes, gpus, node_rank, master_addr, master_port, run_dir, train_args)
    if dry_run:
        click.echo(dry_run_text(plan), nl=False)
        return
    if output:
        write_script(render_launch(plan), Path(output))
        click.echo("wrote {}".format(output), err=True)
        return
    click.echo("wmlp launch: {} (log: {}/logs/node{}.log)".format(plan.script_path, plan.run_dir, node_rank), err=True)
    sys.exit(run_script(plan))


# ----------------------------------------------------------------------------------------- slurm


def slurm_options(func):
    options = [
        recipe_option,
        click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes of the job."),
        click.option(
            "--gpus-per-node",
            type=click.IntRange(1),
            help="Devices per node, one process each (recipe: hardware.devices_per_node); processes on cpu.",
        ),
        click.option("--time", help="Time limit (recipe: cluster.time)."),
        click.option("--partition", help="Partition (recipe: cluster.partition)."),
        click.option("--account", help="Account (recipe: cluster.account)."),
        click.option("--qos", help="QOS (recipe: cluster.qos)."),
        click.option("--constraint", help="Node features, e.g. 'a100|h100' (recipe: cluster.constraint)."),
        click.option("--container-image", help="Image for pyxis, apptainer or docker (recipe: image.name:image.tag)."),
        click.option(
            "--container-mounts",
            multiple=True,
            metavar="SRC:DST[,SRC:DST]",
            help="Extra mounts; repeatable (recipe: cluster.container_mounts).",
        ),
        click.option(
            "--runtime",
            type=click.Choice(RUNTIMES),
            help="Container runtime on the nodes (recipe: cluster.container_runtime).",
        ),
        click.option("--run-dir", help="Run folder (default: <train.output>/<experiment or recipe>-<job id>)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _render(recipe, sets, **flags) -> str:
    opts = SlurmOptions(
        nodes=flags["nodes"],
        gpus_per_node=flags["gpus_per_node"],
        time=flags["time"],
        partition=flags["partition"],
        account=flags["account"],
        qos=flags["qos"],
        constraint=flags["constraint"],
        container_image=flags["container_image"],
        container_mounts=tuple(flags["container_mounts"]),
        runtime=flags["runtime"],
        run_dir=flags["run_dir"],
    )
    return render_sbatch(load_target(recipe, sets), opts)


@click.group()
def slurm() -> None:
    """Slurm batch scripts: render one, or render and submit it."""


@slurm.command("render")
@slurm_options
@click.option("-o", "--output", default="-", show_default=True, help="File to write ('-': standard output).")
@kit_errors
def slurm_render(recipe, sets, output, **flags) -> None:
    """Write the batch script of a recipe (sbatch it as it is)."""
    text = _render(recipe, sets, **flags)
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_script(text, Path(output))
        click.echo("wrote {}".format(output), err=True)


@slurm.command("submit")
@slurm_options
@click.option("-o", "--output", help="Also keep the script in this file (the job keeps a copy in its run folder).")
@kit_errors
def slurm_submit(recipe, sets, output, **flags) -> None:
    """Render the batch script, submit it with `sbatch --parsable`, print the job id."""
    import tempfile

    text = _render(recipe, sets, **flags)
    if output:
        click.echo(submit(str(write_script(text, Path(output)))))
        return
    with tempfile.TemporaryDirectory(prefix="wmlp-sbatch-") as tmp:
        click.echo(submit(str(write_script(text, Path(tmp) / "job.sbatch"))))
