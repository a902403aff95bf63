"""Best of N: candidates' seeds, the pick, the noise the winner carries on, and the two
judges (an open_clip model checked against open_clip's own preprocessing of a picture
file; GLIDE's noised CLIP at t=0 checked against its encoders called directly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glidecli.diffusion.noise import MAX_SEED, ImageNoise
from glidecli.files.images import load_image
from glidecli.render.engine import Job
from glidecli.render.pipeline import quantize_to_8bit
from glidecli.render.ranking import (
    CANDIDATE_STRIDE,
    BestOf,
    NoisedClipRanker,
    OpenClipRanker,
    candidate_seed,
    pick_best,
)
from helpers.tiny import tiny_network, tiny_open_clip


def test_candidate_seeds_derive_from_the_picture_seed():
    assert candidate_seed(42, 0) == 42
    assert candidate_seed(42, 1) == 42 + CANDIDATE_STRIDE
    assert candidate_seed(MAX_SEED, 1) == (MAX_SEED + CANDIDATE_STRIDE) % 2**32
    # Pictures 0..99 of a run, 8 candidates each: 800 different seeds.
    assert len({candidate_seed(s, k) for s in range(100) for k in range(8)}) == 800


def test_combined_noise_continues_each_generator():
    first, second = ImageNoise([1, 2]), ImageNoise([3])
    for noise in (first, second):
        noise.initial((4,))
    combined = ImageNoise.combine([(second, 0), (first, 1)])
    assert combined.seeds == (3, 2)
    drawn = combined(torch.zeros(2, 4))
    fresh = ImageNoise([3, 2])
    fresh.initial((4,))
    assert torch.equal(drawn, fresh(torch.zeros(2, 4)))


class RedJudge:
    """Scores a picture by its mean red level (for the pick, any function will do)."""

    name = "red"

    def __init__(self):
        self.calls = []

    def score(self, images, prompts):
        self.calls.append(len(images))
        return images[:, 0].flatten(1).mean(1) * 100


def test_pick_best_keeps_each_jobs_highest_scoring_candidate():
    def run(jobs, noise):  # a "stage" whose picture is its first noise draw
        return noise.initial((3, 4, 4)).clamp(-1, 1)

    jobs = [Job("a", 10, 0), Job("b", 11, 1)]
    judge = RedJudge()
    images, noise, picks = pick_best(jobs, BestOf(5, "red"), judge, run, batch_size=3)
    assert judge.calls == [3, 3, 3, 1]  # 10 candidates, 3 at a time
    next_draw = noise(torch.zeros(2, 2))
    for j, (job, pick) in enumerate(zip(jobs, picks)):
        assert pick.scores[pick.candidate] == max(pick.scores) and len(pick.scores) == 5
        assert pick.seed == candidate_seed(job.seed, pick.candidate)
        alone = run([job], ImageNoise([pick.seed]))[0]
        expected = float(quantize_to_8bit(alone)[0].mean() * 100)
        assert pick.scores[pick.candidate] == pytest.approx(expected, abs=1e-4)
        assert torch.equal(images[j], alone)
        # The winner's generator continues where its candidate left it.
        follow = ImageNoise([pick.seed])
        follow.initial((3, 4, 4))
        assert torch.equal(next_draw[j], follow(torch.zeros(1, 2))[0])
    meta = picks[0].meta(BestOf(5, "red"))
    assert meta["rank_score"] == max(meta["candidate_scores"]) and meta["best_of"] == 5


def test_ties_go_to_the_first_candidate():
    class Flat:
        name = "flat"

        def score(self, images, prompts):
            return torch.zeros(len(images))

    _, _, picks = pick_best([Job("a", 3, 0)], BestOf(4, "flat"), Flat(), lambda jobs, noise: noise.initial((3, 2, 2)), 4)
    assert picks[0].candidate == 0 and picks[0].seed == 3


def test_auto_batch_size_counts_the_candidates_of_best_of(monkeypatch):
    """Candidates go through the first stage together (pick_best), so `--batch-size auto`
    plans for them: one picture with 4 candidates is measured, not run one at a time."""
    from glidecli.files.manifest import load_manifest
    from glidecli.render import engine

    counted = []
    monkeypatch.setattr(engine, "auto_batch_size", lambda count, device, probes, evict=None: counted.append(count) or 4)
    session = engine.Session(load_manifest(None), device=torch.device("cuda"), dtype=torch.float16, note=lambda text: None)
    renderer = engine.Renderer(session)
    assert renderer.batch_size("auto", 1, [], best_of=BestOf(4)) == 4
    assert renderer.batch_size("auto", 3, [], best_of=BestOf(2)) == 4
    assert renderer.batch_size("auto", 1, []) == 1  # one picture, one candidate: nothing to measure
    assert counted == [4, 6]


@pytest.mark.parametrize("count", [0, 65])
def test_best_of_counts_out_of_range(count):
    with pytest.raises(ValueError, match="best-of"):
        BestOf(count)


def test_open_clip_judge_scores_as_open_clip_does_with_a_picture_file(tmp_path):
    import open_clip

    name = "GlidecliRankTinyClip"
    spec, model, preprocess = tiny_open_clip(tmp_path, name, seed=1)
    judge = OpenClipRanker(spec, torch.device("cpu"))

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    prompts = ["a red circle", "a blue square", "a green triangle"]
    paths = []
    for k, picture in enumerate(pictures):
        paths.append(tmp_path / f"{k}.png")
        picture.save(paths[-1])
    tensors = torch.cat([load_image(path, None) for path in paths])
    scores = judge.score(tensors, prompts)

    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image_z = F.normalize(model.encode_image(torch.stack([preprocess(p) for p in pictures])), dim=-1)
        text_z = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    expected = 100 * (image_z * text_z).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-3), (scores, expected)


def test_noised_clip_judge_is_the_noised_clip_at_t0():
    image_encoder, text_encoder = tiny_network("clip-image", seed=1, n_vocab=49408), tiny_network("clip-text", seed=2, n_vocab=49408)

    class FakeSession:
        device = torch.device("cpu")

        def clip(self, image_model, text_model):
            from glidecli.nets.clip import NoisedClip

            return NoisedClip(image_encoder, text_encoder)

        def clip_tokenizer(self, text_ctx):
            from glidecli.nets.tokenizer import ClipTokenizer

            return ClipTokenizer(text_ctx)

    judge = NoisedClipRanker(FakeSession())
    size = image_encoder.config.image_size
    images = torch.rand(2, 3, size, 2 * size) * 2 - 1  # wider than square: the centre is judged
    scores = judge.score(images, ["a cat", "a dog"])
    centre = images[..., size // 2 : size // 2 + size]
    tokens = FakeSession().clip_tokenizer(text_encoder.config.text_ctx).batch(["a cat", "a dog"])
    with torch.no_grad():
        image_z = judge.clip.image_embeddings(centre, torch.zeros(2, dtype=torch.long))
        text_z = judge.clip.text_embeddings(tokens.tokens, tokens.lengths)
    assert torch.allclose(scores, 100 * (image_z * text_z).sum(-1), atol=1e-4)
