"""mosaic stage."""
