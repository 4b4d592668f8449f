"""Flow-NRG's latent reward: a small time-conditioned network that scores *noisy* latents ``x_t`` directly.

VideoAlign (arXiv 2501.13918, Flow-NRG and Table 7) guides sampling with a reward evaluated on the noisy latent
of every step, with no VAE decode and no backpropagation through the sampler; a reward trained on clean latents
fails there (win rates 37/39/53 against 66/75/32 for one trained on noised latents), so this model is always
trained on ``x_t = (1 - t) x0 + t eps`` at the noise levels sampling visits (``align/train_latent_reward.py``).

Architecture (ours; the paper builds its reward on the first layers of its internal video model, which is not
public): a convolutional stem on the latent channels, ``depth`` blocks ``h <- conv_s2(silu(h * (1 + a) + b))``
where ``(a, b)`` come from a sinusoidal embedding of the noise level (plus, optionally, the generator's pooled
prompt embedding), global average pooling and one linear output per dimension (e.g. ``VQ``, ``MQ``, ``TA``).
There is no normalization layer on purpose: group/layer norms remove the per-channel means that carry global
properties such as brightness or colour balance. Convolutions are 2-D for image latents ``(B, C, h, w)`` and
3-D for video latents ``(B, C, t, h, w)`` (strides only over space).

A trained model is a directory: ``latent_reward.json`` (the :class:`LatentRewardSpec`: generator family, latent
shape, dimensions, prompt-embedding size, architecture, training summary) and ``latent_reward.safetensors``.
``load_latent_reward(path)`` loads it; :meth:`LatentRewardModel.check_compatible` refuses a generator of another
family or latent shape before any sampling starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmreward.errors import ConfigError, WeightsNotFoundError

if TYPE_CHECKING:
    from mmreward.flow.models import FlowModel

SPEC_FILE = "latent_reward.json"
WEIGHTS_FILE = "latent_reward.safetensors"
_FREQUENCIES = 32  # sinusoidal features of the noise level (sin and cos each)


@dataclass
class LatentRewardSpec:
    """What a latent reward was trained for and how it is built (stored as ``latent_reward.json``).

    Attributes:
        family: generator family whose latents it scores (``sd3``, ``flux``, ``wan``).
        latent_shape: per-sample unpacked latent shape, ``[C, h, w]`` or ``[C, t, h, w]``.
        dims: names of the reward dimensions (one output each).
        text_dim: size of the pooled prompt embedding it is conditioned on (0: prompt-free).
        width, depth: channels of the convolutional blocks and number of stride-2 blocks.
        generator: the generator path or hub id the latents came from (informational).
        training: a summary written by the training program (data, steps, held-out accuracy).
    """

    family: str
    latent_shape: list[int]
    dims: list[str]
    text_dim: int = 0
    width: int = 64
    depth: int = 3
    generator: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.latent_shape) not in (3, 4):
            raise ConfigError(f"latent_shape must be [C, h, w] or [C, t, h, w], got {self.latent_shape}")
        if not self.dims or len(set(self.dims)) != len(self.dims):
            raise ConfigError(f"dims must be distinct names, at least one; got {self.dims}")
        if self.width < 1 or self.depth < 1 or self.text_dim < 0:
            raise ConfigError(
                f"width and depth must be >= 1 and text_dim >= 0; got {self.width}, {self.depth}, {self.text_dim}"
            )


def noise_level_features(sigma: torch.Tensor) -> torch.Tensor:
    """``(B,)`` noise levels in [0, 1] -> ``(B, 2F)`` sinusoidal features of ``1000 sigma`` (the transformer's own
    timestep scale), frequencies ``10000^(-k/F)`` as in the diffusion timestep embeddings."""
    exponents = torch.arange(_FREQUENCIES, device=sigma.device, dtype=torch.float32) / _FREQUENCIES
    angles = 1000 * sigma.float()[:, None] * torch.exp(-math.log(10000.0) * exponents)[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _Block(nn.Module):
    """``h -> conv_stride2(silu(h * (1 + a) + b))`` with ``(a, b)`` from the conditioning embedding (FiLM)."""

    def __init__(self, conv: type[nn.Module], width: int, embed: int, stride: tuple[int, ...]) -> None:
        super().__init__()
        self.film = nn.Linear(embed, 2 * width)
        nn.init.zeros_(self.film.weight)  # starts as a plain conv net: conditioning is learned from zero
        nn.init.zeros_(self.film.bias)
        self.conv = conv(width, width, 3, stride=stride, padding=1)

    def forward(self, h: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(embed).chunk(2, dim=1)  # (B, W) each
        view = (*scale.shape, *([1] * (h.ndim - 2)))  # (B, W, 1, 1[, 1]) to broadcast over the latent grid
        return self.conv(nn.functional.silu(h * (1 + scale.view(view)) + shift.view(view)))


class LatentRewardModel(nn.Module):
    """``forward(latents, sigma, text=None) -> (B, K)`` rewards of noisy latents, one column per dimension."""

    # The unit FSDP2 shards separately (mmreward.train.sharding.shard_model): each conditioned conv block; the root
    # keeps the stem, the embeddings and the head.
    _no_split_modules = ["_Block"]

    def __init__(self, spec: LatentRewardSpec) -> None:
        super().__init__()
        self.spec = spec
        video = len(spec.latent_shape) == 4
        conv = nn.Conv3d if video else nn.Conv2d
        stride = (1, 2, 2) if video else (2, 2)
        embed = 2 * spec.width
        self.stem = conv(spec.latent_shape[0], spec.width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(2 * _FREQUENCIES, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.text = nn.Linear(spec.text_dim, embed) if spec.text_dim else None
        self.blocks = nn.ModuleList([_Block(conv, spec.width, embed, stride) for _ in range(spec.depth)])
        self.head = nn.Linear(spec.width, len(spec.dims))

    @property
    def dims(self) -> list[str]:
        return list(self.spec.dims)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor | float, text: torch.Tensor | None = None):
        """Rewards ``(B, K)`` for latents ``(B, *latent_shape)`` at noise levels ``sigma`` (scalar or ``(B,)``);
        ``text`` is the ``(B, text_dim)`` pooled prompt embedding when the model is prompt-conditioned."""
        batch = latents.shape[0]
        param = self.head.weight
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=param.device).reshape(-1).expand(batch)
        embed = self.time(noise_level_features(sigma).to(param.dtype))
        if self.text is not None:
            if text is None or text.shape != (batch, self.spec.text_dim):
                got = None if text is None else tuple(text.shape)
                raise ValueError(
                    f"this latent reward is prompt-conditioned: pass text ({batch}, {self.spec.text_dim}), got {got}"
                )
            embed = embed + self.text(text.to(param.device, param.dtype))
        embed = nn.functional.silu(embed)
        h = self.stem(latents.to(param.device, param.dtype))
        for block in self.blocks:
            h = block(h, embed)
        pooled = nn.functional.silu(h).mean(dim=tuple(range(2, h.ndim)))  # (B, W): average over the latent grid
        return self.head(pooled).float()

    # -- compatibility, saving, loading -------------------------------------------------------------------------

    def check_compatible(self, family: str, latent_shape: Sequence[int], *, source: str = "latent reward") -> None:
        """Raise a ConfigError unless this model was trained for ``family`` latents of ``latent_shape`` (per
        sample, unpacked). Called before sampling: a mismatched reward would give meaningless gradients."""
        check_spec_compatible(self.spec, family, latent_shape, source=source)

    def save(self, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``latent_reward.json`` and ``latent_reward.safetensors`` to ``directory`` (temp files, then
        rename); returns the directory. ``state``: the weights to write instead of this module's own (the whole
        weights gathered from FSDP2 shards, whose live parameters are only this process's shard)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self.state_dict() if state is None else state
        tensors = {name: t.detach().float().cpu().contiguous() for name, t in source.items()}
        tmp_weights, tmp_spec = directory / f".{WEIGHTS_FILE}.tmp", directory / f".{SPEC_FILE}.tmp"
        save_file(tensors, str(tmp_weights))
        tmp_spec.write_text(json.dumps(dataclasses.asdict(self.spec), indent=2), encoding="utf-8")
        tmp_weights.replace(directory / WEIGHTS_FILE)
        tmp_spec.replace(directory / SPEC_FILE)
        return directory


def check_spec_compatible(
    spec: LatentRewardSpec, family: str, latent_shape: Sequence[int], *, source: str = "this latent reward"
) -> None:
    """See :meth:`LatentRewardModel.check_compatible` (usable on a spec read without its weights)."""
    if spec.family != family:
        raise ConfigError(
            f"{source} was trained on {spec.family} latents, but the generator is {family}; train one for this "
            f"generator with align/train_latent_reward.py (model.family: {family})"
        )
    if list(latent_shape) != list(spec.latent_shape):
        raise ConfigError(
            f"{source} was trained on {spec.family} latents of shape {spec.latent_shape} (per sample), but this "
            f"run samples latents of shape {list(latent_shape)}; generate at the size it was trained for or train "
            "one at this size (model.height / model.width / model.num_frames)"
        )


def is_latent_reward(path: str | Path) -> bool:
    """True when ``path`` is a directory saved by :meth:`LatentRewardModel.save`."""
    return (Path(path).expanduser() / SPEC_FILE).is_file()


def read_latent_reward_spec(path: str | Path) -> LatentRewardSpec:
    """The spec of a saved latent reward, without loading its weights (for checks before any model loads)."""
    directory = Path(path).expanduser()
    spec_file = directory / SPEC_FILE
    if not spec_file.is_file():
        raise WeightsNotFoundError(
            f"{str(directory)!r} is not a latent reward directory (no {SPEC_FILE}); train one with "
            "align/train_latent_reward.py, whose output_dir/latent_reward is such a directory"
        )
    try:
        data = json.loads(spec_file.read_text(encoding="utf-8"))
        return LatentRewardSpec(**data)
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ConfigError(f"cannot read {str(spec_file)!r}: {err}") from err


def load_latent_reward(path: str | Path, *, device: str | torch.device = "cpu") -> LatentRewardModel:
    """Load a latent reward saved by :meth:`LatentRewardModel.save` (frozen, eval mode, float32, on ``device``)."""
    spec = read_latent_reward_spec(path)
    weights = Path(path).expanduser() / WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsNotFoundError(f"{str(weights)!r} is missing; the latent reward directory is incomplete")
    model = LatentRewardModel(spec)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{str(weights)!r} does not match its {SPEC_FILE} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.requires_grad_(False).eval().to(device)


def pooled_text(model: FlowModel, prompts: Sequence[str]) -> torch.Tensor:
    """``(B, D)`` float32 prompt conditioning for a latent reward: the generator's pooled text embedding (SD3,
    FLUX) or the mean of its token embeddings over non-padding tokens (Wan, whose padding embeddings are 0)."""
    cond = model.encode_prompts(list(prompts))
    if cond.pooled is not None:
        return cond.pooled.float()
    tokens = cond.embeds.float()  # (B, L, D)
    mask = (tokens.abs().sum(-1, keepdim=True) > 0).float()  # (B, L, 1): 0 at padding
    return (tokens * mask).sum(1) / mask.sum(1).clamp_min(1)


def text_dim(model: FlowModel) -> int:
    """Size of :func:`pooled_text` for this generator (one encoder call on an empty prompt, cached)."""
    return int(pooled_text(model, [""]).shape[1])
