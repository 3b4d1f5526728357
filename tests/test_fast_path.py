"""The fast token-mixing path computes the reference function: logits and one step's gradients."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wavemlp

from .test_models import _randomise


@pytest.mark.parametrize("name", ["wavemlp_t_dw", "wavemlp_t", "wavemlp_s", "wavemlp_m", "wavemlp_b"])
def test_fast_path_equals_reference_logits_and_gradients(name):
    # float64: in float32 a ReLU input within rounding of zero (tiny BatchNorm batches at 64 px) can
    # flip between the paths and move a whole gradient; in float64 the paths agree to ~1e-12.
    torch.manual_seed(0)
    ref = _randomise(wavemlp.create_model(name, num_classes=10)).train().double()
    fast = copy.deepcopy(ref)
    fast.set_fast_path(True)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y = torch.tensor([1, 7])
    losses = []
    for model in (ref, fast):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-10, atol=0)
    # Some gradients are zero up to rounding (a bias right before a BatchNorm): judge against the
    # largest gradient of the model as well as elementwise.
    top = max(p.grad.abs().max() for p in ref.parameters())
    for (n, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.allclose(p_ref.grad, p_fast.grad, rtol=1e-7, atol=1e-10 * float(top)), n
    # BatchNorm statistics in the phase branches are updated the same way in training mode
    for (n, b_ref), (_, b_fast) in zip(ref.named_buffers(), fast.named_buffers()):
        if b_ref.dtype.is_floating_point:
            assert torch.allclose(b_ref, b_fast, rtol=1e-10, atol=1e-12), n
    ref.eval()
    fast.eval()
    with torch.no_grad():
        a, b = ref(x), fast(x)
    assert (a - b).abs().max() <= 1e-10 * a.abs().max()


def test_fast_path_from_create_model_and_channels_last():
    model = wavemlp.create_model("wavemlp_s", fast_path=True).eval()
    ref = wavemlp.create_model("wavemlp_s").eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = ref(x)
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, atol=1e-5 * want.abs().max().item())


BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fast_path.py"


def test_benchmark_script_measures_both_sides_and_writes_json(tmp_path):
    out = tmp_path / "fast.json"
    cmd = [sys.executable, str(BENCH_SCRIPT), "--models", "WaveMLP_T_dw", "--img-size", "32", "--batch-size", "2",
           "--steps", "2", "--warmup", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    sides = {row["side"]: row for row in result["rows"]}
    assert set(sides) == {"ref", "fast"}
    assert sides["ref"]["vs_ref"] == 1.0 and sides["ref"]["label"].startswith("reference (fp32, NCHW")
    assert "channels_last" in sides["fast"]["label"] and sides["fast"]["img_s"] > 0
    assert sides["fast"]["vs_ref"] == pytest.approx(sides["fast"]["img_s"] / sides["ref"]["img_s"])
    assert "| WaveMLP_T_dw | fast (fp32, eager" in done.stdout


@pytest.mark.parametrize("sides, message", [
    ("ref,fast+fp8", "unknown flag 'fp8'"),
    ("ref+bf16", "the reference side is fp32 eager"),
    ("slow", "must start with 'ref' or 'fast'"),
])
def test_benchmark_script_refuses_bad_sides_in_one_line(sides, message):
    done = subprocess.run([sys.executable, str(BENCH_SCRIPT), "--sides", sides],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and message in done.stderr
    assert "Traceback" not in done.stderr
