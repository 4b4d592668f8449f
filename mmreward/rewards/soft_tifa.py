"""GenEval 2's Soft-TIFA scorer (Kamath et al. 2025, "GenEval 2: Addressing Benchmark Drift in Text-to-Image
Evaluation", arXiv 2512.16853; facebookresearch/GenEval2, ``evaluation.py``), as a reward and a benchmark scorer.

Every GenEval 2 prompt comes with its *atoms* as VQA pairs (``vqa_list``: ``["How many cows are in the image?",
"three"]``, ``["Are the cows plastic?", "Yes"]``). A VLM (Qwen3-VL-8B-Instruct in the paper) sees the image and
``"<question> Answer in one word."``; its next-token distribution ``p`` over the whole vocabulary gives the atom's
soft score

    s = sum over the answer words w of p(first token of w)

with the words ``Yes``, ``yes``, `` yes``, `` Yes`` for yes/no questions and, for questions starting with "How
many", the answer, its capitalized form, both with a leading space, its digit and the digit with a leading space
(``"other"`` where the number is not one..ten), each counted once per occurrence in that list. A prompt's scores
are combined by the arithmetic mean (Soft-TIFA AM, the atom-level estimate) or the geometric mean (Soft-TIFA GM,
the prompt-level estimate; a zero atom makes it 0); the benchmark number is 100 x the mean over prompts
(:func:`benchmark_score`).

The questions are looked up by prompt in GenEval 2's ``geneval2_data.jsonl`` (CC BY-NC 4.0, not shipped: fetched
at a pinned commit, verified by sha256 and cached on first use, or read from a local copy); prompts outside it fail
with the reason. The reference asks one question at a time with ``generate``; here all questions of a batch run
in one left-padded forward and the answer is read from the last position's logits (the same distribution).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.hub import resolve_dir
from mmreward.media import to_uint8_array
from mmreward.rewards.base import RewardModel, RewardOutput
from mmreward.rewards.framewise import aggregate_frames

Aggregate = Literal["gm", "am"]
QUESTION_SUFFIX = " Answer in one word."
YES_WORDS = ("Yes", "yes", " yes", " Yes")
_DIGITS = {w: str(i) for i, w in enumerate(("one", "two", "three", "four", "five", "six", "seven", "eight"), 1)}
_DIGITS.update(nine="9", ten="10")
GENEVAL2_DATA = (
    "github:facebookresearch/GenEval2@a6e82d2289e8d418f27f0adee77908b07060eea3/geneval2_data.jsonl"
    "#sha256=09233adbc9f877fba205f1a20efa4a8640e7e62a91dfd55893562bed8a928e43"
)


def answer_words(question: str, answer: str) -> list[str]:
    """The words whose first-token probabilities make an atom's soft score (see the module docstring)."""
    if question.startswith("How many"):
        digit = _DIGITS.get(answer, "other")
        return [answer, answer.capitalize(), " " + answer, " " + answer.capitalize(), digit, " " + digit]
    return list(YES_WORDS)


def answer_token_ids(tokenizer, question: str, answer: str) -> list[int]:
    """The first token of each answer word, ``tokenizer.encode(word)[0]`` as the reference takes it."""
    return [tokenizer.encode(word)[0] for word in answer_words(question, answer)]


def soft_score(probs: torch.Tensor, token_ids: Sequence[int]) -> float:
    """An atom's soft score: the next-token probabilities ``(V,)`` of the answer words' first tokens, summed in
    the listed order (a token listed twice counts twice), in Python floats as the reference accumulates them."""
    total = 0.0
    for token in token_ids:
        total += probs[token].item()
    return total


def combine(scores: Sequence[float], aggregate: Aggregate) -> float:
    """A prompt's Soft-TIFA from its atoms' soft scores: arithmetic (``am``) or geometric (``gm``) mean."""
    if not scores:
        raise ValueError("a prompt needs at least one atom to be scored")
    if aggregate == "am":
        return sum(scores) / len(scores)
    if aggregate == "gm":
        # scipy.stats.gmean: exp(mean(log s)), 0 as soon as one atom is 0.
        return 0.0 if min(scores) <= 0.0 else math.exp(sum(math.log(s) for s in scores) / len(scores))
    raise ValueError(f"aggregate must be 'gm' or 'am', got {aggregate!r}")


def benchmark_score(per_prompt: Sequence[Sequence[float]], aggregate: Aggregate) -> float:
    """GenEval 2's headline number: 100 x the mean over prompts of each prompt's combined atom scores."""
    if not per_prompt:
        raise ValueError("no prompts to average")
    return 100 * sum(combine(s, aggregate) for s in per_prompt) / len(per_prompt)


def read_geneval2(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """``{prompt: [(question, answer), ...]}`` from a file in ``geneval2_data.jsonl``'s layout (a local path or a
    ``github:...#sha256=...`` pin)."""
    from mmreward.data.prompts import resolve_prompt_file

    file = resolve_prompt_file(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read GenEval 2 questions from {str(file)!r}: {err}") from err
    table: dict[str, list[tuple[str, str]]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            table[record["prompt"]] = [(str(q), str(a)) for q, a in record["vqa_list"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"line {number} of GenEval 2 question file {str(file)!r} is not a record of its layout ({err!r}): "
                'each line must be a JSON object with "prompt" and "vqa_list" ([[question, answer], ...])'
            ) from err
    if not table:
        raise ConfigError(f"GenEval 2 question file {str(file)!r} holds no prompts")
    return table


class SoftTifaReward(RewardModel):
    """Soft-TIFA of each image for its GenEval 2 prompt (``dims``: both ``am`` and ``gm``; the score is
    ``aggregate``'s). A video is ``video_num_frames`` frames (or frames at ``video_fps``), each scored as an
    image; an item's scores are the means over its frames.

    Args:
        weights: hub id or local directory of the VQA model (``Qwen/Qwen3-VL-8B-Instruct``, the paper's).
        data: GenEval 2's question file: a ``github:...#sha256=...`` pin (default: the published file) or a path.
        aggregate: ``gm`` (prompt-level, the default) or ``am`` (atom-level).
        question_batch_size: (image, question) rows per forward.
    """

    raw_range = (0.0, 1.0)
    dims = ("am", "gm")

    def __init__(
        self,
        weights: str = "Qwen/Qwen3-VL-8B-Instruct",
        data: str = GENEVAL2_DATA,
        aggregate: Aggregate = "gm",
        question_batch_size: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if aggregate not in ("gm", "am"):
            raise ConfigError(f"aggregate must be 'gm' (prompt level) or 'am' (atom level), got {aggregate!r}")
        if question_batch_size < 1:
            raise ConfigError(f"question_batch_size must be >= 1, got {question_batch_size}")
        self.aggregate = aggregate
        self.question_batch_size = question_batch_size
        self.questions = read_geneval2(data)
        hint = "load_reward('geneval2', weights='/path/to/Qwen3-VL-8B-Instruct', data='/path/to/geneval2_data.jsonl')"
        directory = resolve_dir(weights, what="Soft-TIFA VQA model", hint=hint)
        self.processor = AutoProcessor.from_pretrained(directory)
        self.processor.tokenizer.padding_side = "left"  # the answer is read at every row's last position
        self.model = AutoModelForImageTextToText.from_pretrained(directory, dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        self.weights_id = weights

    def prepare(self, media: torch.Tensor) -> torch.Tensor:
        if media.ndim == 4 and self.video_num_frames is not None:  # video (T, 3, H, W): the sampled frames
            media = media_io.select_frames(media, self.video_num_frames)
        frames = media if media.ndim == 4 else media.unsqueeze(0)
        return torch.from_numpy(to_uint8_array(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8, as decoded

    def atom_scores(self, images: list[torch.Tensor], vqa: list[list[tuple[str, str]]]) -> list[list[float]]:
        """Each image's soft score for each of its (question, answer) atoms."""
        from PIL import Image

        rows = [(n, q, a) for n, atoms in enumerate(vqa) for q, a in atoms]
        pictures = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        tokenizer = self.processor.tokenizer
        probabilities: list[float] = []
        for start in range(0, len(rows), self.question_batch_size):
            chunk = rows[start : start + self.question_batch_size]
            conversations = [
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": pictures[n]},
                            {"type": "text", "text": question + QUESTION_SUFFIX},
                        ],
                    }
                ]
                for n, question, _ in chunk
            ]
            inputs = self.processor.apply_chat_template(
                conversations,
                tokenize=True,
                add_generation_prompt=True,
                return_dict=True,
                return_tensors="pt",
                padding=True,
            ).to(self.device)
            logits = self.model(**inputs).logits[:, -1]  # (R, V): the first answer token, left padding
            probs = torch.softmax(logits.float(), dim=-1)
            for row, (_, question, answer) in enumerate(chunk):
                probabilities.append(soft_score(probs[row], answer_token_ids(tokenizer, question, answer)))
        out: list[list[float]] = [[] for _ in images]
        for (n, _, _), p in zip(rows, probabilities, strict=True):
            out[n].append(p)
        return out

    def score_prepared(self, prompts: list[str], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        # Every frame of every item in one pass of atom scores; each aggregate is then combined per frame and
        # averaged over an item's frames.
        frames = [frame for item in inputs for frame in item.unbind(0)]
        owners = torch.tensor([i for i, item in enumerate(inputs) for _ in range(item.shape[0])])
        atoms = self.atom_scores(frames, [self.questions[prompts[i]] for i in owners.tolist()])
        dims = {
            name: aggregate_frames(torch.tensor([combine(s, name) for s in atoms]), owners, len(inputs), "mean")
            for name in self.dims
        }
        return dims[self.aggregate].clone(), dims

    def score_prepared_batch(self, prompts: list[str], prepared: list, errors: list[str | None]) -> RewardOutput:
        errors = list(errors)
        for i, prompt in enumerate(prompts):
            if errors[i] is None and prompt not in self.questions:
                errors[i] = (
                    f"prompt {prompt[:80]!r} is not a GenEval 2 prompt: Soft-TIFA asks the questions listed for it "
                    "in the GenEval 2 data (pass data= a file in its layout to score other prompts)"
                )
        return super().score_prepared_batch(prompts, prepared, errors)
