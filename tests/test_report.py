"""`wmlp report` on a real short run: table cells from the run's records, n/a where data is missing, PNGs."""

import json
import subprocess

from PIL import Image

from .conftest import wmlp_train


def test_report_of_a_real_run_with_bench_results(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "shortrun"
    wmlp_train(wmlp_exe, mini_data, run, "train.epochs=2", "train.max_steps_per_epoch=3", "train.convergence_top1=5")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    bench = tmp_path / "scale.json"
    bench.write_text(
        json.dumps(
            {
                "results": {
                    "1": {
                        "model": "WaveMLP_T_dw",
                        "device": {"name": "cpu"},
                        "world_size": 1,
                        "precision": "fp32",
                        "batch_size": 8,
                        "img_s_total": 10.0,
                        "power": "n/a",
                    },
                    "2": {
                        "model": "WaveMLP_T_dw",
                        "device": {"name": "cpu"},
                        "world_size": 2,
                        "precision": "fp32",
                        "batch_size": 8,
                        "img_s_total": 18.0,
                        "power": "n/a",
                    },
                },
                "scalability": {"1": 1.0, "2": 0.9},
            }
        )
    )
    out_dir = tmp_path / "report"
    out = subprocess.run(
        [wmlp_exe, "report", str(run), str(bench), "-o", str(out_dir)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    text = (out_dir / "report.md").read_text()
    row = [line for line in text.splitlines() if line.startswith("| top-1 5.0 |")]
    assert len(row) == 1, text
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    best = max(m["ema_top1"] for m in metrics)
    assert cells[0] == "top-1 5.0" and cells[1] == "bs:8, 1x cpu, FP32"
    assert cells[2].endswith("img/s") and float(cells[2].split()[0]) > 0
    assert cells[3] == "{:.2f} ({})".format(best, "met" if best >= 5 else "not met")
    assert cells[4] == "n/a"  # no power reading on this machine
    assert cells[5] == "0.90"
    assert float(cells[6]) == round(max(m["peak_mem_mb"] for m in metrics) / 1024, 2)
    assert cells[7] == "completed, 0 restarts"
    assert "| WaveMLP_T_dw | cpu x2 | FP32 | 8 | 18.00 |" in text
    pngs = sorted(out_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["bench0-scaling.png", "shortrun-accuracy.png", "shortrun-throughput.png"]
    for p in pngs:
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 100
            low, high = im.convert("L").getextrema()
            assert low < high  # something was drawn


def test_report_without_optional_records_says_na(wmlp_exe, mini_data, tmp_path):
    run = tmp_path / "bare"
    wmlp_train(
        wmlp_exe,
        mini_data,
        run,
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        "train.model_ema=false",
        "train.convergence_top1=null",
    )
    (run / "env.json").unlink()
    out = subprocess.run([wmlp_exe, "report", str(run), "--no-plots"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| n/a |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "n/a" and cells[4] == "n/a" and cells[5] == "n/a"
    assert "1x n/a" in cells[1]
    bad = subprocess.run([wmlp_exe, "report", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr
    (run / "recipe.yaml").write_text((run / "recipe.yaml").read_text().replace("  epochs:", "  epochz:", 1))
    broken = subprocess.run([wmlp_exe, "report", str(run), "--no-plots"], capture_output=True, text=True)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1, broken.stderr
    assert str(run / "recipe.yaml") in broken.stderr and "train.epochz: unknown key" in broken.stderr
