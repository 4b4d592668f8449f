"""Reward models behind one contract (see :mod:`mmreward.rewards.base`) and the flat registry."""

from mmreward.rewards.base import PairwiseOutput, RewardModel, RewardOutput
from mmreward.rewards.registry import REWARD_TYPES, list_rewards, load_reward

__all__ = ["REWARD_TYPES", "PairwiseOutput", "RewardModel", "RewardOutput", "list_rewards", "load_reward"]
