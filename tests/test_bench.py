"""`wmlp bench`: the JSON schema, the scalability arithmetic, the seed's table format, and that the
training mode times the trainer's own step."""

import json
import subprocess

import pytest
import torch

from wavemlp.bench.scaling import parse_counts, scalability
from wavemlp.bench.table import seed_table
from wavemlp.errors import KitError


def test_scalability_is_throughput_over_n_times_single():
    results = {1: {"img_s_total": 140.48}, 8: {"img_s_total": 1068.15}}
    assert scalability(results) == {1: 1.0, 8: pytest.approx(1068.15 / (8 * 140.48))}
    assert scalability({8: {"img_s_total": 1.0}}) == {}
    assert parse_counts("8,1,8") == [1, 8]
    with pytest.raises(KitError, match="--device-counts"):
        parse_counts("1,x")
    with pytest.raises(KitError, match="--device-counts"):
        parse_counts("0")


def test_seed_table_format():
    r = {
        "model": "WaveMLP_T_dw",
        "device": {"name": "Iluvatar BI-V100", "type": "cuda"},
        "world_size": 8,
        "precision": "fp16",
        "batch_size": 128,
        "img_s_total": 884.27,
    }
    assert seed_table([r]).splitlines()[-1] == "| WaveMLP_T_dw | BI-V100 x8 | FP16 | 128 | 884.27 |"


SCHEMA_KEYS = {
    "schema",
    "mode",
    "model",
    "precision",
    "batch_size",
    "img_size",
    "channels_last",
    "compile",
    "fast_path",
    "data",
    "step",
    "train_step",
    "device",
    "world_size",
    "steps",
    "warmup",
    "img_s_per_device",
    "img_s_total",
    "step_time_s",
    "data_time_s",
    "compute_time_s",
    "data_wait_share",
    "compile_time_s",
    "peak_mem_mb",
    "peak_mem_kind",
    "power",
    "versions",
}


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_bench_json_schema_on_the_cpu(wmlp_exe, tmp_path, mode):
    out_json = tmp_path / "b.json"
    cmd = [
        wmlp_exe,
        "bench",
        "--recipe",
        "cpu-demo",
        "--mode",
        mode,
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-size",
        "4",
        "--json",
        str(out_json),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "| Model | GPU | precision | batchsize | fps |" in out.stdout
    r = json.loads(out_json.read_text())
    assert set(r) == SCHEMA_KEYS and r["schema"] == "wavemlp-kit/bench/1"
    s = r["img_s_per_device"]
    assert 0 < s["min"] <= s["median"] <= s["max"] and r["img_s_total"] == pytest.approx(s["median"])
    assert r["step_time_s"]["median"] >= r["compute_time_s"]["median"] > 0
    assert r["power"] == "n/a" and r["peak_mem_kind"] == "host_rss" and r["peak_mem_mb"] > 0
    assert r["mode"] == mode and r["batch_size"] == 4 and r["world_size"] == 1 and r["compile_time_s"] is None
    if mode == "train":  # cpu-demo: no mixup, label smoothing, EMA
        assert r["step"] == "trainer" and r["train_step"]["loss"] == "LabelSmoothingCrossEntropy"
        assert r["train_step"]["mixup"] is None and r["train_step"]["ema_decay"] == 0.9
    else:
        assert r["step"] == "forward" and r["train_step"] is None


def test_bench_train_mode_times_the_trainers_step(mini_data, tmp_path):
    from timm.loss import SoftTargetCrossEntropy

    from wavemlp.bench import throughput
    from wavemlp.engine.components import TrainStep
    from wavemlp.engine.distributed import DistInfo
    from wavemlp.engine.trainer import Trainer
    from wavemlp.recipe import load_recipe

    sets = ["augment.mixup=0.8", "augment.cutmix=1.0", "optim.clip_grad=1.0", "train.batch_size=4"]
    recipe = load_recipe("cpu-demo", sets + [f"data.path={mini_data}", "data.workers=0", "train.progress=false"]).recipe
    cfg = throughput.resolve(recipe, throughput.BenchConfig(steps=2, warmup=1))
    cpu = torch.device("cpu")
    bench_recipe = throughput.bench_recipe(recipe, cfg)
    step = throughput.build_step(bench_recipe, cpu, "fp32", DistInfo(), is_training=True)
    assert isinstance(step, TrainStep) and isinstance(step.loss_fn, SoftTargetCrossEntropy)
    assert step.mixup is not None and step.clip_grad == 1.0

    ema_before = {k: v.clone() for k, v in step.ema.module.state_dict().items()}
    weights_before = {k: v.clone() for k, v in step.model.state_dict().items()}
    raw = throughput.measure(step, throughput.synthetic_batches(bench_recipe, cpu, True), cfg, cpu)
    assert len(raw["step_times"]) == 2 and all(t > 0 for t in raw["compute_times"])
    for before, module in ((weights_before, step.model), (ema_before, step.ema.module)):
        after = module.state_dict()
        moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
        assert moved and len(moved) > len(before) // 2, moved  # the optimizer step, then the EMA update

    trainer = Trainer(recipe, tmp_path / "run")  # what `wmlp train` builds from the same recipe
    trainer._setup()
    try:
        trainer._build_data()
        trainer._build_model()
    finally:
        trainer.stop.uninstall()
        trainer.log.close()
    assert isinstance(trainer.train_step, TrainStep)
    assert trainer.train_step.describe() == step.describe()


def test_bench_data_mode_and_scaling_over_two_processes(wmlp_exe, mini_data, tmp_path):
    out = subprocess.run(
        [wmlp_exe, "bench", "--recipe", "cpu-demo", "--mode", "data", "--data", str(mini_data), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["img_s_per_worker"] > 0 and r["loader_img_s"] > 0 and r["images_timed"] == 30
    assert r["pipeline"] == "timm" and r["img_s_per_worker"] == r["timm_img_s_per_worker"]
    assert r["fast_vs_timm"] == pytest.approx(r["fast_img_s_per_worker"] / r["timm_img_s_per_worker"])
    assert r["decoder"] == "simplejpeg" and r["device_normalize_ms_per_img"] > 0
    out_json = tmp_path / "scale.json"
    out = subprocess.run(
        [
            wmlp_exe,
            "bench",
            "--recipe",
            "cpu-demo",
            "--device-counts",
            "1,2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch-size",
            "4",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out_json.read_text())
    assert set(r["results"]) == {"1", "2"} and r["results"]["2"]["world_size"] == 2
    assert r["scalability"]["2"] == pytest.approx(
        r["results"]["2"]["img_s_total"] / (2 * r["results"]["1"]["img_s_total"])
    )
    assert "scalability 1 -> 2:" in out.stdout
