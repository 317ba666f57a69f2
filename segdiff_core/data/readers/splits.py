"""Held-out splits: deterministic train/validation indices and :class:`Subset` views.

Objects of one image are strongly correlated, so a validation set that shares images with the
training set overstates accuracy; :func:`split_dataset` therefore splits *by image* by default.
"""
from __future__ import annotations

import math
import operator
from typing import Hashable, Sequence

import numpy as np

from segdiff_core.data.readers._base import Dataset, Sample, _normalise_index
from segdiff_core.validation import check_int


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_int(seed, "seed (an int or a numpy.random.Generator)"))


def split_indices(
    n: int,
    val_fraction: float,
    seed: int | np.random.Generator,
    *,
    groups: Sequence[Hashable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random, reproducible train/validation split of ``range(n)``.

    Parameters
    ----------
    n
        Number of items.
    val_fraction
        Fraction in [0, 1) of the *groups* held out: ``round(val_fraction * n_groups)``
        (halves round up), at least 1 when ``val_fraction > 0``.
    seed
        Seed or generator; the same seed gives the same split.
    groups
        Optional group key per item (e.g. the image each object comes from). Items of a group
        land on the same side. Default: every item is its own group.

    Returns
    -------
    ``(train_idx, val_idx)``: sorted int64 arrays, disjoint, together ``range(n)``.

    Raises
    ------
    ValueError
        Bad ``n``/``val_fraction``/``groups``, or a split that would leave the training set
        empty (e.g. 1 group and ``val_fraction > 0``).
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"n must be an integer, got {n!r}") from None
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (isinstance(val_fraction, (int, float, np.floating)) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    rng = _rng(seed)
    if groups is None:
        group_of = np.arange(n)
        n_groups = n
    else:
        if len(groups) != n:
            raise ValueError(f"got {len(groups)} group keys for {n} items")
        first_seen: dict[Hashable, int] = {}
        group_of = np.array([first_seen.setdefault(g, len(first_seen)) for g in groups],
                            dtype=np.int64).reshape(n)
        n_groups = len(first_seen)
    n_val = 0 if val_fraction == 0 else max(1, math.floor(val_fraction * n_groups + 0.5))
    if n_val and n_val >= n_groups:
        raise ValueError(
            f"cannot hold out {val_fraction:g} of {n_groups} group(s) and keep a training set; "
            "use a smaller val_fraction or more data"
        )
    val_groups = rng.permutation(n_groups)[:n_val]
    is_val = np.isin(group_of, val_groups)
    return (np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64))


class Subset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` (in the given order); lazy like its
    parent."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D sequence of integers, got {idx.dtype} "
                             f"{idx.shape}")
        n = len(dataset)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}) for a dataset of {n} samples")
        self.dataset = dataset
        self.indices = idx.astype(np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def _load(self, index: int) -> Sample:
        return self.dataset[int(self.indices[index])]

    def image_key(self, index: int) -> str:
        return self.dataset.image_key(int(self.indices[_normalise_index(index, len(self))]))

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {len(self.dataset)} samples of {self.dataset!r})"


def split_dataset(
    dataset: Dataset,
    val_fraction: float,
    seed: int | np.random.Generator,
    *,
    group_by_image: bool = True,
) -> tuple[Subset, Subset]:
    """``(train, val)`` subsets of ``dataset`` (see :func:`split_indices`).

    With ``group_by_image`` (default) all samples of one image (``dataset.image_key``) fall on
    the same side and ``val_fraction`` is a fraction of images; otherwise of samples.
    """
    groups = [dataset.image_key(i) for i in range(len(dataset))] if group_by_image else None
    train, val = split_indices(len(dataset), val_fraction, seed, groups=groups)
    return Subset(dataset, train), Subset(dataset, val)
