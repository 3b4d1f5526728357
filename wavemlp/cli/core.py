"""What every ``wmlp`` command shares: the one error path, the recipe options, renamed-flag aliases.

Imports click and the standard library only; the commands import the rest, heavy parts inside their bodies.
"""

import os
import sys
from typing import Optional, Sequence

import click

from ..errors import KitError

# One rule for every command that takes a recipe: --recipe, else $WMLP_RECIPE, else the seed's own run.
DEFAULT_RECIPE = "imagenet"
RECIPE_ENV = "WMLP_RECIPE"
EXIT_USAGE = 2
HEAVY = ("torch", "torchvision", "timm")


class UserError(click.ClickException):
    """A KitError on its way out; ``KitGroup.main`` prints it as one line, exit status 2 (as a mistyped flag)."""

    exit_code = EXIT_USAGE


def _one_line(exc: click.ClickException) -> str:
    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        text += " (see '{} --help')".format(ctx.command_path)
    return text


class KitGroup(click.Group):
    """The ``wmlp`` group: KitErrors raised anywhere below become one line, and so do click's own errors,
    whether ``wmlp`` runs as a program or under click's test runner."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KitError as exc:
            raise UserError(str(exc)) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in HEAVY:
                raise
            raise UserError(
                "'wmlp {}' needs torch, torchvision and timm, which this Python cannot import ({}); run it in the "
                "kit's image or in a venv made by `make install`".format(ctx.invoked_subcommand, exc)
            ) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("wmlp: aborted", err=True)
            code = 130
        except click.ClickException as exc:
            click.echo("wmlp: error: {}".format(_one_line(exc)), err=True)
            code = exc.exit_code
        else:
            if not standalone_mode:
                return rv
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        raise SystemExit(code)


class AliasedOption(click.Option):
    """An option that also answers to old spellings, kept out of --help (renamed flags live one release)."""

    def __init__(self, *args, aliases: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.aliases = list(aliases)

    def add_to_parser(self, parser, ctx) -> None:
        shown = self.opts
        self.opts = shown + self.aliases
        try:
            super().add_to_parser(parser, ctx)
        finally:
            self.opts = shown


def option(*names, aliases: Sequence[str] = (), **kwargs):
    """click.option with hidden ``aliases`` for the names a flag had before."""
    return click.option(*names, cls=AliasedOption, aliases=aliases, **kwargs)


def recipe_options(func):
    """``--recipe/-r`` (default rule above) and ``--set KEY=VALUE`` (repeatable), the same everywhere."""
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a recipe value, e.g. --set train.epochs=1 (repeatable; the value is read as YAML).",
    )(func)
    return click.option(
        "--recipe",
        "-r",
        "recipe",
        default=DEFAULT_RECIPE,
        envvar=RECIPE_ENV,
        show_default=True,
        show_envvar=True,
        help="Shipped recipe name (wmlp recipes list) or a recipe file.",
    )(func)


def output_option(help: str, default=None, **kwargs):
    """``-o/--output`` in every command that writes a file or folder (``--out`` was its old spelling)."""
    return option("-o", "--output", "output", default=default, aliases=["--out"], help=help, **kwargs)


def device_option(func):
    return click.option(
        "--device", default="auto", show_default=True, type=click.Choice(["auto", "cuda", "cpu"]),
        help="auto: the accelerator when there is one (CUDA or CoreX), else the CPU.",
    )(func)


def img_size_option(help: str = "Square input size, divisible by 32 [default: the recipe's].", default=None, **kwargs):
    return option("--img-size", default=default, type=click.IntRange(32), callback=_divisible_by_32, help=help,
                  **kwargs)


def _divisible_by_32(ctx, param, value: Optional[int]):
    if value is not None and value % 32:
        raise click.BadParameter("{} is not divisible by 32".format(value), ctx=ctx, param=param)
    return value


def write_text(path: str, text: str) -> None:
    """A result file the user asked for; its folder is made, an unwritable place is one line."""
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise KitError("{}: cannot write ({})".format(path, exc.strerror)) from None


site_option = click.option(
    "--site",
    metavar="NAME|FILE",
    help="Site file: partition, account, runtime, mounts, network, ... [default: $WMLP_SITE; "
    "names are looked up in $WMLP_SITES and ~/.config/wmlp/sites]",
)
