"""``wmlp data``: the embedded demo data set."""

import click

from .core import option, output_option


@click.group()
def data() -> None:
    """Data sets: build the embedded demo data."""


@data.command("demo")
@output_option("Folder to write the data set into.", default="data/digits", show_default=True,
               type=click.Path(file_okay=False))
@option("--img-size", default=32, show_default=True, type=click.IntRange(8, 1024), aliases=["--image-size"],
        help="Side of the square JPEGs.")
def data_demo(output: str, img_size: int) -> None:
    """Write scikit-learn's digits (1797 images, 10 classes) as JPEGs in the ImageNet layout."""
    from ..data import write_demo_dataset

    info = write_demo_dataset(output, image_size=img_size)
    state = "written" if info.get("written") else "already present"
    click.echo(
        "{}: {} train / {} val images, {} classes ({})".format(
            output, info["train"], info["val"], info["num_classes"], state
        )
    )
