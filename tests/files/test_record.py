"""A picture's typed record (files/record.py) gives the PNG's JSON as glide has always
written it: the same keys, in the same order, the stage prefixes computed in one place."""

from __future__ import annotations

import json

from glidecli.files.record import JobRecord, MadeWith, PictureRecord, StageKey, StageRecord, StageRole, WalkRecord

MADE = MadeWith(device="cpu", dtype="fp32", glidecli_version="0.1.0")


def test_stage_prefixes():
    assert [role.key(StageKey.STEPS) for role in StageRole] == ["steps", "upsample_steps", "prior_steps", "decoder_steps", "sr_steps"]
    assert StageRole.UPSAMPLE.key(StageKey.TEMPERATURE) == "upsample_temp"


def test_a_generated_picture_records_its_keys_in_order():
    record = PictureRecord(
        job=JobRecord(prompt="a cat", negative_prompt="", seed=3, index=1, walk=WalkRecord(seed=4, angle=0.5)),
        size=(96, 64),
        settings=(
            StageRecord(role=StageRole.BASE, model="base", sampler="ddim", steps="20", eta=0.5, model_hash="ab", scale=3.0),
            StageRecord(role=StageRole.UPSAMPLE, model="up", sampler="ddpm", steps="10", threshold=0.99, temperature=0.997),
            {"strength": 0.6},
        ),
        made_with=MADE,
        extras={"command": "generate"},
        pick={"rank_score": 0.3},
    )
    assert list(record.as_meta().items()) == [
        ("prompt", "a cat"), ("seed", 3), ("index", 1), ("walk_seed", 4), ("walk_angle", 0.5), ("size", [96, 64]),
        ("model", "base"), ("sampler", "ddim"), ("steps", "20"), ("eta", 0.5), ("model_hash", "ab"), ("scale", 3.0),
        ("upsample_model", "up"), ("upsample_sampler", "ddpm"), ("upsample_steps", "10"), ("upsample_threshold", 0.99),
        ("upsample_temp", 0.997), ("strength", 0.6), ("device", "cpu"), ("dtype", "fp32"), ("glidecli_version", "0.1.0"),
        ("command", "generate"), ("rank_score", 0.3),
    ]


def test_a_blend_records_its_mix_last_and_a_repeated_key_keeps_its_place():
    record = PictureRecord(
        job=JobRecord(prompt="", seed=1, index=0, mix=0.25),
        size=64,
        settings=({"image_a": "a.png"},),
        made_with=MADE,
        extras={"command": "blend", "image_a": "b.png"},
        pick={"candidate": 2},
    )
    meta = record.as_meta()
    assert list(meta)[-2:] == ["candidate", "mix"] and meta["mix"] == 0.25
    assert list(meta).index("image_a") == 4 and meta["image_a"] == "b.png"
    assert json.loads(json.dumps(meta)) == meta


def test_a_text_diff_records_its_amount_last():
    record = PictureRecord(
        job=JobRecord(prompt="", seed=1, index=2, amount=0.75),
        size=64,
        settings=({"image": "a.png", "toward": "a green circle", "away": "a red circle", "keep_layout": True, "layout_refine": 3},),
        made_with=MADE,
        extras={"command": "vary"},
    )
    meta = record.as_meta()
    assert list(meta)[-1] == "amount" and meta["amount"] == 0.75 and "mix" not in meta
    assert (meta["toward"], meta["away"], meta["keep_layout"]) == ("a green circle", "a red circle", True)
