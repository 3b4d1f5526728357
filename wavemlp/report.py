"""Results of training runs as Markdown: the per-epoch table and the evaluation of the best checkpoint.

Host-side (no torch import): reads the run folder's records only.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional

from .errors import KitError


def _read_jsonl(path: Path) -> List[Dict[str, object]]:
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def _fmt(value, spec: str = "{:.2f}") -> str:
    if value is None or value == "":
        return "n/a"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def epoch_table(run_dir: Path) -> str:
    rows = _read_jsonl(Path(run_dir) / "metrics.jsonl")
    if not rows:
        raise KitError("{}: no metrics.jsonl (is this a training run folder?)".format(run_dir))
    head = "| epoch | train loss | lr | top-1 | top-5 | EMA top-1 | EMA top-5 | img/s | epoch time (s) | skipped |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                r["epoch"],
                _fmt(r.get("train_loss"), "{:.4f}"),
                _fmt(r.get("lr"), "{:.3g}"),
                _fmt(r.get("top1")),
                _fmt(r.get("top5")),
                _fmt(r.get("ema_top1")),
                _fmt(r.get("ema_top5")),
                _fmt(r.get("img_s_total"), "{:.1f}"),
                _fmt(r.get("epoch_time_s"), "{:.1f}"),
                r.get("skipped_images", 0),
            )
        )
    return "\n".join(lines)


def eval_line(eval_json: Optional[Path]) -> str:
    if eval_json is None or not Path(eval_json).is_file():
        return ""
    e = json.loads(Path(eval_json).read_text())
    return "`wmlp eval` of {} ({} weights) on {} images: top-1 {:.2f}, top-5 {:.2f}".format(
        Path(e["checkpoint"]).name, e["weights"], e["count"], e["top1"], e["top5"]
    )


def run_summary(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    total = sum(float(r.get("epoch_time_s") or 0.0) for r in rows)
    parts = [
        "## {}".format(run_dir.name),
        "",
        epoch_table(run_dir),
        "",
        "Training time: {:.1f} s over {} epochs.".format(total, len(rows)),
    ]
    line = eval_line(run_dir / "eval.json")
    if line:
        parts.append(line)
    return "\n".join(parts)
