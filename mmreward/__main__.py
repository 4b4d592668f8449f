"""``python -m mmreward ...`` runs the ``mmreward`` command; so do launchers that start a module on every process:
``accelerate launch -m mmreward score ...`` and ``torchrun -m mmreward score ...`` (:mod:`mmreward.score_shards`)."""

from mmreward.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
