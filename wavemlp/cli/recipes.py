"""``wmlp recipes``: list, show, check the recipes, and print the seed-flag table. Torch-free."""

import click

from ..recipe import dump_recipe, find_recipe, load_recipe, seed_flag_table, shipped_recipes
from ..recipe.loader import RecipeError
from ..render.target import check_env


@click.group()
def recipes() -> None:
    """The shipped recipes: list them, show one, check a file, print the seed-flag table."""


@recipes.command("list")
def recipes_list() -> None:
    """Name and description of every shipped recipe."""
    rows = []
    for name in shipped_recipes():
        try:
            description = load_recipe(name).recipe.description
        except RecipeError as exc:
            description = "(does not load: {})".format(exc)
        rows.append((name, " ".join(description.split())))
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        click.echo("{}  {}".format(name.ljust(width), description).rstrip())


@recipes.command("show")
@click.argument("name")
@click.option("--resolved", is_flag=True, help="The fully merged recipe (extends chain and --set applied).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value (with --resolved).")
def recipes_show(name: str, resolved: bool, sets) -> None:
    """A recipe as its file says, or with --resolved every value it runs with."""
    if not resolved:
        if sets:
            raise click.UsageError("--set needs --resolved")
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
    loaded = load_recipe(file, list(sets))
    check_env(loaded.recipe.env)
    names = "model and optimizer names checked"
    try:
        from ..engine.components import check_names
    except ImportError as exc:  # a login node without torch: the names wait for the run
        names = "model and optimizer names not checked ({} is not installed here)".format(exc.name or "torch")
    else:
        check_names(loaded.recipe)
    click.echo("ok: {} ({}; {})".format(loaded.chain[-1], " <- ".join(p.name for p in reversed(loaded.chain)), names))


@recipes.command("flags")
def recipes_flags() -> None:
    """The seed's train.py flags and the recipe keys that stand for them, as a Markdown table."""
    click.echo("| seed flag | recipe key | default |")
    click.echo("|---|---|---|")
    for flag, key, default in seed_flag_table():
        click.echo("| `{}` | `{}` | `{}` |".format(flag, key, default))
