"""Evaluation of reward models on public benchmarks: metrics, benchmark loaders, score caches and reports.

- :mod:`mmreward.evaluation.metrics` -- pairwise accuracy with and without ties, PickScore's tie-aware accuracy,
  ranking accuracies, rank correlations, judge diagnostics, bootstrap intervals.
- :mod:`mmreward.evaluation.benchmarks` -- loaders that turn each benchmark's files into uniform pairs/rankings.
- :mod:`mmreward.evaluation.score_cache` -- scores of distinct media, cached on disk so runs resume.
- :mod:`mmreward.evaluation.report` -- Markdown tables, JSON and matplotlib plots (image grids too).

Generator benchmarks:

- :mod:`mmreward.evaluation.prompt_sets` -- the shipped prompt sets (UniGenBench with test points, GenEval, ...).
- :mod:`mmreward.evaluation.generation` -- sampling defaults per family, LoRA checks, seeded resumable sampling.
- :mod:`mmreward.evaluation.unigenbench` -- UniGenBench scores from per-test-point verdicts.
- :mod:`mmreward.evaluation.diversity` -- within-prompt diversity (mean pairwise feature distance).
- :mod:`mmreward.evaluation.gen_results` -- run summaries, base-versus-aligned comparisons, their reports.

The programs that drive them live in ``eval/`` (``python eval/reward_bench.py --help``,
``python eval/gen_bench.py --help``).
"""
