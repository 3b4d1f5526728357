"""Wave-MLP: "An Image Patch is a Wave: Phase-Aware Vision MLP" (Tang et al., CVPR 2022).

One file for the whole family, in the manner of timm's model files. The module tree and parameter
names are a contract: they match the authors' released checkpoints key for key, so
``load_state_dict(strict=True)`` works on ``WaveMLP_*.pth.tar`` as released.

Runs inside vendor images: Python 3.8 syntax, torch >= 1.13, timm >= 0.9.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .checkpoint import load_pretrained

__all__ = ["WaveMLP", "WaveBlock", "PATM", "ConvMlp", "VARIANTS", "AUTHOR_NAMES"]


class ConvMlp(nn.Module):
    """Two 1x1 convolutions with GELU between: the channel MLP of a block, and PATM's re-weighting."""

    def __init__(self, in_chs: int, hidden_chs: int, out_chs: Optional[int] = None, drop: float = 0.0):
        super().__init__()
        out_chs = out_chs or in_chs
        self.fc1 = nn.Conv2d(in_chs, hidden_chs, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_chs, out_chs, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


def _phase_branch(dim: int, mode: str) -> nn.Sequential:
    # The phase branch is always BatchNorm, whatever norm the block uses: the released weights hold
    # running statistics here even for the GroupNorm variants.
    if mode == "fc":
        conv = nn.Conv2d(dim, dim, 1, bias=True)
    elif mode == "depthwise":
        conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
    else:
        raise ValueError(f"PATM mode must be 'fc' or 'depthwise', got {mode!r}")
    return nn.Sequential(conv, nn.BatchNorm2d(dim), nn.ReLU(inplace=True))


class PATM(nn.Module):
    """Phase-aware token mixing: each token is a wave with an amplitude and a phase."""

    def __init__(self, dim: int, proj_drop: float = 0.0, mode: str = "fc", fast_path: bool = False):
        super().__init__()
        self.mode = mode
        self.fast_path = fast_path
        # Registration order below fixes the state_dict order of the released checkpoints.
        self.fc_h = nn.Conv2d(dim, dim, 1, bias=False)
        self.fc_w = nn.Conv2d(dim, dim, 1, bias=False)
        self.fc_c = nn.Conv2d(dim, dim, 1, bias=False)
        # groups=dim over 2*dim inputs: each output channel reads the pair (2k, 2k+1) of the
        # cos/sin concatenation, which is how the reference mixes them.
        self.tfc_h = nn.Conv2d(2 * dim, dim, (1, 7), padding=(0, 3), groups=dim, bias=False)
        self.tfc_w = nn.Conv2d(2 * dim, dim, (7, 1), padding=(3, 0), groups=dim, bias=False)
        self.reweight = ConvMlp(dim, dim // 4, dim * 3)
        self.proj = nn.Conv2d(dim, dim, 1, bias=True)
        self.proj_drop = nn.Dropout(proj_drop)
        self.theta_h_conv = _phase_branch(dim, mode)
        self.theta_w_conv = _phase_branch(dim, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path:
            return self.forward_fast(x)
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The computation as the paper and the released code write it: the reference for every test."""
        B, C, _, _ = x.shape
        theta_h = self.theta_h_conv(x)
        theta_w = self.theta_w_conv(x)
        x_h = self.fc_h(x)
        x_w = self.fc_w(x)
        # Euler's formula unrolled into real channels: all C cosine terms, then all C sine terms.
        u_h = torch.cat([x_h * torch.cos(theta_h), x_h * torch.sin(theta_h)], dim=1)
        u_w = torch.cat([x_w * torch.cos(theta_w), x_w * torch.sin(theta_w)], dim=1)
        h = self.tfc_h(u_h)
        w = self.tfc_w(u_w)
        c = self.fc_c(x)
        a = F.adaptive_avg_pool2d(h + w + c, output_size=1)
        # (B, 3C, 1, 1) -> (B, C, 3): three consecutive values per channel, softmax across the three.
        a = self.reweight(a).reshape(B, C, 3).softmax(dim=2)
        a = a.permute(2, 0, 1).unsqueeze(-1).unsqueeze(-1)
        x = h * a[0] + w * a[1] + c * a[2]
        return self.proj_drop(self.proj(x))

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with fewer passes over memory (same parameters, same state_dict).

        - the three 1x1 convolutions that read x (fc_h, fc_w, fc_c) run as one convolution with 3C
          outputs: one pass over x, one larger GEMM (the phase convolutions stay apart: their
          BatchNorm would read a strided slice, which is slow on channels_last);
        - the pooled sum h + w + c is the sum of three pooled maps: no full-size temporary;
        - the re-weighting accumulates in place (one product, two fused multiply-adds).
        """
        B, C, _, _ = x.shape
        weight = torch.cat([self.fc_h.weight, self.fc_w.weight, self.fc_c.weight], 0)
        x_h, x_w, c = F.conv2d(x, weight).split(C, dim=1)
        theta_h = self.theta_h_conv(x)
        theta_w = self.theta_w_conv(x)
        h = self.tfc_h(torch.cat([x_h * torch.cos(theta_h), x_h * torch.sin(theta_h)], dim=1))
        w = self.tfc_w(torch.cat([x_w * torch.cos(theta_w), x_w * torch.sin(theta_w)], dim=1))
        pooled = h.mean((2, 3), keepdim=True) + w.mean((2, 3), keepdim=True) + c.mean((2, 3), keepdim=True)
        a = self.reweight(pooled).reshape(B, C, 3).softmax(dim=2).unsqueeze(-1).unsqueeze(-1)
        out = h * a[:, :, 0]
        out = out.addcmul_(w, a[:, :, 1]).addcmul_(c, a[:, :, 2])
        return self.proj_drop(self.proj(out))


class WaveBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer=nn.BatchNorm2d,
        mode: str = "fc",
        fast_path: bool = False,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = PATM(dim, proj_drop=drop, mode=mode, fast_path=fast_path)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class ConvNormDown(nn.Module):
    """A strided convolution followed by the variant's norm (or Identity): stem and downsamplers."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, norm_layer=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def group_norm_1(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with one group: a LayerNorm over (C, H, W), as the S/M/B variants use."""
    return nn.GroupNorm(1, num_channels)


def drop_path_rates(depths: Sequence[int], rate: float) -> List[float]:
    """Linear schedule over all blocks of all stages: block k gets rate * k / (N - 1)."""
    total = sum(depths)
    if total <= 1:
        return [0.0] * total
    return [rate * k / (total - 1) for k in range(total)]


class WaveMLP(nn.Module):
    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 4, 2),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        mode: str = "fc",
        norm_layer=nn.BatchNorm2d,
        use_downsample_norm: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        fast_path: bool = False,
    ):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = embed_dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        down_norm = norm_layer if use_downsample_norm else None

        self.patch_embed = ConvNormDown(in_chans, embed_dims[0], 7, 4, 2, norm_layer=down_norm)
        dpr = drop_path_rates(layers, drop_path_rate)
        network = []
        self.feature_info = []
        block_idx = 0
        reduction = 4
        for i, depth in enumerate(layers):
            blocks = [
                WaveBlock(
                    embed_dims[i],
                    mlp_ratio=mlp_ratios[i],
                    drop=drop_rate,
                    drop_path=dpr[block_idx + j],
                    norm_layer=norm_layer,
                    mode=mode,
                    fast_path=fast_path,
                )
                for j in range(depth)
            ]
            block_idx += depth
            network.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"network.{2 * i}"))
            if i < len(layers) - 1:
                network.append(ConvNormDown(embed_dims[i], embed_dims[i + 1], 3, 2, 1, norm_layer=down_norm))
                reduction *= 2
        self.network = nn.ModuleList(network)
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def set_fast_path(self, enable: bool = True) -> None:
        """Switch every token-mixing layer between the reference and the fast computation."""
        for m in self.modules():
            if isinstance(m, PATM):
                m.fast_path = enable

    # --- timm model protocol -------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r"^patch_embed", blocks=r"^network\.(\d+)" if coarse else r"^network\.(\d+)\.?(\d+)?")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            self._init_weights(self.head)

    def _run_stage(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq

            if isinstance(module, nn.Sequential):
                return checkpoint_seq(module, x)
        return module(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for module in self.network:
            x = self._run_stage(module, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = F.adaptive_avg_pool2d(x, output_size=1).flatten(1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The four stage outputs (strides 4, 8, 16, 32), as timm's feature extraction expects."""
        if output_fmt != "NCHW":
            raise ValueError("WaveMLP produces NCHW features only")
        take = _feature_indices(indices, len(self.feature_info))
        intermediates = []
        x = self.patch_embed(x)
        last = max(take)
        for i, module in enumerate(self.network):
            x = self._run_stage(module, x)
            if i % 2 == 0:
                stage = i // 2
                if stage in take:
                    is_last = stage == len(self.feature_info) - 1
                    intermediates.append(self.norm(x) if (norm and is_last) else x)
                if stop_early and stage == last:
                    break
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        take = _feature_indices(indices, len(self.feature_info))
        keep = 2 * max(take) + 1
        self.network = self.network[:keep]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _feature_indices(indices: Optional[Union[int, List[int]]], n: int) -> List[int]:
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        return list(range(n - indices, n))
    return [i % n for i in indices]


# --- the family ------------------------------------------------------------------------------------

# name -> architecture; the authors' names are kept as aliases so that their scripts' names work.
VARIANTS = {
    "wavemlp_t_dw": dict(layers=(2, 2, 4, 2), mlp_ratios=(4, 4, 4, 4), mode="depthwise", norm="batch", down_norm=True),
    "wavemlp_t": dict(layers=(2, 2, 4, 2), mlp_ratios=(4, 4, 4, 4), mode="fc", norm="batch", down_norm=True),
    "wavemlp_s": dict(layers=(2, 3, 10, 3), mlp_ratios=(4, 4, 4, 4), mode="fc", norm="group", down_norm=True),
    "wavemlp_m": dict(layers=(3, 4, 18, 3), mlp_ratios=(8, 8, 4, 4), mode="fc", norm="group", down_norm=False),
    "wavemlp_b": dict(
        layers=(2, 2, 18, 2),
        embed_dims=(96, 192, 384, 768),
        mlp_ratios=(4, 4, 4, 4),
        mode="fc",
        norm="group",
        down_norm=False,
    ),
}
AUTHOR_NAMES = {
    "wavemlp_t_dw": "WaveMLP_T_dw",
    "wavemlp_t": "WaveMLP_T",
    "wavemlp_s": "WaveMLP_S",
    "wavemlp_m": "WaveMLP_M",
    "wavemlp_b": "WaveMLP_B",
}
_NORMS = {"batch": nn.BatchNorm2d, "group": group_norm_1}


def _cfg(crop_pct: float = 0.9, **kwargs):
    return dict(
        url="",
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=crop_pct,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj",
        classifier="head",
        license="mit",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "wavemlp_t_dw.in1k": _cfg(file="WaveMLP_T_dw.pth.tar"),
        "wavemlp_t.in1k": _cfg(file="WaveMLP_T.pth.tar"),
        "wavemlp_s.in1k": _cfg(file="WaveMLP_S.pth.tar"),
        "wavemlp_m.in1k": _cfg(file="WaveMLP_M.pth.tar"),
        # No released checkpoint exists for B: the cfg still carries its preprocessing.
        "wavemlp_b.untrained": _cfg(crop_pct=0.875),
    }
)


def _create_wavemlp(variant: str, pretrained: bool = False, **kwargs) -> WaveMLP:
    arch = dict(VARIANTS[variant])
    norm = _NORMS[arch.pop("norm")]
    down_norm = arch.pop("down_norm")
    checkpoint_path = kwargs.pop("checkpoint_path", None)
    use_ema = kwargs.pop("use_ema", False)
    skip_head = kwargs.pop("skip_head", False)
    features_only = kwargs.pop("features_only", False)
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    model_args = dict(arch, norm_layer=norm, use_downsample_norm=down_norm)
    model_args.update(kwargs)
    # Weights never come from timm's hub: the local resolver loads them into the whole model first,
    # and only then is it wrapped for feature extraction (the wrapper prunes norm and head).
    model = build_model_with_cfg(WaveMLP, variant, pretrained=False, **model_args)
    if pretrained or checkpoint_path:
        released = model.pretrained_cfg.get("file")
        load_pretrained(model, variant, released, checkpoint_path=checkpoint_path, use_ema=use_ema, skip_head=skip_head)
    if features_only:
        model = _feature_wrapper(model, out_indices)
    return model


def _feature_wrapper(model: WaveMLP, out_indices) -> nn.Module:
    try:
        from timm.models._features import FeatureGetterNet
    except ImportError:  # timm < 1.0 has no getter-based feature wrapper
        raise RuntimeError("features_only=True needs timm >= 1.0 (FeatureGetterNet)") from None
    cfg = model.pretrained_cfg
    wrapped = FeatureGetterNet(model, out_indices=out_indices)
    wrapped.pretrained_cfg = wrapped.default_cfg = cfg
    return wrapped


@register_model
def wavemlp_t_dw(pretrained: bool = False, **kwargs) -> WaveMLP:
    """WaveMLP_T_dw (T*): layers 2-2-4-2, depthwise phase, BatchNorm; 15.3 M params, 2.1 GMACs."""
    return _create_wavemlp("wavemlp_t_dw", pretrained=pretrained, **kwargs)


@register_model
def wavemlp_t(pretrained: bool = False, **kwargs) -> WaveMLP:
    """WaveMLP_T: layers 2-2-4-2, fc phase, BatchNorm; 17.2 M params, 2.4 GMACs."""
    return _create_wavemlp("wavemlp_t", pretrained=pretrained, **kwargs)


@register_model
def wavemlp_s(pretrained: bool = False, **kwargs) -> WaveMLP:
    """WaveMLP_S: layers 2-3-10-3, fc phase, GroupNorm(1); 30.7 M params, 4.5 GMACs."""
    return _create_wavemlp("wavemlp_s", pretrained=pretrained, **kwargs)


@register_model
def wavemlp_m(pretrained: bool = False, **kwargs) -> WaveMLP:
    """WaveMLP_M: layers 3-4-18-3, mlp ratios 8-8-4-4, no norm in stem/downsample; 44.1 M params, 7.9 GMACs."""
    return _create_wavemlp("wavemlp_m", pretrained=pretrained, **kwargs)


@register_model
def wavemlp_b(pretrained: bool = False, **kwargs) -> WaveMLP:
    """WaveMLP_B: layers 2-2-18-2, widths 96-768, no norm in stem/downsample; 63.6 M params, 10.2 GMACs."""
    return _create_wavemlp("wavemlp_b", pretrained=pretrained, **kwargs)
