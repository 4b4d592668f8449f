"""GenEval as a training reward: objects, counts, colours and positions read by an open-vocabulary detector.

GenEval (Ghosh et al. 2023, "GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment", arXiv
2310.11513; djghosh13/geneval, ``evaluation/evaluate_images.py``) checks each image against its prompt's metadata:
``tag`` (single_object, two_object, counting, colors, position, color_attr) and ``include`` clauses (``class``,
``count``, optionally ``color`` or ``position: [relation, index of the target clause]``), plus ``exclude`` clauses
(``class``, ``count``: fewer than ``count`` must be found). Flow-GRPO (Liu et al. 2025, arXiv 2505.05470) trains on a
partial-credit version of the same rules (yifan123/reward-server, ``reward_server/gen_eval.py``). Everything after
the detector follows those two files:

Detections. Per class, boxes with confidence above ``threshold`` (``counting_threshold`` for the counting tag),
most confident first, at most ``max_objects``, then greedy suppression of boxes whose IoU with a kept one is at
least ``max_overlap`` (1.0: none). IoU counts pixels inclusively (``x2 - x1 + 1``).

Colour. A detected box's crop is classified by CLIP zero-shot over :data:`COLORS`: each colour's text embedding is
the renormalized mean of the normalized embeddings of :data:`COLOR_TEMPLATES` for the object's class, and the
colour is the argmax of the cosine similarity with the crop's embedding.

Position of box A relative to box B. With centres ``c`` and sizes ``d = (w, h)``, the offset ``o = c_A - c_B`` is
shrunk per axis by ``position_threshold * (d_A + d_B)`` towards 0 (``o' = sign(o) max(|o| - t (d_A + d_B), 0)``);
if both components of ``o'`` are below 1e-3 in magnitude there is no relation, else with ``(dx, dy) = o' / |o|``:
"left of" if dx < -0.5, "right of" if dx > 0.5, "above" if dy < -0.5, "below" if dy > 0.5 (image y grows down).

``accuracy`` (GenEval's ``correct``): every include clause finds at least ``count`` objects; colour and position
are checked on the ``count`` most confident ones (all must have the colour; every one must stand in the relation to
every object of the target clause, whose own checks must have passed); every exclude clause finds fewer than its
count.

``strict_accuracy`` and ``score`` (Flow-GRPO's ``strict_correct`` and ``score``): an include clause needs exactly
``count`` objects. Each clause adds ``1 - |count - found| / count`` (negative when more than twice the count is
found); a clause with a colour or position whose count is wrong adds 0 for it; a colour adds ``1 - |count -
matching| / count``; a position adds 0 when its target clause failed, else, as the reference's loop does, 0 and 1
when some pair is not in the relation and 1 when all are. ``score`` is the mean of these terms; exclude clauses do
not count here. Flow-GRPO trains on ``score``.

Differences from the official evaluator (README, "GenEval as a reward"): GenEval detects with Mask2Former (Swin-S,
COCO instance segmentation, mmdetection) and colours the object's *mask* on a grey background before cropping; this
reward detects with OWLv2 (Minderer et al. 2023, arXiv 2306.09683) queried with every class name of the metadata,
each box taking its best class (as Mask2Former's closed-set labels compete), and crops the box (no masks).
OWLv2's confidences are not Mask2Former's, so the thresholds are GenEval's numbers but not its operating point;
report GenEval numbers with the official evaluator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmreward.errors import ConfigError, MediaError
from mmreward.hub import resolve_dir
from mmreward.media import to_uint8_array
from mmreward.rewards.base import RewardModel, RewardOutput

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
# The zero-shot colour classifier's templates, as GenEval words them ({c}: colour, {o}: object class).
COLOR_TEMPLATES = ("a photo of a {c} {o}", "a photo of a {c}-colored {o}", "a photo of a {c} object")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")
GENEVAL_METADATA = Path(__file__).resolve().parents[1] / "evaluation" / "prompts" / "geneval_metadata.jsonl"

Box = tuple[float, float, float, float, float]  # x1, y1, x2, y2 (pixels), confidence
Colours = Callable[[str, int], list[str]]  # (class, n) -> colours of its n most confident kept boxes


@dataclass(frozen=True)
class Thresholds:
    """GenEval's detection settings (its defaults; ``evaluate_images.py --options``)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1

    def __post_init__(self) -> None:
        for name in ("threshold", "counting_threshold", "max_overlap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.max_objects < 1:
            raise ConfigError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.position_threshold < 0:
            raise ConfigError(f"position_threshold must be >= 0, got {self.position_threshold}")


@dataclass(frozen=True)
class Verdict:
    """One image's GenEval outcome (see the module docstring)."""

    correct: bool
    strict_correct: bool
    score: float
    reasons: tuple[str, ...]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2, ...)`` boxes with inclusive pixel counts (``x2 - x1 + 1``), 0 for no union."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union else 0


def relative_position(a: Sequence[float], b: Sequence[float], position_threshold: float) -> set[str]:
    """The relations of box ``a`` to box ``b`` (subset of :data:`RELATIONS`; see the module docstring)."""
    offset, revised = [], []
    for axis in (0, 1):
        centre_a, centre_b = (a[axis] + a[axis + 2]) / 2, (b[axis] + b[axis + 2]) / 2
        size = abs(a[axis + 2] - a[axis]) + abs(b[axis + 2] - b[axis])
        o = centre_a - centre_b
        offset.append(o)
        revised.append(max(abs(o) - position_threshold * size, 0) * math.copysign(1.0, o) if o else 0.0)
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def select_objects(candidates: Mapping[str, Sequence[Box]], threshold: float, settings: Thresholds) -> dict[str, list]:
    """Per class, the boxes GenEval keeps: above ``threshold``, most confident first (ties keep their order),
    at most ``max_objects``, then greedy suppression at IoU >= ``max_overlap``. Classes with none are left out."""
    kept: dict[str, list[Box]] = {}
    for name, boxes in candidates.items():
        order = sorted((box for box in boxes if box[4] > threshold), key=lambda box: -box[4])[: settings.max_objects]
        chosen: list[Box] = []
        while order:
            best = order.pop(0)
            chosen.append(best)
            if settings.max_overlap != 1:
                order = [box for box in order if box_iou(best, box) < settings.max_overlap]
        if chosen:
            kept[name] = chosen
    return kept


def in_relation(found: Sequence[Box], targets: Sequence[Box], relation: str, threshold: float) -> bool:
    """Every found box stands in ``relation`` (``left of``, ``above``, ...) to every target box: the position check
    both GenEval and Flow-GRPO apply to a clause whose count and colour matched."""
    return all(relation in relative_position(obj, other, threshold) for obj in found for other in targets)


def geneval_correct(
    detected: Mapping[str, Sequence[Box]], metadata: Mapping[str, Any], colours: Colours, position_threshold: float
) -> tuple[bool, list[str]]:
    """GenEval's ``correct`` and its reasons (``evaluate`` of ``evaluate_images.py``)."""
    correct, reasons, groups = True, [], []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        found = list(detected.get(name, []))[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in req:
                hits = colours(name, count).count(req["color"])
                if hits < count:
                    matched = False
                    reasons.append(f"expected {req['color']} {name}>={count}, found {hits} {req['color']}")
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    matched = in_relation(found, groups[target], relation, position_threshold)
                    if not matched:
                        reasons.append(f"expected {name} {relation} target")
        correct = correct and matched
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        found = len(detected.get(req["class"], []))
        if found >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {found}")
    return correct, reasons


def flow_grpo_score(
    detected: Mapping[str, Sequence[Box]], metadata: Mapping[str, Any], colours: Colours, position_threshold: float
) -> tuple[bool, float, list[str]]:
    """Flow-GRPO's ``(strict_correct, score, reasons)`` (``evaluate_reward`` of reward-server's ``gen_eval.py``)."""
    correct, reasons, groups, terms = True, [], [], []
    for req in metadata.get("include", []):
        name, count = req["class"], req["count"]
        found = list(detected.get(name, []))
        terms.append(1 - abs(count - len(found)) / count)
        matched = len(found) == count
        if not matched:
            reasons.append(f"expected {name}=={count}, found {len(found)}")
            if "color" in req or "position" in req:
                terms.append(0.0)
        else:
            if "color" in req:
                hits = colours(name, count).count(req["color"])
                terms.append(1 - abs(count - hits) / count)
                if hits != count:
                    matched = False
                    reasons.append(f"expected {req['color']} {name}=={count}, found {hits} {req['color']}")
            if "position" in req and matched:
                relation, target = req["position"]
                if groups[target] is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                    terms.append(0.0)
                else:
                    matched = in_relation(found, groups[target], relation, position_threshold)
                    if not matched:
                        reasons.append(f"expected {name} {relation} target")
                        terms.append(0.0)  # the reference appends 0 on the failing pair, then 1 after its loop
                    terms.append(1.0)
        correct = correct and matched
        groups.append(found if matched else None)
    return correct, (sum(terms) / len(terms) if terms else 0), reasons


def tag_threshold(metadata: Mapping[str, Any], settings: Thresholds) -> float:
    """The confidence a box needs for this prompt: ``counting_threshold`` for the counting tag."""
    return settings.counting_threshold if metadata["tag"] == "counting" else settings.threshold


def judge(
    detected: Mapping[str, Sequence[Box]], metadata: Mapping[str, Any], colours: Colours, settings: Thresholds
) -> Verdict:
    """An image's :class:`Verdict` from its kept boxes (:func:`select_objects`) and their colours."""
    correct, reasons = geneval_correct(detected, metadata, colours, settings.position_threshold)
    strict, score, strict_reasons = flow_grpo_score(detected, metadata, colours, settings.position_threshold)
    return Verdict(correct, strict, score, tuple(dict.fromkeys(reasons + strict_reasons)))


def colour_requests(detected: Mapping[str, Sequence[Box]], metadata: Mapping[str, Any]) -> dict[str, int]:
    """``{class: n}``: the classes whose ``n`` most confident kept boxes need a colour (both rules ask only for
    the ``count`` best boxes, and only when at least ``count`` were kept)."""
    needed: dict[str, int] = {}
    for req in metadata.get("include", []):
        if "color" in req and len(detected.get(req["class"], [])) >= req["count"]:
            needed[req["class"]] = max(needed.get(req["class"], 0), req["count"])
    return needed


def crop_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel rectangle PIL crops for ``box`` (its corners rounded), grown to at least one pixel inside the
    image: a detector box can be thinner than a pixel or lie on the border, and CLIP cannot resize an empty crop."""
    x1, y1 = min(round(box[0]), width - 1), min(round(box[1]), height - 1)
    return x1, y1, max(round(box[2]), x1 + 1), max(round(box[3]), y1 + 1)


METADATA_LOCAL_FIX = "pass a local copy of the file in the geneval reward's data option"


def read_metadata(paths: str | Path | Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``{prompt: record}`` from one or more files in GenEval's ``evaluation_metadata.jsonl`` layout (paths or
    ``github:...#sha256=...`` pins), each record checked for the fields the rules read; prompts are keyed without
    surrounding spaces, as prompt files are read. A training set and its held-out prompts are two files (Flow-GRPO's
    ``train_metadata.jsonl`` and ``test_metadata.jsonl``); a prompt listed again with the same rules is one prompt
    (Flow-GRPO's test file lists each GenEval prompt 4 times), one listed with other rules is refused, since the
    reward could not know which to apply."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ConfigError("the geneval reward's data names no metadata file; give a path or a github:... pin")
    table: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for path in paths:
        for prompt, (record, where) in _metadata_file(path).items():
            if prompt in table and _rules(table[prompt]) != _rules(record):
                raise ConfigError(
                    f"GenEval metadata: prompt {prompt!r} has one record at {sources[prompt]} and another at {where} "
                    f"({table[prompt]!r} vs {record!r}); keep one of them"
                )
            table.setdefault(prompt, record)
            sources.setdefault(prompt, where)
    return table


def _rules(record: dict[str, Any]) -> dict[str, Any]:
    """What a metadata record asks of an image: everything but the prompt's own text."""
    return {key: value for key, value in record.items() if key != "prompt"}


def _metadata_file(path: str | Path) -> dict[str, tuple[dict[str, Any], str]]:
    """``{prompt: (record, where)}`` of one metadata file; a prompt repeated within it must repeat its record."""
    from mmreward.data.prompts import resolve_prompt_file

    file = resolve_prompt_file(path, local_fix=METADATA_LOCAL_FIX)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read GenEval metadata from {str(file)!r}: {err}") from err
    table: dict[str, tuple[dict[str, Any], str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number} of GenEval metadata {str(file)!r}"
        try:
            record = json.loads(line)
            prompt, tag, include = record["prompt"], record["tag"], record["include"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{where} is not a record of its layout ({err!r}): each line needs prompt, tag, "
                "include ([{class, count, color?, position?}, ...]) and optionally exclude"
            ) from err
        if tag not in TAGS:
            raise ConfigError(f"{where}: tag {tag!r} is not one of {TAGS}")
        for n, req in enumerate(include + record.get("exclude", [])):
            if not isinstance(req.get("class"), str) or not isinstance(req.get("count"), int) or req["count"] < 1:
                raise ConfigError(f"{where}: clause {n} needs a class name and a count >= 1, got {req!r}")
            if "color" in req and req["color"] not in COLORS:
                raise ConfigError(f"{where}: colour {req['color']!r} is not one of {COLORS}")
            if "position" in req:
                relation, target = req["position"]
                if relation not in RELATIONS or not 0 <= target < n:
                    raise ConfigError(
                        f"{where}: position {req['position']!r} needs a relation in {RELATIONS} and "
                        "the index of an earlier include clause"
                    )
        # Keyed without surrounding spaces, as training prompt files are read (mmreward.data.prompts strips them).
        prompt = str(prompt).strip()
        if prompt in table and _rules(table[prompt][0]) != _rules(record):
            raise ConfigError(f"{where}: prompt {prompt!r} was listed before ({table[prompt][1]}) with other rules")
        table.setdefault(prompt, (record, where))
    if not table:
        raise ConfigError(f"GenEval metadata {str(file)!r} holds no prompts")
    return table


class GenevalReward(RewardModel):
    """GenEval's rules on OWLv2 detections and CLIP colours: ``score`` is Flow-GRPO's partial credit, ``dims``
    hold ``strict_accuracy`` (Flow-GRPO's exact-count correctness) and ``accuracy`` (GenEval's correctness), 1 or 0.

    Prompts are looked up in ``data`` (GenEval's metadata layout; default: the 553 evaluation prompts shipped in
    ``data/prompts/``; several files are merged, e.g. a training set and the held-out prompts); a prompt not in it
    fails with the reason. Images only: a video fails.

    Args:
        weights: hub id or local directory of a transformers ``Owlv2ForObjectDetection`` with its processor.
        clip: hub id or local directory of a transformers ``CLIPModel`` with its processor (GenEval: ViT-L/14).
        data: GenEval metadata file, or a list of them: paths or ``github:...#sha256=...`` pins (Flow-GRPO's
            training prompts; see :func:`read_metadata`).
        query_template: how a class name becomes a detector query.
        threshold, counting_threshold, max_objects, max_overlap, position_threshold: see :class:`Thresholds`.
        clip_batch_size: crops per CLIP forward.
    """

    raw_range = (-14.0, 1.0)  # a clause of count 1 with max_objects (16) boxes found adds 1 - 15
    dims = ("strict_accuracy", "accuracy")
    media_kinds = frozenset({"image"})

    def __init__(
        self,
        weights: str = "google/owlv2-base-patch16-ensemble",
        clip: str = "openai/clip-vit-large-patch14",
        data: str | Path | Sequence[str | Path] = GENEVAL_METADATA,
        query_template: str = "a photo of a {}",
        threshold: float = 0.3,
        counting_threshold: float = 0.9,
        max_objects: int = 16,
        max_overlap: float = 1.0,
        position_threshold: float = 0.1,
        clip_batch_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        from transformers import AutoProcessor, CLIPModel, Owlv2ForObjectDetection

        if "{}" not in query_template:
            raise ConfigError(f"query_template must hold '{{}}' where the class name goes, got {query_template!r}")
        if clip_batch_size < 1:
            raise ConfigError(f"clip_batch_size must be >= 1, got {clip_batch_size}")
        self.settings = Thresholds(threshold, counting_threshold, max_objects, max_overlap, position_threshold)
        self.metadata = read_metadata(data)
        # Every class the metadata names is queried for every image, so a box takes its best class among all.
        self.classes = sorted(
            {r["class"] for m in self.metadata.values() for r in m["include"] + m.get("exclude", [])}
        )
        self.clip_batch_size = clip_batch_size
        hint = "load_reward('geneval', weights='/path/to/owlv2-base-patch16-ensemble', clip='/path/to/clip')"
        detector_dir = resolve_dir(weights, what="GenEval detector (OWLv2)", hint=hint)
        clip_dir = resolve_dir(clip, what="GenEval colour classifier (CLIP)", hint=hint)
        self.processor = AutoProcessor.from_pretrained(detector_dir)
        self.detector = Owlv2ForObjectDetection.from_pretrained(detector_dir, dtype=self.dtype)
        self.clip_processor = AutoProcessor.from_pretrained(clip_dir)
        self.clip = CLIPModel.from_pretrained(clip_dir, dtype=self.dtype)
        for model in (self.detector, self.clip):
            model.to(self.device).eval().requires_grad_(False)
        queries = self.processor.tokenizer(
            [query_template.format(c) for c in self.classes],
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        # The class queries' text embeddings, once: every image is compared with the same ones.
        with torch.inference_mode():
            embeds = self.detector.owlv2.get_text_features(
                input_ids=queries["input_ids"].to(self.device),
                attention_mask=queries["attention_mask"].to(self.device),
            )
        self.query_embeds = getattr(embeds, "pooler_output", embeds)  # (Q, D)
        self._colour_weights: dict[str, torch.Tensor] = {}
        self.weights_id = weights

    # -- preparation (CPU) ---------------------------------------------------------------------------------------

    def prepare(self, media: torch.Tensor) -> dict[str, torch.Tensor]:
        if media.ndim != 3:
            raise MediaError(f"GenEval scores images; got a video of shape {tuple(media.shape)} (score its frames)")
        image = to_uint8_array(media)  # (H, W, 3) uint8: the decoded 8-bit image the rules crop
        pixels = self.processor.image_processor(images=[image], return_tensors="pt").pixel_values[0]  # (3, S, S)
        return {"pixels": pixels, "image": torch.from_numpy(image)}

    # -- model steps ---------------------------------------------------------------------------------------------

    def detect(self, pixels: torch.Tensor, sizes: list[tuple[int, int]], wanted: list[set[str]]) -> list[dict]:
        """Per image, ``{class: [Box, ...]}`` of every detector box labelled with a wanted class: each box takes
        its most likely class (sigmoid of the best query logit as confidence), in pixels of the original image."""
        # The detector's own forward, with the class queries embedded once (Owlv2ForObjectDetection.forward
        # embeds them again for every image).
        feature_map = self.detector.image_embedder(pixel_values=pixels.to(self.device, self.dtype))[0]  # (B, h, w, D)
        batch, grid_h, grid_w, dim = feature_map.shape
        image_feats = feature_map.reshape(batch, grid_h * grid_w, dim)  # (B, P, D): one box per patch
        queries = self.query_embeds.unsqueeze(0).expand(batch, -1, -1)  # (B, Q, D)
        logits = self.detector.class_predictor(image_feats, queries)[0]  # (B, P, Q)
        pred_boxes = self.detector.box_predictor(image_feats, feature_map)  # (B, P, 4) cx, cy, w, h
        best = logits.float().max(dim=-1)  # (B, P): best query per box
        confidence, label = torch.sigmoid(best.values).cpu(), best.indices.cpu()
        cx, cy, w, h = pred_boxes.float().cpu().unbind(-1)  # (B, P) each, relative to the padded square
        corners = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)  # (B, P, 4)
        results = []
        for n, (height, width) in enumerate(sizes):
            # The processor pads to a square at the bottom and right, so one scale maps back to the image.
            boxes = corners[n] * max(height, width)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            found: dict[str, list[Box]] = {name: [] for name in wanted[n]}
            for box, score, index in zip(boxes.tolist(), confidence[n].tolist(), label[n].tolist(), strict=True):
                name = self.classes[index]
                if name in found:
                    found[name].append((*box, score))
            results.append(found)
        return results

    def colour_weights(self, name: str) -> torch.Tensor:
        """The zero-shot colour classifier of class ``name``: ``(D, len(COLORS))`` unit columns, cached."""
        if name not in self._colour_weights:
            texts = [t.format(c=c, o=name) for c in COLORS for t in COLOR_TEMPLATES]
            tokens = self.clip_processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            embeds = self.clip.get_text_features(**tokens)
            embeds = getattr(embeds, "pooler_output", embeds).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            mean = embeds.reshape(len(COLORS), len(COLOR_TEMPLATES), -1).mean(dim=1)  # (C, T, D) -> (C, D)
            self._colour_weights[name] = (mean / mean.norm(dim=-1, keepdim=True)).T
        return self._colour_weights[name]

    def classify_colours(self, crops: list[tuple[str, Any]]) -> list[str]:
        """The CLIP colour of each ``(class, PIL crop)``."""
        colours: list[str] = []
        for start in range(0, len(crops), self.clip_batch_size):
            chunk = crops[start : start + self.clip_batch_size]
            pixels = self.clip_processor.image_processor(images=[c for _, c in chunk], return_tensors="pt")
            features = self.clip.get_image_features(pixel_values=pixels.pixel_values.to(self.device, self.dtype))
            features = getattr(features, "pooler_output", features).float()
            features = features / features.norm(dim=-1, keepdim=True)  # (N, D)
            for (name, _), feature in zip(chunk, features, strict=True):
                colours.append(COLORS[int((feature @ self.colour_weights(name)).argmax())])
        return colours

    def score_prepared(self, prompts: list[str], inputs: list[dict]) -> tuple[torch.Tensor, dict]:
        from PIL import Image

        records = [self.metadata[p.strip()] for p in prompts]
        wanted = [{r["class"] for r in m["include"] + m.get("exclude", [])} for m in records]
        sizes = [tuple(item["image"].shape[:2]) for item in inputs]
        candidates = self.detect(torch.stack([item["pixels"] for item in inputs]), sizes, wanted)
        # Kept boxes per image first, then every crop that needs a colour in one CLIP pass.
        settings = self.settings
        kept = [
            select_objects(c, tag_threshold(m, settings), settings) for c, m in zip(candidates, records, strict=True)
        ]
        crops, owners = [], []
        for n, (detected, record) in enumerate(zip(kept, records, strict=True)):
            picture = Image.fromarray(inputs[n]["image"].numpy())
            for name, count in colour_requests(detected, record).items():
                for box in detected[name][:count]:
                    crops.append((name, picture.crop(crop_box(box, picture.width, picture.height))))
                    owners.append((n, name))
        found: dict[tuple[int, str], list[str]] = {}
        for owner, colour in zip(owners, self.classify_colours(crops), strict=True):
            found.setdefault(owner, []).append(colour)
        verdicts = [
            judge(d, m, lambda name, count, n=n: found[(n, name)][:count], settings)
            for n, (d, m) in enumerate(zip(kept, records, strict=True))
        ]
        dims = {
            "strict_accuracy": torch.tensor([float(v.strict_correct) for v in verdicts]),
            "accuracy": torch.tensor([float(v.correct) for v in verdicts]),
        }
        return torch.tensor([v.score for v in verdicts], dtype=torch.float64).float(), dims

    def score_prepared_batch(self, prompts: list[str], prepared: list, errors: list[str | None]) -> RewardOutput:
        errors = list(errors)
        for i, prompt in enumerate(prompts):
            if errors[i] is None and prompt.strip() not in self.metadata:
                errors[i] = (
                    f"prompt {prompt[:80]!r} is not in the GenEval metadata: the rules need its objects, counts, "
                    "colours and positions (pass data= a file in GenEval's evaluation_metadata.jsonl layout)"
                )
        return super().score_prepared_batch(prompts, prepared, errors)
