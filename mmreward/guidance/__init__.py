"""Inference-time reward guidance for rectified-flow generators: Flow-NRG with latent rewards, pixel-space gradient
guidance, best-of-N and search under a budget of model evaluations (:mod:`mmreward.guidance.sampling`), the same
as a diffusers ``callback_on_step_end`` (:mod:`mmreward.guidance.callback`), and ``mmreward generate``."""
