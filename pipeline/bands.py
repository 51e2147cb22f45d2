"""Sentinel-2 band ids, their native ground sampling distances and the DiffFuSR band groups.

Every array in this package that holds several bands keeps them in one of the orders defined here;
nothing else in the code base spells out band lists.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The 12 L2A surface-reflectance bands in the order of every 12-band output (B10 is L1C-only).
S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
)

#: Native ground sampling distance of each band, metres.
NATIVE_GSD_M: dict[str, int] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}

#: The RGB guide, in the (R, G, B) order the diffusion model takes.
RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")

#: Output grid of the method, metres.
TARGET_GSD_M: float = 2.5


@dataclass(frozen=True, kw_only=True)
class BandGroup:
    """One resolution group of the fusion stage.

    Attributes:
        name: "10m", "20m" or "60m".
        bands: band ids in the group's array order.
        gsd_m: native GSD of the group, metres.
    """

    name: str
    bands: tuple[str, ...]
    gsd_m: int

    @property
    def factor_to_target(self) -> int:
        """Upsampling factor from the group's grid to the 2.5 m grid (4, 8 or 24)."""
        return round(self.gsd_m / TARGET_GSD_M)

    @property
    def factor_to_10m(self) -> int:
        """How many 10 m pixels one pixel of this group spans along an axis (1, 2 or 6)."""
        return self.gsd_m // 10


GROUP_10M = BandGroup(name="10m", bands=("B02", "B03", "B04", "B08"), gsd_m=10)
GROUP_20M = BandGroup(name="20m", bands=("B05", "B06", "B07", "B8A", "B11", "B12"), gsd_m=20)
GROUP_60M = BandGroup(name="60m", bands=("B01", "B09"), gsd_m=60)
BAND_GROUPS: tuple[BandGroup, ...] = (GROUP_10M, GROUP_20M, GROUP_60M)

#: Scene classification (SCL) classes that are not usable surface observations:
#: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus.
SCL_INVALID_CLASSES: tuple[int, ...] = (0, 1, 3, 8, 9, 10)


def group_of(band: str) -> BandGroup:
    """Return the resolution group a band id belongs to."""
    for group in BAND_GROUPS:
        if band in group.bands:
            return group
    raise KeyError(f"{band!r} is not one of the 12 L2A bands {S2_BANDS}")


def s2_order_index() -> list[int]:
    """Indices that reorder the concatenation 10m+20m+60m group arrays into S2_BANDS order."""
    grouped = [b for g in BAND_GROUPS for b in g.bands]
    return [grouped.index(b) for b in S2_BANDS]
