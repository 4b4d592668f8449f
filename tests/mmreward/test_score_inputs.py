"""Which prompt goes with which file: input expansion, manifests and ``--prompts`` pairing (`mmreward.score_inputs`).

Bad lines and files fail alone, with their reason, in their place; every other item keeps its own prompt.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.score_inputs import InputError, Item, assign_prompts, assign_source, expand_inputs, read_prompts_file


def media_item(name: str, error: str | None = None) -> Item:
    return Item(f"/m/{name}.png", None, error)


def test_prompts_follow_the_input_order_and_failed_items_keep_their_place():
    items = [media_item("a"), media_item("b", "file not found"), media_item("c")]
    assign_prompts(items, None, ["for a", "for b", "for c"])
    assert [item.prompt for item in items] == ["for a", "for b", "for c"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["ok", "failed", "manifest prompt", "no media"]), st.text(max_size=8)),
        max_size=12,
    )
)
def test_each_media_item_takes_the_next_prompts_line_whatever_else_is_in_the_list(kinds):
    """Items with a manifest prompt keep it, inputs that stand for no media take no line, every other item (failed
    or not) takes the next line, in order."""
    items = []
    for i, (kind, manifest_prompt) in enumerate(kinds):
        if kind == "manifest prompt":
            items.append(Item(f"/m/{i}.png", manifest_prompt))
        elif kind == "no media":
            items.append(Item(f"/m/empty{i}", None, "directory has no image or video files", False))
        else:
            items.append(media_item(str(i), "file not found" if kind == "failed" else None))
    lines = [f"line {i}" for i, (kind, _) in enumerate(kinds) if kind in ("ok", "failed")]
    assign_prompts(items, None, lines)
    for i, ((kind, manifest_prompt), item) in enumerate(zip(kinds, items, strict=True)):
        expected = {"manifest prompt": manifest_prompt, "no media": None}.get(kind, f"line {i}")
        assert item.prompt == expected


def test_prompt_count_mismatch_and_both_options_are_refused():
    with pytest.raises(InputError, match="--prompts has 1 lines for 2 media items"):
        assign_prompts([media_item("a"), media_item("b")], None, ["x"])
    with pytest.raises(InputError, match="not both"):
        assign_prompts([media_item("a")], "x", ["x"])
    items = [media_item("a"), Item("/m/list.csv", "kept")]
    assign_prompts(items, "for all", None)
    assert [item.prompt for item in items] == ["for all", "kept"]


def test_prompts_file_errors_and_byte_order_mark(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_prompts_file(str(tmp_path / "missing.txt"))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_prompts_file(str(latin))
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufefffirst\n\nthird\n".encode())
    assert read_prompts_file(str(bom)) == ["first", "", "third"]  # blank lines keep their place


def write_png(path, value: int = 128):
    from PIL import Image

    Image.new("RGB", (4, 4), (value,) * 3).save(path)


def test_csv_manifest_with_byte_order_mark_is_read(tmp_path):
    write_png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes("\ufeffpath,prompt\na.png,a cat\n".encode())
    [item] = expand_inputs([str(tmp_path / "m.csv")]).items
    assert (item.path, item.prompt, item.error) == (str(tmp_path / "a.png"), "a cat", None)


def test_bad_jsonl_lines_fail_alone_in_their_place(tmp_path):
    manifest = tmp_path / "m.jsonl"
    lines = [
        json.dumps({"path": "a.png", "prompt": "first"}),
        "{not json",
        "",
        json.dumps(["a", "list"]),
        json.dumps({"prompt": "no path"}),
        "[" * 100_000,  # nested past the parser's recursion limit
        json.dumps({"path": "b.png", "prompt": "last"}),
    ]
    manifest.write_text("\n".join(lines) + "\n")
    items = expand_inputs([str(manifest)]).items
    assert [(i.path, i.prompt) for i in items] == [
        (str(tmp_path / "a.png"), "first"),
        (f"{manifest}:2", None),
        (f"{manifest}:4", None),
        (f"{manifest}:5", None),
        (f"{manifest}:6", None),
        (str(tmp_path / "b.png"), "last"),
    ]
    assert [i.error for i in items] == [
        None,
        "line 2 is not valid JSON: Expecting property name enclosed in double quotes",
        "line 4 is not a JSON object",
        "line 5 has no path",
        "line 6 is not valid JSON: nested too deeply",
        None,
    ]
    # The manifest has a prompt column: its bad lines take no --prompts line.
    assert not any(i.takes_prompt for i in items[1:5])


def test_bad_line_of_a_manifest_without_prompts_keeps_its_prompts_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.png"}\n{oops\n{"path": "b.png"}\n')
    items = expand_inputs([str(manifest)]).items
    assign_prompts(items, None, ["pa", "pbad", "pb"])
    assert [(i.path.rsplit("/", 1)[1], i.prompt) for i in items] == [
        ("a.png", "pa"),
        ("m.jsonl:2", "pbad"),
        ("b.png", "pb"),
    ]


def test_manifest_errors_stand_for_the_whole_manifest(tmp_path):
    cases = {
        "latin.csv": ("path,prompt\nx.png,caf\xe9\n".encode("latin-1"), "not UTF-8"),
        "cols.csv": (b"file,caption\nx.png,y\n", "manifest has columns ['file', 'caption']; it needs a 'path' column"),
        "empty.csv": (b"path,prompt\n", "manifest has no rows"),
        "empty.jsonl": (b"\n\n", "manifest has no rows"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        [item] = expand_inputs([str(tmp_path / name)]).items
        assert (item.path, item.takes_prompt) == (str(tmp_path / name), False) and reason in item.error, name
        if "no rows" in reason:
            assert item.error == reason


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(5)), st.sampled_from([".csv", ".jsonl"]))
def test_a_manifest_row_and_its_prompt_stay_together(tmp_path_factory, order, suffix):
    root = tmp_path_factory.mktemp("manifest")
    rows = [(f"img{i}.png", f"prompt number {i}") for i in order]
    if suffix == ".csv":
        text = "prompt,path\n" + "".join(f'"{p}",{f}\n' for f, p in rows)  # prompt column first
    else:
        text = "".join(json.dumps({"prompt": p, "path": f}) + "\n" for f, p in rows)
    (root / f"m{suffix}").write_text(text)
    items = expand_inputs([str(root / f"m{suffix}")]).items
    assert [i.path for i in items] == [str(root / f) for f, _ in rows]  # the manifest's order
    for item in items:
        number = item.path.removesuffix(".png").rsplit("img", 1)[1]
        assert item.prompt == f"prompt number {number}"


def test_directory_lists_media_sorted_reports_broken_links_and_counts_the_rest(tmp_path):
    for name in ("b.png", "a.jpg", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("n")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    (tmp_path / "sub").mkdir()
    expansion = expand_inputs([str(tmp_path)])
    assert [(i.path.rsplit("/", 1)[1], i.error) for i in expansion.items] == [
        ("a.jpg", None),
        ("b.png", None),
        ("c.mp4", None),
        ("gone.png", "broken link: its target does not exist"),
    ]
    assert expansion.skipped == [f"{tmp_path}: skipped 2 file(s) that are not images or videos (data.json, notes.txt)"]


def test_inputs_that_stand_for_no_media_fail_and_take_no_prompt(tmp_path):
    (tmp_path / "empty").mkdir()
    items = expand_inputs([str(tmp_path / "empty"), str(tmp_path / "none-*.png"), str(tmp_path / "x.gif")]).items
    assert [(i.path, i.error, i.takes_prompt) for i in items] == [
        (str(tmp_path / "empty"), "directory has no image or video files", False),
        (str(tmp_path / "none-*.png"), "pattern matches no files", False),
        (str(tmp_path / "x.gif"), "file not found", True),
    ]


def test_single_files_globs_and_extensions(tmp_path):
    for name in ("one.PNG", "two.mp4", "sub/three.jpg", "sub/deeper/four.jpg", "notes.md", "data.csv.bak"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    expansion = expand_inputs([str(tmp_path / "one.PNG"), str(tmp_path / "**" / "*.jpg"), str(tmp_path / "notes.md")])
    assert [(i.path, i.prompt, i.error, i.takes_prompt) for i in expansion.items] == [
        (str(tmp_path / "one.PNG"), None, None, True),  # extensions are matched without case
        (str(tmp_path / "sub" / "deeper" / "four.jpg"), None, None, True),  # ** reaches every depth
        (str(tmp_path / "sub" / "three.jpg"), None, None, True),
        (
            str(tmp_path / "notes.md"),
            None,
            "unsupported extension '.md'; images: .bmp .gif .jpeg .jpg .png .tif .tiff .webp; videos: .avi .m4v .mkv "
            ".mov .mp4 .webm",
            True,
        ),
    ]
    assert expansion.skipped == []
    [glob_item] = expand_inputs([str(tmp_path / "*.md")]).items
    assert glob_item.error.startswith("unsupported extension '.md'")
    (tmp_path / "README").write_text("x")
    [bare] = expand_inputs([str(tmp_path / "README")]).items
    assert bare.error.startswith("unsupported extension '(none)'; images: ")


def test_a_long_list_of_skipped_files_is_shortened(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    for name in ("n1.txt", "n2.txt", "n3.txt"):
        (tmp_path / name).write_text("x")
    assert expand_inputs([str(tmp_path)]).skipped == [
        f"{tmp_path}: skipped 3 file(s) that are not images or videos (n1.txt, n2.txt, n3.txt)"
    ]
    (tmp_path / "n4.txt").write_text("x")
    assert expand_inputs([str(tmp_path)]).skipped == [
        f"{tmp_path}: skipped 4 file(s) that are not images or videos (n1.txt, n2.txt, n3.txt, ...)"
    ]


def test_empty_path_in_a_manifest_row_fails_alone(tmp_path):
    (tmp_path / "m.csv").write_text("path,prompt\n,empty\na.png,x\n")
    items = expand_inputs([str(tmp_path / "m.csv")]).items
    assert [(i.path, i.error, i.takes_prompt) for i in items] == [
        (f"{tmp_path / 'm.csv'}:2", "line 2 has no path", False),
        (str(tmp_path / "a.png"), None, True),
    ]


def test_exact_messages_for_prompt_options():
    with pytest.raises(InputError) as both:
        assign_prompts([media_item("a")], "x", ["x"])
    assert str(both.value) == "give --prompt or --prompts, not both"
    with pytest.raises(InputError) as count:
        assign_prompts([media_item("a")], None, [])
    assert str(count.value) == (
        "--prompts has 0 lines for 1 media items; give exactly one prompt per item, in the order the inputs expand "
        "(directories and globs sorted by name)"
    )


def test_manifest_sources_are_relative_to_the_manifest_and_source_fills_the_rest(tmp_path):
    (tmp_path / "edits").mkdir()
    (tmp_path / "edits" / "m.csv").write_text("path,source\na.png,orig/a.png\nb.png,\nc.png,/abs/c.png\n")
    items = expand_inputs([str(tmp_path / "edits" / "m.csv")]).items
    assert [item.source for item in items] == [str(tmp_path / "edits" / "orig" / "a.png"), None, "/abs/c.png"]
    (tmp_path / "one.png").write_bytes(b"x")
    assign_source(items, str(tmp_path / "one.png"))
    # A row's own source wins; only the row without one takes --source.
    assert [item.source for item in items] == [
        str(tmp_path / "edits" / "orig" / "a.png"),
        str(tmp_path / "one.png"),
        "/abs/c.png",
    ]
    with pytest.raises(InputError, match=r"--source '.*missing.png' is not a file; give the image the inputs"):
        assign_source(items, str(tmp_path / "missing.png"))
