"""Which measured pigments play which part, and how much they scatter.

Roles
-----
``drawing``
    Carbon blacks of an under-drawing: dark from the visible to 1000 nm.
``hidden``
    Pigments of an earlier composition that absorb in the near infrared
    (copper blues and greens, umbers, iron oxides, Prussian blue): content
    that reflectography can find. Paint that turns transparent in the infrared
    under another layer is not findable from reflectance, so it is not used
    as hidden content.
``top``
    Body colours of the visible painting, laid as tints with lead white.
``glaze``
    Organic lakes, indigo, ultramarine and an iron-gall ink: coloured or dark
    in the visible, nearly transparent in the infrared. Laid thin on plain
    ground they are a trap: a band differs from the visible with nothing under it.

Every role is split in two disjoint halves: ``holdout=False`` scenes draw from
the first, ``holdout=True`` scenes from the second.

Scattering
----------
The library measures ``R_inf`` (hence ``K/S``) only. A pigment's scattering
relative to lead white (``s_rel``, lead white = 1) is an order-of-magnitude
assumption from its refractive index and habit (high for lead white,
vermilion, red lead; low for lakes, indigo, ultramarine, smalt, green earth);
it sets how a tint mixes and how thin a layer hides, not its masstone colour.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROLES", "Pigment", "palette"]


@dataclass(frozen=True)
class Pigment:
    """A library pigment (its exact name) and its scattering relative to lead white."""

    name: str
    s_rel: float


def _p(*items: tuple[str, float]) -> tuple[Pigment, ...]:
    return tuple(Pigment(n, s) for n, s in items)


ROLES: dict[str, tuple[tuple[Pigment, ...], tuple[Pigment, ...]]] = {
    "drawing": (
        _p(("ivory black--genuine", 0.25), ("cherry black", 0.2), ("bistre", 0.15)),
        _p(("grape black", 0.2), ("shungit", 0.25)),
    ),
    "hidden": (
        _p(
            ("azurite natural fine", 0.15),
            ("malachite natural--extra fine", 0.15),
            ("raw umber--dark", 0.3),
            ("burnt umber--dark brown", 0.3),
            ("prussian blue LUX", 0.05),
            ("verdigris--synthetic", 0.1),
            ("caput mortuum dark", 0.35),
            ("black earth--from andalusia", 0.3),
        ),
        _p(
            ("azurite natural standard", 0.15),
            ("malachite--synthetic", 0.15),
            ("raw umber--greenish", 0.3),
            ("burnt umber--reddish", 0.3),
            ("copper blue", 0.1),
            ("vivianite", 0.1),
            ("spanish haematite--medium", 0.35),
            ("van dyck brown", 0.1),
        ),
    ),
    "top": (
        _p(
            ("yellow ochre--from andalusia", 0.3),
            ("french ochre JCLES", 0.3),
            ("vermilion", 0.5),
            ("red lead--minium", 0.5),
            ("naples yellow--dark", 0.6),
            ("raw sienna--italian", 0.2),
            ("burnt sienna--from france", 0.25),
            ("venetian red", 0.35),
            ("green earth light", 0.1),
            ("smalt--very fine", 0.08),
            ("orpiment--genuine", 0.4),
            ("gold ochre DD", 0.3),
            ("raw umber", 0.3),
        ),
        _p(
            ("yellow moroccan ochre--fine", 0.3),
            ("french ochre SOFODOR", 0.3),
            ("natural cinnabar", 0.5),
            ("realgar--genuine", 0.4),
            ("naples yellow from paris", 0.6),
            ("raw sienna badia--italian", 0.2),
            ("dark burnt sienna", 0.25),
            ("english red light", 0.35),
            ("green earth--light", 0.1),
            ("cobalt blue light", 0.15),
            ("italian gold ochre light", 0.3),
            ("burnt umber light--reddish-brown", 0.3),
        ),
    ),
    "glaze": (
        _p(
            ("madder lake--genuine", 0.03),
            ("indigo--genuine", 0.04),
            ("carmine naccarat", 0.03),
            ("ultramarine blue--light", 0.08),
            ("atramentum", 0.05),
        ),
        _p(
            ("madder lake made of roots--dark red", 0.03),
            ("indigo made of woad", 0.04),
            ("lapis lazuli--pure", 0.08),
            ("alizarine crimson light", 0.03),
            ("cassel brown--wood stain", 0.05),
        ),
    ),
}
"""Role -> (training pigments, held-out pigments)."""


def palette(role: str, holdout: bool) -> tuple[Pigment, ...]:
    """The pigments of ``role`` for training (``holdout=False``) or held-out scenes.

    Examples
    --------
    >>> [p.name for p in palette("drawing", holdout=True)]
    ['grape black', 'shungit']
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {sorted(ROLES)}")
    return ROLES[role][1 if holdout else 0]
