"""``wmlp profile``, ``wmlp bench`` and ``wmlp report``: params and MACs, throughput, results tables."""

import json
import os
from pathlib import Path

import click

from .core import device_option, img_size_option, option, output_option, recipe_options, write_text


@click.command()
@click.option(
    "--model", "model", default="all", show_default=True, help="A variant name (WaveMLP_S, wavemlp_s) or 'all'."
)
@img_size_option(help="Square input size, divisible by 32.", default=224, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def profile(model: str, img_size, fmt: str) -> None:
    """Params and MACs per variant (thop and torchprofile) beside the paper's figures."""
    from ..profiling import format_table, profile_all

    rows = profile_all(None if model == "all" else [model], img_size=img_size)
    click.echo(json.dumps(rows, indent=2) if fmt == "json" else format_table(rows))


def _scaling_args(recipe, sets, flags) -> list:
    """The flags of this bench again, for the per-count runs under torchrun."""
    args = ["--recipe", recipe]
    for name in ("steps", "warmup", "mode", "data", "device", "model", "batch_size", "precision", "img_size"):
        value = flags[name]
        if value:
            args += ["--" + name.replace("_", "-"), str(value)]
    args += ["--" + name.replace("_", "-") for name in ("channels_last", "compile", "fast_path") if flags[name]]
    for text in sets:
        args += ["--set", text]
    return args


@click.command()
@recipe_options
@click.option("--model", default="", help="Variant [default: the recipe's].")
@click.option("--batch-size", default=0, type=click.IntRange(0), help="Per device [default: the recipe's].")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1), help="Timed steps.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(1), help="Untimed steps first.")
@click.option("--precision", default="", type=click.Choice(["", "fp32", "fp16", "bf16"]))
@click.option("--channels-last", is_flag=True)
@click.option("--compile", "compile", is_flag=True, help="torch.compile (compile time reported apart).")
@click.option("--fast-path", is_flag=True, help="The fused token-mixing path.")
@click.option("--data", default="synthetic", show_default=True, help="'synthetic' or a dataset root.")
@img_size_option()
@click.option("--mode", default="train", show_default=True, type=click.Choice(["train", "infer", "data"]))
@click.option("--workers", default=None, type=click.IntRange(1), help="--mode data: worker processes.")
@option("--device-counts", default=None, aliases=["--gpus"], metavar="N,M",
        help="Device counts to compare, e.g. 1,8 (each under torchrun): scalability.")
@device_option
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the result here.")
def bench(recipe, sets, json_out, device_counts, **flags) -> None:
    """Throughput (images/s), step time split, peak memory, power; scalability over device counts."""
    from ..recipe import load_recipe

    loaded = load_recipe(recipe, sets)
    if flags["mode"] == "data":
        _bench_data(loaded.recipe, flags, json_out)
        return
    from ..bench.table import seed_table
    from ..bench.throughput import BenchConfig, run_bench, write_json

    if device_counts:
        from ..bench.scaling import parse_counts, run_counts, scalability

        results = run_counts(parse_counts(device_counts), _scaling_args(recipe, sets, flags))
        scale = scalability(results)
        click.echo(seed_table(results.values()))
        for n, value in scale.items():
            click.echo("scalability {} -> {}: {:.3f}".format(1, n, value))
        write_json(
            {"results": {str(n): r for n, r in results.items()}, "scalability": {str(n): v for n, v in scale.items()}},
            json_out,
        )
        return
    flags.pop("workers")
    flags["img_size"] = flags["img_size"] or 0
    result = run_bench(loaded.recipe, BenchConfig(**flags))
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(seed_table([result]))
        s, d = result["img_s_per_device"], result["data_wait_share"]
        click.echo(
            "img/s per device: median {:.2f} (min {:.2f}, max {:.2f}); data wait {:.1%}; peak memory "
            "{:.0f} MiB ({}); power {}".format(
                s["median"], s["min"], s["max"], d, result["peak_mem_mb"], result["peak_mem_kind"], result["power"]
            )
        )
        if result["compile_time_s"] is not None:
            click.echo("compile time: {:.1f} s".format(result["compile_time_s"]))
        write_json(result, json_out)


def _bench_data(recipe, flags, json_out) -> None:
    from ..bench.data_pipeline import run_data_bench

    if flags["data"] == "synthetic":
        raise click.BadParameter("--mode data needs a dataset root", param_hint="--data")
    device = flags["device"]
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run_data_bench(recipe, flags["data"], steps=flags["steps"] * 10, workers=flags["workers"], device=device)
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_text(json_out, json.dumps(result, indent=2))


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@output_option("Write report.md and PNG plots into this folder.", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-plots", is_flag=True, help="Markdown only.")
def report(inputs, output, no_plots) -> None:
    """Results of training runs (folders) and bench results (JSON) as Markdown, with plots."""
    from ..report import build_report

    text, files = build_report(inputs, output, plots=not no_plots)
    click.echo(text)
    for f in files:
        click.echo("wrote {}".format(f), err=True)
