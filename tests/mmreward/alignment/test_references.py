"""Adv-GRPO's reference images (mmreward.alignment.references) at the value level: the exact pixels a reference
becomes, the exact error texts, which generator a draw uses, and the colour distance per channel and per sample.
(The loading and drawing behaviour itself is tested with the discriminators in test_discriminators.py.)"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mmreward import media as media_io
from mmreward.alignment.references import (
    ReferenceSet,
    draw,
    find_reference_files,
    load_references,
    mean_color_distance,
    read_prompt_references,
)
from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.clip_preprocess import resize_shortest_center_crop
from mmreward.testing import warm_reference_images


def _message(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as raised:
        call(*args, **kwargs)
    return str(raised.value)


def test_a_reference_is_the_bicubic_antialiased_clamped_resize_of_its_file(tmp_path):
    """Black/white stripes 48 x 64 -> 24 x 32: shortest side to 32 and centre crop, then an antialiased bicubic
    resize to the generator's size, clamped to [0, 1] before 8-bit rounding (bicubic overshoots on the edges)."""
    stripes = (torch.rand(1, 48, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    image = torch.cat([stripes, 1 - stripes, stripes])  # (3, 48, 64)
    path = tmp_path / "stripes.png"
    media_io.save_media(image, path)
    square = resize_shortest_center_crop(media_io.load_image(path)[None], 32)  # (1, 3, 32, 32)
    resized = F.interpolate(square, size=(24, 32), mode="bicubic", antialias=True, align_corners=False)[0]
    assert resized.min() < -0.01 and resized.max() > 1.01  # both ends of the clamp are exercised
    expected = (resized.clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(load_references([path], 24, 32)[0], expected)


def test_unreadable_references_are_named_three_at_most(tmp_path):
    good = warm_reference_images(tmp_path / "ok", count=1)
    broken = []
    for k in range(4):
        broken.append(tmp_path / f"broken{k}.png")
        broken[-1].write_bytes(b"not a png")
    reasons = []
    for path in broken:
        with pytest.raises(MediaError) as raised:
            media_io.load_image(path)
        reasons.append(str(raised.value))
    assert _message(load_references, good + broken[:3], 8, 8) == (
        f"3 of 4 reference images could not be read: {'; '.join(reasons[:3])}"
    )
    assert _message(load_references, good + broken, 8, 8) == (
        f"4 of 5 reference images could not be read: {'; '.join(reasons[:3])}; ... (4 in all)"
    )


def test_reference_file_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing listed\n\n")
    extensions = ", ".join(sorted(media_io.IMAGE_EXTENSIONS))
    folder, manifest, missing = tmp_path / "empty", tmp_path / "list.txt", tmp_path / "missing"
    assert _message(find_reference_files, folder) == (
        f"the reference folder {str(folder)!r} holds no images ({extensions}); Adv-GRPO needs reference images"
    )
    assert _message(find_reference_files, manifest) == (
        f"the reference manifest {str(manifest)!r} holds no images ({extensions}); Adv-GRPO needs reference images"
    )
    assert _message(find_reference_files, missing) == (
        f"references.path {str(missing)!r} does not exist; give a folder of images or a manifest"
    )
    absent = tmp_path / "absent.json"
    assert _message(read_prompt_references, absent) == (
        f"references.path {str(absent)!r} does not exist; give a JSON file {{prompt: [image, ...]}}"
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert _message(read_prompt_references, bad).startswith(f"references.path {str(bad)!r} is not UTF-8 JSON (")
    bad.write_text("[]")
    assert _message(read_prompt_references, bad) == (
        f"references.path {str(bad)!r} must hold a non-empty JSON object {{prompt: [image, ...]}}"
    )
    bad.write_text('{"a cat": 3}')
    assert _message(read_prompt_references, bad) == (
        f"references.path {str(bad)!r}: the entry of prompt 'a cat' must be a file name or a non-empty list of file "
        "names, not 3"
    )


def test_manifests_and_json_saved_with_a_byte_order_mark(tmp_path):
    """Editors on Windows save UTF-8 with a byte-order mark: it is not part of the first path or prompt."""
    files = warm_reference_images(tmp_path / "refs", count=2)
    (tmp_path / "list.txt").write_bytes("\ufeffrefs/warm-astronaut.png\nrefs/warm-brick.png\n".encode())
    assert find_reference_files(tmp_path / "list.txt") == files
    (tmp_path / "keyed.json").write_bytes(("\ufeff" + json.dumps({"a cat": "refs/warm-brick.png"})).encode())
    assert read_prompt_references(tmp_path / "keyed.json") == {"a cat": [files[1]]}


def test_from_path_of_a_folder_passes_size_and_tolerance_through(tmp_path):
    files = warm_reference_images(tmp_path / "refs", count=3, size=48)
    loaded = ReferenceSet.from_path(tmp_path / "refs", 24, 32)
    assert loaded.by_prompt is None and torch.equal(loaded.images, load_references(files, 24, 32))
    (tmp_path / "refs" / "zz-broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="1 of 4 reference images could not be read"):
        ReferenceSet.from_path(tmp_path / "refs", 24, 32)
    assert ReferenceSet.from_path(tmp_path / "refs", 24, 32, max_failed=0.25).images.shape == (3, 3, 24, 32)


def test_from_path_of_a_json_uses_its_root(tmp_path):
    files = warm_reference_images(tmp_path / "elsewhere", count=2)
    (tmp_path / "keyed.json").write_text(json.dumps({"a cat": files[1].name, "a dog": [files[0].name]}))
    keyed = ReferenceSet.from_path(tmp_path / "keyed.json", 32, 32, root=tmp_path / "elsewhere")
    assert keyed.by_prompt == {"a cat": [0], "a dog": [1]}
    assert torch.equal(keyed.images, load_references([files[1], files[0]], 32, 32))


def test_missing_prompts_error_names_the_fix():
    keyed = ReferenceSet(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), {"a cat": [0]})
    assert _message(keyed.check_prompts, ["a dog", "a cat", "a bird"], "data.prompts") == (
        "2 of the prompts in data.prompts have no reference images (first: 'a dog'); add them to the references "
        "JSON or drop those prompts"
    )


def test_keyed_draws_come_from_the_given_generator():
    """Slot j draws uniformly among its prompt's references with the caller's generator, in slot order."""
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    keyed = ReferenceSet(images, {"a cat": [0, 1, 2], "a dog": [3, 4]})
    prompts = ["a dog", "a cat", "a cat", "a dog"] * 5
    torch.manual_seed(123)  # the global generator must play no part
    drawn = keyed.draw(20, prompts, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    expected = []
    for prompt in prompts:
        own = keyed.by_prompt[prompt]
        expected.append(own[int(torch.randint(len(own), (1,), generator=replay))])
    assert drawn[:, 0, 0, 0].tolist() == expected


def test_draw_takes_only_the_permutations_it_needs():
    """7 of 3 items take ceil(7 / 3) = 3 permutations, so the caller's generator then continues from there."""
    generator, replay = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    draw(7, 3, generator)
    for _ in range(3):
        torch.randperm(3, generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_mean_color_distance_per_channel_then_per_sample():
    """References pure green (0, 1, 0); samples red (1, 0, 0) and green: per-sample RMS over channels
    sqrt(2 / 3) and 0, averaged over samples."""
    refs = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    refs[:, 1] = 255
    samples = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    samples[0, 0] = 255
    samples[1, 1] = 255
    assert mean_color_distance(samples, refs) == pytest.approx((2 / 3) ** 0.5 / 2)
