"""Training reward models, on top of :mod:`mmreward.rewards` (the models), :mod:`mmreward.data` (pair files, latent
caches) and :mod:`mmreward.train` (checkpoints, guards, tracking): the pieces ``align/train_reward.py`` and
``align/train_latent_reward.py`` call in order, one module each.

VLM reward models from preference pairs (``align/train_reward.py``):

1. :mod:`~mmreward.reward_training.sections`: the program's config sections;
2. :mod:`~mmreward.reward_training.pair_loading`: pair files read and split, datasets, batches and the epoch order;
3. :mod:`~mmreward.reward_training.tasks`: the model being trained, as a head task
   (:mod:`~mmreward.reward_training.head_task`, VideoReward) or a judge task
   (:mod:`~mmreward.reward_training.judge_task`, a generative pairwise judge as a verdict classifier);
4. :mod:`~mmreward.reward_training.trainable`: what trains, at which learning rate, and the warm-up;
5. :mod:`~mmreward.reward_training.validation`: margins gathered across processes and per-dimension accuracies;
6. :mod:`~mmreward.reward_training.saved_presets`: the preset written next to a trained model.

Flow-NRG's latent reward on noisy generator latents (``align/train_latent_reward.py``):
:mod:`~mmreward.reward_training.latent_sections` (config sections), :mod:`~mmreward.reward_training.latent_data`
(what to encode, the held-out split, the batches), :mod:`~mmreward.reward_training.latent_encoding` (latents encoded
once into the run's cache, prompt embeddings) and :mod:`~mmreward.reward_training.latent_objective` (noise, losses,
held-out accuracy).
"""
