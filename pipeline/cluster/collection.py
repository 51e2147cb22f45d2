"""The product of a plan: a STAC Collection at the output root, one Item per finished unit.

`difffusr run --plan` writes `ROOT/collection.json` after its units (again on every rerun, so it lists what
is finished so far): the spatial and temporal extent of the done units, summaries (gsd, bands, method,
precision, sampler), the providers, the code and weights provenance, and an `item` link to each unit's
`item.json` (relative, so the folder can move or be served as is). Each unit's item gets its `collection`
id and `collection`/`parent`/`root` links.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.bands import S2_BANDS, TARGET_GSD_M
from pipeline.cluster.ledger import Ledger
from pipeline.cluster.plan import WorkUnit
from pipeline.io.outputs import OutputDir

STAC_VERSION = "1.1.0"
COLLECTION_FILE = "collection.json"


def collection_id(root: str) -> str:
    """A stable id from the output root's last path part (`s3://b/prod/eu-2024` -> difffusr-eu-2024)."""
    return "difffusr-" + root.rstrip("/").rsplit("/", 1)[-1]


def plan_collection(cid: str, items: dict[str, dict[str, Any]], description: str) -> dict[str, Any]:
    """The Collection document of the finished units' `items` (unit key -> its item.json), pure."""
    bboxes = [it["bbox"] for it in items.values()]
    starts = [it["properties"].get("start_datetime") for it in items.values()]
    ends = [it["properties"].get("end_datetime") for it in items.values()]
    first = next(iter(items.values()), {"properties": {}})["properties"]
    spatial = (
        [
            min(b[0] for b in bboxes),
            min(b[1] for b in bboxes),
            max(b[2] for b in bboxes),
            max(b[3] for b in bboxes),
        ]
        if bboxes
        else [-180.0, -90.0, 180.0, 90.0]
    )
    summaries: dict[str, Any] = {
        "gsd": [TARGET_GSD_M],
        "eo:bands": [{"name": b} for b in S2_BANDS],
        "constellation": ["sentinel-2"],
        "proj:epsg": sorted({it["properties"]["proj:epsg"] for it in items.values()}),
    }
    for key in ("difffusr:method", "difffusr:precision", "difffusr:seed"):
        values = sorted({str(it["properties"].get(key)) for it in items.values() if key in it["properties"]})
        if values:
            summaries[key] = values
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": cid,
        "title": "DiffFuSR: Sentinel-2 L2A, all 12 bands super-resolved to 2.5 m",
        "description": description,
        "license": "other",  # derived from Copernicus Sentinel data: see the license link
        "keywords": ["sentinel-2", "super-resolution", "difffusr"],
        "providers": [
            {
                "name": "ESA / Copernicus",
                "roles": ["producer", "licensor"],
                "url": "https://sentinels.copernicus.eu",
            },
            {"name": "difffusr", "roles": ["processor"]},
        ],
        "extent": {
            "spatial": {"bbox": [spatial]},
            "temporal": {"interval": [[min(starts) if starts else None, max(ends) if ends else None]]},
        },
        "summaries": summaries,
        # what made the product: the code and the weights' content hashes of the first unit (every unit of
        # one run shares them; each item has its own copy)
        "difffusr:code": first.get("difffusr:code"),
        "difffusr:weights": first.get("difffusr:weights"),
        "updated": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "links": [
            {"rel": "root", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "self", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            {
                "rel": "license",
                "href": "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
                "title": "Legal notice on the use of Copernicus Sentinel data",
            },
            *(
                {"rel": "item", "href": f"./{key}/item.json", "type": "application/geo+json", "title": key}
                for key in items
            ),
        ],
    }


def write_plan_collection(root: str, units: Sequence[WorkUnit]) -> str:
    """Write `ROOT/collection.json` over every unit under ROOT that holds an item (the done ones; an empty
    unit has none): the plan's `units` and every unit of earlier plans run into ROOT (the ledger names them),
    so scheduled runs of one window after another grow one collection; link each item to it. Returns its
    URL."""
    out = OutputDir(root)
    cid = collection_id(root)
    items: dict[str, dict[str, Any]] = {}
    for key in sorted({u.key for u in units} | set(Ledger(root).records())):
        if out.exists(f"{key}/item.json"):
            items[key] = out.read_json(f"{key}/item.json")
    for key, item in items.items():
        depth = "../" * (key.count("/") + 1)
        links = [lk for lk in item.get("links", []) if lk.get("rel") not in ("collection", "parent", "root")]
        for rel in ("collection", "parent", "root"):
            links.append({"rel": rel, "href": f"{depth}{COLLECTION_FILE}", "type": "application/json"})
        linked = {**item, "collection": cid, "links": links}
        if linked != item:
            out.write_json(f"{key}/item.json", linked)
            items[key] = linked
    description = (
        f"{len(items)} work units (MGRS 100 km square x date window) of a `difffusr run --plan`: per unit a "
        "12-band 2.5 m COG, a Zarr store, a quicklook and per-tile quality figures."
    )
    out.write_json(COLLECTION_FILE, plan_collection(cid, items, description))
    return out.join(COLLECTION_FILE)
