"""``wmlp``: the command line. A thin face: each command parses flags and calls a library function.

Heavy imports (torch, timm) happen inside the commands that need them, so the commands that only
render scripts start fast and work on a login node without torch.
"""

import json
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import KitError
from .vendors import dockerfiles


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


# --- recipes in, runs out -----------------------------------------------------------------------------

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set train.epochs=1 (repeatable; the value is read as YAML).",
)


def default_run_dir(recipe, recipe_name: str) -> Path:
    """runs/<experiment>, else runs/<recipe>-<job id or time>: the same on every rank of one launch."""
    if recipe.train.experiment:
        name = recipe.train.experiment
    else:
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        name = "{}-{}".format(recipe_name, job if job and job != "none" else time.strftime("%Y%m%d-%H%M%S"))
    return Path(recipe.train.output) / name


@cli.command()
@click.option(
    "--recipe",
    "-r",
    "recipe_ref",
    default="cpu-demo",
    show_default=True,
    help="Recipe file or shipped recipe name (wmlp recipes list).",
)
@set_option
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
def train(recipe_ref: str, overrides, data_path, run_dir, resume) -> None:
    """Train a model from a recipe. Exits 75 after a preemption checkpoint (requeue and --resume auto)."""
    from .engine.trainer import train as run_training
    from .recipe import load_recipe

    overrides = list(overrides) + ([f"data.path={data_path}"] if data_path else [])
    loaded = load_recipe(recipe_ref, overrides)
    recipe = loaded.recipe
    run_dir = run_dir or default_run_dir(recipe, loaded.name)
    resume = resume if resume is not None else recipe.train.resume
    code = run_training(recipe, run_dir, resume=resume, recipe_name=loaded.name, argv=sys.argv)
    sys.exit(code)


@cli.command("eval")
@click.option("--model", "model_name", required=True, help="Variant name, e.g. WaveMLP_T_dw.")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint file.")
@click.option("--data", "data_path", required=True, type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--use-ema", is_flag=True, help="Evaluate the EMA weights of a training checkpoint.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(0))
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cuda", "cpu"]))
@click.option("--img-size", default=None, type=click.IntRange(32), help="Override the input size.")
@click.option("--crop-pct", default=None, type=click.FloatRange(0.1, 1.0), help="Override the crop fraction.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Also write the result here.")
def eval_cmd(
    model_name, checkpoint, data_path, split, batch_size, use_ema, workers, device, img_size, crop_pct, json_out
) -> None:
    """Top-1/top-5 of a checkpoint (released or trained) with the model's preprocessing."""
    from .engine.evaluate import evaluate_checkpoint

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
        Path(json_out).write_text(json.dumps(m, indent=2))


@cli.group()
def data() -> None:
    """Data sets: build the embedded demo data."""


@data.command("demo")
@click.option("--out", "out_dir", default="data/digits", show_default=True, type=click.Path(file_okay=False))
@click.option("--image-size", default=32, show_default=True, type=click.IntRange(8, 1024))
def data_demo(out_dir: str, image_size: int) -> None:
    """Write scikit-learn's digits (1797 images, 10 classes) as JPEGs in the ImageNet layout."""
    from .data import write_demo_dataset

    info = write_demo_dataset(out_dir, image_size=image_size)
    state = "written" if info.get("written") else "already present"
    click.echo(
        "{}: {} train / {} val images, {} classes ({})".format(
            out_dir, info["train"], info["val"], info["num_classes"], state
        )
    )


@cli.command()
@click.option("--recipe", "-r", "recipe_ref", default="cpu-demo", show_default=True)
@set_option
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cuda", "cpu"]))
@click.option("--batch-size", default=2, show_default=True, type=click.IntRange(1))
@click.option("--img-size", default=None, type=click.IntRange(32), help="Input size [default: the recipe's].")
def smoke(recipe_ref, overrides, device, batch_size, img_size) -> None:
    """One real training step, a checkpoint round trip and an eval step; prints a JSON verdict."""
    from .engine.smoke import run_smoke
    from .recipe import load_recipe

    if img_size is not None and img_size % 32:
        raise click.BadParameter("must be divisible by 32", param_hint="--img-size")
    verdict = run_smoke(
        load_recipe(recipe_ref, overrides).recipe, device=device, batch_size=batch_size, img_size=img_size
    )
    click.echo(json.dumps({k: v for k, v in verdict.items() if k != "traceback"}, indent=2))
    if not verdict["ok"]:
        click.echo(verdict.get("traceback", ""), err=True)
        sys.exit(1)


@cli.command()
@click.option("--recipe", "-r", "recipe_ref", default="cpu-demo", show_default=True)
@set_option
@click.option("--model", default="", help="Variant [default: the recipe's].")
@click.option("--batch-size", default=0, type=click.IntRange(0), help="Per device [default: the recipe's].")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1), help="Timed steps.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(1), help="Untimed steps first.")
@click.option("--precision", default="", type=click.Choice(["", "fp32", "fp16", "bf16"]))
@click.option("--channels-last", is_flag=True)
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile (compile time reported apart).")
@click.option("--fast-path", is_flag=True, help="The fused token-mixing path.")
@click.option("--data", "data_src", default="synthetic", show_default=True, help="'synthetic' or a dataset root.")
@click.option("--img-size", default=0, type=click.IntRange(0))
@click.option("--mode", default="train", show_default=True, type=click.Choice(["train", "infer", "data"]))
@click.option("--workers", default=None, type=click.IntRange(1), help="--mode data: worker processes.")
@click.option("--gpus", "gpu_counts", default=None, help="Device counts to compare, e.g. 1,8 (runs torchrun).")
@click.option("--device", default="auto", type=click.Choice(["auto", "cuda", "cpu"]))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the result here.")
def bench(
    recipe_ref,
    overrides,
    model,
    batch_size,
    steps,
    warmup,
    precision,
    channels_last,
    use_compile,
    fast_path,
    data_src,
    img_size,
    mode,
    workers,
    gpu_counts,
    device,
    json_out,
) -> None:
    """Throughput (images/s), step time split, peak memory, power; scalability over device counts."""
    from .recipe import load_recipe

    loaded = load_recipe(recipe_ref, overrides)
    if mode == "data":
        from .bench.data_pipeline import run_data_bench

        if data_src == "synthetic":
            raise click.BadParameter("--mode data needs a dataset root", param_hint="--data")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        result = run_data_bench(loaded.recipe, data_src, steps=steps * 10, workers=workers, device=device)
        click.echo(json.dumps(result, indent=2))
        if json_out:
            Path(json_out).write_text(json.dumps(result, indent=2))
        return
    from .bench.table import seed_table
    from .bench.throughput import BenchConfig, run_bench, write_json

    if img_size and img_size % 32:
        raise click.BadParameter("must be divisible by 32", param_hint="--img-size")
    if gpu_counts:
        from .bench.scaling import parse_counts, run_counts, scalability

        args = [
            "--recipe",
            recipe_ref,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--mode",
            mode,
            "--data",
            data_src,
            "--device",
            device,
        ]
        for flag, value in (
            ("--model", model),
            ("--batch-size", batch_size),
            ("--precision", precision),
            ("--img-size", img_size),
        ):
            if value:
                args += [flag, str(value)]
        args += [
            f
            for f, on in (("--channels-last", channels_last), ("--compile", use_compile), ("--fast-path", fast_path))
            if on
        ]
        for o in overrides:
            args += ["--set", o]
        results = run_counts(parse_counts(gpu_counts), args)
        scale = scalability(results)
        click.echo(seed_table(results.values()))
        for n, value in scale.items():
            click.echo("scalability {} -> {}: {:.3f}".format(1, n, value))
        write_json(
            {"results": {str(n): r for n, r in results.items()}, "scalability": {str(n): v for n, v in scale.items()}},
            json_out,
        )
        return
    cfg = BenchConfig(
        mode=mode,
        model=model,
        batch_size=batch_size,
        steps=steps,
        warmup=warmup,
        precision=precision,
        channels_last=channels_last,
        compile=use_compile,
        fast_path=fast_path,
        data=data_src,
        img_size=img_size,
        device=device,
    )
    result = run_bench(loaded.recipe, cfg)
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


@cli.command()
@click.option("--data", "data_path", default=None, type=click.Path(file_okay=False), help="Check a data set too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(data_path, as_json) -> None:
    """Environment report: Python, torch, timm, vendor, devices, SDK, NCCL, smi tools, data set."""
    from .engine.doctor import diagnose, format_report

    report = diagnose(data_path)
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(format_report(report)))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.md and PNG plots here.",
)
@click.option("--no-plots", is_flag=True, help="Markdown only.")
def report(inputs, out_dir, no_plots) -> None:
    """Results of training runs (folders) and bench results (JSON) as Markdown, with plots."""
    from .report import build_report

    text, files = build_report(inputs, out_dir, plots=not no_plots)
    click.echo(text)
    for f in files:
        click.echo("wrote {}".format(f), err=True)


@cli.group()
def image() -> None:
    """Container images: build a target's image (CUDA or CoreX base)."""


class _ImageTargetOption(click.Option):
    """Its help lists the image targets: read from the recipes only when help is shown."""

    def get_help_record(self, ctx):
        from .image.targets import image_targets

        self.help = "Target: {}.".format(", ".join(image_targets()))
        return super().get_help_record(ctx)


@image.command("build")
@click.option("--gpu", "--target", "target", cls=_ImageTargetOption, required=True)
@click.option("--base", default=None, help="Base image [default: the target recipe's image.base].")
@click.option("--tag", default=None, help="Image tag [default: the recipe's image.name:image.tag].")
@click.option("--dockerfile", type=click.Choice(dockerfiles()), default=None,
              help="[default: the recipe's image.dockerfile].")
@click.option("--extra-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="PEM file of extra CA certificates for pip during the build (sites behind TLS proxies).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="Extra docker build argument.")
@click.option("--context", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Build context [default: this checkout].")
@click.option("--print", "print_only", is_flag=True, help="Print the equivalent docker build command instead.")
def image_build(target, base, tag, dockerfile, extra_ca, build_args, context, print_only) -> None:
    """Build the image of a target through the Docker engine ($DOCKER_HOST), streaming its output."""
    from .image.build import ImageBuildError, build_image, docker_build_command, format_command
    from .image.targets import check_target
    from .resources import repo_root

    recipe = check_target(target, "--gpu").recipe
    base = base or recipe.image.base or None
    tag = tag or ("{}:{}".format(recipe.image.name, recipe.image.tag) if recipe.image.tag else None)
    dockerfile = dockerfile or recipe.image.dockerfile
    context = context or repo_root()
    if context is None:
        raise KitError("--context: an installed kit has no build context; pass the path of a wavemlp-kit checkout")
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
    from .recipe import load_recipe

    img = load_recipe(target).recipe.image
    return "{}:{}".format(img.name, img.tag or target)


@image.command("smoke")
@click.option("--gpu", "--target", "target", required=True, help="Target whose image runs the smoke test.")
@click.option("--docker-arg", "docker_args", multiple=True, help="Extra docker run argument (device access).")
def image_smoke(target, docker_args) -> None:
    """Run `wmlp smoke --recipe TARGET` inside the target's built image; exits with its status."""
    import shlex
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        raise KitError("docker: the docker client is not installed (needed to run the image)")
    args = [a for item in docker_args for a in shlex.split(item)]
    cmd = ["docker", "run", "--rm", "--network", "host", *args, image_ref(target), "smoke", "--recipe", target]
    click.echo("+ " + " ".join(shlex.quote(c) for c in cmd), err=True)
    sys.exit(subprocess.run(cmd).returncode)


from .render.commands import launch, recipes, slurm  # noqa: E402 - after the core commands, in help order

for _command in (recipes, launch, slurm):
    cli.add_command(_command)


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
