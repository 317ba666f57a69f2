"""From napari's world to the 2D image plane that is segmented, and back (no Qt).

napari places pixel *centres* on integer data coordinates; :class:`segdiff_core.data.boxes.Box`
places pixel *edges* there. A rectangle's vertices therefore move by +0.5 on their way to a
``Box``. Rectangles may live in a Shapes layer with its own scale/translate (or fewer
dimensions): their vertices go data -> world (shapes layer) -> data (image layer).

A :class:`PlaneSpec` names the plane: the two image data axes shown on screen (rows, columns,
in display order) and the index of every other spatial axis (the current slice of a 3D/time
stack). It turns plane pixel coordinates into indices of the image-shaped arrays (labels,
probability, uncertainty), so results land in exactly the slice that was segmented.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segdiff_core.data.boxes import Box, BoxError

__all__ = ["PromptError", "PlaneSpec", "current_plane", "spatial_shape", "image_data", "shape_box"]


MIN_BOX_PIXELS = 2.0
"""A box narrower or lower than this many image pixels holds no object with a boundary inside
it: napari leaves such a rectangle when the rectangle tool is clicked without dragging."""


class PromptError(ValueError):
    """A prompt or view state that cannot be segmented; the message tells the user what to do."""


@dataclass(frozen=True)
class PlaneSpec:
    """A 2D plane of an ``ndim``-dimensional spatial array.

    Attributes
    ----------
    ndim: spatial dimensions of the image layer (without an RGB channel axis).
    axes: ``(row_axis, col_axis)``: the data axes shown vertically and horizontally.
    fixed: ``((axis, index), ...)`` for every other axis.
    shape: ``(H, W)`` of the plane (rows along ``axes[0]``).
    """

    ndim: int
    axes: tuple[int, int]
    fixed: tuple[tuple[int, int], ...]
    shape: tuple[int, int]

    @property
    def transpose(self) -> bool:
        """True when the row axis comes after the column axis in the data."""
        return self.axes[0] > self.axes[1]

    def key(self) -> tuple:
        """Basic index of the plane in a spatial array (``slice(None)`` on the plane axes)."""
        fixed = dict(self.fixed)
        return tuple(fixed.get(ax, slice(None)) for ax in range(self.ndim))

    def region_key(self, region: tuple[slice, slice]) -> tuple:
        """Basic index of ``plane[region]`` in a spatial array."""
        fixed = dict(self.fixed)
        key: list[Any] = []
        for ax in range(self.ndim):
            if ax == self.axes[0]:
                key.append(region[0])
            elif ax == self.axes[1]:
                key.append(region[1])
            else:
                key.append(fixed[ax])
        return tuple(key)

    def read(self, array: Any) -> np.ndarray:
        """``plane`` of a spatial array, rows first: (H, W) (or (H, W, C) for RGB data)."""
        plane = np.asarray(array[self.key()])
        return np.swapaxes(plane, 0, 1) if self.transpose else plane

    def read_region(self, array: Any, region: tuple[slice, slice]) -> np.ndarray:
        """``plane[region]`` of a spatial array, rows first (reads only that region)."""
        crop = np.asarray(array[self.region_key(region)])
        return np.swapaxes(crop, 0, 1) if self.transpose else crop

    def write(self, array: np.ndarray, region: tuple[slice, slice], values: np.ndarray) -> None:
        """``array[plane][region] = values`` for ``values`` of shape (rows, cols) or a scalar."""
        vals = np.asarray(values)
        array[self.region_key(region)] = vals.T if (self.transpose and vals.ndim >= 2) else vals

    def indices(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fancy indices into a spatial array of the plane pixels ``(rows[i], cols[i])``."""
        fixed = dict(self.fixed)
        out = []
        for ax in range(self.ndim):
            if ax == self.axes[0]:
                out.append(np.asarray(rows, dtype=np.intp))
            elif ax == self.axes[1]:
                out.append(np.asarray(cols, dtype=np.intp))
            else:
                out.append(np.full(len(rows), fixed[ax], dtype=np.intp))
        return tuple(out)

    def describe(self) -> str:
        if not self.fixed:
            return "the image"
        return "slice " + ", ".join(f"axis {ax} = {idx}" for ax, idx in self.fixed)


def image_data(layer: Any) -> Any:
    """The full-resolution data of an image layer (level 0 of a multiscale image)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def spatial_shape(layer: Any) -> tuple[int, ...]:
    """Spatial shape of an image layer: its data shape without the RGB(A) channel axis."""
    return tuple(int(n) for n in image_data(layer).shape[: layer.ndim])


def current_plane(viewer: Any, image: Any) -> PlaneSpec:
    """The plane of ``image`` that the viewer currently shows (2D view only).

    Raises :class:`PromptError` in 3D view, or when the image is not part of the displayed axes
    or the current slice lies outside it.
    """
    dims = viewer.dims
    if dims.ndisplay != 2:
        raise PromptError(
            "SegDiff segments 2D planes: switch the viewer to 2D view (the 2D/3D button, "
            "Ctrl-Y) and draw the box on the slice you want"
        )
    offset = dims.ndim - image.ndim
    axes = tuple(int(ax) - offset for ax in dims.displayed)
    if len(axes) != 2 or min(axes) < 0:
        raise PromptError(
            f"the image layer {image.name!r} has {image.ndim} dimension(s) and is not shown in "
            "the current 2D view; show its last two axes (or select another image layer)"
        )
    shape = spatial_shape(image)
    position = np.asarray(image.world_to_data(dims.point), dtype=float)
    fixed = []
    for ax in range(image.ndim):
        if ax in axes:
            continue
        idx = int(np.floor(position[ax] + 0.5))
        if not 0 <= idx < shape[ax]:
            raise PromptError(
                f"the current slice (axis {ax} at {position[ax]:g}) lies outside the image layer "
                f"{image.name!r} (size {shape[ax]} along that axis); move the slider onto the image"
            )
        fixed.append((ax, idx))
    return PlaneSpec(image.ndim, (axes[0], axes[1]), tuple(fixed), (shape[axes[0]], shape[axes[1]]))


def shape_box(shapes: Any, index: int, image: Any, plane: PlaneSpec) -> tuple[Box, PlaneSpec]:
    """The box of rectangle ``index`` of a Shapes layer, in ``image``'s plane pixel coordinates.

    If the Shapes layer has the image's dimensions, the rectangle's own slice is used (the
    slice it was drawn on); otherwise the current ``plane``'s. Raises :class:`PromptError` for
    a shape that is not a rectangle, one that spans several slices, a zero-area box or a box
    outside the image.
    """
    kind = shapes.shape_type[index]
    if kind != "rectangle":
        raise PromptError(
            f"shape #{index + 1} of {shapes.name!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}; SegDiff needs rectangles: draw "
            "boxes with the rectangle tool (R) or delete the shape"
        )
    vertices = np.asarray(shapes.data[index], dtype=float)
    world = [np.asarray(shapes.data_to_world(v), dtype=float) for v in vertices]
    data = np.array([image.world_to_data(w) for w in world], dtype=float)  # (n, image.ndim)
    if not np.all(np.isfinite(data)):
        raise PromptError(f"shape #{index + 1} of {shapes.name!r} has non-finite coordinates")
    own_plane = plane
    if shapes.ndim >= image.ndim and plane.fixed:
        fixed = []
        shape = spatial_shape(image)
        for ax, _ in plane.fixed:
            idx = np.floor(data[:, ax] + 0.5)
            if np.any(idx != idx[0]):
                raise PromptError(
                    f"rectangle #{index + 1} of {shapes.name!r} spans several slices along axis "
                    f"{ax}; draw boxes in a 2D view of one slice"
                )
            if not 0 <= idx[0] < shape[ax]:
                raise PromptError(
                    f"rectangle #{index + 1} of {shapes.name!r} lies on slice {int(idx[0])} of "
                    f"axis {ax}, outside the image (size {shape[ax]}); draw it over the image"
                )
            fixed.append((ax, int(idx[0])))
        own_plane = PlaneSpec(plane.ndim, plane.axes, tuple(fixed), plane.shape)
    corners = data[:, list(plane.axes)] + 0.5  # napari pixel centres -> Box pixel edges
    try:
        box = Box.from_corners(corners)
        box.check_inside(plane.shape)
    except BoxError as exc:
        raise PromptError(f"rectangle #{index + 1} of {shapes.name!r}: {exc}") from exc
    if 0 < min(box.height, box.width) < MIN_BOX_PIXELS:
        raise PromptError(
            f"rectangle #{index + 1} of {shapes.name!r} is too small ({box.height:.2g} x {box.width:.2g} "
            "pixels; a click without dragging?): drag a rectangle around the object, or delete it"
        )
    return box, own_plane
