"""Rectified-flow generator machinery on diffusers: SDE step with log-probability, per-family adapters (sd3, flux,
wan, qwenimage, zimage, flux2klein, flux2, hunyuanvideo15, qwenimage21), rollouts with log-probabilities."""
