"""The raw structure of a tiled TIFF: read its IFDs and tile byte ranges, and write a Cloud-Optimized GeoTIFF
from tiles that are already compressed.

Why: GDAL's COG driver needs its whole source at once, so a job's strips (about the COG's size) and the COG
coexisted on disk while it ran: staging grew with the region (issue 12). Here the strip tasks let GDAL encode
the COG's own 512-px tiles, and `write_cog` only lays them out as a COG, copying each tile's bytes once and
deleting each source file as soon as its tiles are in: the disk holds the bytes of the COG once.

The layout is GDAL's COG layout (https://gdal.org/drivers/raster/cog.html): TIFF header, the "ghost"
structural metadata, every IFD (full resolution first, then the overviews, largest first) with their tag
data, then the tile data, smallest overview first and the full resolution last, row-major within a level,
each tile with a 4-byte size leader and its last 4 bytes repeated as a trailer. GDAL reads such a file as
LAYOUT=COG.

Little-endian only (GDAL writes little-endian on every platform it runs on here).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataError

#: Tags a writer fills in per level.
TILE_OFFSETS, TILE_BYTE_COUNTS = 324, 325
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, TILE_WIDTH, TILE_LENGTH = 254, 256, 257, 322, 323
#: TIFF field types: (struct code, size in bytes).
TYPES = {
    1: ("B", 1),  # BYTE
    2: ("s", 1),  # ASCII
    3: ("H", 2),  # SHORT
    4: ("I", 4),  # LONG
    5: ("II", 8),  # RATIONAL
    6: ("b", 1),  # SBYTE
    7: ("B", 1),  # UNDEFINED
    8: ("h", 2),  # SSHORT
    9: ("i", 4),  # SLONG
    10: ("ii", 8),  # SRATIONAL
    11: ("f", 4),  # FLOAT
    12: ("d", 8),  # DOUBLE
    16: ("Q", 8),  # LONG8
    17: ("q", 8),  # SLONG8
    18: ("Q", 8),  # IFD8
}
LONG, LONG8 = 4, 16

GHOST = (
    "LAYOUT=IFDS_BEFORE_DATA\n"
    "BLOCK_ORDER=ROW_MAJOR\n"
    "BLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
    "KNOWN_INCOMPATIBLE_EDITION=NO\n "
)
#: Copy buffer of `write_cog`, bytes.
COPY_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class Tag:
    """One IFD entry: field type, value count and the value's little-endian bytes."""

    type: int
    count: int
    data: bytes

    def values(self) -> tuple:
        code, size = TYPES[self.type]
        if self.type == 2:
            return (self.data.rstrip(b"\0").decode("latin-1"),)
        n = self.count * len(code)
        return struct.unpack(f"<{n}{code[0]}", self.data[: self.count * size])

    @classmethod
    def of(cls, type_: int, values: Sequence[int | float]) -> Tag:
        return cls(type_, len(values), struct.pack(f"<{len(values)}{TYPES[type_][0]}", *values))


@dataclass
class Ifd:
    """The tags of one image of a TIFF file (code -> Tag)."""

    tags: dict[int, Tag] = field(default_factory=dict)

    def value(self, code: int) -> int | float:
        return self.tags[code].values()[0]

    def tile_ranges(self) -> list[tuple[int, int]]:
        """(offset, size) of each tile, row-major."""
        return list(zip(self.tags[TILE_OFFSETS].values(), self.tags[TILE_BYTE_COUNTS].values()))


def read_ifds(path: str | Path) -> list[Ifd]:
    """Every IFD of the TIFF at `path`, in file order (classic or BigTIFF, little-endian)."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] != b"II":
            raise DataError(f"{path}: not a little-endian TIFF")
        magic = struct.unpack("<H", head[2:4])[0]
        if magic == 42:
            big, entry_fmt, count_fmt, next_fmt = False, "<HHII", "<H", "<I"
            offset = struct.unpack("<I", head[4:8])[0]
        elif magic == 43:
            big, entry_fmt, count_fmt, next_fmt = True, "<HHQQ", "<Q", "<Q"
            offset = struct.unpack("<Q", head[8:16])[0]
        else:
            raise DataError(f"{path}: not a TIFF (magic {magic})")
        inline = 8 if big else 4
        ifds = []
        while offset:
            f.seek(offset)
            (n,) = struct.unpack(count_fmt, f.read(struct.calcsize(count_fmt)))
            raw = f.read(n * struct.calcsize(entry_fmt))
            (offset,) = struct.unpack(next_fmt, f.read(struct.calcsize(next_fmt)))
            ifd = Ifd()
            for i in range(n):
                code, type_, count, value = struct.unpack_from(entry_fmt, raw, i * struct.calcsize(entry_fmt))
                size = TYPES[type_][1] * count
                if size <= inline:
                    data = struct.pack(next_fmt, value)[:size]
                else:
                    here = f.tell()
                    f.seek(value)
                    data = f.read(size)
                    f.seek(here)
                ifd.tags[code] = Tag(type_, count, data)
            ifds.append(ifd)
        return ifds


@dataclass(frozen=True)
class TileSource:
    """Some consecutive row-major tiles of a level: byte ranges in one file (removed once they are copied when
    `remove`)."""

    path: Path
    ranges: list[tuple[int, int]]
    remove: bool = True


@dataclass(frozen=True)
class CogLevel:
    """One image of the COG: its tags (without tile offsets and counts), its tiles' sources (row-major) and
    how many tiles it has."""

    tags: dict[int, Tag]
    sources: Sequence[TileSource]
    tiles: int


def write_cog(dest: str | Path, levels: Sequence[CogLevel], *, bigtiff: bool | None = None) -> None:
    """Write a COG at `dest` with `levels` (full resolution first): IFDs first, tile data smallest level
    first. The sources' bytes are copied source by source, and each source file is removed when its tiles are
    in (`remove`), so that the bytes of a tile are on disk once. BigTIFF when the file could pass 4 GiB
    (`bigtiff` forces either).
    """
    resolved = [list(level.sources) for level in levels]
    sizes = []
    for level, sources in zip(levels, resolved):
        ranges = [r for s in sources for r in s.ranges]
        if len(ranges) != level.tiles:
            raise DataError(f"COG level of {level.tiles} tiles got {len(ranges)} from its sources")
        sizes.append([size for _, size in ranges])
    data_bytes = sum(sum(s) + 8 * len(s) for s in sizes)
    # classic TIFF while every offset fits 32 bits (with room for the IFDs), else BigTIFF (GDAL's IF_SAFER)
    big = data_bytes + 2**20 * (1 + len(levels)) >= 2**32 if bigtiff is None else bigtiff
    header = 16 if big else 8
    ghost = GHOST.encode()
    first_line = f"GDAL_STRUCTURAL_METADATA_SIZE={len(ghost):06d} bytes\n".encode()
    pos = header + len(first_line) + len(ghost)
    pos += pos % 2
    offset_type = LONG8 if big else LONG
    # lay the IFDs out: entries, then their out-of-line values (word-aligned)
    entry, inline = (20, 8) if big else (12, 4)
    ifd_plans = []
    for level, tile_sizes in zip(levels, sizes):
        tags = dict(level.tags)
        tags[TILE_OFFSETS] = Tag.of(offset_type, [0] * len(tile_sizes))  # placeholders of the right size
        tags[TILE_BYTE_COUNTS] = Tag.of(offset_type, tile_sizes)
        ifd_at = pos
        pos += (8 + entry * len(tags) + 8) if big else (2 + entry * len(tags) + 4)
        extra = {}
        for code in sorted(tags):
            if len(tags[code].data) > inline:
                pos += pos % 2
                extra[code] = pos
                pos += len(tags[code].data)
        pos += pos % 2
        ifd_plans.append((ifd_at, tags, extra))
    # tile data: smallest level first; each tile's offset is past its 4-byte leader
    data_start = pos
    offsets: list[list[int]] = [[] for _ in levels]
    for k in range(len(levels) - 1, -1, -1):
        for size in sizes[k]:
            offsets[k].append(pos + 4)
            pos += size + 8
    for k, (ifd_at, tags, extra) in enumerate(ifd_plans):
        tags[TILE_OFFSETS] = Tag.of(offset_type, offsets[k])
    dest = Path(dest)
    with open(dest, "wb") as out:
        if big:
            out.write(struct.pack("<2sHHHQ", b"II", 43, 8, 0, ifd_plans[0][0]))
        else:
            out.write(struct.pack("<2sHI", b"II", 42, ifd_plans[0][0]))
        out.write(first_line + ghost)
        for k, (ifd_at, tags, extra) in enumerate(ifd_plans):
            _pad_to(out, ifd_at)
            following = ifd_plans[k + 1][0] if k + 1 < len(ifd_plans) else 0
            out.write(struct.pack("<Q" if big else "<H", len(tags)))
            for code in sorted(tags):
                tag = tags[code]
                value = struct.pack("<Q" if big else "<I", extra[code]) if code in extra else tag.data
                out.write(struct.pack("<HHQ" if big else "<HHI", code, tag.type, tag.count))
                out.write(value.ljust(inline, b"\0"))
            out.write(struct.pack("<Q" if big else "<I", following))
            for code in sorted(extra):
                _pad_to(out, extra[code])
                out.write(tags[code].data)
        _pad_to(out, data_start)
        for k in range(len(levels) - 1, -1, -1):
            for source in resolved[k]:
                _copy_tiles(source, out)
                if source.remove:
                    os.remove(source.path)
        if out.tell() != pos:
            raise DataError(f"COG layout mismatch: wrote {out.tell()} bytes, planned {pos}")


def _pad_to(out, position: int) -> None:
    here = out.tell()
    if here > position:
        raise DataError(f"COG layout mismatch at byte {here} (planned {position})")
    out.write(b"\0" * (position - here))


def _copy_tiles(source: TileSource, out) -> None:
    """Each tile of `source`: size leader, bytes, last 4 bytes repeated."""
    with open(source.path, "rb") as f:
        for offset, size in source.ranges:
            f.seek(offset)
            out.write(struct.pack("<I", size))
            tail = b""
            left = size
            while left:
                chunk = f.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise DataError(f"{source.path}: truncated tile at byte {offset}")
                out.write(chunk)
                tail = (tail + chunk[-4:])[-4:]  # not tail + chunk: an 8 MiB copy per chunk
                left -= len(chunk)
            out.write(tail)
