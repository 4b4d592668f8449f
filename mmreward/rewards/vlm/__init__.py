"""VLM rewards on Qwen2-VL / Qwen2.5-VL / Qwen3-VL: reward-token heads (VideoReward, HPSv3) and generative judges,
their templates and answer parsers.

A judge is a task that holds a backend. Tasks (what is asked, how answers become rewards): ``pairwise``
(:class:`PairwiseJudge`, :class:`ChainOfThoughtJudge`), ``pointwise``, ``checklist``; their shared base is
``judge_base``. Backends (how a question reaches a model): ``local_backend`` (transformers on this machine) and
``chat_backend`` (an OpenAI-compatible server such as vLLM or SGLang). Also ``backbone`` (loading, batching, visual
features reused across prompts), ``heads``, ``checkpoints`` (released layouts), ``templates``, ``reference`` (a
checkpoint's published training prompt, fetched and parsed at run time), ``parsing``. Rewards are loaded through
``mmreward.load_reward`` with the presets in ``configs/rewards/``.
"""
