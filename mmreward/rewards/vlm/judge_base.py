"""What every generative judge is made of: a *task* (pairwise, pointwise, chain of thought, checklist) that holds a
*backend* (the model that answers).

- The task owns what is asked and how the answer becomes a reward: the template, the presentation orders, the
  verdict or score read from a written answer, the aggregation into the reward contract. Tasks are
  :class:`~mmreward.rewards.vlm.pairwise.PairwiseJudge`, :class:`~mmreward.rewards.vlm.pairwise.ChainOfThoughtJudge`,
  :class:`~mmreward.rewards.vlm.pointwise.PointwiseJudge` and :class:`~mmreward.rewards.vlm.checklist.ChecklistJudge`.
- The backend owns how a question reaches a model: :class:`~mmreward.rewards.vlm.local_backend.LocalVLMBackend`
  (transformers, on this machine; it also reads verdicts from logits in one forward pass) and
  :class:`~mmreward.rewards.vlm.chat_backend.ChatBackend` (an OpenAI-compatible server such as vLLM or SGLang).

A task asks its backend with :class:`JudgePrompt` s: the template's rendered parts, and which prepared candidate
fills each media slot. Presets name the backend (``backend: local`` or ``backend: chat``) next to the task's
``type``; the backend's own options (weights, endpoint, pixel bounds, ...) sit in the same flat preset.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError, MediaError
from mmreward.rewards.base import RewardModel
from mmreward.rewards.vlm.templates import (
    MediaKind,
    MediaPart,
    Part,
    Template,
    TemplateKind,
    TemplateSection,
    load_template,
)

Mode = Literal["logits", "generate"]
IfShort = Literal["error", "repeat"]

# Backend names in presets -> "module:Class" (imported on use, so a chat judge never imports transformers).
BACKENDS: dict[str, str] = {
    "local": "mmreward.rewards.vlm.local_backend:LocalVLMBackend",
    "chat": "mmreward.rewards.vlm.chat_backend:ChatBackend",
}
_REWARD_OPTIONS = frozenset(inspect.signature(RewardModel.__init__).parameters) - {"self"}


@dataclass
class Candidate:
    """A prepared candidate: its media kind and the backend's input (or the error that stopped it)."""

    kind: MediaKind | None
    data: Any = None
    error: str | None = None


@dataclass
class JudgePrompt:
    """One question for a backend.

    Attributes:
        parts: the rendered template (text and media slots), in order.
        system: the template's system message, if any.
        media: which candidate (an index into the candidates passed with the prompts) fills each media slot.
        answer_prefix: text the answer is forced to start with (the pointwise score skeleton's first line).
    """

    parts: list[Part]
    system: str | None
    media: dict[str, int]
    answer_prefix: str = ""

    def candidates(self) -> list[int]:
        """The candidates in the order their slots appear in the prompt."""
        return [self.media[part.slot] for part in self.parts if isinstance(part, MediaPart)]


@dataclass
class Completion:
    """A backend's written answer: the text and whether it was cut by the token budget, or why it failed."""

    text: str | None
    truncated: bool = False
    error: str | None = None


class JudgeBackend(ABC):
    """The model behind a judge: prepares candidates and writes answers.

    Backends that set ``reads_logits`` also implement the read-outs of the tasks they serve in ``mode="logits"``
    (see :class:`~mmreward.rewards.vlm.local_backend.LocalVLMBackend`): ``check_verdicts`` and ``read_verdicts``
    (pairwise), ``score_token_ids`` and ``read_scores`` (pointwise), ``answer_token_ids`` and ``read_yes_no``
    (checklist); each ``check`` raises a ConfigError at construction when the template cannot be read.
    """

    reads_logits: ClassVar[bool] = False
    weights_id: str

    @abstractmethod
    def prepare(self, frames: torch.Tensor) -> Any:
        """Frames ``(n, 3, H, W)`` float in [0, 1] of one candidate -> this backend's input (CPU, no model)."""

    @abstractmethod
    def generate(
        self,
        candidates: list[Any],
        prompts: list[JudgePrompt],
        *,
        max_new_tokens: int,
        temperature: float,
        batch_size: int,
    ) -> list[Completion]:
        """Write an answer to each prompt (``candidates`` are prepared inputs, indexed by the prompts' slots)."""


def build_backend(name: str, options: dict[str, Any], *, device: torch.device, dtype: torch.dtype) -> JudgeBackend:
    """The backend a preset names, built from the preset's backend options."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown judge backend {name!r}; use one of {sorted(BACKENDS)}")
    cls = backend_class(name)
    valid = backend_option_names(name)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for the {name!r} judge backend; valid: {sorted(valid)}")
    if "device" in inspect.signature(cls.__init__).parameters:
        options = {**options, "device": device, "dtype": dtype}
    return cls(**options)


def backend_class(name: str) -> type[JudgeBackend]:
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_option_names(name: str) -> set[str]:
    """The preset keys a backend takes (its constructor's keyword arguments, less what the judge passes)."""
    parameters = inspect.signature(backend_class(name).__init__).parameters
    return set(parameters) - {"self", "device", "dtype"}


class Judge(RewardModel):
    """Base of the judge tasks: template, frame selection and the backend the task asks.

    Args:
        backend: ``"local"`` / ``"chat"`` (built from ``options``, as presets do) or a :class:`JudgeBackend`.
        template: ``"reference"`` (the checkpoint's published training prompt, fetched once and cached), ``"ours"``
            (our wording) or a shipped template name (our wording); ``template_name``: the shipped template that
            ``reference`` / ``ours`` apply to; ``template_file``: your own template YAML (overrides the shipped one);
            ``template_source_dir``: a local clone of the reference's repository, read instead of downloading;
            ``reference_prompt``: where the training prompt is published, per section (presets give it; see
            ``templates``).
        mode: ``"logits"`` (read the answer from the next-token distribution; local backends) or ``"generate"``
            (write, then parse).
        max_new_tokens, temperature: generation budget and decoding (0: greedy) in ``"generate"`` mode.
        max_images: the most images the checkpoint takes in one prompt; too many video frames is an error here.
        if_short: a video with fewer frames than ``video_num_frames`` fails (``"error"``) or repeats frames.
        frame_rule: which ``video_num_frames`` frames of a video are shown (:func:`mmreward.media.uniform_indices`):
            ``"round"`` (the library's default), ``"floor"`` (``np.linspace(0, n - 1, k).astype(int)``, as
            UnifiedReward-Think's and Pref-GRPO's scripts) or ``"segment"`` (``int(i * n / k)``, as UnifiedReward
            2.0's point- and pair-score scripts). Presets name their checkpoint's rule.
        options: :class:`~mmreward.rewards.base.RewardModel` options (device, dtype, batch_size,
            video_num_frames, ...) and, for a named backend, its options (weights, endpoint, ...).
    """

    template_kind: ClassVar[TemplateKind]
    images_per_prompt: ClassVar[int] = 1

    def __init__(
        self,
        backend: str | JudgeBackend,
        *,
        template: str | None = None,
        template_name: str | None = None,
        template_file: str | None = None,
        reference_prompt: dict[str, Any] | None = None,
        template_source_dir: str | None = None,
        mode: Mode = "generate",
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        max_images: int | None = None,
        if_short: IfShort = "error",
        frame_rule: media_io.FrameRule = "round",
        **options: Any,
    ) -> None:
        super().__init__(**{k: options.pop(k) for k in list(options) if k in _REWARD_OPTIONS})
        if mode not in ("logits", "generate"):
            raise ConfigError(f"mode must be 'logits' or 'generate', got {mode!r}")
        if if_short not in ("error", "repeat"):
            raise ConfigError(f"if_short must be 'error' or 'repeat', got {if_short!r}")
        if frame_rule not in media_io.FRAME_RULES:
            raise ConfigError(f"frame_rule must be one of {list(media_io.FRAME_RULES)}, got {frame_rule!r}")
        if self.video_num_frames is None:
            raise ConfigError("judges show videos as video_num_frames frames; set video_num_frames (e.g. 8)")
        self.template: Template = load_template(
            template,
            template_file=template_file,
            kind=self.template_kind,
            template_name=template_name,
            reference_prompt=reference_prompt,
            source_dir=template_source_dir,
        )
        if max_images is not None and "video" in self.template.sections:
            needed = self.images_per_prompt * self.video_num_frames
            if needed > max_images:
                raise ConfigError(
                    f"video_num_frames={self.video_num_frames} puts {needed} images in one prompt, more than this "
                    f"checkpoint accepts (max_images={max_images}); lower video_num_frames to "
                    f"{max_images // self.images_per_prompt} or less"
                )
        if isinstance(backend, str):
            backend = build_backend(backend, options, device=self.device, dtype=self.dtype)
        elif options:
            raise ConfigError(f"unknown option(s) {sorted(options)}; a backend object takes its options itself")
        if mode == "logits" and not backend.reads_logits:
            raise ConfigError(f"a {type(backend).__name__} cannot read answers from logits; use mode='generate'")
        self.backend = backend
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_images = max_images
        self.if_short = if_short
        self.frame_rule = frame_rule
        self.weights_id = backend.weights_id

    @classmethod
    def backend_options(cls, backend: Any) -> set[str]:
        """Preset keys the named backend adds to this task's own (for ``load_reward``'s check of unknown keys)."""
        return backend_option_names(backend) if isinstance(backend, str) and backend in BACKENDS else set()

    def load_media(self, item: Any) -> torch.Tensor:
        # Judges see a video as video_num_frames frames, chosen by frame_rule; a shorter video is refused (or
        # repeats frames).
        return media_io.to_tensor(
            item,
            num_frames=self.video_num_frames,
            if_short=self.if_short,
            max_pixels=self.max_pixels,
            frame_rule=self.frame_rule,
        )

    def frames_of(self, media: torch.Tensor) -> tuple[MediaKind, torch.Tensor]:
        """``("image", (1, 3, H, W))`` or ``("video", (N, 3, H, W))`` with exactly ``video_num_frames`` frames."""
        if media.ndim == 3:
            return "image", media.unsqueeze(0)
        count = self.video_num_frames
        total = media.shape[0]
        if total < count and self.if_short == "error":
            raise MediaError(
                f"video has {total} frames, fewer than video_num_frames={count}; lower video_num_frames or pass "
                "if_short='repeat'"
            )
        index = media_io.sample_frame_indices(
            total, 1.0, num_frames=count, if_short="repeat", frame_rule=self.frame_rule
        )
        index = torch.tensor(index)
        return "video", media.index_select(0, index.to(media.device))

    def prepare(self, media: torch.Tensor) -> Candidate:
        kind, frames = self.frames_of(media)
        return Candidate(kind=kind, data=self.backend.prepare(frames))

    def ask(self, section: TemplateSection, prompt: str, media: dict[str, int], **fields: Any) -> JudgePrompt:
        """The question of ``section`` about ``prompt``, with candidate ``media[slot]`` in each media slot."""
        parts = section.render(prompt, num_frames=self.video_num_frames, **fields)
        return JudgePrompt(parts=parts, system=section.system, media=media)

    def generate(self, candidates: list[Candidate], prompts: list[JudgePrompt]) -> list[Completion]:
        """The backend's written answers, with this judge's decoding settings."""
        return self.backend.generate(
            [c.data for c in candidates],
            prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            batch_size=self.batch_size,
        )

    def truncation_note(self, truncated: bool) -> str:
        return f" (the answer was cut at max_new_tokens={self.max_new_tokens}; raise it)" if truncated else ""
