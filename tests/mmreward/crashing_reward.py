"""A brightness reward that stops the whole process (not one item) when it reads the file named in
``MMREWARD_TEST_CRASH_ON``: an interrupted ``mmreward score`` run at a known item, for the resume tests (with
``--workers 0`` files are read in input order, after the rows before them were recorded)."""

from __future__ import annotations

import os
from pathlib import Path

from mmreward.rewards.brightness import BrightnessReward


class CrashingBrightness(BrightnessReward):
    def load_media(self, item):
        if isinstance(item, (str, Path)) and Path(item).name == os.environ.get("MMREWARD_TEST_CRASH_ON"):
            raise RuntimeError(f"interrupted while reading {item}")
        return super().load_media(item)
