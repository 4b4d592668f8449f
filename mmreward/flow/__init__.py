"""Rectified-flow generator machinery on diffusers: SDE step with log-probability, per-family adapters (sd3, flux,
wan), rollouts with log-probabilities."""
