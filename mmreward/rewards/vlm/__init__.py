"""VLM rewards on Qwen2-VL / Qwen2.5-VL / Qwen3-VL: reward-token heads (VideoReward, HPSv3), generative judges
(pairwise, pointwise, chain of thought; local or served by vLLM/SGLang), their templates and answer parsers.

Modules: ``backbone`` (loading, batching, visual features reused across prompts), ``heads``, ``checkpoints``
(released layouts), ``judges`` (local), ``remote`` (OpenAI-compatible servers), ``judging`` (what both share),
``templates``, ``parsing``. Rewards are loaded through ``mmreward.load_reward`` with the presets in
``configs/rewards/``.
"""
