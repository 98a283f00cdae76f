"""Torch modules of the built-in blocks and layers.

These classes are the single source of truth for both backends: the interpreter instantiates them
and the code generator copies their source into generated files, so the two cannot drift apart.
They therefore use only ``torch``, ``nn`` and ``math``, and their ``forward`` is TorchScript-able.
Layer names and the order of operations equal timm's ``DlaBasic`` / ``DlaBottleneck`` /
``DlaBottle2neck`` / ``DlaRoot`` (and the official ``BasicBlock`` / ``Bottleneck`` / ``BottleneckX``
/ ``Root``), so state_dict keys match and outputs are bit-identical.
"""

from __future__ import annotations

import math

import torch
import torch.utils.checkpoint
from torch import nn

__all__ = [
    "DlaBasic",
    "DlaBottleneck",
    "DlaBottle2neck",
    "DlaRoot",
    "DCN",
    "DeformConv",
    "centernet_head",
    "conv_bn_relu",
    "project",
]


class DlaBasic(nn.Module):
    """Basic residual block (paper Fig. 3a): 3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut
        return self.relu(out)


class DlaBottleneck(nn.Module):
    """Bottleneck (Fig. 3b, groups=1) or split block (Fig. 3c, groups=cardinality):
    1x1 conv to ``mid_channels``, 3x3 grouped conv (strided), 1x1 conv, + shortcut, ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        mid_channels: int = 0,
        groups: int = 1,
    ):
        super().__init__()
        mid = mid_channels or out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, dilation, dilation, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut
        return self.relu(out)


class DlaBottle2neck(nn.Module):
    """Res2Net bottleneck (timm ``DlaBottle2neck``): the 1x1 output is split in ``scale`` groups;
    each 3x3 conv also sees the previous group's output, except in a strided block."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        scale: int = 4,
        cardinality: int = 8,
        base_width: int = 4,
    ):
        super().__init__()
        self.is_first = stride > 1
        self.scale = scale
        width = (out_channels * base_width // 64) * cardinality // 2
        self.width = width
        self.conv1 = nn.Conv2d(in_channels, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        num = max(1, scale - 1)
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(
                    width, width, 3, stride, dilation, dilation, groups=cardinality, bias=False
                )
                for _ in range(num)
            ]
        )
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(num)])
        self.pool = nn.AvgPool2d(3, stride, 1) if self.is_first else nn.Identity()
        self.conv3 = nn.Conv2d(width * scale, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        spo: list[torch.Tensor] = []
        sp = spx[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):  # noqa: B905 - TorchScript
            sp = spx[i] if i == 0 or self.is_first else sp + spx[i]
            sp = self.relu(bn(conv(sp)))
            spo.append(sp)
        if self.scale > 1:
            spo.append(self.pool(spx[-1]))
        out = self.bn3(self.conv3(torch.cat(spo, 1)))
        out += shortcut
        return self.relu(out)


class DlaRoot(nn.Module):
    """Aggregation node N (eq. 3): concat in argument order -> conv -> BN (-> + input 0, eq. 4)
    -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, residual: bool = False
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, 1, (kernel_size - 1) // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = self.bn(self.conv(torch.cat(xs, 1)))
        if self.residual:
            x += xs[0]
        return self.relu(x)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, convs: int = 1, stride: int = 1
) -> nn.Sequential:
    """``convs`` x (conv-BN-ReLU), the first strided: the stem and the conv levels (Levels 1-2)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size,
                stride if i == 0 else 1,
                kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def project(in_channels: int, out_channels: int) -> nn.Sequential:
    """The first block's shortcut projection: 1x1 conv + BN, no ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
    )


def init_weights(model: nn.Module) -> None:
    """The official (and timm) init: convs ~ N(0, sqrt(2 / (k*k*out))), BN weight 1 and bias 0.
    Tensors on the meta device (a model about to be loaded) have nothing to initialise."""
    for m in model.modules():
        if getattr(m, "weight", None) is not None and m.weight.is_meta:
            continue
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()


def bilinear_up(channels: int, factor: int, trainable: bool = True) -> nn.ConvTranspose2d:
    """Depthwise ``factor``x transposed conv initialised as bilinear upsampling (official
    ``fill_up_weights``). ``init_weights`` leaves it alone: it re-initialises ``nn.Conv2d`` only,
    and ``nn.ConvTranspose2d`` is not one."""
    up = nn.ConvTranspose2d(
        channels, channels, 2 * factor, factor, factor // 2, groups=channels, bias=False
    )
    w = up.weight.data
    f = math.ceil(w.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    for i in range(w.size(2)):
        for j in range(w.size(3)):
            w[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
    w[1:, 0] = w[0, 0]
    up.weight.requires_grad_(trainable)
    return up


def ida_node(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """The official IDAUp aggregation node: conv-BN-ReLU on the concatenated inputs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DCN(nn.Module):
    """DCNv2's modulated deformable convolution, without a compiled extension.

    ``conv_offset_mask`` predicts 3 x k*k channels: the first two thirds are the (dy, dx) offsets
    of each kernel tap, the last third the mask (through a sigmoid). It starts at zero, so an
    untrained DCN is a plain conv with every tap weighted 0.5. The deformable conv itself is
    ``torchvision::deform_conv2d``; parameter names, their order and the init (weight uniform
    +-1/sqrt(fan_in), bias 0) equal DCNv2's, so its checkpoints load as they are.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
    ):
        super().__init__()
        import torchvision  # noqa: F401 - registers torchvision::deform_conv2d (a 1 s import)

        self.stride, self.padding, self.dilation = stride, padding, dilation
        k = kernel_size
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, k, k).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * k * k, k, stride, padding, bias=True)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        s, p, d = self.stride, self.padding, self.dilation
        return torch.ops.torchvision.deform_conv2d(
            x, self.weight, offset, torch.sigmoid(mask), self.bias, s, s, p, p, d, d, 1, 1, True
        )


class DeformConv(nn.Module):
    """CenterNet's ``DeformConv``: a 3x3 DCN (or, with ``deformable=False``, FairMOT's plain 3x3
    conv without bias) -> BN -> ReLU. ``actf`` is registered first, as in the published code."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = True):
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.conv = (
            DCN(in_channels, out_channels)
            if deformable
            else nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


def centernet_head(
    in_channels: int,
    head_conv: int,
    out_channels: int,
    final_kernel: int = 1,
    heatmap: bool = False,
) -> nn.Module:
    """A CenterNet task head, initialised like the published code: a heatmap's last bias is
    -2.19 (a focal-loss prior of 0.1), every bias of the other heads 0, weights PyTorch's."""
    first = nn.Conv2d(in_channels, head_conv, 3, padding=1, bias=True) if head_conv else None
    last = nn.Conv2d(
        head_conv or in_channels, out_channels, final_kernel, padding=final_kernel // 2, bias=True
    )
    head: nn.Module = nn.Sequential(first, nn.ReLU(inplace=True), last) if first else last
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.Conv2d) and not heatmap:
                m.bias.zero_()
        if heatmap:
            last.bias.fill_(-2.19)
    return head


def read_weights(source: str | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file (read with
    ``weights_only=True``), unwrapped from ``{"state_dict": …}`` / ``{"model": …}`` and DDP's
    ``module.`` prefix."""
    if isinstance(source, dict):
        sd = source
    elif str(source).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(source))
    else:
        try:  # memory-mapped: read once, while the model copies it
            sd = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files from before torch 1.6 cannot be mapped
            sd = torch.load(source, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def assign_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Make ``state``'s tensors the parameters and buffers of ``model`` (built on the meta device),
    in the model's dtypes; names and shapes must match exactly. The caller gives tensors the model
    may own (not views of a memory-mapped file, nor of another model's)."""
    own = model.state_dict(keep_vars=True)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise RuntimeError(
            f"checkpoint does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, other shapes {shapes[:5]}"
        )
    owners = dict(model.named_modules())
    for key, value in state.items():
        path, _, name = key.rpartition(".")
        owner, old = owners[path], own[key]
        if name in owner._parameters:
            owner._parameters[name] = nn.Parameter(value.to(old.dtype), old.requires_grad)
        else:
            owner._buffers[name] = value.to(old.dtype)


def feature_take_indices(
    num: int, indices: int | list[int] | tuple[int, ...] | None = None
) -> tuple[list[int], int]:
    """timm's rule: None takes all ``num`` features, an int ``n`` the last ``n``, a sequence those
    indices (negative ones from the end). Returns the indices and the largest."""
    if indices is None:
        indices = num
    if isinstance(indices, int):
        if not 0 < indices <= num:
            raise ValueError(f"take the last 1 to {num} features, not {indices}")
        take = list(range(num - indices, num))
    else:
        take = [num + i if i < 0 else i for i in indices]
        if not all(0 <= i < num for i in take):
            raise ValueError(f"feature indices {list(indices)} are out of range for {num} levels")
    return take, max(take)


class TimmModelAPI:
    """timm's model API, as timm's own ``dla.py`` implements it, over hooks the model provides:
    ``_steps()`` (the backbone as ``(level index, callable)`` pairs, the stem at -1) and
    ``_prune_after(last)``; the classifier is ``global_pool``, ``head_drop``, ``fc``,
    ``flatten``. Attributes: ``num_classes``, ``num_features``, ``head_hidden_size``,
    ``in_chans``, ``feature_info``, ``pretrained_cfg``, ``grad_checkpointing``."""

    def _steps(self) -> list:
        raise NotImplementedError

    def _prune_after(self, last: int) -> None:
        raise NotImplementedError

    def _set_checkpointing(self, enable: bool) -> None:
        pass

    @torch.jit.unused
    def _run(self, step, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step, x, use_reentrant=False)
        return step(x)

    @torch.jit.unused
    def _forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        for _, step in self._steps():
            x = self._run(step, x)
        return x

    @torch.jit.unused
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output (the last level, unpooled)."""
        return self._forward_steps(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        if pre_logits:
            return self.flatten(x)
        return self.flatten(self.fc(x))

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The outputs of the levels ``indices`` (0 = Level 1, at full resolution; timm's rule)
        and, unless ``intermediates_only``, the final features. DLA has no final norm."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (got {output_fmt!r})")
        take, last = feature_take_indices(len(self.feature_info), indices)
        out = []
        for index, step in self._steps():
            if stop_early and index > last:
                break
            x = self._run(step, x)
            if index in take:
                out.append(x)
        return out if intermediates_only else (x, out)

    @torch.jit.unused
    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the levels after the last of ``indices`` (and the classifier with them, or when
        asked); returns the indices kept."""
        take, last = feature_take_indices(len(self.feature_info), indices)
        self._prune_after(last)
        pruned = last < len(self.feature_info) - 1
        if pruned:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or pruned:
            self.reset_classifier(0, "")
        return take

    @torch.jit.unused
    def get_classifier(self) -> nn.Module:
        return self.fc

    @torch.jit.unused
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``fc`` for ``num_classes`` (0: none, the pooled features come out) on the
        model's device and dtype; ``global_pool`` "avg", "max" or "" (no pooling: the maps come
        out) replaces the pooling, None keeps it."""
        ref = next(iter(self.parameters()), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        if global_pool is not None:
            if global_pool not in ("avg", "max", ""):
                raise ValueError(f"global_pool must be 'avg', 'max' or '' (got {global_pool!r})")
            pool = nn.AdaptiveMaxPool2d(1) if global_pool == "max" else nn.AdaptiveAvgPool2d(1)
            self.global_pool = pool if global_pool else nn.Identity()
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.fc = (
            nn.Conv2d(self.num_features, num_classes, 1, **kw) if num_classes else nn.Identity()
        )
        for m in (self.global_pool, self.fc, self.flatten):
            m.train(self.training)
        self.num_classes = num_classes

    @torch.jit.unused
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay, as timm's DLA defines them."""
        blocks = (
            r"^level(\d+)"
            if coarse
            else [
                (r"^level(\d+)\.tree(\d+)", None),
                (r"^level(\d+)\.root", (2,)),
                (r"^level(\d+)", (1,)),
            ]
        )
        return {"stem": r"^base_layer", "blocks": blocks}

    @torch.jit.unused
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per backbone step (the stem, each level): recomputed in the
        backward pass instead of stored."""
        self.grad_checkpointing = enable
        self._set_checkpointing(enable)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into its conv (inference only).

    In every dlagraph module a ``BatchNorm2d`` directly follows the conv it normalises (``conv1,
    bn1``, ``conv, bn``, ``Sequential(conv, bn, ...)``, ``convs[i], bns[i]``), except CenterNet's
    ``DeformConv``, which registers its BN (``actf[0]``) before its ``conv`` and applies it after.
    Each pair becomes one conv with ``w * g / sqrt(v + eps)`` and bias ``b - m * g / sqrt(v +
    eps)``, and the BN an ``nn.Identity``. Returns ``model``, changed in place. It uses the
    running statistics: call it on a model in eval mode.
    """
    for parent in list(model.modules()):
        actf, conv = getattr(parent, "actf", None), getattr(parent, "conv", None)
        if isinstance(actf, nn.Sequential) and len(actf) and _fold_pair(conv, actf[0]):
            actf[0] = nn.Identity()  # DeformConv: conv, then actf = (BN, ReLU)
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):  # noqa: B905
            if isinstance(conv, nn.ModuleList) and isinstance(bn, nn.ModuleList):
                for i in range(min(len(conv), len(bn))):
                    if _fold_pair(conv[i], bn[i]):
                        bn[i] = nn.Identity()
            elif _fold_pair(conv, bn):
                setattr(parent, bn_name, nn.Identity())
    return model


def _fold_pair(conv: nn.Module, bn: nn.Module) -> bool:
    """Fold ``bn`` into ``conv`` when ``conv`` is a conv (an ``nn.Conv2d`` or a DCN: a module
    with a 4-d ``weight``) of the BN's width."""
    weight = getattr(conv, "weight", None)
    if not (isinstance(bn, nn.BatchNorm2d) and isinstance(weight, torch.Tensor)):
        return False
    if weight.dim() != 4 or weight.shape[0] != bn.num_features:
        return False
    fold_into(conv, bn)
    return True


def fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (applied after ``conv``) into ``conv``'s ``weight`` and ``bias``: any module
    with those, a Conv2d or a DCN. The caller has checked that the channels match."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
