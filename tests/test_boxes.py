"""segdiff_core.data.boxes: box validation, construction from corners/masks, image overlap."""
from __future__ import annotations

import numpy as np
import pytest

from segdiff_core.data.boxes import Box, BoxError, as_box


@pytest.mark.parametrize(
    "bad, match",
    [
        ((5, 5, 5, 10), "zero or negative area"),
        ((5, 5, 3, 10), "zero or negative area"),
        ((float("nan"), 0, 4, 4), "finite"),
        ((0, 0, float("inf"), 3), "finite"),
        (("a", 0, 4, 4), "numbers"),
    ],
)
def test_invalid_boxes_are_refused_with_the_reason(bad: tuple, match: str) -> None:
    with pytest.raises(BoxError, match=match):
        Box(*bad)


def test_size_centre_and_tuple() -> None:
    b = Box(10, 20, 30, 60)
    assert (b.height, b.width, b.center) == (20.0, 40.0, (20.0, 40.0))
    assert b.as_tuple() == (10.0, 20.0, 30.0, 60.0)


def test_from_corners_spans_the_points() -> None:
    corners = np.array([[4.5, 2.0], [4.5, 9.0], [1.0, 9.0], [1.0, 2.0]])  # a napari rectangle
    assert Box.from_corners(corners) == Box(1.0, 2.0, 4.5, 9.0)
    with pytest.raises(BoxError, match=r"\(N, 2\)"):
        Box.from_corners(np.zeros((4, 3)))


def test_from_mask_is_the_tight_pixel_edge_box() -> None:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert Box.from_mask(m) == Box(2.0, 3.0, 5.0, 9.0)
    with pytest.raises(BoxError, match="empty"):
        Box.from_mask(np.zeros((4, 4), bool))
    with pytest.raises(BoxError, match="2D"):
        Box.from_mask(np.zeros((2, 4, 4), bool))


def test_overlap_with_the_image() -> None:
    assert Box(-5, -5, 0.5, 0.5).intersects((10, 10))
    assert not Box(-5, -5, 0, 0).intersects((10, 10))  # touching the corner is no overlap
    assert not Box(10, 2, 12, 4).intersects((10, 10))
    with pytest.raises(BoxError, match="outside the image"):
        Box(10, 2, 12, 4).check_inside((10, 10))


def test_as_box() -> None:
    assert as_box([1, 2, 3, 4]) == Box(1.0, 2.0, 3.0, 4.0)
    assert as_box(np.array([1.5, 2, 3, 4])) == Box(1.5, 2.0, 3.0, 4.0)
    b = Box(0, 0, 1, 1)
    assert as_box(b) is b
    for bad in ([1, 2, 3], np.zeros((2, 2)), "abcd", None):
        with pytest.raises(BoxError):
            as_box(bad)  # type: ignore[arg-type]
