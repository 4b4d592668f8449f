"""Runnable evaluation programs (``python eval/<name>.py`` or ``python -m eval.<name>``).

- ``reward_bench.py``: reward models on reward-model benchmarks (VideoGen-RewardBench, GenAI-Bench, HPDv2,
  Pick-a-Pic, ImageReward, MJ-Bench-Video), with the published metrics, a Markdown report, JSON and plots.

Modules here must not be named like top-level packages: ``python eval/x.py`` puts this folder first on sys.path.
"""
