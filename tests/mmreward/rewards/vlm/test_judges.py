"""Local generative judges on tiny Qwen-VL backbones: logit read-outs, both-order averaging, generation,
pointwise expected values, chain of thought, and per-item failures on bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.backbone import CPU_ACTIVATION_BYTES, PromptSequence, forward_token_budget
from mmreward.rewards.vlm.local_backend import (
    ScoreBranch,
    ScoreSkeleton,
    VerdictReadout,
    expected_score,
    read_branches,
    run_in_batches,
    score_branches,
)
from mmreward.rewards.vlm.parsing import VerdictPhrases


@pytest.fixture(scope="module")
def judge(tiny_root):
    return testing.tiny_judge("pairwise", root=tiny_root)


def test_readout_probabilities_match_a_hand_computation(judge):
    """P(option) = product of the path conditionals up to the option's distinguishing token, renormalized."""
    phrases = VerdictPhrases("Image 1 is better", "Image 2 is better", "Both images are equally good")
    tokenizer = judge.backend.backbone.tokenizer
    readout = VerdictReadout.build(tokenizer, phrases)
    ids = {o: tokenizer(p, add_special_tokens=False)["input_ids"] for o, p in phrases.items()}
    # "Image" and " " are shared; "1"/"2" tell first and second apart at step 2, "Both" the tie at step 0.
    assert list(readout.path) == ids["first"][:2] == ids["second"][:2]
    assert readout.options == ((2, ids["first"][2]), (2, ids["second"][2]), (0, ids["tie"][0]))
    logits = torch.randn(3, 3, len(tokenizer), generator=torch.Generator().manual_seed(0))
    p = logits.softmax(-1)
    path = readout.path
    first = p[:, 0, path[0]] * p[:, 1, path[1]] * p[:, 2, ids["first"][2]]
    second = p[:, 0, path[0]] * p[:, 1, path[1]] * p[:, 2, ids["second"][2]]
    tie = p[:, 0, ids["tie"][0]]
    expected = torch.stack([first, second, tie], 1)
    torch.testing.assert_close(readout.read(logits), expected / expected.sum(1, keepdim=True))
    with pytest.raises(ConfigError, match="cannot be told apart"):
        VerdictReadout.build(tokenizer, VerdictPhrases("Image 1 is better", "Image 2 is better", "Image 1 is best"))


def _fine_tune(judge, photos, steps: int = 150, lr: float = 3e-3) -> None:
    """Supervised fine-tuning so the tiny judge writes verdict sentences: the brighter image wins, and for two
    identical images it says "Image 1 is better" (a position bias, on purpose)."""
    backend, backbone = judge.backend, judge.backend.backbone
    model = backbone.model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    section = judge.template.section("image")
    end = backbone.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pool = [[backend.prepare((photo * level)[None]) for level in (1.0, 0.35, 0.5, 0.65)] for photo in photos]
    prompt_ids = backend.prompt_ids(judge.ask(section, "a photo", {"media_a": 0, "media_b": 0}), [pool[0][0]])
    answers = {
        o: backbone.tokenizer(p, add_special_tokens=False)["input_ids"] + [end] for o, p in section.verdicts.items()
    }
    # pool[k][0] is photo k, the others darker copies of it
    generator = torch.Generator().manual_seed(0)

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    for _ in range(steps):
        examples = []
        for _ in range(8):
            k = draw(len(photos))
            if float(torch.rand(1, generator=generator)) < 0.4:
                examples.append(((k, 0), (k, 0), "first"))
            elif float(torch.rand(1, generator=generator)) < 0.5:
                examples.append(((k, 0), (k, 1 + draw(3)), "first"))
            else:
                examples.append(((k, 1 + draw(3)), (k, 0), "second"))
        keys = sorted({key for a, b, _ in examples for key in (a, b)})
        encoded = dict(zip(keys, backbone.encode([pool[k][level] for k, level in keys]), strict=True))
        sequences = [
            PromptSequence(ids=prompt_ids + answers[outcome], visuals=[encoded[a], encoded[b]])
            for a, b, outcome in examples
        ]
        lengths = [len(answers[outcome]) for _, _, outcome in examples]
        batch = backbone.assemble(sequences)
        logits = model(**batch.as_kwargs()).logits
        width = logits.shape[1]
        loss = sum(
            F.cross_entropy(logits[r, width - n - 1 : width - 1].float(), batch.input_ids[r, width - n :])
            for r, n in enumerate(lengths)
        ) / len(lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def trained_judge(tmp_path_factory, photos):
    judge = testing.tiny_judge("pairwise", root=tmp_path_factory.mktemp("trained-judge"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread, and more so on a shared machine
    try:
        _fine_tune(judge, photos)
    finally:
        torch.set_num_threads(threads)
    return judge


def test_both_orders_remove_the_position_bias(trained_judge, photos):
    """The judge prefers the first slot for identical images; averaging both orders cancels that exactly."""
    judge = trained_judge
    same_ab = judge.compare(["a photo"] * 4, photos[:4], photos[:4], orders="ab")
    p_second = 1 - same_ab.prob_a - same_ab.tie
    assert bool((same_ab.prob_a - p_second > 0.2).all())  # strongly biased towards whichever is shown first
    same = judge.compare(["a photo"] * 4, photos[:4], photos[:4], orders="both")
    torch.testing.assert_close(same.prob_a, 1 - same.prob_a - same.tie)
    x, y = photos[0], photos[1] * 0.5
    both = judge.compare(["a photo", "a photo"], [x, y], [y, x], orders="both")
    # P(x better than y) equals P(y worse than x) with the sides swapped: antisymmetric up to the tie.
    assert math.isclose(float(both.prob_a[0]), float(1 - both.prob_a[1] - both.tie[1]), abs_tol=1e-6)
    one = judge.compare(["a photo", "a photo"], [x, y], [y, x], orders="ab")
    assert abs(float(one.prob_a[0]) - float(1 - one.prob_a[1] - one.tie[1])) > 0.05
    assert same.consistent.tolist() == [False] * 4  # the two orders disagree for every identical pair
    rates = mmreward.win_rate(judge, "a photo", [x, x, x], details=True)
    torch.testing.assert_close(rates.rates, torch.full((3,), 0.5))  # one order would favour item 0


def test_logit_readout_agrees_with_the_generated_verdict(trained_judge, photos):
    judge = trained_judge
    first = [photos[k] * (0.4 if k % 2 else 1.0) for k in range(8)]
    second = [photos[(k + 3) % 8] * (1.0 if k % 2 else 0.5) for k in range(8)]
    prompts = ["a photo"] * 8
    from_logits = judge.compare(prompts, first, second, orders="ab")
    judge.mode, judge.max_new_tokens = "generate", 8
    try:
        written = judge.compare(prompts, first, second, orders="ab")
    finally:
        judge.mode = "logits"
    assert not bool(written.failed.any()), written.errors
    assert all(text in ("Image 1 is better", "Image 2 is better") for text in written.rationales)
    probs = torch.stack([from_logits.prob_a, 1 - from_logits.prob_a - from_logits.tie, from_logits.tie], 1)
    verdict_written = torch.where(written.prob_a == 1, 0, torch.where(written.tie == 1, 2, 1))
    assert torch.equal(probs.argmax(1), verdict_written)
    assert 0 < int((verdict_written == 0).sum()) < 8  # the verdicts depend on the images


def test_expected_score_by_hand():
    """A judge torn between "2.97" (P=0.6) and "3.01" (P=0.4) expects 0.6 * 2.97 + 0.4 * 3.01 = 2.986.

    After "2." it writes 9 for sure, then 6 or 8 (0.5 each): 0.9 + 0.07; after "3." it writes 0 then 1: 0.01.
    Reading the integer digit's expectation (2.4) and adding the greedy integer's decimals (0.97) would give 3.37,
    above both numbers the judge would write. The top value 5 has no in-range decimals: its row's digits are
    ignored (5.9 would be out of the 1-5 range).
    """
    values = range(1, 6)
    integer = torch.tensor([0.0, 0.6, 0.4, 0.0, 0.0])
    fraction = torch.full((5, 2, 10), 0.1)  # the rows of values 1, 4 and 5 are weighted by 0
    fraction[1] = 0.0
    fraction[1, 0, 9] = 1.0
    fraction[1, 1, 6] = fraction[1, 1, 8] = 0.5
    fraction[2] = 0.0
    fraction[2, 0, 0] = fraction[2, 1, 1] = 1.0
    assert math.isclose(float(expected_score(integer, fraction, values, 2)), 2.986, abs_tol=1e-6)
    top = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5])
    # 0.5 * (4 + 0.45 + 0.045) + 0.5 * 5: the uniform decimals of value 4 expect 4.5 in each place.
    assert math.isclose(float(expected_score(top, torch.full((5, 2, 10), 0.1), values, 2)), 4.7475, abs_tol=1e-6)
    # Without decimals: the plain expected digit.
    assert math.isclose(float(expected_score(integer, torch.zeros(5, 0, 10), values, 0)), 2.4, abs_tol=1e-6)


def test_score_skeleton_branches_on_a_fake_judge():
    """Two lines "d.dd" written by a fake judge whose logits depend on what it wrote, decoded greedily through the
    logits processor as transformers does, one row per (line, integer value).

    Line 1: P(2) = 0.6, P(3) = 0.4; after "2." it writes 9 then 6 or 8 (0.5 each), after "3." 0 then 1:
    0.6 * 2.97 + 0.4 * 3.01 = 2.986. Line 2 follows the greedy "2.9x": it writes 4 for sure, then uniform decimals
    (4.5 expected in each place): 4 + 0.45 + 0.045 = 4.495. A read-out that did not branch (every row greedy)
    would give 0.6 * 2 + 0.4 * 3 + 0.97 = 3.37 for line 1.
    """
    point, newline, word = 10, 11, 12  # token ids: digits 0-9 are themselves
    integer, decimal = ScoreSkeleton.INTEGER, ScoreSkeleton.DECIMAL
    steps = [integer, point, decimal, decimal, newline, word, integer, point, decimal, decimal]
    branches = score_branches(lines=2, count=5, decimals=2)
    assert len(branches) == 10 and branches[6] == ScoreBranch(line=1, value=1)

    def one_hot(*digits):
        logits = torch.full((13,), -1e4)
        logits[list(digits)] = 0.0
        return logits

    def fake_logits(written: list[int]) -> torch.Tensor:
        t = len(written)
        if t == 0:
            logits = torch.full((13,), -1e4)
            logits[2], logits[3] = math.log(0.6), math.log(0.4)
            return logits
        first = written[0]
        if t == 2:
            return one_hot(9) if first == 2 else one_hot(0) if first == 3 else torch.zeros(13)
        if t == 3:
            return one_hot(6, 8) if first == 2 else one_hot(1) if first == 3 else torch.zeros(13)
        if t == 6:
            return one_hot(4) if first == 2 else one_hot(1)
        return torch.zeros(13)  # forced tokens, and uniform decimals on line 2

    prompt = torch.full((len(branches), 3), word)
    forcing = ScoreSkeleton(steps, list(range(1, 6)), list(range(10)), branches, prompt_width=3)
    ids = prompt
    for _ in steps:
        scores = torch.stack([fake_logits(row[3:].tolist()) for row in ids])
        ids = torch.cat([ids, forcing(ids, scores).argmax(-1, keepdim=True)], dim=1)
    # Row (line 0, value 3) wrote "3.01" on line 1; the rows of line 1 all wrote the greedy "2.96" first (a tie
    # between 6 and 8 goes to the first).
    assert ids[2, 3:7].tolist() == [3, point, 0, 1] and ids[7, 3:7].tolist() == [2, point, 9, 6]
    scores = read_branches(forcing.integer, forcing.fraction, range(1, 6), decimals=2)
    assert scores == pytest.approx([2.986, 4.495], abs=1e-6)


def test_pointwise_scores_are_expected_written_numbers(tiny_root, photos):
    """Dimension k's score is the expected number written at its place ("d.dddd", four decimals for UnifiedReward
    2.0): P(d) at the integer digit, and for each d the decimals' expected values after "d." and the most likely
    decimals before them; later lines see the most likely number. Recomputed here by plain forward passes."""
    judge = testing.tiny_judge("pointwise", root=tiny_root)
    assert judge.score_decimals == 4
    out = judge.score(["a photo", "a cat"], photos[:2])
    assert set(out.dims) == {"Alignment", "Coherence", "Style"}
    assert not bool(out.failed.any())
    assert bool(((out.scores >= 1) & (out.scores <= 5)).all())
    torch.testing.assert_close(out.scores, torch.stack(list(out.dims.values())).mean(0))
    backend, backbone, section = judge.backend, judge.backend.backbone, judge.template.section("image")
    candidate = backend.prepare(photos[0][None])
    visuals = backbone.encode([candidate])
    skeleton = section.answer_skeleton()
    question = judge.ask(section, "a photo", {"media": 0})
    question.answer_prefix = skeleton[0]
    ids = backend.prompt_ids(question, [candidate])
    values, digits = backend.score_token_ids(range(1, 6)), backend.score_token_ids(range(10))
    point = backbone.tokenizer(".", add_special_tokens=False)["input_ids"]

    def next_probs(prefix, allowed):
        batch = backbone.assemble([PromptSequence(ids=prefix, visuals=visuals)])
        probs = backbone.model(**batch.as_kwargs(), logits_to_keep=1).logits[0, -1].softmax(-1)[allowed]
        return probs / probs.sum()

    def greedy_decimals(prefix):
        """Four decimals written greedily after ``prefix`` -> (their tokens, sum_k 10^-k E[d_k])."""
        tokens, tail = [], 0.0
        for k in range(1, 5):
            probs = next_probs(prefix + tokens, digits)
            tail += 10.0**-k * float((probs * torch.arange(10.0)).sum())
            tokens.append(digits[int(probs.argmax())])
        return tokens, tail

    expected = []
    with torch.inference_mode():
        for k in range(2):
            p_int = next_probs(ids, values)
            total = 0.0
            for v in range(1, 6):
                tail = 0.0 if v == 5 else greedy_decimals(ids + [values[v - 1]] + point)[1]
                total += float(p_int[v - 1]) * (v + tail)
            expected.append(total)
            best = values[int(p_int.argmax())]
            written, _ = greedy_decimals(ids + [best] + point)
            ids = (
                ids
                + [best]
                + point
                + written
                + backbone.tokenizer(skeleton[k + 1], add_special_tokens=False)["input_ids"]
            )
    assert math.isclose(float(out.dims["Alignment"][0]), expected[0], abs_tol=1e-4)
    assert math.isclose(float(out.dims["Coherence"][0]), expected[1], abs_tol=1e-4)
    with pytest.raises(ConfigError, match="score_decimals must be an integer from 0 to 8, got -1"):
        testing.tiny_judge("pointwise", root=tiny_root, score_decimals=-1)


def test_written_answers_that_do_not_parse_fail_and_keep_their_text(tiny_root, photos):
    pointwise = testing.tiny_judge("pointwise", root=tiny_root, mode="generate", max_new_tokens=6)
    out = pointwise.score(["a photo"], photos[:1])
    assert bool(out.failed[0]) and math.isnan(float(out.scores[0]))
    assert "no score for 'Alignment'" in out.errors[0] and "max_new_tokens=6" in out.errors[0]
    assert out.rationales[0] is not None
    cot = testing.tiny_judge("cot", root=tiny_root)
    pair = cot.compare(["a photo"], photos[:1], photos[1:2])
    assert bool(pair.failed[0]) and math.isnan(float(pair.prob_a[0]))
    assert "<answer>" in pair.errors[0] and pair.rationales[0]


def test_bad_input_fails_per_item_or_up_front(tiny_root, photos, sample_videos):
    judge = testing.tiny_judge("pairwise", root=tiny_root, video_num_frames=4)
    short_video = torch.rand(2, 3, 56, 56)  # 2 frames, 4 asked for
    long_prompt = " ".join(["an extremely detailed caption"] * 1500)
    out = judge.compare(
        ["a photo", "a clip", long_prompt, "mixed"],
        [photos[0], short_video, photos[2], photos[3]],
        [photos[1], torch.rand(6, 3, 56, 56), photos[3], torch.rand(4, 3, 56, 56)],
    )
    assert out.failed.tolist() == [False, True, True, True]
    assert "fewer than video_num_frames=4" in out.errors[1]
    assert "more than the model's context" in out.errors[2]
    assert "cannot compare an image with a video" in out.errors[3]
    videos = judge.compare(["bunny"], [sample_videos["bigbuckbunny"]], [sample_videos["bikes"]])
    assert not bool(videos.failed[0]) and 0 <= float(videos.prob_a[0]) <= 1
    with pytest.raises(ConfigError, match="max_images=16"):
        testing.tiny_judge("pairwise", root=tiny_root, video_num_frames=9, max_images=16)


def test_pairwise_score_needs_a_reference_or_groups(judge, photos):
    with pytest.raises(TypeError, match="win_rate"):
        judge.score(["a photo"], photos[:1])
    prompts = ["a photo", "a photo", "a cat", "a cat", "a cat"]
    grouped = judge.score(prompts, photos[:5], groups="prompt")
    torch.testing.assert_close(grouped.scores[:2], mmreward.win_rate(judge, "a photo", photos[:2]))
    torch.testing.assert_close(grouped.scores[2:], mmreward.win_rate(judge, "a cat", photos[2:5]))
    against = judge.score(["a photo"] * 2, photos[:2], reference=photos[5])
    pair = judge.compare(["a photo"] * 2, photos[:2], [photos[5]] * 2)
    torch.testing.assert_close(against.scores, pair.prob_a + 0.5 * pair.tie)
    lonely = judge.score(["a", "b", "b"], photos[:3], groups="prompt")
    assert lonely.failed.tolist() == [True, False, False] and "group of one" in lonely.errors[0]


def test_run_in_batches_keeps_chunks_within_batch_size_and_token_budget():
    chunks = []
    lengths = [10, 10, 20, 30, 30, 100]
    run_in_batches(list(range(6)), 4, chunks.append, lengths=lengths, max_tokens=60)
    # [0, 1, 2]: 3 x 20 = 60; adding 3 would give 4 x 30; [3, 4]: 2 x 30; [5] alone is over budget but runs.
    assert chunks == [[0, 1, 2], [3, 4], [5]]
    chunks.clear()
    run_in_batches(list(range(6)), 4, chunks.append)
    assert chunks == [[0, 1, 2, 3], [4, 5]]


def test_cpu_forward_budget_keeps_the_widest_activation_within_its_bytes(judge):
    model = judge.backend.backbone.model
    intermediate = model.config.get_text_config().intermediate_size
    assert (
        judge.backend.backbone.max_batch_tokens
        == forward_token_budget(model)
        == CPU_ACTIVATION_BYTES // (intermediate * 4)
    )


def test_a_large_batch_runs_in_forwards_within_the_token_budget(judge, photos):
    """The cliff of bench_pairwise.py: one forward over all 56 prompts of a group (both orders) page-faulted its
    activations afresh on the CPU and was slower per judgment than batches of 8-16. A batch larger than the
    token budget is split; the verdicts do not change."""
    model, backbone = judge.backend.backbone.model, judge.backend.backbone
    shapes = []
    forward = model.forward

    def counting(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    budget, batch_size = backbone.max_batch_tokens, judge.batch_size
    model.forward = counting
    try:
        judge.batch_size = 1
        one_by_one = mmreward.win_rate(judge, "a photo", photos, details=True)
        assert len(shapes) == 56
        width = shapes[0][1]
        shapes.clear()
        judge.batch_size, backbone.max_batch_tokens = 56, 10 * width
        batched = mmreward.win_rate(judge, "a photo", photos, details=True)
    finally:
        model.forward = forward
        judge.batch_size, backbone.max_batch_tokens = batch_size, budget
    assert shapes == [(10, width)] * 5 + [(6, width)]
    torch.testing.assert_close(batched.rates, one_by_one.rates)


def test_reference_parsing_counts_no_verdict_as_a_tie():
    """parsing='reference-pref-grpo': Pref-GRPO's reading (first <answer>, case-sensitive), and an answer without a
    verdict is half a win each instead of a failure; the robust default reads the last answer and fails instead."""
    from mmreward.rewards.vlm.chat_backend import ChatBackend
    from mmreward.rewards.vlm.pairwise import ChainOfThoughtJudge, PairwiseJudge

    reference = ChainOfThoughtJudge(
        ChatBackend(model="m"), template="unifiedreward-think", parsing="reference-pref-grpo"
    )
    robust = ChainOfThoughtJudge(ChatBackend(model="m"), template="unifiedreward-think")
    section = reference.template.section("image")
    two_answers = (
        "<think>1. Aesthetics: Image 1 (9/10) - a; Image 2 (7/10) - b</think><answer>Image 2 is better</answer>"
    )
    two_answers += "<answer>Image 1 is better</answer>"
    assert reference.judgment_from_text(section, two_answers, False).probs == (0.0, 1.0, 0.0)
    assert reference.judgment_from_text(section, two_answers, False).dims == {"Aesthetics": (9.0, 7.0)}
    assert robust.judgment_from_text(section, two_answers, False).probs == (1.0, 0.0, 0.0)
    for text in ("<answer>image 1 is better</answer>", "<think>cut short", ""):
        judged = reference.judgment_from_text(section, text, False)
        assert judged.probs == (0.5, 0.5, 0.0) and judged.error is None
    assert robust.judgment_from_text(section, "<think>cut short", False).failed
    plain = PairwiseJudge(ChatBackend(model="m"), template="unifiedreward-pairwise", parsing="reference-pref-grpo")
    pair_section = plain.template.section("image")
    assert plain.judgment_from_text(pair_section, "Both images are equally good.", False).probs == (0.0, 0.0, 1.0)
    assert plain.judgment_from_text(pair_section, "IMAGE 1 IS BETTER", False).probs == (0.5, 0.5, 0.0)
    with pytest.raises(ConfigError, match=r"parsing must be one of \['robust', 'reference-pref-grpo'\], got 'strict'"):
        PairwiseJudge(ChatBackend(model="m"), template="unifiedreward-pairwise", parsing="strict")
    with pytest.raises(ConfigError, match="mode='logits' reads verdicts from the logits"):
        mmreward.load_reward("unifiedreward-pairwise", weights="/nonexistent", parsing="reference-pref-grpo")
