"""A second, functional Wave-MLP forward written straight from the spec's text, over a state_dict.

It shares no code with ``wavemlp.models``: if both agree, the module tree computes what the spec
says (cos/sin order, the (B, C, 3) softmax layout, BatchNorm in the phase branch, norms per variant).
"""

import torch
import torch.nn.functional as F


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False)


def _norm(x, sd, p, kind):
    if p + ".weight" not in sd:  # Identity (stem/downsample of M and B)
        return x
    if kind == "group":
        return F.group_norm(x, 1, sd[p + ".weight"], sd[p + ".bias"])
    return _bn(x, sd, p)


def _conv(x, sd, p, **kw):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), **kw)


def _mlp(x, sd, p):
    return _conv(F.gelu(_conv(x, sd, p + ".fc1")), sd, p + ".fc2")


def _patm(x, sd, p, dw):
    B, C, H, W = x.shape
    kw = dict(padding=1, groups=C) if dw else {}
    th = F.relu(_bn(_conv(x, sd, p + ".theta_h_conv.0", **kw), sd, p + ".theta_h_conv.1"))
    tw = F.relu(_bn(_conv(x, sd, p + ".theta_w_conv.0", **kw), sd, p + ".theta_w_conv.1"))
    xh, xw, c = _conv(x, sd, p + ".fc_h"), _conv(x, sd, p + ".fc_w"), _conv(x, sd, p + ".fc_c")

    # The grouped conv written as a dense one: output channel k reads concatenation channels 2k and
    # 2k+1, where channel j < C is amp*cos(theta)[j] and channel j >= C is amp*sin(theta)[j - C].
    def token_mix(amp, theta, weight, padding):
        cat = torch.cat([amp * torch.cos(theta), amp * torch.sin(theta)], 1)
        dense = weight.new_zeros((C, 2 * C) + tuple(weight.shape[2:]))
        for k in range(C):
            dense[k, 2 * k : 2 * k + 2] = weight[k]
        return F.conv2d(cat, dense, padding=padding)

    h = token_mix(xh, th, sd[p + ".tfc_h.weight"], (0, 3))
    w = token_mix(xw, tw, sd[p + ".tfc_w.weight"], (3, 0))
    a = (h + w + c).mean(dim=(2, 3), keepdim=True)
    a = _mlp(a, sd, p + ".reweight").flatten(1)  # (B, 3C): value 3k + j belongs to channel k, branch j
    a = torch.stack([a[:, j::3] for j in range(3)], -1).softmax(-1)  # (B, C, 3)
    out = h * a[:, :, 0, None, None] + w * a[:, :, 1, None, None] + c * a[:, :, 2, None, None]
    return _conv(out, sd, p + ".proj")


def reference_forward(sd, x, layers, dw, norm):
    x = _norm(_conv(x, sd, "patch_embed.proj", stride=4, padding=2), sd, "patch_embed.norm", norm)
    for s, depth in enumerate(layers):
        for i in range(depth):
            p = f"network.{2 * s}.{i}"
            x = x + _patm(_norm(x, sd, p + ".norm1", norm), sd, p + ".attn", dw)
            x = x + _mlp(_norm(x, sd, p + ".norm2", norm), sd, p + ".mlp")
        if s < len(layers) - 1:
            d = f"network.{2 * s + 1}"
            x = _norm(_conv(x, sd, d + ".proj", stride=2, padding=1), sd, d + ".norm", norm)
    x = _norm(x, sd, "norm", norm).mean(dim=(2, 3))
    return F.linear(x, sd["head.weight"], sd["head.bias"])
