"""`wmlp smoke` and `wmlp doctor` outside images (the image tests run them inside)."""

import json
import subprocess


def test_smoke_passes_on_the_cpu_and_prints_a_verdict(wmlp_exe):
    out = subprocess.run([wmlp_exe, "smoke", "--recipe", "cpu-demo"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["ok"] is True and verdict["device"] == "cpu" and verdict["precision"] == "fp32"
    assert verdict["loss"] > 0 and verdict["step_time_s"] > 0 and verdict["eval_logits_shape"] == [2, 10]
    assert verdict["torch"] and verdict["timm"] and verdict["checkpoint_bytes"] > 1_000_000


def test_smoke_fails_loudly_with_a_verdict(wmlp_exe):
    out = subprocess.run(
        [wmlp_exe, "smoke", "--recipe", "cpu-demo", "--device", "cuda"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 1
    verdict = json.loads(out.stdout)
    assert verdict["ok"] is False and "no CUDA/CoreX device" in verdict["error"]


def test_doctor_reports_environment_and_data(wmlp_exe, mini_data):
    out = subprocess.run([wmlp_exe, "doctor", "--data", str(mini_data)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA/CoreX device visible" in out.stdout
    assert "data train: 80 images, 10 classes" in out.stdout and "data val: 40 images, 10 classes" in out.stdout
    rep = json.loads(subprocess.run([wmlp_exe, "doctor", "--format", "json"], capture_output=True, text=True).stdout)
    assert rep["vendor"] == "cpu" and rep["device_count"] == 0 and "torch" in rep
    assert "JPEG decoder simplejpeg" in out.stdout and rep["jpeg_decoder"] == "simplejpeg"


def test_doctor_exits_1_when_the_data_check_fails(wmlp_exe, tmp_path):
    (tmp_path / "train").mkdir()  # no val split, and no classes in train
    out = subprocess.run([wmlp_exe, "doctor", "--data", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "data val: " in out.stdout and "python" in out.stdout.lower()  # the whole report still printed
    assert out.stderr.strip().endswith("wmlp: doctor: the data check failed (train, val)"), out.stderr
