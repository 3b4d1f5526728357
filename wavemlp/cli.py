"""``wmlp``: the command line. A thin face: each command parses flags and calls a library function.

Heavy imports (torch, timm) happen inside the commands that need them, so the commands that only
render scripts start fast and work on a login node without torch.
"""

import json
import sys

import click

from . import __version__
from .errors import KitError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="wmlp")
def cli() -> None:
    """Train, evaluate, profile and launch Wave-MLP (CVPR 2022) on CUDA and Iluvatar CoreX clusters."""


@cli.command()
@click.option(
    "--model", "model", default="all", show_default=True, help="A variant name (WaveMLP_S, wavemlp_s) or 'all'."
)
@click.option("--img-size", default=224, show_default=True, type=click.IntRange(32), help="Square input size.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def profile(model: str, img_size: int, fmt: str) -> None:
    """Params and MACs per variant (thop and torchprofile) beside the paper's figures."""
    from .profiling import format_table, profile_all

    if img_size % 32:
        raise click.BadParameter("must be divisible by 32", param_hint="--img-size")
    rows = profile_all(None if model == "all" else [model], img_size=img_size)
    click.echo(json.dumps(rows, indent=2) if fmt == "json" else format_table(rows))


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="wmlp", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("wmlp: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KitError as exc:
        click.echo(f"wmlp: error: {exc}", err=True)
        sys.exit(2)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
