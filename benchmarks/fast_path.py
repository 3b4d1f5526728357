"""Reference path vs fast path, side by side in one process: training images/s and the ratio.

    python benchmarks/fast_path.py                    # CPU: batch 32 at 224, fp32
    python benchmarks/fast_path.py --device cuda      # GPU: batch 128; fast = bf16 + channels_last + compile
    python benchmarks/fast_path.py --json out.json

Reference: fp32, NCHW, eager, the reference token mixing, AdamW as timm builds it.
Fast (CPU): the fused token mixing, channels_last, AdamW's fused kernel where torch has one, and
torch.compile with --compile. On a GPU the fast side also uses bf16 autocast and torch.compile.
Steps alternate between the two sides so that machine noise hits both alike; the median step counts.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn

import wavemlp
from wavemlp.engine import devices


def make_side(name, fast, device, args):
    torch.manual_seed(0)
    model = wavemlp.create_model(name, fast_path=fast).to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
    kwargs = {}
    if fast:
        kwargs["fused"] = True
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this device / torch
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    net = model
    compiled = fast and (args.compile or device.type == "cuda") and hasattr(torch, "compile")
    if compiled:
        net = torch.compile(model)
    precision = "bf16" if (fast and device.type == "cuda") else "fp32"
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    label = "fast ({}{}, channels_last, fused token mixing{})".format(
        precision, ", compiled" if compiled else "", ", fused AdamW" if "fused" in kwargs else "")
    return step, label if fast else "reference (fp32, NCHW, eager)"


def timed(step, x, y, device):
    devices.synchronize(device)
    t0 = time.perf_counter()
    step(x, y)
    devices.synchronize(device)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="WaveMLP_T_dw,WaveMLP_S")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=0, help="default: 32 on CPU, 128 on a GPU")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also torch.compile the fast side on the CPU")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch_size or (128 if device.type == "cuda" else 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    rows = []
    print("torch {}, {} threads, device {}, batch {} at {}".format(
        torch.__version__, torch.get_num_threads(), devices.detect().names[0], batch, args.img_size))
    for name in args.models.split(","):
        sides = [make_side(name, False, device, args), make_side(name, True, device, args)]
        for step, _ in sides:
            for _ in range(args.warmup):
                step(x, y)
        times = [[], []]
        for _ in range(args.steps):
            for i, (step, _) in enumerate(sides):
                times[i].append(timed(step, x, y, device))
        rates = [batch / statistics.median(t) for t in times]
        peak = devices.peak_memory_mb(device)
        row = {"model": name, "batch": batch, "reference_img_s": rates[0], "fast_img_s": rates[1],
               "speedup": rates[1] / rates[0], "reference": sides[0][1], "fast": sides[1][1], "peak_mem_mb": peak}
        rows.append(row)
        print("{:14s} reference {:8.2f} img/s | fast {:8.2f} img/s | x{:.2f}   [{}]".format(
            name, rates[0], rates[1], row["speedup"], sides[1][1]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": args.device, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
