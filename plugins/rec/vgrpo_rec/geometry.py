"""Geometry of grounding: coordinate conventions, box-box IoU (pure Python) and box-polygon IoU (shapely).

Coordinates are continuous: a box ``[x1, y1, x2, y2]`` has area ``(x2 - x1) * (y2 - y1)`` (no +1 pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

Box = Sequence[float]
Size = Sequence[float]


def to_image_box(box: Box, coords: str, image_size: Size | None, input_size: Size | None) -> Box | None:
    """The predicted ``box`` in original-image pixels, or ``None`` when it cannot be converted.

    ``abs``: pixels of the image the model saw, rescaled by (W/w, H/h) when both the original ``image_size``
    (W, H) and the model's ``input_size`` (w, h) are known, else taken as original pixels.
    ``norm1000`` / ``norm1``: fractions of the image (×1000 / ×1), which need ``image_size``.
    """
    if coords == "abs":
        if image_size is None or input_size is None:
            return box
        sx, sy = image_size[0] / input_size[0], image_size[1] / input_size[1]
    elif image_size is None:
        return None
    elif coords == "norm1000":
        sx, sy = image_size[0] / 1000.0, image_size[1] / 1000.0
    elif coords == "norm1":
        sx, sy = float(image_size[0]), float(image_size[1])
    else:
        raise ValueError(f"expected coords 'abs', 'norm1000' or 'norm1', got {coords!r}")
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def from_image_box(box: Box, coords: str, image_size: Size | None, input_size: Size | None) -> Box | None:
    """The inverse of :func:`to_image_box`: a box in original-image pixels as the model writes it in
    ``coords``, or ``None`` when a normalised convention lacks ``image_size``."""
    if coords == "abs":
        if image_size is None or input_size is None:
            return tuple(box)
        sx, sy = input_size[0] / image_size[0], input_size[1] / image_size[1]
    elif image_size is None:
        return None
    elif coords == "norm1000":
        sx, sy = 1000.0 / image_size[0], 1000.0 / image_size[1]
    elif coords == "norm1":
        sx, sy = 1.0 / image_size[0], 1.0 / image_size[1]
    else:
        raise ValueError(f"expected coords 'abs', 'norm1000' or 'norm1', got {coords!r}")
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0.0 for disjoint, degenerate or overflowing boxes."""
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = min(ax2, bx2) - max(ax1, bx1)
    if not iw > 0:  # also catches NaN
        return 0.0
    ih = min(ay2, by2) - max(ay1, by1)
    if not ih > 0:
        return 0.0
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not union > 0:
        return 0.0
    value = inter / union
    if value >= 1.0:  # rounding can land a hair above 1
        return 1.0
    return value if value >= 0.0 else 0.0  # NaN (inf / inf) -> 0


@lru_cache(maxsize=4096)
def _polygon(points: tuple[tuple[float, float], ...]) -> tuple[Any, float, tuple[float, float, float, float]]:
    """The polygon made valid (self-intersections resolved, only its areal parts kept), its area, bounds."""
    import shapely
    from shapely.geometry import Polygon

    geom = shapely.make_valid(Polygon(points))
    if geom.geom_type == "GeometryCollection":  # e.g. a polygon plus a dangling line: keep the areas
        geom = shapely.unary_union([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    return geom, float(geom.area), tuple(geom.bounds) if not geom.is_empty else (0.0, 0.0, 0.0, 0.0)


def polygon_area(points: Sequence[Sequence[float]]) -> float:
    """Area of a polygon ``[[x, y], ...]`` after making it valid (a bow-tie counts both lobes)."""
    return _polygon(tuple((float(x), float(y)) for x, y in points))[1]


def box_polygon_iou(box: Box, points: Sequence[Sequence[float]]) -> float:
    """Area IoU of a box and a polygon ``[[x, y], ...]`` (shapely), in [0, 1]."""
    import shapely
    from shapely.errors import GEOSException

    geom, area, (minx, miny, maxx, maxy) = _polygon(tuple((float(x), float(y)) for x, y in points))
    x1, y1, x2, y2 = box
    # Clip the box to the polygon's bounds: the intersection is unchanged and GEOS only sees sane numbers.
    cx1, cy1, cx2, cy2 = max(x1, minx), max(y1, miny), min(x2, maxx), min(y2, maxy)
    if not (area > 0 and cx2 > cx1 and cy2 > cy1):
        return 0.0
    try:
        inter = float(shapely.box(cx1, cy1, cx2, cy2).intersection(geom).area)
    except (GEOSException, ValueError):  # pragma: no cover - defensive: GEOS on pathological input
        return 0.0
    union = (x2 - x1) * (y2 - y1) + area - inter
    if not (inter > 0 and union > 0):
        return 0.0
    value = inter / union
    if value >= 1.0:
        return 1.0
    return value if value >= 0.0 else 0.0


def is_box(solution: Any) -> bool:
    """True for a ground-truth box ``[x1, y1, x2, y2]``, False for a polygon ``[[x, y], ...]``."""
    return len(solution) == 4 and not isinstance(solution[0], (list, tuple))


def solution_iou(box: Box, solution: Any) -> float:
    """IoU of a box (original-image pixels) with a ground truth box or polygon."""
    if is_box(solution):
        return box_iou(box, solution)
    return box_polygon_iou(box, solution)


def is_hit(iou: float, threshold: float, rule: str = "ge") -> bool:
    """Whether an IoU counts as a hit at ``threshold``: ``rule`` ``ge`` is IoU >= t (vgrpo's default), ``gt``
    is IoU > t (VLM-R1's REC evaluation), so an IoU of exactly t is a hit only under ``ge``."""
    if rule == "ge":
        return iou >= threshold
    if rule == "gt":
        return iou > threshold
    raise ValueError(f"expected rule 'ge' or 'gt', got {rule!r}")
