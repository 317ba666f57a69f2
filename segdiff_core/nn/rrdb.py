"""The image encoder G of SegDiff (paper Sec. 4.3): a stack of RRDBs (ESRGAN), no normalisation.

G(I) = conv_out(LeakyReLU(conv_hr(f + trunk_conv(RRDB^n(f))))), f = conv_first(I),
at full resolution, C output channels.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs with a scaled residual (ESRGAN's RDB).

    Shapes: (B, nf, H, W) -> (B, nf, H, W).
    """

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(self.act(out))
        return x + self.res_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs inside a scaled residual.

    Shapes: (B, nf, H, W) -> (B, nf, H, W).
    """

    def __init__(self, nf: int, gc: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(nf, gc, res_scale) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class RRDBEncoder(nn.Module):
    """G: conv in -> RRDB stack with a residual around it -> conv -> LeakyReLU -> conv out.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(nf, gc) for _ in range(num_blocks)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv_out = nn.Conv2d(nf, out_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(image)
        fea = fea + self.trunk_conv(self.trunk(fea))
        return self.conv_out(self.act(self.conv_hr(fea)))
