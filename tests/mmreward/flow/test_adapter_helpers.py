"""The adapter's pure helpers: the 2x2-patch token layout against diffusers' own packing, and the Wan-style VAE
statistics."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import FluxPipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.flow.adapter import pack_patches, unpack_patches, wan_vae_stats


def test_pack_patches_by_hand():
    latents = torch.arange(16.0).view(1, 1, 4, 4)  # one channel, rows 0-3, columns 0-3
    packed = pack_patches(latents)
    assert packed.shape == (1, 4, 4)
    # Token k is the k-th 2x2 patch in row-major order; its features are the patch row by row.
    assert packed[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 3),
    half_height=st.integers(1, 3),
    half_width=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_packing_is_fluxs_and_unpacking_inverts_it(batch, channels, half_height, half_width, seed):
    height, width = 2 * half_height, 2 * half_width
    latents = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    packed = pack_patches(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, batch, channels, height, width))
    assert torch.equal(unpack_patches(packed, height, width), latents)


def test_unpacking_refuses_latents_of_another_size():
    packed = pack_patches(torch.zeros(1, 2, 4, 6))  # (1, 6, 8)
    with pytest.raises(ValueError, match=r"^packed latents \(1, 6, 8\) do not hold 4 x 4 latents in 2x2 patches$"):
        unpack_patches(packed, 4, 4)
    with pytest.raises(ValueError, match=r"packed latents \(1, 6, 7\) do not hold 4 x 6"):
        unpack_patches(packed[..., :7], 4, 6)


def test_wan_vae_stats_per_channel_on_the_latents_device_and_dtype():
    vae = SimpleNamespace(config=SimpleNamespace(z_dim=2, latents_mean=[0.5, -1.0], latents_std=[2.0, 3.0]))
    like = torch.zeros(1, dtype=torch.float64)
    mean, std = wan_vae_stats(vae, like)
    assert mean.shape == std.shape == (1, 2, 1, 1, 1) and mean.dtype == std.dtype == torch.float64
    assert mean.flatten().tolist() == [0.5, -1.0] and std.flatten().tolist() == [2.0, 3.0]
