"""CenterNet / FairMOT's DLASeg, written from the published structure (pose_dla_dcn.py and
pose_dla_conv.py of xingyizhou/CenterNet and ifzhang/FairMOT), independently of dlagraph.

The official DLA-34 base (its Tree keeps the `project` modules it never uses), DLAUp and IDAUp with
DeformConv, and the task heads; DCNv2's compiled `DCN` is replaced by a module over
`torchvision.ops.deform_conv2d` with the same parameters, init and offset/mask layout. Used as the
oracle of the CenterNet tests and by the benchmark.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x, residual=None):  # noqa: ANN001, ANN201
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Root(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *x):  # noqa: ANN002, ANN201
        return self.relu(self.bn(self.conv(torch.cat(x, 1))))


class Tree(nn.Module):
    def __init__(self, levels, in_ch, out_ch, stride=1, level_root=False, root_dim=0):  # noqa: ANN001
        super().__init__()
        root_dim = root_dim or 2 * out_ch
        root_dim += in_ch if level_root else 0
        if levels == 1:
            self.tree1 = BasicBlock(in_ch, out_ch, stride)
            self.tree2 = BasicBlock(out_ch, out_ch, 1)
            self.root = Root(root_dim, out_ch)
        else:
            self.tree1 = Tree(levels - 1, in_ch, out_ch, stride, root_dim=0)
            self.tree2 = Tree(levels - 1, out_ch, out_ch, root_dim=root_dim + out_ch)
        self.level_root, self.levels = level_root, levels
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_ch != out_ch:
            self.project = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, 1, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x, residual=None, children=None):  # noqa: ANN001, ANN201
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample else x
        residual = self.project(bottom) if self.project else bottom
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            return self.root(self.tree2(x1), x1, *children)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA34(nn.Module):
    channels = [16, 32, 64, 128, 256, 512]

    def __init__(self) -> None:
        super().__init__()
        c = self.channels
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, c[0], 7, 1, 3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True)
        )
        self.level0 = self._conv_level(c[0], c[0], 1)
        self.level1 = self._conv_level(c[0], c[1], 1, stride=2)
        self.level2 = Tree(1, c[1], c[2], 2, level_root=False)
        self.level3 = Tree(2, c[2], c[3], 2, level_root=True)
        self.level4 = Tree(2, c[3], c[4], 2, level_root=True)
        self.level5 = Tree(1, c[4], c[5], 2, level_root=True)

    @staticmethod
    def _conv_level(inplanes: int, planes: int, convs: int, stride: int = 1) -> nn.Sequential:
        mods: list[nn.Module] = []
        for i in range(convs):
            mods += [
                nn.Conv2d(inplanes, planes, 3, stride if i == 0 else 1, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True),
            ]
            inplanes = planes
        return nn.Sequential(*mods)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = []
        x = self.base_layer(x)
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            y.append(x)
        return y


class DCN(nn.Module):
    """DCNv2's DCN over torchvision: weight, bias, then conv_offset_mask (3 x 9 channels)."""

    def __init__(self, chi: int, cho: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cho, chi, 3, 3))
        self.bias = nn.Parameter(torch.empty(cho))
        stdv = 1.0 / math.sqrt(chi * 9)
        self.weight.data.uniform_(-stdv, stdv)
        self.bias.data.zero_()
        self.conv_offset_mask = nn.Conv2d(chi, 27, 3, 1, 1, bias=True)
        self.conv_offset_mask.weight.data.zero_()
        self.conv_offset_mask.bias.data.zero_()

    def forward(self, x):  # noqa: ANN001, ANN201
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=1, mask=torch.sigmoid(mask))


class DeformConv(nn.Module):
    def __init__(self, chi: int, cho: int, dcn: bool) -> None:
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(cho), nn.ReLU(inplace=True))
        self.conv = DCN(chi, cho) if dcn else nn.Conv2d(chi, cho, 3, 1, 1, bias=False)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.actf(self.conv(x))


def fill_up_weights(up: nn.ConvTranspose2d) -> None:
    w = up.weight.data
    f = math.ceil(w.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    for i in range(w.size(2)):
        for j in range(w.size(3)):
            w[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
    for ch in range(1, w.size(0)):
        w[ch, 0, :, :] = w[0, 0, :, :]


class IDAUp(nn.Module):
    def __init__(self, o: int, channels: list[int], up_f: list[int], dcn: bool) -> None:
        super().__init__()
        for i in range(1, len(channels)):
            f = int(up_f[i])
            proj = DeformConv(channels[i], o, dcn)
            node = DeformConv(o, o, dcn)
            up = nn.ConvTranspose2d(o, o, f * 2, stride=f, padding=f // 2, groups=o, bias=False)
            fill_up_weights(up)
            setattr(self, f"proj_{i}", proj)
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", node)

    def forward(self, layers, startp, endp):  # noqa: ANN001, ANN201
        for i in range(startp + 1, endp):
            upsample = getattr(self, f"up_{i - startp}")
            project = getattr(self, f"proj_{i - startp}")
            layers[i] = upsample(project(layers[i]))
            node = getattr(self, f"node_{i - startp}")
            layers[i] = node(layers[i] + layers[i - 1])


class DLAUp(nn.Module):
    def __init__(self, startp: int, channels: list[int], scales: list[int], dcn: bool) -> None:
        super().__init__()
        self.startp = startp
        in_channels = list(channels)
        scales = list(scales)
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(
                self,
                f"ida_{i}",
                IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]], dcn),
            )
            scales[j + 1 :] = [scales[j]] * len(scales[j + 1 :])
            in_channels[j + 1 :] = [channels[j]] * len(in_channels[j + 1 :])

    def forward(self, layers):  # noqa: ANN001, ANN201
        out = [layers[-1]]
        for i in range(len(layers) - self.startp - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(nn.Module):
    """``DLASeg('dla34', heads, down_ratio=4, final_kernel=1, last_level=5, head_conv=256)``."""

    def __init__(self, heads: dict[str, int], head_conv: int = 256, dcn: bool = True) -> None:
        super().__init__()
        self.first_level, self.last_level = 2, 5
        self.base = DLA34()
        channels = self.base.channels
        scales = [2**i for i in range(len(channels[self.first_level :]))]
        self.dla_up = DLAUp(self.first_level, channels[self.first_level :], scales, dcn)
        out_channel = channels[self.first_level]
        self.ida_up = IDAUp(
            out_channel,
            channels[self.first_level : self.last_level],
            [2**i for i in range(self.last_level - self.first_level)],
            dcn,
        )
        self.heads = heads
        for head, classes in heads.items():
            fc = nn.Sequential(
                nn.Conv2d(channels[self.first_level], head_conv, 3, padding=1, bias=True),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_conv, classes, 1, stride=1, padding=0, bias=True),
            )
            if "hm" in head:
                fc[-1].bias.data.fill_(-2.19)
            else:
                for m in fc.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.constant_(m.bias, 0)
            self.__setattr__(head, fc)

    def forward(self, x):  # noqa: ANN001, ANN201
        x = self.base(x)
        x = self.dla_up(x)
        y = [x[i].clone() for i in range(self.last_level - self.first_level)]
        self.ida_up(y, 0, len(y))
        return [{head: self.__getattr__(head)(y[-1]) for head in self.heads}]
