"""Parameter and MAC counts of the family, by two independent counters (thop and torchprofile).

The two disagree by design: thop adds up per-module hooks (convolutions and linears; norm layers are
counted as zero here, as the authors' script does), while torchprofile traces the graph and also
counts element-wise multiplies, normalisation and pooling. See the README for the breakdown.
"""

import warnings
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .models import AUTHOR_NAMES, create_model, resolve_name

# From the paper's table: params (exact, 1000 classes), FLOPs as reported (MACs, 224x224), top-1.
PAPER = {
    "wavemlp_t_dw": dict(params=15_286_472, gmacs=2.1, top1=80.1),
    "wavemlp_t": dict(params=17_193_160, gmacs=2.4, top1=80.9),
    "wavemlp_s": dict(params=30_708_040, gmacs=4.5, top1=82.9),
    "wavemlp_m": dict(params=44_056_632, gmacs=7.9, top1=83.3),
    "wavemlp_b": dict(params=63_586_360, gmacs=10.2, top1=83.6),
}


def _zero_ops(module: nn.Module, inputs, output) -> None:
    module.total_ops += torch.zeros(1, dtype=torch.float64)


def thop_macs(model: nn.Module, x: torch.Tensor) -> float:
    import thop

    custom = {nn.BatchNorm2d: _zero_ops, nn.GroupNorm: _zero_ops}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _ = thop.profile(model, inputs=(x,), custom_ops=custom, verbose=False)
    return float(macs)


def torchprofile_macs(model: nn.Module, x: torch.Tensor) -> float:
    import torchprofile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(torchprofile.profile_macs(model, x))


def profile_variant(name: str, img_size: int = 224) -> Dict[str, object]:
    variant = resolve_name(name)
    model = create_model(variant).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, 3, img_size, img_size)
    with torch.no_grad():
        tp = torchprofile_macs(model, x)
        # thop leaves counters on the modules: profile a fresh copy so the two never interfere.
        th = thop_macs(create_model(variant).eval(), x)
    paper = PAPER[variant]
    return dict(
        model=AUTHOR_NAMES[variant],
        name=variant,
        img_size=img_size,
        params=params,
        thop_gmacs=th / 1e9,
        torchprofile_gmacs=tp / 1e9,
        paper_params=paper["params"],
        paper_gmacs=paper["gmacs"],
        paper_top1=paper["top1"],
    )


def profile_all(names: Optional[List[str]] = None, img_size: int = 224) -> List[Dict[str, object]]:
    return [profile_variant(n, img_size) for n in (names or list(AUTHOR_NAMES))]


def format_table(rows: List[Dict[str, object]]) -> str:
    header = ["model", "params", "paper params", "thop GMACs", "torchprofile GMACs", "paper GFLOPs", "top-1 (paper)"]
    body = [
        [
            r["model"],
            "{:,}".format(r["params"]),
            "{:,}".format(r["paper_params"]),
            "{:.3f}".format(r["thop_gmacs"]),
            "{:.3f}".format(r["torchprofile_gmacs"]),
            "{:.1f}".format(r["paper_gmacs"]),
            "{:.1f}".format(r["paper_top1"]),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for b in body:  # model names left-aligned, numbers right-aligned
        out.append("| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))) + " |")
    if rows and rows[0]["img_size"] != 224:
        out.append("(at {0}x{0}; paper figures are at 224x224)".format(rows[0]["img_size"]))
    return "\n".join(out)
