"""``wmlp image build|smoke``: the container image of a target recipe. Torch-free; docker loads on use."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from ..errors import KitError
from ..vendors import dockerfiles
from .core import AliasedOption


class _TargetOption(AliasedOption):
    """Its help lists the image targets, read from the recipes only when help is shown: every other start
    of ``wmlp`` (each torchrun worker among them) would pay for reading them all."""

    def get_help_record(self, ctx):
        from ..image.targets import image_targets

        self.help = "Image target, a shipped recipe with an image section: {}.".format(", ".join(image_targets()))
        return super().get_help_record(ctx)


def _target_option(func):
    return click.option("--target", "target", cls=_TargetOption, required=True, aliases=["--gpu"])(func)


@click.group()
def image() -> None:
    """Container images: build a target's image (CUDA or CoreX base) and smoke-test it."""


@image.command("build")
@_target_option
@click.option("--base", default=None, help="Base image [default: the target recipe's image.base].")
@click.option("--tag", default=None, help="Image tag [default: the recipe's image.name:image.tag].")
@click.option("--dockerfile", type=click.Choice(dockerfiles()), default=None,
              help="[default: the recipe's image.dockerfile].")
@click.option("--extra-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="PEM file of extra CA certificates for pip during the build (sites behind TLS proxies).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="Extra docker build argument.")
@click.option("--context", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Build context [default: this checkout, or the installed kit's own files].")
@click.option("--print", "print_only", is_flag=True, help="Print the equivalent docker build command instead.")
def image_build(target, base, tag, dockerfile, extra_ca, build_args, context, print_only) -> None:
    """Build the image of a target through the Docker engine ($DOCKER_HOST), streaming its output."""
    from ..image.build import ImageBuildError, build_image, docker_build_command, format_command
    from ..image.context import build_context
    from ..image.targets import check_target

    recipe = check_target(target, "--target").recipe  # Dockerfile and base: the library fills them the same way
    tag = tag or ("{}:{}".format(recipe.image.name, recipe.image.tag) if recipe.image.tag else None)
    context = context or build_context()
    args = {}
    for item in build_args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter("expected KEY=VALUE, got {!r}".format(item), param_hint="--build-arg")
        args[key] = value
    args.setdefault("RECIPE", target)
    try:
        if print_only:
            cmd = docker_build_command(target, dockerfile, base, tag, context, args, extra_ca)
            click.echo(format_command(cmd, extra_ca))
            return
        image_id = build_image(target, dockerfile, base, tag, context, args, extra_ca, stream=click.echo)
    except ImageBuildError as exc:
        raise KitError(str(exc)) from None
    click.echo("built {} ({})".format(tag or target, image_id))


def image_ref(target: str) -> str:
    from ..image.targets import check_target

    img = check_target(target, "--target").recipe.image
    return "{}:{}".format(img.name, img.tag or target)


@image.command("smoke")
@_target_option
@click.option("--docker-arg", "docker_args", multiple=True, help="Extra docker run argument (device access).")
def image_smoke(target, docker_args) -> None:
    """Run `wmlp smoke --recipe TARGET` inside the target's built image; exits with its status."""
    if shutil.which("docker") is None:
        raise KitError("docker: the docker client is not installed (needed to run the image)")
    args = [a for item in docker_args for a in shlex.split(item)]
    cmd = ["docker", "run", "--rm", "--network", "host", *args, image_ref(target), "smoke", "--recipe", target]
    click.echo("+ " + " ".join(shlex.quote(c) for c in cmd), err=True)
    sys.exit(subprocess.run(cmd).returncode)
