"""``wmlp sites``: the site files this user can name with ``--site``, one shown, one checked. Torch-free."""

import dataclasses

import click
import yaml

from ..recipe import available_sites, load_site
from ..recipe.site import site_dirs


@click.group()
def sites() -> None:
    """Site files: a cluster's partition, account, container runtime, mounts, network (`--site NAME|FILE`)."""


@sites.command("list")
def sites_list() -> None:
    """Name, file and description of every site found ($WMLP_SITES, then ~/.config/wmlp/sites)."""
    found = available_sites()
    if not found:
        click.echo("no site files in {}".format(", ".join(str(d) for d in site_dirs())), err=True)
        return
    width = max(len(name) for name in found)
    for name, path in found.items():
        description = " ".join(load_site(str(path)).site.description.split())
        click.echo("{}  {}  {}".format(name.ljust(width), path, description).rstrip())


@sites.command("show")
@click.argument("site", metavar="NAME|FILE")
@click.option("--resolved", is_flag=True, help="Every value the site sets, defaults included.")
def sites_show(site: str, resolved: bool) -> None:
    """A site file as written, or with --resolved every value (validated)."""
    loaded = load_site(site)
    if not resolved:
        click.echo(loaded.path.read_text(encoding="utf-8"), nl=False)
        return
    click.echo("# site {} ({})".format(loaded.name, loaded.path))
    click.echo(yaml.safe_dump(dataclasses.asdict(loaded.site), sort_keys=False, default_flow_style=None), nl=False)


@sites.command("check")
@click.argument("file")
def sites_check(file: str) -> None:
    """Validate a site file: prints 'ok' or the one-line error (exit status 2)."""
    loaded = load_site(file)
    click.echo("ok: {}".format(loaded.path))
