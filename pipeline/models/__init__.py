"""Learned models (diffusion SR, fusion), their degradation operators and the baselines."""
