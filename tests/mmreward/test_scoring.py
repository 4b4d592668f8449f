"""The scoring engine's media sharing: rewards share decoded media only when they would decode it alike."""

import mmreward
from mmreward.scoring import PreparedMedia


def test_judges_with_other_frame_rules_decode_videos_apart():
    floor = mmreward.load_reward("unifiedreward-think-remote")
    rounded = mmreward.load_reward("unifiedreward-think-remote", frame_rule="round")
    again = mmreward.load_reward("unifiedreward-think-remote")
    groups = PreparedMedia([], {"floor": floor, "round": rounded, "again": again}).groups
    assert sorted(groups.values()) == [["floor", "again"], ["round"]]
