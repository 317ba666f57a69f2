"""The SegDiff denoiser eps_theta(x_t, I, t) = D(E(F(x_t) + G(I), t), t)  (paper Eq. 17).

The image branch G(I) does not depend on x_t or t, so the model is split in two calls:
:meth:`SegDiffModel.encode_image` (once per image) and :meth:`SegDiffModel.denoise` (once per
step, taking the cached encoding). ``forward`` chains both for training.
"""
from __future__ import annotations

import torch
from torch import nn

from segdiff_core.config import ModelConfig
from segdiff_core.nn.embeddings import TimeEmbedding
from segdiff_core.nn.rrdb import RRDBEncoder
from segdiff_core.nn.unet import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepSequential,
    Upsample,
    group_norm,
    zero_module,
)


class SegDiffModel(nn.Module):
    """eps_theta for a 1-channel mask x_t in [-1, 1] conditioned on an image I.

    Shapes: x_t (B, 1, S, S), t (B,) int64 steps of the training chain, image (B or 1,
    in_channels, S, S) -> eps (B, 1, S, S), with S = ``config.image_size`` (any multiple of
    2**(levels-1) works).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        C, groups = cfg.model_channels, cfg.norm_groups
        emb_ch = 4 * C
        self.time_embed = TimeEmbedding(cfg.time_embedding, cfg.num_timesteps, C)

        # F (mask encoder) and G (image encoder); variant 3 feeds the raw image to F instead.
        mode = cfg.conditioning
        # F reads x_t (+ the raw image for raw_concat) (+ the previous x_0 estimate, last).
        f_in = (1 + cfg.input_channels if mode == "raw_concat" else 1) + int(cfg.self_condition)
        self.mask_encoder = nn.Conv2d(f_in, C, 3, padding=1)
        self.image_encoder = (
            None
            if mode == "raw_concat"
            else RRDBEncoder(cfg.input_channels, C, cfg.rrdb_blocks, cfg.rrdb_features, cfg.rrdb_growth)
        )

        # E: encoder blocks; every block's output is a skip to D.
        ch = 2 * C if mode == "concat" else C
        skip_chans = [ch]
        res = cfg.image_size
        self.input_blocks = nn.ModuleList()
        self._inject_block: int | None = None
        inject_ch = 0
        n_down = 0
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * C, emb_ch, cfg.dropout, groups)]
                ch = mult * C
                if res in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads, groups))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_chans.append(ch)
                res //= 2
                n_down += 1
                if n_down == cfg.inject_level:
                    self._inject_block = len(self.input_blocks) - 1
                    inject_ch = ch

        # Variants 4-6: G(I) brought to the injection point by stride-2 convs (paper Sec. 5).
        self.cond_down: nn.Module | None = None
        if cfg.inject_level is not None:
            convs: list[nn.Module] = []
            for i in range(cfg.inject_level):
                out = inject_ch if i == cfg.inject_level - 1 else C
                convs += [nn.Conv2d(C, out, 3, stride=2, padding=1)]
                if i < cfg.inject_level - 1:
                    convs.append(nn.LeakyReLU(0.2))
            self.cond_down = nn.Sequential(*convs)

        self.middle_block = TimestepSequential(
            ResBlock(ch, ch, emb_ch, cfg.dropout, groups),
            AttentionBlock(ch, cfg.num_heads, groups),
            ResBlock(ch, ch, emb_ch, cfg.dropout, groups),
        )

        # D: decoder blocks, each consuming one skip.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), mult * C, emb_ch, cfg.dropout, groups)]
                ch = mult * C
                if res in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads, groups))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(group_norm(ch, groups), nn.SiLU(), zero_module(nn.Conv2d(ch, 1, 3, padding=1)))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """The conditioning signal, computed once per image.

        (B, input_channels, S, S) -> (B, C, S, S) for sum/concat (G(I)); the image itself for
        raw_concat; (B, C_k, S/2^k, S/2^k) for deepk. ``input_channels`` is the image's
        channels plus the prompt-box channel when ``config.box_channel``.
        """
        n_in = self.config.input_channels
        if image.ndim != 4 or image.shape[1] != n_in:
            box = " (image channels + the prompt-box channel)" if self.config.box_channel else ""
            raise ValueError(f"image must have shape (B, {n_in}, H, W){box}, got {tuple(image.shape)}")
        if self.image_encoder is None:
            return image
        cond = self.image_encoder(image)
        if self.cond_down is not None:
            cond = self.cond_down(cond)
        return cond

    def denoise(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, x0_self: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eps_theta given a cached encoding. x_t (B, 1, S, S), t (B,), cond (B or 1, ...).

        ``x0_self`` (B, 1, S, S): the previous x_0 estimate for a self-conditioning model
        (``config.self_condition``); None means zeros (the first step). Other models refuse it.
        """
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must have shape (B, 1, H, W), got {tuple(x_t.shape)}")
        b = x_t.shape[0]
        if cond.shape[0] not in (1, b):
            raise ValueError(f"cond batch {cond.shape[0]} matches neither 1 nor x_t's batch {b}")
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(t)
        mode = self.config.conditioning
        f_in = torch.cat([x_t, cond.expand(b, *cond.shape[1:])], dim=1) if mode == "raw_concat" else x_t
        if self.config.self_condition:
            if x0_self is None:
                x0_self = torch.zeros_like(x_t)
            elif x0_self.shape != x_t.shape:
                raise ValueError(f"x0_self {tuple(x0_self.shape)} must have x_t's shape {tuple(x_t.shape)}")
            f_in = torch.cat([f_in, x0_self], dim=1)
        elif x0_self is not None:
            raise ValueError("x0_self given to a model without self-conditioning (config.self_condition)")
        f = self.mask_encoder(f_in)
        if mode == "sum":
            h = f + cond  # Eq. 17: F(x_t) + G(I), broadcast over generations
        elif mode == "concat":
            h = torch.cat([f, cond.expand(b, *cond.shape[1:])], dim=1)
        else:  # raw_concat (the image went into F) or deepN (added after block N)
            h = f
        skips = [h]
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb)
            if i == self._inject_block:
                h = h + cond
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor, x0_self: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eps_theta(x_t, I, t) = D(E(F(x_t) + G(I), t), t). Shapes as in the class docstring."""
        return self.denoise(x_t, t, self.encode_image(image), x0_self)

    def warm_start_from(self, other: "SegDiffModel") -> None:
        """Copy ``other``'s weights into this model, which may read more input channels.

        Every tensor must match in shape, except the first convolutions that read the inputs
        (G's ``conv_first``, and F): their weights for the channels ``other`` has are copied
        and those of the extra channels (the prompt box, the self-conditioning x_0 estimate:
        both come last) are set to zero, so the warm-started model computes exactly what
        ``other`` computes.
        """
        own, theirs = self.state_dict(), other.state_dict()
        if set(own) != set(theirs):
            raise ValueError("the two models have different layers; only the input channels may differ")
        for name, value in theirs.items():
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
            elif target.ndim == 4 and target.shape[1] > value.shape[1] and target.shape[0] == value.shape[0] \
                    and target.shape[2:] == value.shape[2:]:
                target.zero_()
                target[:, : value.shape[1]].copy_(value)
            else:
                raise ValueError(f"{name}: shape {tuple(value.shape)} cannot initialise {tuple(target.shape)}")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
