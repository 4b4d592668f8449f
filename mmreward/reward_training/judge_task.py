"""The judge task: a generative pairwise judge (UnifiedReward-style) fine-tuned as a classifier over its verdict
sentences ("Image 1 is better", "Image 2 is better", the tie sentence), each pair shown in both presentation
orders, under the judge's one-pass logit read-out. Saved as the judge's merged weights with its processor.

Everything this package asks of the VLM judge classes is in this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from mmreward.data.pairs import INVALID
from mmreward.errors import MediaError
from mmreward.reward_training.saved_presets import template_and_pixels
from mmreward.rewards.registry import SAVED_REWARD_FILE
from mmreward.rewards.vlm.backbone import PromptSequence
from mmreward.rewards.vlm.checkpoints import merge_lora
from mmreward.rewards.vlm.pairwise import PairwiseJudge


class JudgeScorer(nn.Module):
    """Judge task's model: log-probabilities of (first, second, tie) for every pair in both orders, ``(2B, 3)``."""

    def __init__(self, judge: PairwiseJudge) -> None:
        super().__init__()
        self.model = judge.backend.backbone.model
        self._judge = [judge]

    def forward(self, visuals: list, ids: list[list[int]], kinds: list[str]) -> torch.Tensor:
        judge = self._judge[0]
        backend, backbone = judge.backend, judge.backend.backbone
        encoded = backbone.encode(visuals)  # visuals[2k], visuals[2k + 1] are pair k's A and B
        sequences = []
        for k in range(len(kinds)):
            a, b = encoded[2 * k], encoded[2 * k + 1]
            sequences += [PromptSequence(ids[2 * k], [a, b]), PromptSequence(ids[2 * k + 1], [b, a])]
        batch = backbone.assemble(sequences)
        readouts = {k: backend.verdict_readout(judge.template.section(k).verdicts) for k in set(kinds)}
        depth = max(len(readouts[k].path) for k in kinds) + 1
        logits = self.model(**batch.as_kwargs(), logits_to_keep=depth, use_cache=False).logits
        rows = []
        for row, kind in enumerate(kind for kind in kinds for _ in range(2)):
            readout = readouts[kind]
            rows.append(readout.log_probs(logits[row : row + 1, depth - len(readout.path) - 1 :])[0])
        return torch.stack(rows)  # rows 2k: A shown first, 2k + 1: B shown first


class JudgeTask:
    """A generative pairwise judge trained as a classifier over its verdict sentences, both orders per pair."""

    def __init__(self, cfg: Any, judge: PairwiseJudge, base: str) -> None:
        self.cfg, self.judge, self.base = cfg, judge, base
        self.module = JudgeScorer(judge)
        dim = cfg.model.judge_dim or cfg.model.dims[0]
        self.dims, self.label_index = [dim], [cfg.model.dims.index(dim)]
        self.model, self.extra_params, self.token_ids = judge.backend.backbone.model, [], []

    @classmethod
    def untrained(cls, cfg: Any, base: str, common: dict[str, Any]) -> JudgeTask:
        """The task on the judge over ``base`` (``common``: the constructor arguments heads and judges share)."""
        frames = cfg.data.video_num_frames
        return cls(cfg, PairwiseJudge("local", weights=base, mode="logits", video_num_frames=frames, **common), base)

    def prepare(self, path: str) -> Any:
        return self.judge.prepare(self.judge.load_media(path))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        visuals, ids, kinds = [], [], []
        for it in items:
            a, b = it["a"], it["b"]
            if a.kind != b.kind:
                raise MediaError(f"pair of an {a.kind} and a {b.kind}; a judge compares like with like")
            section = self.judge.template.section(a.kind)
            path = list(self.judge.backend.verdict_readout(section.verdicts).path)
            question = self.judge.ask(section, it["prompt"], {"media_a": 0, "media_b": 1})
            for first, second in ((a, b), (b, a)):  # both presentation orders
                ids.append(self.judge.backend.prompt_ids(question, [first.data, second.data]) + path)
            visuals += [a.data, b.data]
            kinds.append(a.kind)
        return {"visuals": visuals, "ids": ids, "kinds": kinds}

    def _log_probs(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return module(batch["visuals"], batch["ids"], batch["kinds"])

    def loss(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        logp = self._log_probs(module, batch)  # (2B, 3)
        labels = batch["labels"][:, self.label_index[0]]
        # A better: first when A is shown first, second when B is; B better: the reverse; tie: the tie sentence.
        target_ab = torch.where(labels == 1, 0, torch.where(labels == -1, 1, 2))
        target_ba = torch.where(labels == 1, 1, torch.where(labels == -1, 0, 2))
        targets = torch.stack([target_ab, target_ba], dim=1).flatten().to(logp.device)
        usable = (labels != INVALID) & ((labels != 0) | torch.tensor(self.judge.has_tie))
        usable = usable.repeat_interleave(2).to(logp.device)
        count = int(usable.sum())
        if count == 0:
            return logp.sum() * 0.0, 0
        return F.nll_loss(logp[usable], targets[usable]), count

    def margins(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logp = self._log_probs(module, batch).view(-1, 2, 3)  # (B, order, outcome)
        # Log-odds of A over B, averaged over both orders (log space: no cancellation when P(tie) is near 1).
        log_a = (logp[:, 0, 0] + logp[:, 1, 1]) / 2
        log_b = (logp[:, 0, 1] + logp[:, 1, 0]) / 2
        return (log_a - log_b).unsqueeze(1).float()  # (B, 1)

    def save(self, module: nn.Module, step: int, stats_loader: DataLoader, accelerator) -> None:
        if accelerator.is_main_process:
            save_judge_dir(self.cfg, self.judge, accelerator.unwrap_model(module))


def save_judge_dir(cfg: Any, judge: PairwiseJudge, scorer: JudgeScorer) -> Path:
    """Merge the LoRA into a fresh copy of the base, copy the other trained tensors, save it with its processor."""
    from transformers import AutoModelForImageTextToText

    out = Path(cfg.output_dir)
    target = out / "judge"
    fresh = AutoModelForImageTextToText.from_pretrained(judge.backend.directory, dtype=scorer.model.dtype)
    lora, own = {}, fresh.state_dict()
    with torch.no_grad():
        for name, param in scorer.model.named_parameters():
            if not param.requires_grad:
                continue
            if "lora_" in name:
                lora[name] = param.detach().cpu()
            else:
                own[name].copy_(param.detach().cpu())
    if lora:
        merge_lora(fresh.model, lora, cfg.lora.alpha / cfg.lora.rank, source="training run")
    fresh.save_pretrained(target)
    judge.backend.backbone.processor.save_pretrained(target)
    preset = {
        "type": "pairwise-judge",
        "backend": "local",
        "weights": "./judge",
        "mode": "logits",
        **template_and_pixels(cfg, out),
        "video_num_frames": cfg.data.video_num_frames,
    }
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out
