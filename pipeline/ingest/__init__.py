"""Ingest: read each tile window from every granule (load, odc-stac), composite the observations (composite,
pure numpy), write the tile into the work store and mark it done (stage)."""
