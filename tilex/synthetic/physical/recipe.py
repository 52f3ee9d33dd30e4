"""A physical scene's parameters, drawn from (size, seed, recipe, bands, holdout).

Recipes
-------
``underdrawing``   carbon-black strokes (lines, contours, hatching) on the ground;
``composition``    an earlier painting: filled shapes in infrared-absorbing pigments;
``mixed``          both;
``nothing``        no hidden content (the truth mask is empty);
``random``         one of the four, drawn from the seed (``nothing`` one time in four).

Every recipe is painted over with a visible picture (a background split by a
horizon, a few objects, thin glazes of infrared-transparent pigments) of
spatially varying thickness, and carries the traps: craquelure, canvas weave,
a (sometimes partly cleaned) yellowed varnish and specular glints.

Held-out settings
-----------------
``holdout=True`` draws pigments from the other half of every role
(:mod:`~tilex.synthetic.physical.palette`), a lead-white priming instead of
chalk, band sets from other families and FWHM ranges, and cameras from
ranges outside the training ones (stronger vignetting, larger offsets and
misregistration, noisier sensors). Training and validation can thus differ
in more than the seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tilex.synthetic.noise import mix32_int
from tilex.synthetic.physical.camera import Camera
from tilex.synthetic.physical.observer import check_bands
from tilex.synthetic.physical.palette import Pigment, palette
from tilex.synthetic.shapes import Shape

__all__ = ["RECIPES", "Region", "Scene", "draw_bands", "draw_scene"]

RECIPES = ("mixed", "underdrawing", "composition", "nothing", "random")
"""Scene recipes (see the module notes)."""


@dataclass(frozen=True)
class Region:
    """A patch of one paint: ``shape`` (None: everywhere; ``"below"``: under a line), its paint.

    ``args`` for ``"below"`` are ``(y0, slope)``; else a :class:`Shape` and the
    half width of its stroke (capsules). The paint is ``pigment`` with
    ``1 - white`` of it and ``white`` of lead white; ``thickness`` scales the
    layer's thickness there.
    """

    pigment: Pigment
    white: float
    shape: Shape | None = None
    half_width: float = 0.0
    below: tuple[float, float] | None = None
    thickness: float = 1.0


@dataclass(frozen=True)
class Scene:
    """Everything about a scene but its pixels (see :mod:`~.render`)."""

    height: int
    width: int
    seed: int
    recipe: str
    holdout: bool
    bands: tuple[tuple[float, float], ...]
    ground: str
    ground_texture: float
    drawing: tuple[Shape, ...]
    drawing_pigment: Pigment
    drawing_tau: float  # optical thickness of a full-density line at 550 nm
    line_half_width: float
    composition: tuple[Region, ...]
    composition_tau: float
    top: tuple[Region, ...]
    top_tau: float  # mean optical thickness (lead white units) at 550 nm
    top_variation: float
    stroke_angle: float
    scatter_exponent: float  # S ~ (lambda / 550 nm)^-k
    varnish: float  # absorbance of the varnish at 380 nm (0: none)
    varnish_decay_nm: float
    cleaned: tuple[float, float, float, float] | None  # (x0, y0, x1, y1) less varnish
    crack_cell: float
    crack_width: float  # px
    crack_depth: float
    weave_period: float
    weave_relief: float
    glint_strength: float
    glint_lobe: tuple[float, float, float]
    visible_camera: Camera
    cameras: tuple[Camera, ...]

    @property
    def side(self) -> float:
        return float(min(self.height, self.width))

    def key(self, name: str) -> int:
        """A 32-bit key for a texture or a noise, from the seed and a name."""
        h = self.seed * 0x9E3779B1
        for ch in name.encode():
            h = mix32_int(h ^ ch) + 0x7F4A7C15
        return mix32_int(h)


def draw_bands(rnd: random.Random, holdout: bool) -> list[tuple[float, float]]:
    """A band set: a family (standard 400-1000 nm, no UV/violet, to 1700 nm, visible only).

    Training sets have 5-10 bands of FWHM 15-45 nm; held-out sets 4 or 11-12
    bands of FWHM 50-90 nm, centres jittered, and a near-infrared-only family.
    """
    families = ["standard", "no_uv", "swir", "visible"] + (["nir"] if holdout else [])
    family = rnd.choice(families)
    lo, hi = {
        "standard": (400.0, 1000.0),
        "no_uv": (500.0, 1000.0),
        "swir": (400.0, 1700.0),
        "visible": (420.0, 720.0),
        "nir": (700.0, 1100.0),
    }[family]
    n = rnd.choice([4, 11, 12]) if holdout else rnd.randint(5, 10)
    jitter = 0.3 if holdout else 0.0
    step = (hi - lo) / (n - 1)
    bands = []
    for i in range(n):
        c = lo + step * (i + jitter * (rnd.random() - 0.5))
        f = rnd.uniform(50.0, 90.0) if holdout else rnd.uniform(15.0, 45.0)
        if family == "visible":
            f = min(f, 0.8 * step)
        bands.append((round(c, 1), round(f, 1)))
    return bands


def _camera(rnd: random.Random, holdout: bool, nm: float | None) -> Camera:
    u = rnd.uniform

    def pick(train: tuple[float, float], held: tuple[float, float]) -> float:
        return u(*held) if holdout else u(*train)

    visible = nm is None
    shift = (0.0, 0.0)
    if not visible:
        mag = pick((0.0, 0.5), (0.5, 0.9))
        angle = u(0.0, 2.0 * math.pi)
        shift = (mag * math.sin(angle), mag * math.cos(angle))
    swir = nm is not None and nm > 1000.0
    return Camera(
        gain=pick((0.85, 1.05), (0.8, 0.9)) if visible else pick((0.55, 1.05), (0.35, 0.55)),
        offset=0.0 if visible else pick((0.0, 0.04), (0.04, 0.08)),
        vignetting=pick((0.0, 0.25), (0.25, 0.4)),
        centre=(u(-0.1, 0.1), u(-0.1, 0.1)),
        gradient=(u(-0.05, 0.05), u(-0.05, 0.05)),
        read_noise=pick((0.001, 0.006), (0.006, 0.012)) * (2.0 if swir else 1.0),
        full_well=pick((4000.0, 30000.0), (1500.0, 4000.0)),
        shift=shift,
        blur=u(0.0, 0.12) + (0.08 if nm is not None and nm > 800.0 else 0.0),
        glint=u(0.5, 1.0),
        white_balance=tuple(u(0.97, 1.03) for _ in range(3)) if visible else (1.0, 1.0, 1.0),
    )


def _strokes(rnd: random.Random, density: float) -> list[Shape]:
    """An under-drawing: wandering contour lines, a few ellipses and hatch groups."""
    shapes: list[Shape] = []
    for _ in range(rnd.randint(5, 12)):
        x, y = rnd.uniform(-0.4, 0.4), rnd.uniform(-0.4, 0.4)
        heading, step = rnd.uniform(0, 2 * math.pi), rnd.uniform(0.03, 0.07)
        pressure = rnd.uniform(0.6, 1.0) * density
        for _ in range(rnd.randint(3, 9)):
            heading += rnd.gauss(0.0, 0.35)
            nx, ny = x + step * math.cos(heading), y + step * math.sin(heading)
            shapes.append(Shape("segment", (x, y, nx, ny), density=pressure))
            x, y = nx, ny
    for _ in range(rnd.randint(1, 3)):
        a, b = rnd.uniform(0.05, 0.2), rnd.uniform(0.05, 0.2)
        centre = (rnd.uniform(-0.3, 0.3), rnd.uniform(-0.3, 0.3))
        shapes.append(Shape("outline", (*centre, a, b), density=rnd.uniform(0.6, 1.0) * density))
    for _ in range(rnd.randint(0, 3)):
        angle = rnd.uniform(0, math.pi)
        ux, uy = math.cos(angle), math.sin(angle)
        hx, hy = rnd.uniform(-0.35, 0.35), rnd.uniform(-0.35, 0.35)
        length, gap = rnd.uniform(0.05, 0.12), rnd.uniform(0.02, 0.035)
        for k in range(rnd.randint(3, 7)):
            cx, cy = hx - gap * k * uy, hy + gap * k * ux
            shapes.append(
                Shape(
                    "segment",
                    (
                        cx - length * ux / 2,
                        cy - length * uy / 2,
                        cx + length * ux / 2,
                        cy + length * uy / 2,
                    ),
                    density=rnd.uniform(0.4, 0.8) * density,
                )
            )
    return shapes


def _blob(rnd: random.Random, spread: float, size: tuple[float, float]) -> tuple[Shape, float]:
    """A filled ellipse or a broad capsule (a stroke with a wide half width)."""
    cx, cy = rnd.uniform(-spread, spread), rnd.uniform(-spread, spread)
    if rnd.random() < 0.6:
        return Shape("fill", (cx, cy, rnd.uniform(*size), rnd.uniform(*size))), 0.0
    angle, length = rnd.uniform(0, math.pi), rnd.uniform(*size) * 2
    dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    return Shape("segment", (cx - dx, cy - dy, cx + dx, cy + dy)), rnd.uniform(*size) * 0.5


def draw_scene(
    height: int,
    width: int,
    seed: int,
    recipe: str = "mixed",
    bands: list[tuple[float, float]] | None = None,
    holdout: bool = False,
) -> Scene:
    """Draw every parameter of a scene (scalars and shapes only; no pixels)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not one of {', '.join(RECIPES)}")
    rnd = random.Random(f"tilex.physical:{seed}:{int(holdout)}")
    if recipe == "random":
        recipe = rnd.choice(["mixed", "underdrawing", "composition", "nothing"])
    drawn = draw_bands(rnd, holdout)
    bands = check_bands(bands) if bands is not None else drawn
    pal = {role: palette(role, holdout) for role in ("drawing", "hidden", "top", "glaze")}

    drawing: list[Shape] = []
    if recipe in ("underdrawing", "mixed"):
        drawing = _strokes(rnd, rnd.uniform(0.7, 1.0))
    composition: list[Region] = []
    if recipe in ("composition", "mixed"):
        for _ in range(rnd.randint(2, 6)):
            shape, hw = _blob(rnd, 0.35, (0.05, 0.18))
            composition.append(Region(rnd.choice(pal["hidden"]), rnd.uniform(0.0, 0.5), shape, hw))

    top_pigments = pal["top"]
    top = [
        Region(rnd.choice(top_pigments), rnd.uniform(0.3, 0.9)),
        Region(
            rnd.choice(top_pigments),
            rnd.uniform(0.2, 0.8),
            below=(rnd.uniform(-0.1, 0.35), rnd.uniform(-0.2, 0.2)),
        ),
    ]
    for _ in range(rnd.randint(1, 5)):
        shape, hw = _blob(rnd, 0.4, (0.04, 0.16))
        top.append(
            Region(
                rnd.choice(top_pigments),
                rnd.uniform(0.0, 0.8),
                shape,
                hw,
                thickness=rnd.uniform(0.8, 1.5),
            )
        )
    for _ in range(rnd.randint(1, 3)):  # the trap: glazes that vanish in the infrared
        shape, hw = _blob(rnd, 0.4, (0.03, 0.12))
        top.append(
            Region(
                rnd.choice(pal["glaze"]),
                rnd.uniform(0.0, 0.15),
                shape,
                hw,
                thickness=rnd.uniform(0.15, 0.5),
            )
        )

    cleaned = None
    if rnd.random() < 0.4:
        x0, y0 = rnd.uniform(-0.5, 0.2), rnd.uniform(-0.5, 0.2)
        cleaned = (x0, y0, x0 + rnd.uniform(0.1, 0.3), y0 + rnd.uniform(0.1, 0.3))
    return Scene(
        height=height,
        width=width,
        seed=seed,
        recipe=recipe,
        holdout=holdout,
        bands=tuple(bands),
        ground="lead white" if holdout else "chalk",
        ground_texture=rnd.uniform(0.0, 0.04),
        drawing=tuple(drawing),
        drawing_pigment=rnd.choice(pal["drawing"]),
        drawing_tau=rnd.uniform(0.03, 0.3),
        line_half_width=rnd.uniform(0.002, 0.006),
        composition=tuple(composition),
        composition_tau=rnd.uniform(1.0, 4.0),
        top=tuple(top),
        top_tau=rnd.uniform(3.0, 12.0),
        top_variation=rnd.uniform(0.1, 0.5),
        stroke_angle=rnd.uniform(0.0, math.pi),
        scatter_exponent=rnd.uniform(1.0, 2.5),
        varnish=rnd.choice([0.0, rnd.uniform(0.05, 0.6)]),
        varnish_decay_nm=rnd.uniform(40.0, 120.0),
        cleaned=cleaned,
        crack_cell=rnd.uniform(0.02, 0.08),
        crack_width=rnd.uniform(0.5, 1.5),
        crack_depth=rnd.choice([0.0, rnd.uniform(0.2, 0.6), rnd.uniform(0.2, 0.6)]),
        weave_period=rnd.uniform(3.0, 9.0),
        weave_relief=rnd.uniform(0.0, 0.08),
        glint_strength=rnd.choice([0.0, rnd.uniform(0.1, 0.6)]),
        glint_lobe=(rnd.uniform(-0.5, 0.5), rnd.uniform(-0.5, 0.5), rnd.uniform(0.15, 0.5)),
        visible_camera=_camera(rnd, holdout, None),
        cameras=tuple(_camera(rnd, holdout, c) for c, _ in bands),
    )
