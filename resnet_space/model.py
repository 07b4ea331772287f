"""One configurable builder for every network a ResNetSpec describes."""

from __future__ import annotations

import torch
from torch import nn

from .spec import ResNetSpec


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, skip_kernel: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel, stride)
        self.conv2 = conv_bn(c_out, c_out, kernel)
        # Project only where the shape changes; identity otherwise (He et al.'s option B).
        self.shortcut = (
            conv_bn(c_in, c_out, skip_kernel, stride) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(conv_bn(spec.in_channels, spec.channels[0], 3), nn.ReLU(inplace=True))
        stages, c_in = [], spec.channels[0]
        for i, (blocks, c, f, k) in enumerate(zip(spec.blocks, spec.channels, spec.conv_kernels, spec.skip_kernels)):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(c_in, c, f, k, stride=2 if i > 0 and b == 0 else 1))
                c_in = c
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        pool = spec.pool_kernel
        self.pool = nn.AvgPool2d(pool, stride=pool)
        pooled = spec.final_side // pool
        self.fc = nn.Linear(c_in * pooled * pooled, spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def build_model(spec: ResNetSpec) -> ResNet:
    return ResNet(spec)
