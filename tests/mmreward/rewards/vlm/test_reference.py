"""Reference prompts: fetched at a pinned commit, verified by sha256, cached, read from Python source without running
it, and placed into our template sections; offline without a copy, the error says where from, where to and how.

The fixtures are our own wording in the file formats the published recipes use: a module-level format string with
``str.format`` (VideoAlign), a constant plus a suffix constant (HPSv3), and a module-level f-string or a chat message
list built around the caption variable (UnifiedReward).
"""

import hashlib
import textwrap
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import pinned_files, testing
from mmreward.errors import ConfigError, ReferenceMismatchError, ReferenceNotAvailableError
from mmreward.rewards.vlm import reference
from mmreward.rewards.vlm.reference import ReferenceFile, extract_prompt, read_reference_file
from mmreward.rewards.vlm.templates import TextPart, load_template

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HEAD_SOURCE = textwrap.dedent(
    '''
    """A reward recipe in the layout of a published one (our wording)."""

    INSTRUCTION = """
    Judge this picture for the caption {{as written}}.
    Caption - {text_prompt}
    """

    SUFFIX = """Overall rating: <|Reward|>
    END
    """

    def build(text):
        return INSTRUCTION.format(text_prompt=text) + SUFFIX
    '''
)
# What INSTRUCTION.format(text_prompt="a red fox") + SUFFIX gives, written out by hand.
HEAD_EXPECTED = (
    "\nJudge this picture for the caption {as written}.\nCaption - a red fox\nOverall rating: <|Reward|>\nEND\n"
)

JUDGE_SOURCE = textwrap.dedent(
    """
    prompt = ""  # the caption, set by the user of the script
    problem = (
        "Compare Picture 1 and Picture 2.\\n"
        'Answer "Picture 1 wins" or "Picture 2 wins".\\n'
        f"Caption: [{prompt}]"
    )
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": f"Pick one for {prompt}."}],
        }
    ]
    """
)


def _publish(root: Path, path: str, source: str) -> dict:
    """Write ``source`` as ``root/path`` and return the reference entry that pins it."""
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(source, encoding="utf-8")
    return {
        "repository": "example/recipes",
        "commit": COMMIT,
        "path": path,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
    }


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private template cache, and downloads served from ``tmp_path/remote`` through file:// URLs."""
    root = tmp_path / "hf_home" / "mmreward" / "templates"
    monkeypatch.setattr(reference, "cache_root", lambda: root)
    monkeypatch.setattr(pinned_files, "RAW_URL", (tmp_path / "remote").as_uri() + "/{repository}/{commit}/{path}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


def _remote(tmp_path: Path, path: str, source: str) -> ReferenceFile:
    entry = _publish(tmp_path / "remote" / "example/recipes" / COMMIT, path, source)
    return reference.parse_reference_file(entry, "test")


def test_fetch_verifies_caches_and_then_needs_no_network(cache, tmp_path, monkeypatch):
    ref = _remote(tmp_path, "recipe/collator.py", HEAD_SOURCE)
    assert read_reference_file(ref) == HEAD_SOURCE
    cached = cache / "example/recipes" / COMMIT / "recipe/collator.py"
    assert cached.read_text(encoding="utf-8") == HEAD_SOURCE

    def no_network(url):
        raise AssertionError(f"downloaded {url} although a verified copy is cached")

    monkeypatch.setattr(pinned_files, "_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read_reference_file(ref) == HEAD_SOURCE


def test_sha256_mismatch_is_refused_and_nothing_is_cached(cache, tmp_path):
    ref = _remote(tmp_path, "recipe/collator.py", HEAD_SOURCE)
    moved = ReferenceFile(ref.repository, ref.commit, ref.path, "0" * 64)
    with pytest.raises(ReferenceMismatchError, match=f"has sha256 {ref.digest}, but the template pins 0000"):
        read_reference_file(moved)
    assert not (cache / "example/recipes" / COMMIT / "recipe/collator.py").exists()
    # A cached copy that was edited afterwards is refused the same way.
    read_reference_file(ref)
    (cache / "example/recipes" / COMMIT / "recipe/collator.py").write_text(HEAD_SOURCE + "# edited\n")
    with pytest.raises(ReferenceMismatchError, match="delete .*collator.py to download it again"):
        read_reference_file(ref)


def test_offline_without_a_copy_names_the_url_the_cache_and_both_fixes(cache, tmp_path, monkeypatch):
    ref = _remote(tmp_path, "recipe/collator.py", HEAD_SOURCE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReferenceNotAvailableError) as err:
        read_reference_file(ref)
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert ref.url in message and str(cache / "example/recipes" / COMMIT / "recipe/collator.py") in message
    assert "template_source_dir=" in message and "template='ours'" in message
    # Unreachable is reported the same way, with the download's reason.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    missing = ReferenceFile(ref.repository, ref.commit, "recipe/absent.py", ref.digest)
    with pytest.raises(ReferenceNotAvailableError, match="downloading it failed .*template='ours'"):
        read_reference_file(missing)


def test_a_local_clone_is_read_and_verified_instead_of_downloading(cache, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    ref = reference.parse_reference_file(_publish(clone, "recipe/collator.py", HEAD_SOURCE), "test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read_reference_file(ref, source_dir=clone) == HEAD_SOURCE
    (clone / "recipe/collator.py").write_text("INSTRUCTION = 'another revision'\n")
    with pytest.raises(ReferenceMismatchError, match=f"git checkout {COMMIT}"):
        read_reference_file(ref, source_dir=clone)
    with pytest.raises(ReferenceNotAvailableError, match="has no file 'recipe/collator.py'"):
        read_reference_file(ref, source_dir=tmp_path / "elsewhere")


def test_format_and_concatenation_are_read_as_the_reference_builds_them():
    text = extract_prompt(HEAD_SOURCE, "INSTRUCTION.format(text_prompt=prompt) + SUFFIX", {"prompt": "prompt"}, "t")
    # Literal braces are doubled for our format syntax; the caption is our {prompt} field.
    assert text == (
        "\nJudge this picture for the caption {{as written}}.\nCaption - {prompt}\nOverall rating: <|Reward|>\nEND\n"
    )
    assert text.format(prompt="a red fox") == HEAD_EXPECTED
    with pytest.raises(ConfigError, match=r"never uses \['prompt'\]"):
        extract_prompt(HEAD_SOURCE, "SUFFIX", {"prompt": "prompt"}, "t")
    with pytest.raises(ConfigError, match=r"format field \{text_prompt\} with no keyword argument"):
        extract_prompt(HEAD_SOURCE, "INSTRUCTION.format(caption=prompt)", {"prompt": "prompt"}, "t")
    with pytest.raises(ConfigError, match="a call other than str.format"):  # functions are not run
        extract_prompt(HEAD_SOURCE, "build(prompt)", {"prompt": "prompt"}, "t")
    with pytest.raises(ConfigError, match="'PROMPT' is neither assigned at module level nor bound"):
        extract_prompt(HEAD_SOURCE, "PROMPT.format(text_prompt=prompt)", {"prompt": "prompt"}, "t")


def test_fstrings_and_message_lists_bind_the_caption_variable():
    # The module assigns prompt = "", but the caption binding wins: it is where the caption goes.
    assert extract_prompt(JUDGE_SOURCE, "problem", {"prompt": "prompt"}, "test") == (
        'Compare Picture 1 and Picture 2.\nAnswer "Picture 1 wins" or "Picture 2 wins".\nCaption: [{prompt}]'
    )
    assert extract_prompt(JUDGE_SOURCE, 'messages[0]["content"][2]["text"]', {"prompt": "prompt"}, "t") == (
        "Pick one for {prompt}."
    )
    with pytest.raises(ConfigError, match="index 3 outside a list of 3"):
        extract_prompt(JUDGE_SOURCE, 'messages[0]["content"][3]["text"]', {"prompt": "prompt"}, "t")
    with pytest.raises(ConfigError, match="no key 'body'"):
        extract_prompt(JUDGE_SOURCE, 'messages[0]["body"]', {"prompt": "prompt"}, "t")


def test_reading_never_executes_the_reference(tmp_path):
    marker = tmp_path / "executed"
    source = textwrap.dedent(
        f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("ran")
        PROMPT = "Rate it: " + pathlib.Path({str(marker)!r}).read_text() + " {{text_prompt}}"
        SAFE = "Rate {{text_prompt}} now."
        """
    )
    with pytest.raises(ConfigError, match="a Call expression|a call other than str.format"):
        extract_prompt(source, "PROMPT.format(text_prompt=prompt)", {"prompt": "prompt"}, "test")
    assert extract_prompt(source, "SAFE.format(text_prompt=prompt)", {"prompt": "prompt"}, "test") == (
        "Rate {prompt} now."
    )
    assert not marker.exists()
    # The expression itself is interpreted, not evaluated: builtins and attribute access are refused.
    for expression in ('__import__("os").getcwd()', "SAFE.upper()", "(lambda: SAFE)()", "SAFE[0]"):
        with pytest.raises(ConfigError, match="cannot read the reference prompt"):
            extract_prompt(source, expression, {"prompt": "prompt"}, "test")


def test_reference_text_goes_between_our_media_slots(tmp_path):
    clone = tmp_path / "clone"
    entry = _publish(clone, "judge.py", JUDGE_SOURCE)
    spec = {"image": {**entry, "expression": "problem", "user": "{media_a}{media_b}{reference}"}}
    template = load_template(
        "reference",
        template_name="unifiedreward-pairwise",
        kind="pairwise",
        reference_prompt={**spec, "video": {**spec["image"], "expression": 'messages[0]["content"][2]["text"]'}},
        source_dir=clone,
    )
    section = template.section("image")
    parts = section.render("a red fox")
    assert [getattr(p, "slot", None) for p in parts] == ["media_a", "media_b", None]
    assert parts[2] == TextPart(
        'Compare Picture 1 and Picture 2.\nAnswer "Picture 1 wins" or "Picture 2 wins".\nCaption: [a red fox]'
    )
    assert section.system is None and section.verdicts.first == "Image 1 is better"  # the structure stays ours
    assert template.section("video").render("a cat")[2] == TextPart("Pick one for a cat.")
    assert template.describe() == "reference (example/recipes@0123456:judge.py)"
    assert load_template("ours", template_name="unifiedreward-pairwise", kind="pairwise").describe() == (
        "ours (unifiedreward-pairwise)"
    )
    with pytest.raises(ConfigError, match=r"must map each section \['image', 'video'\]"):
        load_template("reference", template_name="unifiedreward-pairwise", kind="pairwise", reference_prompt=spec)
    with pytest.raises(ConfigError, match="names none, so use template='ours'"):
        load_template("reference", template_name="unifiedreward-pairwise", kind="pairwise")
    with pytest.raises(ConfigError, match="needs template_name="):
        load_template("ours", kind="pairwise")


def test_tiny_head_model_reads_the_reference_prompt(tiny_root, tmp_path, photos):
    """The hpsv3 preset's tokens and head on a tiny model, prompted with a reference in HPSv3's layout: the model
    sees the image, then exactly the reference text with the caption in place, and the head reads <|Reward|>."""
    clone = tmp_path / "clone"
    entry = _publish(clone, "recipe/collator.py", HEAD_SOURCE)
    expression = "INSTRUCTION.format(text_prompt=prompt) + SUFFIX"
    spec = {"image": {**entry, "expression": expression, "user": "{media}{reference}"}}
    preset = testing.tiny_vlm_preset("hpsv3", tiny_root)
    reward = mmreward.load_reward(str(preset), template="reference", reference_prompt=spec, template_source_dir=clone)
    prepared = reward.prepare(photos[0])
    assert prepared["messages"][0]["content"][0] == {"type": "image"}
    batch = reward._encode(["a red fox"], [prepared])
    text = reward.tokenizer.decode(batch["input_ids"][0])
    user_turn = text.split("<|vision_end|>", 1)[1].split("<|im_end|>", 1)[0]
    assert user_turn == HEAD_EXPECTED
    out = reward.score(["a red fox"], [photos[0]])
    assert torch.isfinite(out.scores).all()
    ours = mmreward.load_reward(str(preset))  # the tiny preset keeps our wording
    assert ours.template.describe() == "ours (hpsv3)"
    assert out.scores[0] != ours.score(["a red fox"], [photos[0]]).scores[0]  # the wording reaches the head


def test_presets_list_which_wording_they_use():
    from mmreward.rewards.registry import find_preset

    assert find_preset("videoreward").describe()["template"] == "reference (KwaiVGI/VideoAlign@219ab9d)"
    assert find_preset("hpsv3").describe()["template"] == "reference (MizzenAI/HPSv3@77e8fa3)"
    assert find_preset("unifiedreward-think").describe()["template"] == "reference (CodeGoat24/UnifiedReward@ff6f520)"
    assert find_preset("unigenbench-eval").describe()["template"] == "ours (unigenbench-checklist)"
    assert find_preset("pickscore").describe()["template"] is None


# A recipe published in a README: one fenced Python block holds the message builder (the prompt inside the function,
# the image marked in the text) and a usage example that must never run; our own wording.
README_SOURCE = textwrap.dedent(
    '''
    # A reward model

    ```bash
    serve the-model --port 8000
    ```

    ```python
    import requests


    def build_messages(prompt, image):
        system_prompt = (
            "You grade pictures. "
            "Be strict {always}."
        )
        user_instruction = f"""Request: {prompt}
    The picture: <image>
    Grade it {{1-4}}."""
        return [system_prompt, user_instruction]


    print(requests.post("http://localhost:8000", json=build_messages("a fox", b"")))
    ```
    '''
)
# A query template built inside the script's main with string.Template.
SCRIPT_SOURCE = textwrap.dedent(
    '''
    from string import Template

    QUERY = "not this one"

    def main(model, video, caption):
        QUERY = Template("""Watch the clip.
        Caption: $caption (costs $$0)
        Answer: quality: <q>""")
        user_prompt = QUERY.substitute(caption=caption)
    '''
)


def test_function_scopes_templates_and_markdown_blocks_are_read_without_running_them():
    text = extract_prompt(SCRIPT_SOURCE, "QUERY.substitute(caption=caption)", {"caption": "prompt"}, "t", scope="main")
    assert text == "Watch the clip.\n    Caption: {prompt} (costs $0)\n    Answer: quality: <q>"
    with pytest.raises(ConfigError, match="placeholder '\\$caption' with no keyword argument"):
        extract_prompt(SCRIPT_SOURCE, "QUERY.substitute(text=caption)", {"caption": "prompt"}, "t", scope="main")
    with pytest.raises(ConfigError, match="defines no module-level function 'run'"):
        extract_prompt(SCRIPT_SOURCE, "QUERY", {}, "t", scope="run")
    user = extract_prompt(
        README_SOURCE, "user_instruction", {"prompt": "prompt"}, "t", scope="build_messages", markdown=True
    )
    assert user == "Request: {prompt}\nThe picture: <image>\nGrade it {{1-4}}."
    system = extract_prompt(README_SOURCE, "system_prompt", {}, "t", scope="build_messages", markdown=True)
    assert system == "You grade pictures. Be strict {{always}}."
    with pytest.raises(ConfigError, match="no fenced Python block of the Markdown file defines a function 'build'"):
        extract_prompt(README_SOURCE, "user_instruction", {"prompt": "prompt"}, "t", scope="build", markdown=True)


def test_a_readme_recipe_gives_the_system_message_and_places_the_media_at_its_mark(tmp_path):
    clone = tmp_path / "clone"
    entry = _publish(clone, "README.md", README_SOURCE)
    spec = {
        "image": {
            **entry,
            "scope": "build_messages",
            "expression": "user_instruction",
            "system": "system_prompt",
            "media_marker": "<image>",
            "user": "{reference}",
        }
    }
    template = load_template(
        "reference", template_name="rationalrewards", kind="critique", reference_prompt=spec, source_dir=clone
    )
    section = template.section("image")
    assert section.system == "You grade pictures. Be strict {always}."
    parts = section.render("a red fox")
    assert parts[0] == TextPart("Request: a red fox\nThe picture: ") and parts[1].slot == "media"
    assert parts[2] == TextPart("\nGrade it {1-4}.")
    without_scope = {"image": {k: v for k, v in spec["image"].items() if k != "scope"}}
    with pytest.raises(ConfigError, match="a Markdown reference needs scope"):
        load_template("reference", template_name="rationalrewards", kind="critique", reference_prompt=without_scope)
    twice = {"image": {**spec["image"], "media_marker": "e"}}
    with pytest.raises(ConfigError, match="media_marker 'e' occurs"):
        load_template(
            "reference", template_name="rationalrewards", kind="critique", reference_prompt=twice, source_dir=clone
        )


def test_new_presets_pin_their_published_prompts():
    from mmreward.rewards.registry import find_preset

    assert find_preset("videoscore2").describe()["template"] == "reference (TIGER-AI-Lab/VideoScore2@e6abe26)"
    assert find_preset("rationalrewards").describe()["template"] == "reference (TIGER-AI-Lab/RationalRewards@44e27ab)"


EDIT_README_SOURCE = '''# Edit recipe

```python
def build_edit_messages(prompt):
    system_prompt = "You grade edits."
    head = """Instruction: {request}
Before: <image>
After: <image>"""
    rubric = "Grade it {{1-4}}."
    return head.format(request=prompt) + rubric
```
'''


def test_an_edit_recipe_places_the_source_then_the_edit_at_its_two_marks(tmp_path):
    from mmreward.rewards.registry import find_preset

    clone = tmp_path / "clone"
    entry = _publish(clone, "README.md", EDIT_README_SOURCE)
    spec = {
        "image": {
            **entry,
            "scope": "build_edit_messages",
            "expression": 'head.format(request=prompt) + "\\n\\n" + rubric',
            "system": "system_prompt",
            "media_marker": "<image>",
            "user": "{reference}",
        }
    }
    load = dict(template_name="rationalrewards-edit", kind="edit-critique", source_dir=clone)
    section = load_template("reference", reference_prompt=spec, **load).section("image")
    assert section.system == "You grade edits."
    parts = section.render("make it red")
    assert parts[0] == TextPart("Instruction: make it red\nBefore: ") and parts[1].slot == "source"
    assert parts[2] == TextPart("\nAfter: ") and parts[3].slot == "media"
    assert parts[4] == TextPart("\n\nGrade it {{1-4}}.")
    once = {"image": {**spec["image"], "media_marker": "Before: <image>"}}
    with pytest.raises(ConfigError, match="occurs 1 times .* the 2 place"):
        load_template("reference", reference_prompt=once, **load)
    assert find_preset("rationalrewards-edit").describe()["template"] == (
        "reference (TIGER-AI-Lab/RationalRewards@44e27ab)"
    )


def test_a_published_text_without_the_caption_is_read_with_caption_null(tmp_path):
    """UnifiedReward-Edit's quality question shows no instruction: ``caption: null`` reads it; the default caption
    name on the same text is refused, so a prompt that lost its caption is never read silently."""
    clone = tmp_path / "clone"
    entry = _publish(clone, "quality.py", 'problem = "Rate this picture {0-25}.\\n"\n')
    spec = {"image": {**entry, "expression": "problem", "caption": None, "user": "{media}{reference}"}}
    load = dict(template_name="unifiedreward-edit-quality", kind="score", source_dir=clone)
    parts = load_template("reference", reference_prompt=spec, **load).section("image").render("unused instruction")
    assert parts[0].slot == "media" and parts[1:] == [TextPart("Rate this picture {0-25}.\n")]
    with pytest.raises(ConfigError, match="never uses \\['prompt'\\]"):
        load_template("reference", reference_prompt={"image": {**spec["image"], "caption": "prompt"}}, **load)
    with pytest.raises(ConfigError, match="or null for a text without the caption"):
        load_template("reference", reference_prompt={"image": {**spec["image"], "caption": 3}}, **load)
