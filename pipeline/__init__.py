"""difffusr: Sentinel-2 L2A, all 12 bands, super-resolved to one 2.5 m grid (the DiffFuSR method)."""

__version__ = "0.1.0"
