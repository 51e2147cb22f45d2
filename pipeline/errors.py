"""One hierarchy of user-facing errors.

Each message says what failed, with which input (quoted), why, and which option fixes it.
The CLI prints a `DiffFuSRError` as one line and exits with code 2; anything else is a bug.
"""

from __future__ import annotations


class DiffFuSRError(Exception):
    """Base of every error caused by the user's input, data or environment (not by a bug)."""


class ConfigError(DiffFuSRError, ValueError):
    """An option value is invalid (bbox, dates, CRS, method, preset, ...)."""


class CatalogError(DiffFuSRError):
    """The STAC API could not be searched, or returned something unusable."""


class EmptySearchError(CatalogError):
    """The search matched no item."""


class AssetError(DiffFuSRError):
    """An item lacks a required band asset, or an asset cannot be read."""


class DataError(DiffFuSRError):
    """Pixels are unusable: all nodata, all cloud, wrong shape or grid."""


class CheckpointError(DiffFuSRError):
    """A checkpoint is missing, of another model, or does not match the requested bands/preset."""


class OutputError(DiffFuSRError):
    """An output location cannot be written."""


class TrainingDataError(DiffFuSRError):
    """A training data folder is empty or holds no usable image."""
