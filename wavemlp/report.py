"""``wmlp report``: training runs and bench results -> a Markdown results table and PNG plots.

The table follows DeepSpark's model-zoo format; every cell is computed from the records on disk and
says "n/a" when they do not hold it. Host-side: reads files only (no torch import).
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .engine.records import read_jsonl
from .errors import KitError
from .recipe import Recipe, load_recipe

NA = "n/a"
DEEPSPARK_HEADER = (
    "| Convergence criteria | Configuration | Performance | Accuracy | Power (W) | Scalability "
    "| Memory utilization (G) | Stability |"
)


def _fmt(value, spec: str = "{:.2f}") -> str:
    if value is None or value == "":
        return NA
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


class Run:
    """One training run folder, read once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.epochs = read_jsonl(self.path / "metrics.jsonl")
        if not self.epochs:
            raise KitError("{}: no metrics.jsonl (is this a training run folder?)".format(self.path))
        saved = self.path / "recipe.yaml"
        self.recipe: Optional[Recipe] = load_recipe(saved).recipe if saved.is_file() else None
        self.env = self._load(self.path / "env.json", json.loads) or {}
        self.eval = self._load(self.path / "eval.json", json.loads)
        log = self.path / "train.log"
        self.starts = log.read_text().count(" start (pid ") if log.is_file() else 0

    @staticmethod
    def _load(path: Path, parse):
        return parse(path.read_text()) if path.is_file() else None

    def get(self, section: str, key: str, default=None):
        """A setting of the run's recipe; ``default`` for a run folder that kept none."""
        if self.recipe is None:
            return default
        return getattr(getattr(self.recipe, section), key)

    @property
    def uses_ema(self) -> bool:
        return bool(self.get("train", "model_ema")) and bool(self.get("train", "eval_ema", True))

    def best_top1(self) -> Optional[float]:
        key = "ema_top1" if self.uses_ema and "ema_top1" in self.epochs[-1] else "top1"
        values = [r[key] for r in self.epochs if r.get(key) is not None]
        return max(values) if values else None

    def throughput(self) -> Optional[float]:
        """Images/s over the run, leaving out the first epoch (start-up) when there are others."""
        rows = self.epochs[1:] if len(self.epochs) > 1 else self.epochs
        images = sum(float(r.get("img_s_total") or 0) * float(r.get("epoch_time_s") or 0) for r in rows)
        seconds = sum(float(r.get("epoch_time_s") or 0) for r in rows)
        return images / seconds if seconds else None

    def planned_epochs(self) -> Optional[int]:
        epochs = self.get("train", "epochs")
        cooldown = self.get("sched", "cooldown_epochs", 0) or 0
        return epochs + cooldown if epochs else None

    def configuration(self) -> str:
        dev = self.env.get("devices") or {}
        names = dev.get("names") or []
        device = (names[0] if names else dev.get("vendor", "")).replace("Iluvatar ", "") or NA
        sdk = dev.get("sdk")
        parts = ["SDK {}".format(sdk)] if sdk else []
        world = self.epochs[-1].get("world_size") or self.env.get("world_size") or 1
        parts += [
            "bs:{}".format(self.get("train", "batch_size", NA)),
            "{}x {}".format(world, device),
            str(self.epochs[-1].get("precision", NA)).upper(),
        ]
        return ", ".join(parts)

    def stability(self) -> str:
        planned = self.planned_epochs()
        done = len(self.epochs)
        restarts = max(0, self.starts - 1)
        state = "completed" if planned is not None and done >= planned else "{}/{} epochs".format(done, planned or NA)
        return "{}, {} restart{}".format(state, restarts, "" if restarts == 1 else "s")


def _bench_power_and_scaling(bench: Sequence[Dict[str, object]]) -> Tuple[str, str]:
    power, scaling = NA, NA
    for b in bench:
        if isinstance(b.get("power"), dict):
            power = _fmt(b["power"]["mean_w"], "{:.0f}")
        if "scalability" in b and b["scalability"]:
            n = max(b["scalability"], key=int)
            scaling = _fmt(b["scalability"][n], "{:.2f}")
            for r in b.get("results", {}).values():
                if isinstance(r.get("power"), dict):
                    power = _fmt(r["power"]["mean_w"], "{:.0f}")
    return power, scaling


def deepspark_row(run: Run, bench: Sequence[Dict[str, object]] = ()) -> str:
    criterion = run.get("train", "convergence_top1")
    best = run.best_top1()
    accuracy = _fmt(best)
    if criterion is not None and best is not None:
        accuracy += " ({})".format("met" if best >= criterion else "not met")
    mem = max((float(r.get("peak_mem_mb") or 0) for r in run.epochs), default=0.0)
    power, scaling = _bench_power_and_scaling(bench)
    perf = run.throughput()
    return "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
        "top-1 {}".format(_fmt(criterion, "{:.1f}")) if criterion is not None else NA,
        run.configuration(),
        "{} img/s".format(_fmt(perf, "{:.1f}")) if perf else NA,
        accuracy,
        power,
        scaling,
        _fmt(mem / 1024.0 if mem else None, "{:.2f}"),
        run.stability(),
    )


def epoch_table(run: Run) -> str:
    head = "| epoch | train loss | lr | top-1 | top-5 | EMA top-1 | EMA top-5 | img/s | epoch time (s) | skipped |"
    lines = [head, "|" + "---|" * 10]
    for r in run.epochs:
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


def plot_run(run: Run, out_dir: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in run.epochs]
    files = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r.get("train_loss") for r in run.epochs], marker="o", label="train loss")
    ax1.plot(epochs, [r.get("eval_loss") for r in run.epochs], marker="s", label="eval loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [r.get("top1") for r in run.epochs], marker="o", label="top-1")
    if any(r.get("ema_top1") is not None for r in run.epochs):
        ax2.plot(epochs, [r.get("ema_top1") for r in run.epochs], marker="s", label="EMA top-1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("top-1 (%)")
    ax2.legend()
    fig.suptitle(run.path.name)
    fig.tight_layout()
    files.append(out_dir / "{}-accuracy.png".format(run.path.name))
    fig.savefig(str(files[-1]), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(epochs, [r.get("img_s_total") or 0 for r in run.epochs])
    ax.set_xlabel("epoch")
    ax.set_ylabel("images/s (all devices)")
    ax.set_title(run.path.name)
    fig.tight_layout()
    files.append(out_dir / "{}-throughput.png".format(run.path.name))
    fig.savefig(str(files[-1]), dpi=100)
    plt.close(fig)
    return files


def plot_scaling(bench: Dict[str, object], out_dir: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(bench["results"], key=int)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([str(c) for c in counts], [bench["results"][c]["img_s_total"] for c in counts])
    ax.set_xlabel("devices")
    ax.set_ylabel("images/s")
    for i, c in enumerate(counts):
        s = bench.get("scalability", {}).get(c)
        if s is not None:
            ax.annotate("{:.2f}".format(s), (i, bench["results"][c]["img_s_total"]), ha="center", va="bottom")
    ax.set_title("scaling ({})".format(name))
    fig.tight_layout()
    path = out_dir / "{}-scaling.png".format(name)
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return path


def build_report(inputs: Sequence[Path], out_dir: Optional[Path] = None, plots: bool = True) -> Tuple[str, List[Path]]:
    runs, bench = [], []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            runs.append(Run(item))
        elif item.suffix == ".json" and item.is_file():
            bench.append(json.loads(item.read_text()))
        else:
            raise KitError("{}: neither a run folder nor a bench JSON file".format(item))
    parts = ["# Results", ""]
    if runs:
        parts += [DEEPSPARK_HEADER, "|" + "---|" * 8]
        parts += [deepspark_row(r, bench) for r in runs]
    for b in bench:
        rows = list(b["results"].values()) if "results" in b else [b]
        from .bench.table import seed_table

        parts += ["", seed_table(rows)]
    files: List[Path] = []
    for r in runs:
        parts += ["", "## {}".format(r.path.name), "", epoch_table(r)]
        if r.eval:
            parts.append("")
            parts.append(
                "`wmlp eval` of {} ({} weights) on {} images: top-1 {:.2f}, top-5 {:.2f}".format(
                    Path(r.eval["checkpoint"]).name, r.eval["weights"], r.eval["count"], r.eval["top1"], r.eval["top5"]
                )
            )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plots:
            for r in runs:
                files += plot_run(r, out_dir)
            for i, b in enumerate(bench):
                if "results" in b:
                    files.append(plot_scaling(b, out_dir, "bench{}".format(i)))
        text = "\n".join(parts) + "\n"
        if files:
            text += "\n" + "\n".join("![{0}]({0})".format(f.name) for f in files) + "\n"
        (out_dir / "report.md").write_text(text)
        files.insert(0, out_dir / "report.md")
    return "\n".join(parts), files
