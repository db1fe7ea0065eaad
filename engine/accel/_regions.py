"""Changed regions of feature maps for incremental inference (see ``_incremental``).

A perturbed batch of N images differs from the unperturbed image only inside one box per image
and feature map. All the boxes of a map have the same size (so that a batch is one tensor), and
each is kept inside the map: a box that would cross the border is shifted inward, which
recomputes a few unchanged values but never misses a changed one (Nakandala, Kumar and
Papakonstantinou, SIGMOD 2019, section 4: fixed-size patches for batched incremental inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Box:
    """The perturbed values of a map inside one box per image: ``patch`` is N x C x h x w, and
    ``origin`` (N x 2, int64, on the CPU) is each box's top-left (row, column) in the map."""

    patch: torch.Tensor
    origin: torch.Tensor
    # The changed values' own extent per image (N x 2 first and last (row, column)), which may be
    # smaller than the common box: the next layers grow their boxes from it, not from the box.
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.low is not None and self.high is not None:
            return self.low, self.high
        return self.origin, self.origin + torch.tensor(self.size) - 1

    @property
    def size(self) -> tuple[int, int]:
        return int(self.patch.shape[-2]), int(self.patch.shape[-1])

    @property
    def count(self) -> int:
        return int(self.patch.shape[0])


def _floor_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def place(low: torch.Tensor, high: torch.Tensor, length: int) -> tuple[torch.Tensor, int]:
    """Boxes of one common size covering [low, high] (inclusive, per image) on an axis of
    ``length``: the size is the largest span (at most the axis), the origin is shifted inward."""
    low, high = low.clamp(0, length - 1), high.clamp(0, length - 1)
    size = int((high - low).max()) + 1
    size = min(max(size, 1), length)
    return torch.minimum(low, torch.full_like(low, length - size)), size


def sliding_axis(origin: torch.Tensor, size: int, length_out: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Output box of a sliding-window operation along one axis, and the input extent it reads.

    Output o reads inputs o*s - p ... o*s - p + d(k-1), so the outputs that see the changed inputs
    [r, r + h - 1] are ceil((r + p - d(k-1)) / s) ... floor((r + h - 1 + p) / s). Returns the
    output origins, the output size, the input origins (which may be negative: padding) and the
    input extent (o_size - 1) * s + d (k - 1) + 1.
    """
    _, _, out_origin, out_size, in_origin, in_size = sliding_extent(origin, origin + size - 1, length_out, kernel, stride, padding, dilation)
    return out_origin, out_size, in_origin, in_size


def sliding_extent(low: torch.Tensor, high: torch.Tensor, length_out: int, kernel: int, stride: int, padding: int, dilation: int):
    """As ``sliding_axis`` for changed inputs ``low`` ... ``high`` per image; returns the changed
    outputs' own first and last positions (clipped to the map) before the common box (origins,
    size) and the input region it reads (origins, extent)."""
    first, last = reached(low, high, kernel, stride, padding, dilation)
    first, last = first.clamp(0, length_out - 1), last.clamp(0, length_out - 1)
    out_origin, out_size = place(first, last, length_out)
    return first, last, out_origin, out_size, out_origin * stride - padding, (out_size - 1) * stride + dilation * (kernel - 1) + 1


def reached(low: torch.Tensor, high: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs (first, last; not clipped to the map) of a sliding-window operation along one
    axis that read any of the inputs ``low`` ... ``high`` (see ``sliding_axis``)."""
    return -_floor_div(-(low + padding - dilation * (kernel - 1)), stride), _floor_div(high + padding, stride)


def union(boxes: list[Box], height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Origins and common size of boxes covering, per image, every box in ``boxes``."""
    _, _, origin, size = union_extent(boxes, height, width)
    return origin, size


def union_extent(boxes: list[Box], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The union of the boxes' changed extents per image (first and last (row, column)), and the
    origins and common size of the boxes covering it."""
    low = torch.stack([b.bounds()[0] for b in boxes]).min(0).values
    high = torch.stack([b.bounds()[1] for b in boxes]).max(0).values
    rows, h = place(low[:, 0], high[:, 0], height)
    cols, w = place(low[:, 1], high[:, 1], width)
    return low, high, torch.stack([rows, cols], 1), (h, w)


def _padded(source: torch.Tensor, origins: list, size: tuple[int, int], fill: float) -> tuple[torch.Tensor, int, int]:
    """``source`` padded with ``fill`` so that every region fits, and the shift of its origin."""
    height, width = source.shape[-2:]
    top = max(0, -min(r for r, _ in origins))
    left = max(0, -min(c for _, c in origins))
    bottom = max(0, max(r for r, _ in origins) + size[0] - height)
    right = max(0, max(c for _, c in origins) + size[1] - width)
    if top or left or bottom or right:
        source = F.pad(source, (left, right, top, bottom), value=fill)
    return source, top, left


def crop(source: torch.Tensor, origin: torch.Tensor, size: tuple[int, int], fill: float = 0.0) -> torch.Tensor:
    """The N x C x h x w regions of ``source`` (1 or N x C x H x W) starting at ``origin`` (N x 2);
    positions outside the map get ``fill`` (the operation's padding value). Slices per image:
    on a CPU they copy several times faster than one gather with index tensors. The regions keep
    the source's memory format (channels-last maps give channels-last regions, so that the
    convolutions after them need no reordering)."""
    channels_last = source.dim() == 4 and source.is_contiguous(memory_format=torch.channels_last) and not source.is_contiguous()
    origins = origin.tolist()
    source, top, left = _padded(source, origins, size, fill)
    h, w = size
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((len(origins), source.shape[1], h, w), dtype=source.dtype, device=source.device, memory_format=layout)
    for i, (r, c) in enumerate(origins):
        out[i].copy_(source[0 if source.shape[0] == 1 else i, :, r + top : r + top + h, c + left : c + left + w])
    return out


def _overlay(region: torch.Tensor, box: Box, origin: torch.Tensor) -> torch.Tensor:
    """``region`` (at ``origin``; changed in place) with the values of ``box`` pasted where the two overlap."""
    h, w = region.shape[-2:]
    bh, bw = box.size
    for i, ((r, c), (br, bc)) in enumerate(zip(origin.tolist(), box.origin.tolist(), strict=True)):
        r0, r1, c0, c1 = max(r, br), min(r + h, br + bh), max(c, bc), min(c + w, bc + bw)
        if r0 < r1 and c0 < c1:
            region[i, :, r0 - r : r1 - r, c0 - c : c1 - c] = box.patch[i, :, r0 - br : r1 - br, c0 - bc : c1 - bc]
    return region


def read(cached: torch.Tensor, box: Box | None, origin: torch.Tensor, size: tuple[int, int], fill: float = 0.0) -> torch.Tensor:
    """The perturbed map (``cached`` with ``box`` pasted in; unchanged if None) on the regions at
    ``origin`` of ``size``, with ``fill`` outside the map."""
    region = crop(cached, origin, size, fill)
    return region if box is None else _overlay(region, box, origin)


def materialise(cached: torch.Tensor, box: Box) -> torch.Tensor:
    """The whole perturbed maps, N x C x H x W."""
    origin = torch.zeros((box.count, 2), dtype=torch.long)
    full = cached.expand(box.count, *cached.shape[1:]).clone()
    return _overlay(full, box, origin)
