"""Policy optimization of rectified-flow generators, on top of :mod:`mmreward.flow` (the generator machinery) and
:mod:`mmreward.rewards`: the pieces Flow-GRPO, Pref-GRPO and Adv-GRPO call in order, one module each.

One GRPO iteration:

1. :mod:`~mmreward.alignment.layout`: the iteration's prompts and the split of its ``P x G`` samples over the
   processes;
2. :mod:`~mmreward.alignment.group_rollout`: this process's samples with their per-step log-probabilities;
3. :mod:`~mmreward.alignment.group_rewards`: every sample's reward (a reward mix, a judge's win rates within the
   group, or Adv-GRPO's discriminator), shared with every process;
4. :mod:`~mmreward.alignment.advantages`: rewards normalized within each group;
5. :mod:`~mmreward.alignment.update_schedule` and :mod:`~mmreward.alignment.clipped_update`: the clipped policy
   update, and :mod:`~mmreward.alignment.off_policy` saying why an update is not on-policy.

Adv-GRPO's discriminators: :mod:`~mmreward.alignment.references`, :mod:`~mmreward.alignment.discriminators`,
:mod:`~mmreward.alignment.discriminator_losses`, :mod:`~mmreward.alignment.adversarial`. Held-out evaluation
during training: :mod:`~mmreward.alignment.monitor`.

Flow-DPO and Flow-RWR: :mod:`~mmreward.alignment.preference_sets` (offline and synthetic pairs, cached latents),
:mod:`~mmreward.alignment.online_pairs` (pairs ranked from the reference's samples) and
:mod:`~mmreward.alignment.flow_dpo_objective` (the losses on a batch).

DiffusionNFT (likelihood-free, on the forward process): :mod:`~mmreward.alignment.nft` (rewards to optimality
probabilities, the implicit positive/negative velocities, the negative-aware loss, the old policy and its schedule);
its rollout, rewards and monitor are the GRPO modules above.
"""
