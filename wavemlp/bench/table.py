"""The seed's results table format: Model | GPU | precision | batchsize | fps."""

from typing import Dict, Iterable


def device_label(result: Dict[str, object]) -> str:
    dev = result["device"]
    name = dev.get("name") or dev.get("type", "cpu")
    name = name.replace("Iluvatar ", "")
    return "{} x{}".format(name, result["world_size"]) if result["world_size"] > 1 else name


def seed_table(results: Iterable[Dict[str, object]]) -> str:
    lines = ["| Model | GPU | precision | batchsize | fps |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(
            "| {} | {} | {} | {} | {:.2f} |".format(
                r["model"], device_label(r), str(r["precision"]).upper(), r["batch_size"], float(r["img_s_total"])
            )
        )
    return "\n".join(lines)
