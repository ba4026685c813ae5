"""Procedural drawing for the generated sample datasets: textured backgrounds and shapes.

Everything is drawn with numpy and PIL from one `numpy.random.Generator`, so the same
generator state gives the same pixels on every run.

Boxes are tight around the *full* drawn shape (every pixel of its mask, outline included).
Objects drawn later may cover earlier ones, but a placement is only accepted when every
earlier object keeps at least `min_visible` of its pixels visible, so each recorded box
still shows most of its object.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPE_KINDS = ("circle", "triangle", "square", "star", "cross", "ring")
BACKGROUND_KINDS = ("noise", "gradient", "stripes", "checker", "blotches")
# Backgrounds without edges or shapes of their own (no stripes, checkers or blotches):
# objects then stand out from the texture, which a model trained for a few CPU minutes
# can learn.
SMOOTH_BACKGROUNDS = ("noise", "gradient")
# Fraction of an object's pixels that must stay visible after later objects are drawn.
MIN_VISIBLE = 0.6
# (min side, max side, probability) of the sampled object size: COCO small (< 32^2 px),
# medium (< 96^2 px) and large boxes.
SIZE_BANDS = ((12.0, 28.0, 0.3), (36.0, 88.0, 0.45), (104.0, 260.0, 0.25))
# Placement tries per object before it is left out.
_PLACEMENT_TRIES = 30
# Smallest RGB distance between an object's colour and most pixels it is drawn on.
_MIN_COLOUR_DISTANCE = 90.0


@dataclasses.dataclass(frozen=True)
class DrawnObject:
    """One object drawn into a scene.

    Attributes:
        kind: shape name, one of `SHAPE_KINDS`.
        bbox: `(x, y, w, h)` in pixels, tight around the full drawn shape.
        visible: fraction of the shape's pixels still visible in the final image.
    """

    kind: str
    bbox: tuple[float, float, float, float]
    visible: float


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours with a random (not always high) contrast between them."""
    first = rng.uniform(0.0, 255.0, size=3)
    second = first + (rng.uniform(0.0, 255.0, size=3) - first) * rng.uniform(0.3, 1.0)
    return first.astype(np.float32), second.astype(np.float32)


def _projection(width: int, height: int, angle: float) -> np.ndarray:
    """Pixel coordinates projected on the direction `angle` (radians), `[H, W]`."""
    ys, xs = np.indices((height, width), dtype=np.float32)
    return xs * math.cos(angle) + ys * math.sin(angle)


def _blend(mask: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours, `mask` in 0..1 `[H, W]` -> float `[H, W, 3]`."""
    mask = mask[..., None].astype(np.float32)
    return first[None, None, :] * (1.0 - mask) + second[None, None, :] * mask


def _noise_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour noise: a small random grid upsampled bicubically."""
    cells = int(rng.integers(3, 12))
    grid = rng.uniform(0.0, 255.0, size=(cells, cells, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    base = rng.uniform(0.0, 255.0, size=3)
    amount = rng.uniform(0.3, 0.8)
    return base * (1.0 - amount) + smooth.astype(np.float32) * amount


def _gradient_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Linear gradient between two colours in a random direction."""
    proj = _projection(width, height, rng.uniform(0.0, 2.0 * math.pi))
    ramp = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    return _blend(ramp, *_colour_pair(rng))


def _stripes_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Straight stripes of two colours at a random angle, period and duty cycle."""
    proj = _projection(width, height, rng.uniform(0.0, math.pi))
    phase = np.mod(proj / rng.uniform(6.0, 40.0), 1.0)
    return _blend(phase < rng.uniform(0.3, 0.7), *_colour_pair(rng))


def _checker_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A checkerboard of two colours, random cell size and rotation."""
    angle = rng.uniform(0.0, 0.5 * math.pi)
    cell = rng.uniform(6.0, 48.0)
    u = np.floor(_projection(width, height, angle) / cell)
    v = np.floor(_projection(width, height, angle + 0.5 * math.pi) / cell)
    return _blend(np.mod(u + v, 2.0), *_colour_pair(rng))


def _blotches_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Strongly blurred ellipses of random colours (never sharp shapes) on a base colour."""
    base = tuple(int(v) for v in rng.integers(0, 256, size=3))
    image = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(int(rng.integers(8, 31))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.05, 0.25, size=2) * side
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.025, 0.06) * side))
    return np.asarray(image).astype(np.float32)


_BACKGROUNDS = {
    "noise": _noise_background,
    "gradient": _gradient_background,
    "stripes": _stripes_background,
    "checker": _checker_background,
    "blotches": _blotches_background,
}


def draw_background(rng: np.random.Generator, width: int, height: int,
                    kind: str | None = None,
                    kinds: Sequence[str] = BACKGROUND_KINDS) -> np.ndarray:
    """Draws a textured background.

    Args:
        rng: random generator (advanced by the call).
        width: image width in pixels.
        height: image height in pixels.
        kind: one of `BACKGROUND_KINDS`; drawn at random from `kinds` when None.
        kinds: the kinds a random background is drawn from.

    Returns:
        float32 RGB array `[height, width, 3]` in 0..255.
    """
    if kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    return _BACKGROUNDS[kind](rng, width, height).astype(np.float32)


def _polygon(kind: str, radius: float, angle: float, rng: np.random.Generator,
             centre: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of circumradius `radius`, rotated by `angle`."""
    if kind in ("triangle", "square"):
        count = 3 if kind == "triangle" else 4
        points = [(radius, 2.0 * math.pi * i / count) for i in range(count)]
    elif kind == "star":
        inner = radius * rng.uniform(0.4, 0.5)
        points = [(radius if i % 2 == 0 else inner, math.pi * i / 5.0) for i in range(10)]
    else:  # cross: a plus sign whose arms are 2 * half wide
        half = radius * rng.uniform(0.22, 0.32)
        corners = [(half, radius), (-half, radius), (-half, half), (-radius, half),
                   (-radius, -half), (-half, -half), (-half, -radius), (half, -radius),
                   (half, -half), (radius, -half), (radius, half), (half, half)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    return [(centre + r * math.cos(a + angle), centre + r * math.sin(a + angle))
            for r, a in points]


def shape_mask(kind: str, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Renders one shape, randomly rotated, as a boolean mask trimmed to its pixels.

    Args:
        kind: one of `SHAPE_KINDS`.
        radius: circumradius in pixels.
        rng: random generator (rotation, star and cross proportions, ring hole).

    Returns:
        bool array `[h, w]` whose first/last rows and columns each hold a shape pixel.
    """
    size = int(math.ceil(2.0 * radius)) + 3
    centre = (size - 1) / 2.0
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    outer = (centre - radius, centre - radius, centre + radius, centre + radius)
    if kind in ("circle", "ring"):
        draw.ellipse(outer, fill=255)
        if kind == "ring":
            hole = radius * rng.uniform(0.45, 0.62)
            draw.ellipse((centre - hole, centre - hole, centre + hole, centre + hole), fill=0)
    else:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        draw.polygon(_polygon(kind, radius, angle, rng, centre), fill=255)
    mask = np.asarray(image) > 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _sample_side(rng: np.random.Generator, bands: Sequence[tuple[float, float, float]],
                 limit: float) -> float:
    """Samples an object side length from the size bands, at most `limit`."""
    probs = np.array([band[2] for band in bands], dtype=np.float64)
    low, high, _ = bands[int(rng.choice(len(bands), p=probs / probs.sum()))]
    return min(rng.uniform(low, high), limit)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour far from most of the pixels `under` it (`[N, 3]`).

    The 25th percentile of the distances is what must be large, so that the colour also
    stands out from each colour of a two-colour texture, not only from their mean.
    """
    under = under[:: max(1, len(under) // 1024)]
    best, best_score = None, -1.0
    for _ in range(16):
        colour = rng.uniform(0.0, 255.0, size=3)
        score = float(np.percentile(np.linalg.norm(under - colour, axis=1), 25))
        if score >= _MIN_COLOUR_DISTANCE:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _paint(rng: np.random.Generator, patch: np.ndarray, mask: np.ndarray,
           base: np.ndarray | None = None) -> None:
    """Fills `mask` inside the float RGB `patch` (in place): shaded colour, maybe an outline.

    The colour is `base` varied by up to +-25 per channel, or, without `base`, a random
    colour far from the pixels beneath.
    """
    if base is None:
        colour = _contrasting_colour(rng, patch[mask])
    else:
        colour = np.clip(np.asarray(base, np.float64) + rng.uniform(-25.0, 25.0, size=3),
                         0.0, 255.0)
    h, w = mask.shape
    shade = _projection(w, h, rng.uniform(0.0, 2.0 * math.pi))
    shade = (shade - shade.min()) / max(float(np.ptp(shade)), 1.0) - 0.5
    fill = colour[None, None, :] + shade[..., None] * rng.uniform(0.0, 60.0)
    patch[mask] = fill[mask]
    if rng.random() < 0.4:
        padded = np.pad(mask, 1)
        inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
        edge = mask & ~inner
        patch[edge] = colour * 0.35 if colour.mean() > 110.0 else colour * 0.35 + 166.0


def _try_place(rng: np.random.Generator, owner: np.ndarray, mask: np.ndarray,
               full_areas: list[int], min_visible: float) -> tuple[int, int] | None:
    """Finds a top-left corner where `mask` leaves every earlier object visible enough."""
    height, width = owner.shape
    mh, mw = mask.shape
    if mh > height or mw > width:
        return None
    full = np.asarray([1] + full_areas, dtype=np.float64)
    visible = np.bincount(owner.ravel(), minlength=len(full)).astype(np.float64)
    for _ in range(_PLACEMENT_TRIES):
        x = int(rng.integers(0, width - mw + 1))
        y = int(rng.integers(0, height - mh + 1))
        covered = np.bincount(owner[y:y + mh, x:x + mw][mask], minlength=len(full))
        left = (visible - covered)[1:] / full[1:]
        if left.size == 0 or left.min() >= min_visible:
            return x, y
    return None


def _grid_place(rng: np.random.Generator, mask: np.ndarray, index: int, grid: tuple[int, int],
                width: int, height: int) -> tuple[int, int] | None:
    """A random top-left corner that keeps `mask` inside grid cell `index` (row-major)."""
    cols, rows = grid
    cell_w, cell_h = width // cols, height // rows
    mh, mw = mask.shape
    if index >= cols * rows or mh > cell_h or mw > cell_w:
        return None
    x0, y0 = (index % cols) * cell_w, (index // cols) * cell_h
    return (x0 + int(rng.integers(0, cell_w - mw + 1)),
            y0 + int(rng.integers(0, cell_h - mh + 1)))


def draw_scene(rng: np.random.Generator, width: int, height: int, kinds: Sequence[str], *,
               min_visible: float = MIN_VISIBLE,
               size_bands: Sequence[tuple[float, float, float]] = SIZE_BANDS,
               backgrounds: Sequence[str] = BACKGROUND_KINDS,
               grid: tuple[int, int] | None = None,
               palette: dict[str, tuple[int, int, int]] | None = None,
               muted_background: float = 0.0,
               ) -> tuple[Image.Image, list[DrawnObject]]:
    """Draws the objects `kinds` (in order, later ones on top) on a textured background.

    An object that cannot be placed without hiding more than `1 - min_visible` of an
    earlier one is left out; the first object is always drawn.

    Args:
        rng: random generator (advanced by the call).
        width: image width in pixels.
        height: image height in pixels.
        kinds: shape names to draw, each one of `SHAPE_KINDS`.
        min_visible: fraction of each object that must stay visible (1.0: no overlap).
        size_bands: `(min side, max side, probability)` rows to sample object sizes from.
        backgrounds: background kinds to draw from.
        grid: `(columns, rows)`: object k goes at a random place inside cell k (no
            overlap); None: anywhere, occlusion limited by `min_visible`.
        palette: a base colour per shape kind (each object varies it a little); None: a
            random colour that contrasts with the background beneath.
        muted_background: 0..1, how far the background is pulled towards its grey
            (1: grey only), so that coloured objects stand out.

    Returns:
        The RGB image and the drawn objects, in drawing order.
    """
    canvas = draw_background(rng, width, height, kinds=backgrounds)
    if muted_background > 0.0:
        grey = canvas.mean(axis=2, keepdims=True)
        canvas = canvas * (1.0 - muted_background) + grey * muted_background
    owner = np.zeros((height, width), dtype=np.int32)  # 0: background, k: k-th object
    placed: list[tuple[str, int, int, np.ndarray]] = []
    for kind in kinds:
        side = _sample_side(rng, size_bands, 0.8 * min(width, height))
        mask = shape_mask(kind, 0.5 * side, rng)
        if grid is None:
            corner = _try_place(rng, owner, mask, [int(m.sum()) for *_, m in placed],
                                min_visible)
        else:
            corner = _grid_place(rng, mask, len(placed), grid, width, height)
        if corner is None:
            continue
        x, y = corner
        mh, mw = mask.shape
        _paint(rng, canvas[y:y + mh, x:x + mw], mask,
               None if palette is None else palette.get(kind))
        owner[y:y + mh, x:x + mw][mask] = len(placed) + 1
        placed.append((kind, x, y, mask))
    sigma = np.float32(rng.uniform(1.5, 6.0))
    # Luminance noise (one channel broadcast to three): a third of the cost of RGB noise.
    canvas += rng.standard_normal(size=(height, width, 1), dtype=np.float32) * sigma
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    counts = np.bincount(owner.ravel(), minlength=len(placed) + 1)
    objects = [
        DrawnObject(kind=kind, bbox=(float(x), float(y), float(m.shape[1]), float(m.shape[0])),
                    visible=float(counts[i + 1]) / float(m.sum()))
        for i, (kind, x, y, m) in enumerate(placed)
    ]
    return image, objects
