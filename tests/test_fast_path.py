"""The fast token-mixing path computes the reference function: logits and one step's gradients."""

import copy

import pytest
import torch

import wavemlp

from .test_models import _randomise


@pytest.mark.parametrize("name", ["wavemlp_t_dw", "wavemlp_t", "wavemlp_s", "wavemlp_m", "wavemlp_b"])
def test_fast_path_equals_reference_logits_and_gradients(name):
    ref = _randomise(wavemlp.create_model(name, num_classes=10)).train()
    fast = copy.deepcopy(ref)
    fast.set_fast_path(True)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 7])
    losses = []
    for model in (ref, fast):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    # Some gradients are zero up to rounding (a bias right before a BatchNorm): judge against the
    # largest gradient of the model, and each tensor relative to its own size.
    top = max(p.grad.abs().max() for p in ref.parameters())
    for (n, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.allclose(p_ref.grad, p_fast.grad, rtol=1e-3, atol=1e-5 * float(top)), n
    # BatchNorm statistics in the phase branches are updated the same way in training mode
    for (n, b_ref), (_, b_fast) in zip(ref.named_buffers(), fast.named_buffers()):
        if b_ref.dtype.is_floating_point:
            assert torch.allclose(b_ref, b_fast, rtol=1e-5, atol=1e-6), n
    ref.eval()
    fast.eval()
    with torch.no_grad():
        a, b = ref(x), fast(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_fast_path_from_create_model_and_channels_last():
    model = wavemlp.create_model("wavemlp_s", fast_path=True).eval()
    ref = wavemlp.create_model("wavemlp_s").eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = ref(x)
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, atol=1e-5 * want.abs().max().item())
