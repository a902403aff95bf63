"""An independent, functional test oracle for GLIDE's SAMPLING loops.

Written from a reading of openai/glide-text2im (gaussian_diffusion.py, respace.py and the
notebooks text2im.ipynb, inpaint.ipynb, clip_guided.ipynb). Nothing here imports glidecli; the
networks inside are the functional forwards of `reference_oracle.py`. What it follows on purpose:

* the process: named beta schedules and the respacing rules computed from scratch in float64
  numpy; the respaced process is rebuilt from the kept alphas_cumprod (beta_i = 1 - abar_i /
  abar_prev_kept), and every table entry is rounded to float32 when it is taken for a batch (the
  reference's `_extract_into_tensor(...).float()`), so all image arithmetic is float32;
* the network and any cond_fn see the ORIGINAL timesteps (the reference's _WrappedModel maps the
  respaced index through `timestep_map`);
* p_mean_variance with the learned-range variance (frac * log(beta) + (1 - frac) * clipped log
  posterior variance), x0 from eps, then denoised_fn, then the [-1, 1] clip, then the posterior
  mean; condition_mean (mean + variance * grad) in p_sample; condition_score (eps from the
  processed x0, eps -= sqrt(1 - abar) * grad, x0 from eps again, unclipped) in ddim_sample, which
  then re-derives eps from x0; DDIM's sigma(eta) and its sqrt(1 - abar_prev - sigma^2) term;
* both loops draw one noise tensor for the whole batch at EVERY step, the last one included
  (where `nonzero_mask` discards it), exactly like `th.randn_like(x)` in p_sample / ddim_sample;
* the notebooks' wiring: classifier-free guidance runs a doubled batch [cond; uncond] whose
  model_fn feeds the first half twice, mixes eps = uncond + s * (cond - uncond), copies it to both
  halves and keeps the variance channels of each half; the sample is the first half. Inpainting's
  denoised_fn pastes inpaint_image * inpaint_mask into the x0 estimate. CLIP guidance's cond_fn is
  grad_x exp(log logit_scale) * <z_t, z_i(x_t, t)> times the guidance scale, on the non-doubled
  batch. The upsampler's low_res is ((samples + 1) * 127.5).round() / 127.5 - 1.

Noise is explicit: the loops take the starting x_T and a `noise_fn(shape)` called once per step,
so a test can hand both implementations the very same numbers (see `PerImageNoise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

import helpers.reference_oracle as networks

Tensor = torch.Tensor
NoiseFn = Callable[[Sequence[int]], Tensor]


# ----------------------------------------------------------------------------- the process


def named_betas(name: str, num_steps: int) -> np.ndarray:
    """get_named_beta_schedule: 'linear' (Ho et al., rescaled to num_steps) or the capped cosine."""
    if name == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":

        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        out = []
        for k in range(num_steps):
            out.append(min(1 - abar((k + 1) / num_steps) / abar(k / num_steps), 0.999))
        return np.array(out, dtype=np.float64)
    raise NotImplementedError(name)


def respaced_timesteps(num_steps: int, spec: str) -> list[int]:
    """respace.space_timesteps, as a sorted list: 'ddimN', 'fast27' or section counts."""
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, num_steps):
            kept = list(range(0, num_steps, stride))
            if len(kept) == want:
                return kept
        raise ValueError(spec)
    if spec == "fast27":
        kept = set(respaced_timesteps(num_steps, "10,10,3,2,2"))
        kept.remove(num_steps - 1)
        kept.add(num_steps - 3)
        return sorted(kept)
    counts = [int(c) for c in spec.split(",")]
    per, extra = divmod(num_steps, len(counts))
    start, kept = 0, []
    for n, count in enumerate(counts):
        size = per + (1 if n < extra else 0)
        if size < count:
            raise ValueError(spec)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.append(start + round(pos))
            pos += stride
        start += size
    return sorted(set(kept))


class Diffusion:
    """GaussianDiffusion over the timesteps a respacing keeps (SpacedDiffusion), tables in float64."""

    def __init__(self, schedule: str, spec: str, num_steps: int = 1000):
        full_abar = np.cumprod(1.0 - named_betas(schedule, num_steps))
        self.timestep_map = respaced_timesteps(num_steps, spec)
        betas, last = [], 1.0
        for t in self.timestep_map:
            betas.append(1 - full_abar[t] / last)
            last = full_abar[t]
        b = np.array(betas, dtype=np.float64)
        self.betas = b
        self.num_timesteps = len(b)
        self.abar = np.cumprod(1.0 - b)
        self.abar_prev = np.append(1.0, self.abar[:-1])
        self.sqrt_recip_abar = np.sqrt(1.0 / self.abar)
        self.sqrt_recipm1_abar = np.sqrt(1.0 / self.abar - 1)
        post_var = b * (1.0 - self.abar_prev) / (1.0 - self.abar)
        self.post_log_var = np.log(np.append(post_var[1], post_var[1:]))
        self.log_betas = np.log(b)
        self.coef_x0 = b * np.sqrt(self.abar_prev) / (1.0 - self.abar)
        self.coef_xt = (1.0 - self.abar_prev) * np.sqrt(1.0 - b) / (1.0 - self.abar)

    # The reference's _extract_into_tensor: index the float64 table, round to float32, broadcast.
    @staticmethod
    def take(table: np.ndarray, t: Tensor, shape) -> Tensor:
        values = torch.from_numpy(table)[t].float()
        return values.view(-1, *([1] * (len(shape) - 1))) + torch.zeros(shape)

    def original(self, fn: Callable) -> Callable:
        """_WrappedModel: call `fn` with the original timesteps of respaced indices."""
        table = torch.tensor(self.timestep_map)

        def wrapped(x, t, **kwargs):
            return fn(x, table[t], **kwargs)

        return wrapped

    def x0_from_eps(self, x, t, eps):
        return self.take(self.sqrt_recip_abar, t, x.shape) * x - self.take(self.sqrt_recipm1_abar, t, x.shape) * eps

    def eps_from_x0(self, x, t, x0):
        return (self.take(self.sqrt_recip_abar, t, x.shape) * x - x0) / self.take(self.sqrt_recipm1_abar, t, x.shape)

    def posterior_mean(self, x0, x, t):
        return self.take(self.coef_x0, t, x.shape) * x0 + self.take(self.coef_xt, t, x.shape) * x

    def p_mean_variance(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None):
        channels = x.shape[1]
        out = self.original(model)(x, t, **(model_kwargs or {}))
        assert out.shape == (x.shape[0], 2 * channels, *x.shape[2:])
        eps, var_values = out[:, :channels], out[:, channels:]
        low = self.take(self.post_log_var, t, x.shape)
        high = self.take(self.log_betas, t, x.shape)
        frac = (var_values + 1) / 2
        log_variance = frac * high + (1 - frac) * low
        x0 = self.x0_from_eps(x, t, eps)
        if denoised_fn is not None:
            x0 = denoised_fn(x0)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        return {
            "mean": self.posterior_mean(x0, x, t),
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": x0,
        }

    def condition_mean(self, cond_fn, out, x, t, model_kwargs=None):
        grad = self.original(cond_fn)(x, t, **(model_kwargs or {}))
        return out["mean"].float() + out["variance"] * grad.float()

    def condition_score(self, cond_fn, out, x, t, model_kwargs=None):
        abar = self.take(self.abar, t, x.shape)
        eps = self.eps_from_x0(x, t, out["pred_xstart"])
        eps = eps - (1 - abar).sqrt() * self.original(cond_fn)(x, t, **(model_kwargs or {}))
        new = dict(out)
        new["pred_xstart"] = self.x0_from_eps(x, t, eps)
        new["mean"] = self.posterior_mean(new["pred_xstart"], x, t)
        return new

    def p_sample(self, model, x, t, noise_fn, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None):
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = noise_fn(x.shape)
        keep = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t, model_kwargs)
        return out["mean"] + keep * torch.exp(0.5 * out["log_variance"]) * noise

    def ddim_sample(
        self, model, x, t, noise_fn, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None, eta=0.0
    ):
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        eps = self.eps_from_x0(x, t, out["pred_xstart"])
        abar = self.take(self.abar, t, x.shape)
        abar_prev = self.take(self.abar_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        noise = noise_fn(x.shape)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        keep = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        return mean + keep * sigma * noise

    def loop(self, sampler: str, model, x_T: Tensor, noise_fn: NoiseFn, eta: float = 0.0, **kwargs) -> Tensor:
        """p_sample_loop ('ddpm') or ddim_sample_loop ('ddim') from x_T, with explicit noise."""
        x = x_T
        for i in reversed(range(self.num_timesteps)):
            t = torch.tensor([i] * x.shape[0])
            with torch.no_grad():
                if sampler == "ddpm":
                    assert eta == 0.0
                    x = self.p_sample(model, x, t, noise_fn, **kwargs)
                elif sampler == "ddim":
                    x = self.ddim_sample(model, x, t, noise_fn, eta=eta, **kwargs)
                else:
                    raise ValueError(sampler)
        return x


# ----------------------------------------------------------------------------- noise


class PerImageNoise:
    """Noise for a batch from one CPU generator per image (seed k for image k): each draw takes
    one standard-normal tensor of the per-image shape from every generator, in batch order."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(self, per_image_shape) -> Tensor:
        return torch.stack([torch.randn(tuple(per_image_shape), generator=g) for g in self.generators])


def doubled_noise_fn(noise: PerImageNoise, filler_seed: int) -> NoiseFn:
    """Noise for a batch of 2B rows where only the first B matter: [noise; unrelated filler]."""
    filler = torch.Generator().manual_seed(filler_seed)

    def fn(shape) -> Tensor:
        first = noise.draw(shape[1:])
        rest = torch.randn((shape[0] - first.shape[0], *shape[1:]), generator=filler)
        return torch.cat([first, rest])

    return fn


def plain_noise_fn(noise: PerImageNoise) -> NoiseFn:
    def fn(shape) -> Tensor:
        out = noise.draw(shape[1:])
        assert out.shape[0] == shape[0]
        return out

    return fn


# ----------------------------------------------------------------------------- the notebooks' wiring


def unet_model(state, cfg) -> Callable:
    """model(x, t_original, tokens, mask, low_res=None, inpaint_image=None, inpaint_mask=None)."""

    def model(x, t, tokens=None, mask=None, low_res=None, inpaint_image=None, inpaint_mask=None):
        return networks.unet_forward(state, cfg, x, t, tokens, mask, low_res, inpaint_image, inpaint_mask)

    return model


def classifier_free_model_fn(model, guidance_scale: float) -> Callable:
    """text2im.ipynb / inpaint.ipynb's model_fn over a [cond; uncond] batch."""

    def model_fn(x_t, ts, **kwargs):
        half = x_t[: len(x_t) // 2]
        combined = torch.cat([half, half], dim=0)
        out = model(combined, ts, **kwargs)
        eps, rest = out[:, :3], out[:, 3:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)

    return model_fn


def inpaint_denoised_fn(inpaint_image: Tensor, inpaint_mask: Tensor) -> Callable:
    """inpaint.ipynb's denoised_fn (inpaint_image is already source * mask there)."""
    return lambda x_start: x_start * (1 - inpaint_mask) + inpaint_image * inpaint_mask


def clip_text_embeddings(text_state, clip_cfg, tokens: Tensor, lengths: Tensor) -> Tensor:
    with torch.no_grad():
        return networks.normalize(networks.clip_text_forward(text_state, clip_cfg, tokens, lengths))


def clip_cond_fn(image_state, clip_cfg, z_t: Tensor, grad_scale: float) -> Callable:
    """CLIPModel.cond_fn(prompts, grad_scale): the similarity gradient times grad_scale."""

    def cond_fn(x, t, **kwargs):
        return networks.clip_guidance_grad(image_state, clip_cfg, x, t, z_t, clip_cfg.logit_scale) * grad_scale

    return cond_fn


def quantize_low_res(samples: Tensor) -> Tensor:
    """The notebooks' low_res from the base stage's samples."""
    return ((samples + 1) * 127.5).round() / 127.5 - 1


def run_stage(
    diffusion: Diffusion,
    model,
    sampler: str,
    x_T: Tensor,
    noise_fn: NoiseFn,
    *,
    tokens: Tensor,
    mask: Tensor,
    uncond_tokens: Tensor | None = None,
    uncond_mask: Tensor | None = None,
    guidance_scale: float | None = None,
    low_res: Tensor | None = None,
    source: Tensor | None = None,
    keep_mask: Tensor | None = None,
    cond_fn: Callable | None = None,
    eta: float = 0.0,
) -> Tensor:
    """One notebook stage for a batch of B prompts; returns the B samples (the first half when
    classifier-free guidance doubles the batch, in which case x_T and noise_fn cover 2B rows)."""
    batch = tokens.shape[0]
    kwargs = dict(tokens=tokens, mask=mask)
    fn = model
    rows = batch
    if guidance_scale is not None:
        rows = 2 * batch
        kwargs = dict(tokens=torch.cat([tokens, uncond_tokens]), mask=torch.cat([mask, uncond_mask]))
        fn = classifier_free_model_fn(model, guidance_scale)
    assert x_T.shape[0] == rows
    repeat = rows // batch

    def rows_of(image: Tensor) -> Tensor:
        return image.repeat(repeat, 1, 1, 1)

    denoised_fn = None
    if source is not None:
        kwargs["inpaint_image"] = rows_of(source * keep_mask)
        kwargs["inpaint_mask"] = rows_of(keep_mask)
        denoised_fn = inpaint_denoised_fn(kwargs["inpaint_image"], kwargs["inpaint_mask"])
    if low_res is not None:
        kwargs["low_res"] = rows_of(low_res)
    out = diffusion.loop(
        sampler, fn, x_T, noise_fn, eta=eta, clip_denoised=True, denoised_fn=denoised_fn, cond_fn=cond_fn,
        model_kwargs=kwargs,
    )
    return out[:batch]


__all__ = [
    "Diffusion",
    "PerImageNoise",
    "named_betas",
    "respaced_timesteps",
    "doubled_noise_fn",
    "plain_noise_fn",
    "unet_model",
    "classifier_free_model_fn",
    "inpaint_denoised_fn",
    "clip_text_embeddings",
    "clip_cond_fn",
    "quantize_low_res",
    "run_stage",
]
