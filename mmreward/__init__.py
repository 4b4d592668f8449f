"""mmreward: multimodal reward models and preference alignment for image and video generators.

import mmreward
rm = mmreward.load_reward("pickscore", device="cuda", dtype="bfloat16")
out = rm.score(prompts, media)      # RewardOutput: scores, dims, failed, errors
rates = mmreward.win_rate(judge, prompt, group)   # (G,) Pref-GRPO win rates under a pairwise judge
"""

from mmreward.rewards import PairwiseOutput, RewardModel, RewardOutput, list_rewards, load_reward
from mmreward.rewards.win_rate import win_rate

__version__ = "0.1.0"

__all__ = [
    "PairwiseOutput",
    "RewardModel",
    "RewardOutput",
    "__version__",
    "list_rewards",
    "load_reward",
    "win_rate",
]
