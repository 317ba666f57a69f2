"""Training pairs: from a sample (image, object mask, box) to what Alg. 2 consumes.

One function, :func:`make_pair`, turns any sample into a model input and target the way the
plugin will see it at inference time: crop around the box with the training jitter protocol
(crops 10-20 % larger than the tight box, shifted and scaled like a sloppy hand-drawn box),
normalise with the checkpoint's preprocessing, augment image and mask together, and map the
mask to [-1, 1].

Batches are *stateless in time*: the batch of step ``s`` on process ``rank`` is drawn from a
generator seeded by ``(seed, s, rank)``. A resumed run therefore sees exactly the data it
would have seen without the interruption, with any number of data-loading workers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from segdiff_core.data.augment import Compose, paper_augmentation
from segdiff_core.data.boxes import Box
from segdiff_core.data.crops import CropProtocol, crop_like, crop_to_model
from segdiff_core.data.preprocess import PreprocessConfig, adapt_channels, normalize, to_channels_last
from segdiff_core.data.prompt import box_channel, box_in_crop, jittered_prompt
from segdiff_core.training.config import DataConfig


def step_rng(seed: int, step: int, rank: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator for one (seed, step, rank, stream): independent, reproducible streams."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream), int(rank), int(step))))


def normalised_hwc(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Layout, channels and intensity normalisation -> (H, W, in_channels) float32."""
    return normalize(adapt_channels(to_channels_last(image), cfg), cfg)


def mask_to_model_space(mask: np.ndarray) -> np.ndarray:
    """{0, 1} -> {-1, 1} (masks live in [-1, 1]), float32."""
    return np.where(np.asarray(mask) > 0, 1.0, -1.0).astype(np.float32)


def window_box(shape: tuple[int, ...], window: int, work_size: int, rng: np.random.Generator | None) -> Box:
    """A model-size window of the image as seen at ``work_size`` (MoNuSeg: 512 work, 256 window).

    The image (H, W) is (virtually) resized to work_size x work_size, as
    :class:`segdiff_core.data.crops.WindowGrid` does at evaluation; the window is placed at a
    random position (``rng``) or centred (``rng=None``). Returns the window in image pixels.
    """
    h, w = float(shape[0]), float(shape[1])
    frac = min(1.0, window / float(work_size))
    bh, bw = h * frac, w * frac
    if rng is None:
        y0, x0 = (h - bh) / 2.0, (w - bw) / 2.0
    else:
        y0, x0 = float(rng.uniform(0.0, h - bh)), float(rng.uniform(0.0, w - bw))
    return Box(y0, x0, y0 + bh, x0 + bw)


_BOX_LEVELS = 100  # box-channel coverage carried through the augmentation in 1/100 steps


def _augment_with_box(
    img: np.ndarray, target: np.ndarray, box_cov: np.ndarray, augment: Compose, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment image, mask and box channel with the same geometric transform.

    The box coverage rides in the integer mask (``mask + 2 * round(100 * coverage)``), so the
    nearest-neighbour geometry of the augmentation moves it exactly like the mask.
    """
    code = target.astype(np.int32) + 2 * np.rint(box_cov * _BOX_LEVELS).astype(np.int32)
    img, code = augment(img, code, rng)
    return img, (code % 2).astype(np.uint8), (code // 2).astype(np.float32) / _BOX_LEVELS


def make_pair(
    image: np.ndarray,
    mask: np.ndarray,
    box: Box | None,
    preprocess: PreprocessConfig,
    protocol: CropProtocol | None,
    augment: Compose | None,
    rng: np.random.Generator,
    work_size: int = 0,
    with_box: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One training pair.

    Parameters
    ----------
    image
        (H, W) or (H, W, C), any dtype.
    mask
        (H, W) bool, the target object (prompt task) or all foreground (semantic task).
    box
        the object's tight box (prompt task), or None for the semantic task: a random
        window of the image at ``work_size`` (see :func:`window_box`).
    preprocess
        the model's preprocessing (input size, channels, normalisation).
    protocol
        crop protocol for ``box`` (training jitter); ignored when ``box`` is None.
    augment
        joint augmentation of the normalised crop and its mask, or None.
    rng
        the generator for every random choice of this pair.
    work_size
        semantic task: working resolution (0: twice the model input).
    with_box
        append the prompt-box channel (the jittered, drawn box in the crop;
        the whole window for the semantic task), see :mod:`segdiff_core.data.prompt`.

    Returns
    -------
    image : ndarray
        ``(in_channels [+ 1], S, S)`` float32.
    mask : ndarray
        ``(1, S, S)`` float32 in {-1, 1}.
    """
    size = preprocess.input_size
    if box is None:
        crop = window_box(image.shape, size, work_size or 2 * size, rng)
        patch, geom = crop_to_model(image, crop, size, order=1)
        drawn = crop
    else:
        drawn, crop = jittered_prompt(box, protocol or CropProtocol.expansion(), rng, image.shape[:2])
        patch, geom = crop_to_model(image, crop, size, order=1)
    target = crop_like(np.asarray(mask).astype(np.uint8), dataclasses.replace(geom, pad_mode="constant", cval=0.0), order=0)
    img = normalised_hwc(patch, preprocess)
    box_cov = box_channel(box_in_crop(geom, drawn), (size, size)) if with_box else None
    if augment is not None:
        if box_cov is not None:
            img, target, box_cov = _augment_with_box(img, target, box_cov, augment, rng)
        else:
            img, target = augment(img, target, rng)
    chw = np.moveaxis(img.astype(np.float32), -1, 0)
    if box_cov is not None:
        chw = np.concatenate([chw, box_cov[None]], axis=0)
    return np.ascontiguousarray(chw), mask_to_model_space(target)[None]


class SampleLike(Protocol):
    image: np.ndarray
    mask: np.ndarray
    box: Box | None


class SampleSource(Protocol):
    """Anything that draws ``n`` samples from a generator (synthetic or a dataset)."""

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, Box | None]]: ...


@dataclass
class SyntheticSource:
    """Box-prompt (or semantic) samples from freshly generated synthetic tiles."""

    styles: Sequence[str]
    tile_size: int = 256
    objects_per_tile: int = 6
    min_area: int = 16
    task: str = "prompt"

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, Box | None]]:
        from segdiff_core.data.readers import pick_objects
        from segdiff_core.data.synthetic import generate_tile

        out: list[tuple[np.ndarray, np.ndarray, Box | None]] = []
        while len(out) < n:
            style = self.styles[int(rng.integers(len(self.styles)))]
            tile = generate_tile(style, self.tile_size, rng)
            if self.task == "semantic":
                out.append((tile.image, tile.labels > 0, None))
                continue
            for obj in pick_objects(tile.labels, min(self.objects_per_tile, n - len(out)), rng, self.min_area):
                m = tile.labels == obj
                out.append((tile.image, m, Box.from_mask(m)))
        return out


@dataclass
class DatasetSource:
    """Samples drawn uniformly (with replacement) from a reader's dataset and index subset."""

    dataset: Sequence[SampleLike]
    indices: Sequence[int]
    task: str = "prompt"

    def __post_init__(self) -> None:
        if len(self.indices) == 0:
            raise ValueError("the dataset split has no samples; lower data.val_fraction or add data")

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, Box | None]]:
        picks = rng.integers(len(self.indices), size=n)
        out = []
        for p in picks:
            s = self.dataset[int(self.indices[int(p)])]
            out.append((s.image, s.mask, None if self.task == "semantic" else s.box))
        return out


class PairBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is the whole batch of step ``start + i``.

    Use with ``DataLoader(batch_size=None)``; shapes: images (B, C, S, S), masks (B, 1, S, S).
    """

    def __init__(
        self,
        source: SampleSource,
        preprocess: PreprocessConfig,
        data: DataConfig,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start: int = 0,
        stop: int = 0,
        augment: bool = True,
        with_box: bool = False,
    ) -> None:
        self.source = source
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.seed, self.rank, self.start, self.stop = seed, rank, start, stop
        self.protocol = CropProtocol.training(
            jitter_margin=tuple(data.crop_margin), shift=data.box_shift, scale_range=tuple(data.box_scale)
        )
        self.augment = paper_augmentation(data.augmentation) if augment and data.augmentation != "none" else None
        self.work_size = data.work_size
        self.with_box = with_box

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = step_rng(self.seed, self.start + i, self.rank)
        images, masks = [], []
        for image, mask, box in self.source.draw(rng, self.batch_size):
            x, y = make_pair(image, mask, box, self.preprocess, self.protocol, self.augment, rng, self.work_size, self.with_box)
            images.append(x)
            masks.append(y)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))
