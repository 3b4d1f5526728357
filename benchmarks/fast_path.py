"""Reference path vs fast path, side by side in one process: training images/s and the ratios.

    python benchmarks/fast_path.py                    # CPU: batch 32 at 224; reference vs fast (fp32)
    python benchmarks/fast_path.py --compile          # CPU: and the fast side compiled
    python benchmarks/fast_path.py --device cuda      # GPU: batch 128; fast in fp32/bf16, eager/compiled
    python benchmarks/fast_path.py --sides ref,fast+bf16 --json out.json

A side is ``ref`` (fp32, NCHW, eager, the reference token mixing) or ``fast`` with optional ``+bf16``,
``+fp16`` and ``+compile``: the fused token mixing, channels_last, AdamW's fused kernel where torch has
one. Both sides use the optimizer the trainer builds from the seed recipe (timm's AdamW). Steps
alternate between the sides so that machine noise hits all alike; the median step counts, and each
ratio is against ``ref``. Compilation happens in the warm-up and is timed apart. On a GPU each side's
peak memory is that of one step of its own, measured after the timing.
"""
import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

import wavemlp
from wavemlp.engine import devices
from wavemlp.engine.components import build_optimizer
from wavemlp.recipe import load_recipe

PRECISIONS = ("fp32", "bf16", "fp16")


def parse_side(spec):
    """``fast+bf16+compile`` -> (fast, precision, compile); one clear error for anything else."""
    parts = spec.strip().split("+")
    if parts[0] not in ("ref", "fast"):
        raise SystemExit(f"--sides: {spec!r} must start with 'ref' or 'fast'")
    fast, precision, compiled = parts[0] == "fast", "fp32", False
    for flag in parts[1:]:
        if flag in PRECISIONS:
            precision = flag
        elif flag == "compile":
            compiled = True
        else:
            raise SystemExit(f"--sides: unknown flag {flag!r} in {spec!r} (fp32, bf16, fp16, compile)")
    if not fast and (precision != "fp32" or compiled):
        raise SystemExit(f"--sides: {spec!r}: the reference side is fp32 eager by definition")
    return fast, precision, compiled


def make_side(name, spec, device):
    fast, precision, compiled = parse_side(spec)
    torch.manual_seed(0)
    model = wavemlp.create_model(name, fast_path=fast).to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
    # The optimizer the trainer builds (timm's AdamW from the seed recipe), fused on the fast side
    # where torch has the kernel.
    recipe = load_recipe("imagenet", ["optim.fused={}".format("true" if fast else "false")]).recipe
    opt = build_optimizer(model, recipe)
    fused = bool(opt.defaults.get("fused"))
    if compiled and not hasattr(torch, "compile"):
        raise SystemExit(f"--sides: {spec!r}: this torch ({torch.__version__}) has no torch.compile")
    net = torch.compile(model) if compiled else model
    scaler = devices.grad_scaler(device, precision)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            loss = loss_fn(net(x), y)
        devices.backward_and_step(loss, opt, scaler)

    if fast:
        label = "fast ({}, {}, channels_last, fused token mixing{})".format(
            precision, "compiled" if compiled else "eager", ", fused AdamW" if fused else "")
    else:
        label = "reference (fp32, NCHW, eager)"
    return step, label


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(step, x, y, device):
    devices.synchronize(device)
    t0 = time.perf_counter()
    step(x, y)
    devices.synchronize(device)
    return time.perf_counter() - t0


def one_step_peak_mb(step, x, y, device):
    if device.type != "cuda":
        return None  # the CPU's peak RSS is the process's, not a side's
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step(x, y)
    devices.synchronize(device)
    return devices.peak_memory_mb(device)


def bench_model(name, specs, x, y, device, steps, warmup):
    sides = [make_side(name, spec, device) for spec in specs]
    first = []
    for step, _ in sides:
        t0 = timed(step, x, y, device)  # the first step carries compilation
        for _ in range(max(warmup - 1, 0)):
            step(x, y)
        first.append(t0)
    times = [[] for _ in sides]
    for _ in range(steps):
        for i, (step, _) in enumerate(sides):
            times[i].append(timed(step, x, y, device))
    batch = x.shape[0]
    rows = []
    for spec, (step, label), t, t0 in zip(specs, sides, times, first):
        median = statistics.median(t)
        rows.append({
            "model": name, "side": spec, "label": label, "batch": batch, "img_s": batch / median,
            "img_s_min": batch / max(t), "img_s_max": batch / min(t), "steps": len(t),
            "first_step_extra_s": max(t0 - median, 0.0), "peak_mem_mb": one_step_peak_mb(step, x, y, device),
        })
    ref = next((r["img_s"] for r in rows if r["side"] == "ref"), None)
    for r in rows:
        r["vs_ref"] = r["img_s"] / ref if ref else None
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="WaveMLP_T_dw,WaveMLP_S")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sides", default=None,
                   help="comma list (default on the CPU: ref,fast[,fast+compile]; "
                        "on a GPU: ref and fast in fp32/bf16, eager/compiled)")
    p.add_argument("--batch-size", type=int, default=0, help="default: 32 on CPU, 128 on a GPU")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="CPU default sides: add the compiled fast side")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.sides:
        specs = [s.strip() for s in args.sides.split(",") if s.strip()]
    elif device.type == "cuda":
        specs = ["ref", "fast", "fast+compile", "fast+bf16", "fast+bf16+compile"]
    else:
        specs = ["ref", "fast"] + (["fast+compile"] if args.compile else [])
    for spec in specs:
        parse_side(spec)
    batch = args.batch_size or (128 if device.type == "cuda" else 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    machine = devices.detect().names[0]
    print("{}; {}; Python {}, torch {}, {} threads; batch {} at {}".format(
        cpu_name(), machine, platform.python_version(), torch.__version__,
        torch.get_num_threads(), batch, args.img_size))
    print("| model | side | img/s (median, min-max) | vs ref | compile s | peak MiB |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in args.models.split(","):
        for r in bench_model(name, specs, x, y, device, args.steps, args.warmup):
            rows.append(r)
            peak = "n/a" if r["peak_mem_mb"] is None else "{:.0f}".format(r["peak_mem_mb"])
            comp = "{:.1f}".format(r["first_step_extra_s"]) if "compile" in r["side"] else "-"
            print("| {} | {} | {:.2f} ({:.2f}-{:.2f}) | x{:.2f} | {} | {} |".format(
                name, r["label"], r["img_s"], r["img_s_min"], r["img_s_max"], r["vs_ref"] or float("nan"), comp, peak),
                flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": machine, "cpu": cpu_name(),
                       "python": platform.python_version(),
                       "threads": torch.get_num_threads(), "batch": batch, "img_size": args.img_size,
                       "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
