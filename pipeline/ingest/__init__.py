"""Ingest: read each tile window from every granule, composite the observations, write the work store."""
