"""Guidance and conditioning wrappers between a GLIDE network and the samplers.

- Classifier-free guidance: the conditional and unconditional halves go through the network
  in ONE batched call; eps = eps(x|empty) + s * (eps(x|text) - eps(x|empty)); the learned
  variance comes from the conditional half, as in the reference.
- Composed prompts (render/composition.py): every component of every image and the
  unconditional rows in one call; eps = eps(x|empty) + s * sum_i w_i (eps(x|c_i) - eps(x|empty)),
  the variance from each image's first component.
- CLIP guidance: the gradient of exp(logit_scale) * <z_image(x_t, t), z_text> shifts the
  ancestral mean (`clip_gradient` as the ddpm sampler's mean_shift: mean + variance * grad)
  or the score (`clip_guided_denoiser`).
- Inpainting: the known region of every x0 estimate is replaced by the source.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..nets.clip import NoisedClip
from ..nets.unet import TextEmbedding
from .samplers import Denoiser, ModelFn, Prediction, X0Transform
from .schedule import Schedule, coefficient


def _concat_text(first: TextEmbedding, second: TextEmbedding) -> TextEmbedding:
    mask = None
    if first.mask is not None or second.mask is not None:
        masks = [m if m is not None else t.new_ones(t.shape[:2], dtype=torch.bool) for m, t in
                 ((first.mask, first.tokens), (second.mask, second.tokens))]
        mask = torch.cat(masks)
    return TextEmbedding(torch.cat([first.pooled, second.pooled]), torch.cat([first.tokens, second.tokens]), mask)


def guided_model_fn(
    model: Callable[..., Tensor],  # the network, or a graphed or compiled call of it
    text: TextEmbedding,
    *,
    uncond_text: TextEmbedding | None = None,
    scale: float = 1.0,
    **images: Tensor | None,
) -> ModelFn:
    """`model_fn(x, t)` for the samplers, with the text (and any conditioning images such as
    low_res, inpaint_image, inpaint_mask) bound. With `uncond_text` and a scale other than 1,
    classifier-free guidance runs both halves in one call; otherwise only the conditional
    model runs (scale 1 is exactly the conditional model)."""
    given = {k: v for k, v in images.items() if v is not None}
    if uncond_text is None or scale == 1.0:
        return lambda x, t: model(x, t, text, **given)

    both_text = _concat_text(text, uncond_text)
    both_images = {k: torch.cat([v, v]) for k, v in given.items()}

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), both_text, **both_images)
        cond, uncond = out.chunk(2)
        channels = x.shape[1]
        cond_eps, uncond_eps = cond[:, :channels], uncond[:, :channels]
        eps = uncond_eps + scale * (cond_eps - uncond_eps)
        return torch.cat([eps, cond[:, channels:]], dim=1)

    return model_fn


def composed_model_fn(
    model: Callable[..., Tensor],  # the network, or a graphed or compiled call of it
    text: TextEmbedding,
    uncond_text: TextEmbedding,
    owner: Tensor,
    weights: Tensor,
    *,
    scale: float = 1.0,
    **images: Tensor | None,
) -> ModelFn:
    """`model_fn(x, t)` for images whose prompts have several weighted components: row r of
    `text` is a component of image owner[r], with weight weights[r]; `uncond_text` has a row
    per image. One network call per step runs the component rows and the unconditional rows."""
    given = {k: v for k, v in images.items() if v is not None}
    batch = uncond_text.pooled.shape[0]
    rows = torch.cat([owner, torch.arange(batch, device=owner.device)])
    first = torch.tensor([int((owner == b).nonzero()[0]) for b in range(batch)], device=owner.device)
    all_text = _concat_text(text, uncond_text)
    all_images = {k: v[rows] for k, v in given.items()}
    count = owner.shape[0]

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        out = model(x[rows], t[rows], all_text, **all_images)
        channels = x.shape[1]
        uncond_eps = out[count:, :channels]
        differences = (out[:count, :channels] - uncond_eps[owner]) * weights.to(out.dtype).view(-1, 1, 1, 1)
        summed = torch.zeros_like(uncond_eps).index_add_(0, owner, differences)
        eps = uncond_eps + scale * summed
        return torch.cat([eps, out[first, channels:]], dim=1)

    return model_fn


def keep_known_region(source: Tensor, keep_mask: Tensor) -> X0Transform:
    """Inpainting: the x0 estimate takes the source's pixels where keep_mask is 1."""
    known = source * keep_mask
    unknown = 1 - keep_mask
    return lambda x0, i: x0 * unknown + known


def chain_x0_transforms(*transforms: X0Transform | None) -> X0Transform | None:
    active = [t for t in transforms if t is not None]
    if not active:
        return None

    def apply(x0: Tensor, i: int) -> Tensor:
        for transform in active:
            x0 = transform(x0, i)
        return x0

    return apply


ClipGrad = Callable[[Tensor, int], Tensor]


def clip_gradient(clip: NoisedClip, text_embeddings: Tensor, scale: float, schedule: Schedule) -> ClipGrad:
    """grad_x [scale * exp(logit_scale) * <z_image(x_t, t), z_text>] at respaced index i; the CLIP
    sees the original timestep. `text_embeddings` [B, D] are normalized, one per image."""

    def grad(x: Tensor, i: int) -> Tensor:
        t = schedule.model_timesteps(i, x.shape[0], x.device)
        return clip.similarity_grad(x.float(), t, text_embeddings) * scale

    return grad


def clip_guided_denoiser(denoise: Denoiser, schedule: Schedule, grad: ClipGrad) -> Denoiser:
    """For DDIM and the solvers: eps <- eps - sqrt(1 - alpha_bar) * grad, and x0 from the new eps
    (not clipped again, as in the reference's score conditioning)."""

    def guided(x: Tensor, i: int) -> Prediction:
        pred = denoise(x, i)
        # sqrt(1 - alpha_bar) from the rounded table value, and eps re-derived from the new
        # x0, round like the reference does, so results match it to the bit.
        sigma = (1 - coefficient(schedule.alpha_bar(i), pred.eps)).sqrt()
        eps = pred.eps - sigma * grad(x, i).to(pred.eps.dtype)
        x0 = schedule.predict_x0(x, i, eps)
        return Prediction(x0, schedule.predict_eps(x, i, x0), pred.var_interp)

    return guided
