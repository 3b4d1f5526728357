"""The Wave-MLP family: exact state_dict contract, forward semantics, checkpoints, timm integration."""

import argparse

import pytest
import timm
import torch

import wavemlp.models  # registers the timm names too
from wavemlp.models import VARIANTS, CheckpointError, UnknownModelError, drop_path_rates
from wavemlp.models.wavemlp import WaveBlock

from .reference_wavemlp import reference_forward

AUTHOR = ["WaveMLP_T_dw", "WaveMLP_T", "WaveMLP_S", "WaveMLP_M", "WaveMLP_B"]
LOWER = [n.lower() for n in AUTHOR]


@pytest.mark.parametrize("name", AUTHOR)
def test_state_dict_matches_spec_key_by_key(name, state_dict_spec):
    model = wavemlp.create_model(name)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    want = state_dict_spec[name]["state_dict"]
    assert [k for k, _ in got] == [k for k, _ in want]
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == state_dict_spec[name]["params"]


def _randomise(model):
    # Non-trivial BatchNorm statistics and weights, so every branch of the computation matters.
    # Kept small: phases far from zero make cos/sin chaotic in float32, hiding real differences.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1 and name.endswith(".weight"):  # norm scales
                t.copy_(1.0 + 0.1 * noise)
            else:
                t.copy_(0.03 * noise)
    return model.eval()


@pytest.mark.parametrize("name", LOWER)
def test_forward_equals_functional_reference_from_spec(name):
    model = _randomise(wavemlp.create_model(name))
    arch = VARIANTS[name]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(model.state_dict(), x, arch["layers"], arch["mode"] == "depthwise", arch["norm"])
    scale = ref.abs().max()
    assert scale > 0.1  # a degenerate (all-zero) comparison would prove nothing
    assert (ours - ref).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("name", ["WaveMLP_T_dw", "WaveMLP_S"])
def test_forward_shapes_at_224_and_other_sizes(name):
    model = wavemlp.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert model(torch.randn(2, 3, 256, 160)).shape == (2, 1000)
        assert model.forward_features(torch.randn(1, 3, 96, 96)).shape == (1, 512, 3, 3)


def test_every_variant_gives_logits_at_224():
    with torch.no_grad():
        for name in ["WaveMLP_M", "WaveMLP_B"]:
            assert wavemlp.create_model(name).eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name", ["wavemlp_s", "wavemlp_m"])
def test_drop_path_rates_are_linear_over_all_blocks(name):
    model = wavemlp.create_model(name, drop_path_rate=0.3)
    blocks = [m for m in model.modules() if isinstance(m, WaveBlock)]
    n = sum(VARIANTS[name]["layers"])
    assert len(blocks) == n
    got = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert got == pytest.approx([0.3 * k / (n - 1) for k in range(n)])
    assert got[0] == 0.0 and got[-1] == pytest.approx(0.3)
    assert drop_path_rates([1], 0.5) == [0.0]


def test_norm_layout_per_variant():
    s, m, t = (wavemlp.create_model(n) for n in ("wavemlp_s", "wavemlp_m", "wavemlp_t"))
    assert isinstance(s.network[0][0].norm1, torch.nn.GroupNorm) and s.network[0][0].norm1.num_groups == 1
    assert isinstance(s.network[0][0].attn.theta_h_conv[1], torch.nn.BatchNorm2d)
    assert isinstance(s.patch_embed.norm, torch.nn.GroupNorm)
    assert isinstance(m.patch_embed.norm, torch.nn.Identity) and isinstance(m.network[1].norm, torch.nn.Identity)
    assert isinstance(t.network[0][0].norm1, torch.nn.BatchNorm2d)


# --- checkpoints ------------------------------------------------------------------------------------


def _saved_forms(sd):
    ddp = {"module." + k: v for k, v in sd.items()}
    return {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "ddp_prefixed": {"state_dict": ddp},
        "model": {"model": sd},
        "authors_with_namespace": {"state_dict": ddp, "args": argparse.Namespace(lr=1e-3), "arch": "WaveMLP_T_dw"},
    }


@pytest.mark.parametrize("form", ["bare", "state_dict", "ddp_prefixed", "model", "authors_with_namespace"])
def test_checkpoint_round_trip_every_saved_form(tmp_path, form):
    src = _randomise(wavemlp.create_model("WaveMLP_T_dw"))
    path = tmp_path / "WaveMLP_T_dw.pth.tar"
    torch.save(_saved_forms(src.state_dict())[form], path)
    if form == "authors_with_namespace":  # the authors' files pickle argparse.Namespace: loaded, with a warning
        with pytest.warns(UserWarning, match="beyond tensors"):
            dst = wavemlp.create_model("WaveMLP_T_dw", checkpoint_path=str(path)).eval()
    else:
        dst = wavemlp.create_model("WaveMLP_T_dw", checkpoint_path=str(path)).eval()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_ema_weights_are_a_choice(tmp_path):
    raw, ema = wavemlp.create_model("wavemlp_t_dw"), _randomise(wavemlp.create_model("wavemlp_t_dw"))
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    loaded = wavemlp.create_model("wavemlp_t_dw", checkpoint_path=path, use_ema=True)
    assert torch.equal(loaded.head.weight, ema.head.weight)
    loaded = wavemlp.create_model("wavemlp_t_dw", checkpoint_path=path)
    assert torch.equal(loaded.head.weight, raw.head.weight)
    torch.save({"state_dict": raw.state_dict()}, path)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        wavemlp.create_model("wavemlp_t_dw", checkpoint_path=path, use_ema=True)


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(wavemlp.create_model("wavemlp_t").state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        wavemlp.create_model("wavemlp_t_dw", checkpoint_path=path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and "unexpected" in msg and "shape conflicts" in msg
    assert "theta_h_conv.0.bias" in msg  # fc-mode phase conv has a bias, depthwise has none


def test_other_num_classes_skips_head_on_request(tmp_path):
    path = tmp_path / "full.pth"
    src = _randomise(wavemlp.create_model("wavemlp_t_dw"))
    torch.save(src.state_dict(), path)
    with pytest.raises(CheckpointError, match="skip_head=True"):
        wavemlp.create_model("wavemlp_t_dw", num_classes=10, checkpoint_path=path)
    model = wavemlp.create_model("wavemlp_t_dw", num_classes=10, checkpoint_path=path, skip_head=True)
    assert model.head.out_features == 10
    assert torch.equal(model.patch_embed.proj.weight, src.patch_embed.proj.weight)
    model.reset_classifier(5)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_pretrained_without_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVEMLP_PRETRAINED_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError) as err:
        wavemlp.create_model("WaveMLP_S", pretrained=True)
    msg = str(err.value)
    assert "WaveMLP_S.pth.tar" in msg and "WAVEMLP_PRETRAINED_DIR" in msg and str(tmp_path / "cache") in msg
    with pytest.raises(CheckpointError, match="no released weights"):
        wavemlp.create_model("WaveMLP_B", pretrained=True)


def test_pretrained_found_in_env_folder_and_through_timm(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    src = _randomise(wavemlp.create_model("wavemlp_t_dw"))
    torch.save({"state_dict": src.state_dict()}, weights / "WaveMLP_T_dw.pth.tar")
    monkeypatch.setenv("WAVEMLP_PRETRAINED_DIR", str(weights))
    for model in (
        wavemlp.create_model("WaveMLP_T_dw", pretrained=True),
        timm.create_model("wavemlp_t_dw", pretrained=True),
    ):
        assert torch.equal(model.head.weight, src.head.weight)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean WaveMLP_T_dw"):
        wavemlp.create_model("WaveMLP_Tdw")
    with pytest.raises(UnknownModelError, match="known: wavemlp_t_dw"):
        wavemlp.create_model("resnet50")


def test_truncated_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(wavemlp.create_model("wavemlp_t_dw").state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        wavemlp.create_model("wavemlp_t_dw", checkpoint_path=path)


# --- timm integration ------------------------------------------------------------------------------


def test_timm_registry_lists_the_family_with_configs():
    assert sorted(timm.list_models("wavemlp*")) == sorted(LOWER)
    model = timm.create_model("wavemlp_s")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.9
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert timm.create_model("wavemlp_b").pretrained_cfg["crop_pct"] == 0.875
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["crop_pct"] == 0.9


def test_features_only_returns_four_stages():
    model = timm.create_model("wavemlp_t_dw", features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [64, 128, 320, 512]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 320, 8, 8), (1, 512, 4, 4)]
    two = timm.create_model("wavemlp_t_dw", features_only=True, out_indices=(1, 3))
    assert two.feature_info.reduction() == [8, 32]


@pytest.mark.parametrize("name", ["WaveMLP_T_dw", "WaveMLP_S"])
def test_one_training_step_changes_weights_with_finite_loss(name):
    torch.manual_seed(0)
    model = wavemlp.create_model(name, num_classes=10, drop_path_rate=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.randint(0, 10, (4,)))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)


def test_channels_last_gives_same_logits():
    model = _randomise(wavemlp.create_model("wavemlp_t"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, cl, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_gives_same_logits():
    if not hasattr(torch, "compile"):
        pytest.skip("torch < 2.0 has no torch.compile")
    model = _randomise(wavemlp.create_model("wavemlp_t_dw"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model)(x), model(x), atol=1e-4)
