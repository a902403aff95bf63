"""An independent, functional test oracle for GLIDE's networks.

Written from a reading of openai/glide-text2im (text2im_model.py, unet.py, nn.py, xf.py,
clip/encoders.py, clip/attention.py, clip/utils.py, clip/model_creation.py) as plain functions
over a state dict in the official checkpoint layout. It deliberately follows the reference's
numerics rather than anything convenient:

* U-Net attention: qkv packed per head (reshape to [B*heads, 3*ch, T] then split by ch), the
  text's encoder_kv keys/values concatenated BEFORE the image's, q and k each scaled by
  ch**-0.25 before the einsum, softmax in float32;
* GroupNorm(32, eps 1e-5) on float32 with the reference's swish placement;
* timestep embedding computed in the reference's operation order ([cos | sin]);
* text transformer: qkv viewed as [B, ctx, heads, 3*d] then split, no attention mask, the
  padding embedding swapped in with where(mask, ...), transformer_proj on the LAST position;
* noised CLIP: context padded to whole 32-blocks with an explicit additive -1e10 bias built
  block by block as clip/attention.py builds it (dense for images, block-causal for text),
  LayerNorm eps 1e-5, f_k without bias, gathers at len-1 (text) / token 0 (image),
  z / (||z|| + 1e-12), and exp(float32 log(logit_scale)) for the guidance loss.

Nothing here imports glidecli's network code; only the settings dataclasses are read. Every
function reads weights through a `Weights` wrapper that records which keys were used, so tests
can check that the oracle consumed exactly the checkpoint's keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# CLIP's pixel statistics (0..255 scale), as in clip/encoders.py.
CLIP_PIXEL_MEAN = (122.77093945, 116.74601272, 104.09373519)
CLIP_PIXEL_STD = (68.50053285, 66.63215831, 70.32316309)
CLIP_BLOCK_SIZE = 32


class Weights:
    """Read-only view of a state dict that remembers which keys were read."""

    def __init__(self, state: Mapping[str, Tensor]):
        if isinstance(state, Weights):
            self.state, self.used = state.state, state.used
        else:
            self.state, self.used = state, set()

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.state:
            raise KeyError(f"oracle needs {key!r}, which the state dict does not have")
        self.used.add(key)
        return self.state[key]

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def unused(self) -> set[str]:
        return set(self.state) - self.used


# ----------------------------------------------------------------------------- shared pieces


def timestep_embedding(timesteps: Tensor, dim: int, max_period: int = 10000) -> Tensor:
    half = dim // 2
    # Same operation order as nn.timestep_embedding: (-log(P) * arange) / half, in float32.
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    freqs = freqs.to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def group_norm(w: Weights, prefix: str, x: Tensor, swish: bool) -> Tensor:
    y = F.group_norm(x.float(), 32, w[prefix + ".weight"], w[prefix + ".bias"], 1e-5).to(x.dtype)
    return F.silu(y) if swish else y


def linear(w: Weights, prefix: str, x: Tensor) -> Tensor:
    return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])


def conv2d(w: Weights, prefix: str, x: Tensor, **kwargs) -> Tensor:
    return F.conv2d(x, w[prefix + ".weight"], w[prefix + ".bias"], **kwargs)


def conv1d(w: Weights, prefix: str, x: Tensor) -> Tensor:
    return F.conv1d(x, w[prefix + ".weight"], w[prefix + ".bias"])


def layer_norm(w: Weights, prefix: str, x: Tensor, gain: str = "weight", bias: str = "bias") -> Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), w[f"{prefix}.{gain}"], w[f"{prefix}.{bias}"], 1e-5)


# ----------------------------------------------------------------------------- U-Net structure


def unet_layout(cfg) -> dict:
    """The block structure of the reference's UNetModel constructor, as plain data.

    Each block is a list of layer specs: ("conv_in", in, out), ("res", in, out, updown),
    ("attn", channels), ("down", channels), ("up", channels).
    """
    mc = cfg.model_channels
    in_channels = cfg.image_channels
    if cfg.inpaint and cfg.super_res:
        in_channels = cfg.image_channels * 3 + 1
    elif cfg.inpaint:
        in_channels = cfg.image_channels * 2 + 1
    elif cfg.super_res:
        in_channels = cfg.image_channels * 2
    # create_model turns feature-map sizes into downsampling rates.
    attention_ds = tuple(cfg.image_size // int(r) for r in cfg.attention_resolutions)

    ch = input_ch = int(cfg.channel_mult[0] * mc)
    input_blocks = [[("conv_in", in_channels, ch)]]
    chans = [ch]
    ds = 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers = [("res", ch, int(mult * mc), None)]
            ch = int(mult * mc)
            if ds in attention_ds:
                layers.append(("attn", ch))
            input_blocks.append(layers)
            chans.append(ch)
        if level != len(cfg.channel_mult) - 1:
            input_blocks.append([("res", ch, ch, "down")] if cfg.resblock_updown else [("down", ch)])
            chans.append(ch)
            ds *= 2
    middle = [("res", ch, ch, None), ("attn", ch), ("res", ch, ch, None)]
    output_blocks = []
    for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
        for i in range(cfg.num_res_blocks + 1):
            ich = chans.pop()
            layers = [("res", ch + ich, int(mc * mult), None)]
            ch = int(mc * mult)
            if ds in attention_ds:
                layers.append(("attn", ch))
            if level and i == cfg.num_res_blocks:
                layers.append(("res", ch, ch, "up") if cfg.resblock_updown else ("up", ch))
                ds //= 2
            output_blocks.append(layers)
    return dict(
        in_channels=in_channels,
        input_ch=input_ch,
        final_ch=ch,
        input_blocks=input_blocks,
        middle=middle,
        output_blocks=output_blocks,
    )


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downsample(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def resblock(w: Weights, p: str, cfg, x: Tensor, emb: Tensor, out_ch: int, updown: str | None) -> Tensor:
    h = group_norm(w, p + ".in_layers.0", x, swish=True)
    if updown is not None:
        # Resample between the in_layers' activation and their conv, on both paths.
        resample = _upsample if updown == "up" else _downsample
        h = resample(h)
        x = resample(x)
    h = conv2d(w, p + ".in_layers.2", h, padding=1)
    emb_out = linear(w, p + ".emb_layers.1", F.silu(emb)).type(h.dtype)[..., None, None]
    if cfg.use_scale_shift_norm:
        scale, shift = torch.chunk(emb_out, 2, dim=1)
        h = group_norm(w, p + ".out_layers.0", h, swish=False) * (1 + scale) + shift
        h = F.silu(h)
    else:
        h = group_norm(w, p + ".out_layers.0", h + emb_out, swish=True)
    # out_layers.2 is dropout (identity in eval).
    h = conv2d(w, p + ".out_layers.3", h, padding=1)
    if out_ch != x.shape[1]:  # 1x1 conv skip (use_conv=False) only when the width changes
        x = conv2d(w, p + ".skip_connection", x)
    return x + h


def attention_block(w: Weights, p: str, cfg, x: Tensor, xf_out: Tensor | None) -> Tensor:
    b, c, *spatial = x.shape
    heads = cfg.num_heads if cfg.num_head_channels == -1 else c // cfg.num_head_channels
    qkv = conv1d(w, p + ".qkv", group_norm(w, p + ".norm", x, swish=False).reshape(b, c, -1))
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    if xf_out is not None:
        ekv = conv1d(w, p + ".encoder_kv", xf_out)
        ek, ev = ekv.reshape(bs * heads, ch * 2, -1).split(ch, dim=1)
        k = torch.cat([ek, k], dim=-1)
        v = torch.cat([ev, v], dim=-1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)
    h = conv1d(w, p + ".proj_out", a)
    return x + h.reshape(b, c, *spatial)


def run_block(w: Weights, prefix: str, cfg, layers, h: Tensor, emb: Tensor, xf_out) -> Tensor:
    for j, spec in enumerate(layers):
        p = f"{prefix}.{j}"
        kind = spec[0]
        if kind == "conv_in":
            h = conv2d(w, p, h, padding=1)
        elif kind == "res":
            assert h.shape[1] == spec[1], (p, h.shape, spec)
            h = resblock(w, p, cfg, h, emb, spec[2], spec[3])
        elif kind == "attn":
            h = attention_block(w, p, cfg, h, xf_out)
        elif kind == "down":  # Downsample(use_conv=True): strided 3x3 conv
            h = conv2d(w, p + ".op", h, stride=2, padding=1)
        elif kind == "up":  # Upsample(use_conv=True): nearest x2 then 3x3 conv
            h = conv2d(w, p + ".conv", _upsample(h), padding=1)
        else:  # pragma: no cover
            raise AssertionError(kind)
    return h


# ----------------------------------------------------------------------------- text transformer


def xf_attention(w: Weights, p: str, x: Tensor, heads: int) -> Tensor:
    qkv = linear(w, p + ".c_qkv", x)
    bs, n_ctx, width = qkv.shape
    attn_ch = width // heads // 3
    scale = 1 / math.sqrt(math.sqrt(attn_ch))
    qkv = qkv.view(bs, n_ctx, heads, -1)
    q, k, v = torch.split(qkv, attn_ch, dim=-1)
    weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    out = torch.einsum("bhts,bshc->bthc", weight, v).reshape(bs, n_ctx, -1)
    return linear(w, p + ".c_proj", out)


def text_embedding(state, cfg, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(xf_proj [B, 4*C], xf_out [B, width, ctx]) as Text2ImUNet.get_text_emb returns them."""
    w = Weights(state)
    xf_in = F.embedding(tokens.long(), w["token_embedding.weight"])
    xf_in = xf_in + w["positional_embedding"][None]
    if cfg.xf_padding:
        assert mask is not None
        xf_in = torch.where(mask[..., None], xf_in, w["padding_embedding"][None])
    x = xf_in
    for i in range(cfg.xf_layers):
        p = f"transformer.resblocks.{i}"
        x = x + xf_attention(w, p + ".attn", layer_norm(w, p + ".ln_1", x), cfg.xf_heads)
        hidden = F.gelu(linear(w, p + ".mlp.c_fc", layer_norm(w, p + ".ln_2", x)))
        x = x + linear(w, p + ".mlp.c_proj", hidden)
    if cfg.xf_final_ln:
        x = layer_norm(w, "final_ln", x)
    xf_proj = linear(w, "transformer_proj", x[:, -1])
    return xf_proj, x.permute(0, 2, 1)


# ----------------------------------------------------------------------------- U-Net forward


def conditioning_input(
    cfg,
    x: Tensor,
    low_res: Tensor | None = None,
    inpaint_image: Tensor | None = None,
    inpaint_mask: Tensor | None = None,
) -> Tensor:
    if cfg.inpaint:
        if inpaint_image is None:
            inpaint_image = torch.zeros_like(x)
        if inpaint_mask is None:
            inpaint_mask = torch.zeros_like(x[:, :1])
    parts = [x]
    if cfg.inpaint:
        parts += [inpaint_image * inpaint_mask, inpaint_mask]
    if cfg.super_res:
        _, _, height, width = x.shape
        parts.append(F.interpolate(low_res, (height, width), mode="bilinear", align_corners=False))
    return torch.cat(parts, dim=1) if len(parts) > 1 else x


def unet_forward(
    state,
    cfg,
    x: Tensor,
    t: Tensor,
    tokens: Tensor | None,
    mask: Tensor | None,
    low_res: Tensor | None = None,
    inpaint_image: Tensor | None = None,
    inpaint_mask: Tensor | None = None,
) -> Tensor:
    w = Weights(state)
    layout = unet_layout(cfg)
    emb = linear(w, "time_embed.0", timestep_embedding(t, cfg.model_channels))
    emb = linear(w, "time_embed.2", F.silu(emb))
    xf_out = None
    if cfg.xf_width:
        xf_proj, xf_out = text_embedding(w, cfg, tokens, mask)
        emb = emb + xf_proj.to(emb)
    h = conditioning_input(cfg, x, low_res, inpaint_image, inpaint_mask)
    assert h.shape[1] == layout["in_channels"]
    hs = []
    for i, layers in enumerate(layout["input_blocks"]):
        h = run_block(w, f"input_blocks.{i}", cfg, layers, h, emb, xf_out)
        hs.append(h)
    h = run_block(w, "middle_block", cfg, layout["middle"], h, emb, xf_out)
    for i, layers in enumerate(layout["output_blocks"]):
        h = torch.cat([h, hs.pop()], dim=1)
        h = run_block(w, f"output_blocks.{i}", cfg, layers, h, emb, xf_out)
    h = group_norm(w, "out.0", h, swish=True)
    return conv2d(w, "out.2", h, padding=1)


# ----------------------------------------------------------------------------- CLIP masks


def clip_attention_bias(n_context: int, causal: bool, block_size: int = CLIP_BLOCK_SIZE) -> tuple[int, Tensor]:
    """The padded context and additive bias [ctx_pad, ctx_pad] that clip/encoders.py builds:
    round the context up to whole blocks, build the block layout of DenseAttentionMask or
    DenseCausalAttentionMask (with n_query_pad = n_key_pad = padding), expand it to a full
    boolean layout, and turn 'not allowed' into -1e10."""
    n_blocks = int(math.ceil(n_context / block_size))
    size = n_blocks * block_size
    n_pad = size - n_context
    first_pad_block = n_blocks - int(math.ceil(n_pad / block_size))
    n_zero_blocks = n_pad // block_size

    global_layout = np.ones((n_blocks, n_blocks), dtype=bool)
    if causal:
        global_layout = np.tril(global_layout)
    global_layout[n_blocks - n_zero_blocks :] = False
    global_layout[:, n_blocks - n_zero_blocks :] = False

    full = np.zeros((size, size), dtype=bool)
    for qb in range(n_blocks):
        for kb in range(n_blocks):
            blk = np.ones((block_size, block_size), dtype=bool)
            if qb >= first_pad_block:
                cut = min(block_size, (qb + 1) * block_size - (size - n_pad))
                blk[block_size - cut :] = False
            if kb >= first_pad_block:
                cut = min(block_size, (kb + 1) * block_size - (size - n_pad))
                blk[:, block_size - cut :] = False
            if causal:
                if qb < kb:
                    blk[:] = False
                elif qb == kb:
                    blk &= np.tril(np.ones((block_size, block_size), dtype=bool))
            blk &= global_layout[qb, kb]
            full[qb * block_size : (qb + 1) * block_size, kb * block_size : (kb + 1) * block_size] = blk
    bias = 1 - full.astype(np.float32)
    bias[bias == 1] = -1e10
    return size, torch.from_numpy(bias)


# ----------------------------------------------------------------------------- CLIP encoders


def _affine(w: Weights, p: str, x: Tensor, bias: bool = True) -> Tensor:
    return F.linear(x, w[p + ".w"], w[p + ".b"] if bias else None)


def _clip_ln(w: Weights, p: str, x: Tensor) -> Tensor:
    return layer_norm(w, p, x, gain="g", bias="b")


def clip_block(w: Weights, p: str, m: Tensor, heads: int, padded: int, bias: Tensor) -> Tensor:
    # AttentionResblock
    n_context, n_state = m.shape[1], m.shape[2]
    d = n_state // heads
    qk_scale = 1 / np.sqrt(d)
    r = _clip_ln(w, p + ".f_attn.ln", m)
    q = _affine(w, p + ".f_attn.f_q", r)
    k = _affine(w, p + ".f_attn.f_k", r, bias=False)
    v = _affine(w, p + ".f_attn.f_v", r)
    n_pad = padded - n_context
    if n_pad:
        q = F.pad(q, (0, 0, 0, n_pad))
        k = F.pad(k, (0, 0, 0, n_pad))
        v = F.pad(v, (0, 0, 0, n_pad))
    q = q.view(q.shape[0], -1, heads, d).permute(0, 2, 1, 3)
    k = k.view(k.shape[0], -1, heads, d).permute(0, 2, 1, 3)
    v = v.view(v.shape[0], -1, heads, d).permute(0, 2, 1, 3)
    s = math.sqrt(qk_scale)
    att = torch.einsum("bhcd,bhkd->bhck", q * s, k * s)
    att = torch.softmax(att + bias.to(att.device)[None, None], dim=-1)
    r = torch.einsum("bhck,bhkd->bhcd", att, v)
    r = r.permute(0, 2, 1, 3).reshape(r.shape[0], -1, n_state)
    if n_pad:
        r = r[:, :-n_pad]
    m = m + _affine(w, p + ".f_attn.f_c", r)
    # FullyConnectedResblock
    r = _clip_ln(w, p + ".f_mlp.ln", m)
    return m + _affine(w, p + ".f_mlp.f_2", F.gelu(_affine(w, p + ".f_mlp.f_1", r)))


def clip_image_forward(state, cfg, x: Tensor, t: Tensor) -> Tensor:
    """Unnormalized image embeddings of diffusion images x in [-1, 1] (CLIPModel.image_embeddings
    feeds (x + 1) * 127.5 to ImageEncoder, whose ImageEmbedding normalizes per channel)."""
    w = Weights(state)
    heads, width = cfg.image_heads, cfg.image_heads * cfg.image_head_channels
    n_context = 1 + (cfg.image_size // cfg.patch_size) ** 2
    padded, bias = clip_attention_bias(n_context, causal=False)
    images = (x + 1) * 127.5
    mean = torch.tensor(CLIP_PIXEL_MEAN, dtype=torch.float32, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_PIXEL_STD, dtype=torch.float32, device=x.device)[None, :, None, None]
    h = (images - mean) / std
    h = F.conv2d(h, w["blocks.input.patch_proj"], stride=cfg.patch_size)
    h = h.reshape(h.shape[0], width, (cfg.image_size // cfg.patch_size) ** 2).permute(0, 2, 1)
    sot = F.embedding(t.long(), w["blocks.input.w_t"])[:, None]
    h = torch.cat((sot, h), dim=1) + w["blocks.input.w_pos"][None]
    h = _clip_ln(w, "blocks.input.ln", h)
    for i in range(cfg.image_layers):
        h = clip_block(w, f"blocks.block_{i}", h, heads, padded, bias)
    h = _clip_ln(w, "blocks.output.ln", h[:, :1])
    return _affine(w, "blocks.output.f", h[:, 0], bias=False)


def clip_text_forward(state, cfg, tokens: Tensor, lengths: Tensor) -> Tensor:
    """Unnormalized text embeddings of token ids [B, ctx] with lengths [B]."""
    w = Weights(state)
    heads = cfg.text_heads
    padded, bias = clip_attention_bias(cfg.text_ctx, causal=True)
    h = F.embedding(tokens.long(), w["blocks.input.w_voc"]) + w["blocks.input.w_pos"][None, :, :]
    for i in range(cfg.text_layers):
        h = clip_block(w, f"blocks.block_{i}", h, heads, padded, bias)
    index = (lengths.long() - 1)[:, None, None].expand(-1, 1, h.shape[2])
    h = torch.gather(h, dim=1, index=index)
    h = _clip_ln(w, "blocks.output.ln", h)
    return _affine(w, "blocks.output.f", h[:, 0], bias=False)


def normalize(z: Tensor) -> Tensor:
    return z / (torch.linalg.norm(z, dim=-1, keepdim=True) + 1e-12)


def clip_guidance_grad(
    image_state, cfg, x: Tensor, t: Tensor, z_t: Tensor, logit_scale: float, return_embedding: bool = False
):
    """CLIPModel.cond_fn's gradient (grad_scale 1): d/dx of exp(log_scale) * sum(z_t * z_i), with
    log_scale the float32 tensor log(logit_scale). With return_embedding, also the UNnormalized
    image embedding computed on the way (detached)."""
    log_scale = torch.tensor(np.log(logit_scale), dtype=torch.float32)
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        z_raw = clip_image_forward(image_state, cfg, x_var, t)
        loss = torch.exp(log_scale) * (z_t * normalize(z_raw)).sum()
        grad = torch.autograd.grad(loss, x_var)[0].detach()
    return (grad, z_raw.detach()) if return_embedding else grad


__all__ = [
    "Weights",
    "unet_layout",
    "unet_forward",
    "text_embedding",
    "conditioning_input",
    "clip_attention_bias",
    "clip_image_forward",
    "clip_text_forward",
    "clip_guidance_grad",
    "normalize",
    "timestep_embedding",
]
