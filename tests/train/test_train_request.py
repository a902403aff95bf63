"""`glide train`'s requests (glidecli.request.train): the family each set of flags makes, the
checks that had no test of their own, and the command line built from the requests' options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from glidecli.request.train import (
    FAMILIES,
    ClipTrainRequest,
    GlideTrainRequest,
    SuperResTrainRequest,
    TrainRequest,
    UnclipTrainRequest,
)
from glidecli.request.train_start import command_options, train_request
from glidecli.request.values import RequestError
from glidecli.train.vocabulary import TrainKind
from helpers.glide_cli import assert_one_error_line, invoker

WHERE = {"data": Path("data"), "out": Path("out")}


def flags(**given):
    """Every flag at its command-line default, with `given` over them."""
    return {**{name: default for name, _, default in command_options() if default is not dataclasses.MISSING}, **WHERE, **given}


@pytest.mark.parametrize(
    "kind, family",
    [(None, GlideTrainRequest), ("upsample-inpaint", GlideTrainRequest), ("clip", ClipTrainRequest),
     ("unclip-prior", UnclipTrainRequest), ("unclip-decoder", UnclipTrainRequest), ("unclip-sr", SuperResTrainRequest)],
)
def test_the_kind_picks_the_family(kind, family):
    extra = {"clip": "c"} if family is UnclipTrainRequest else {"decoder": "d"} if family is SuperResTrainRequest else {}
    request = train_request(flags(model="m", preset="micro", kind=kind, **extra))
    assert type(request) is family
    assert request.source()[0].kind == (kind or TrainKind.BASE)


def test_resume_alone_is_the_bare_request():
    request = train_request(flags(resume=True, tokenizer_vocab=600))  # a value it always has: ignored, as before
    assert type(request) is TrainRequest and request.resume


@pytest.mark.parametrize(
    "given, message",
    [
        ({"kind": "base", "clip": "c"}, "--clip goes with --kind unclip-prior or unclip-decoder"),
        ({"kind": "clip", "clip": "c"}, "--clip goes with --kind unclip-prior or unclip-decoder"),
        ({"name": "a b"}, "Invalid value for '--name': 'a b': use letters, digits, '-', '_' and '.'"),
        ({"model": "m/x", "name": None}, "Invalid value for '--name': 'm/x': use letters, digits, '-', '_' and '.'"),
        ({"resume": True, "clip": "c", "kind": None}, "--resume continues the run in --out; leave out --model, --preset, --name, --kind, --prediction, --clip, --decoder"
         " and the text options (--no-pooled-text, --text-layers, --causal-text, --hide-text-padding)"),
        ({"kind": "unclip-decoder"}, "--kind unclip-decoder needs --clip NAME: the CLIP (an openclip entry of --weights) it learns from"),
        ({"kind": "unclip-sr"}, "--kind unclip-sr needs --decoder NAME: the unCLIP decoder (an unclip-decoder entry of --weights) it enlarges"),
        ({"kind": "unclip-prior", "clip": "c", "decoder": "d"}, "--decoder goes with --kind unclip-sr"),
        ({"lr": 0.0}, "learning rate must be a positive finite number, got 0.0"),
        ({"kind": "nope"}, "Invalid value for '--kind': 'nope' is not one of 'base', 'upsample', 'base-inpaint', 'upsample-inpaint', 'clip', 'unclip-prior', 'unclip-decoder', 'unclip-sr'"),
        ({"colour": "red"}, "glide train has no option 'colour'"),
    ],
)
def test_refusals_are_one_line(given, message):
    with pytest.raises(RequestError) as refused:
        train_request(flags(**{"model": "m", "preset": "micro", **given}))
    assert str(refused.value) == message


def test_python_callers_meet_the_same_checks():
    with pytest.raises(RequestError, match="^missing --model NAME"):
        TrainRequest(**WHERE)  # neither a run to continue nor a model
    with pytest.raises(RequestError, match="^--resume continues the run"):
        GlideTrainRequest(**WHERE, model="m", resume=True)
    with pytest.raises(RequestError, match="^caption dropout must be in"):
        ClipTrainRequest(**WHERE, model="c", preset="micro", caption_dropout=2.0)


def test_the_decoder_drops_half_of_the_captions_unless_told():
    decoder = UnclipTrainRequest(**WHERE, model="d", preset="micro", kind=TrainKind.UNCLIP_DECODER, clip="c")
    prior = dataclasses.replace(decoder, kind=TrainKind.UNCLIP_PRIOR)
    assert (decoder.hyper("fp32").caption_dropout, prior.hyper("fp32").caption_dropout) == (0.5, 0.2)
    told = dataclasses.replace(decoder, caption_dropout=0.1, dtype="bf16")
    assert told.hyper("bf16").caption_dropout == 0.1 and told.hyper_given() == {"caption_dropout": 0.1, "amp": "bf16"}


def test_the_command_line_has_every_option_of_every_family_once():
    listed = command_options()
    names = [name for name, _, _ in listed]
    assert len(names) == len(set(names))
    every = {item.name for family in FAMILIES for item in dataclasses.fields(family)}
    assert set(names) == every
    defaults = {name: default for name, _, default in listed}
    assert defaults["data"] is dataclasses.MISSING and defaults["out"] is dataclasses.MISSING
    assert (defaults["kind"], defaults["clip"], defaults["resume"], defaults["tokenizer_vocab"], defaults["steps"]) == (None, None, False, 512, 1000)


@pytest.fixture
def glide(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GLIDE_WEIGHTS", raising=False)
    return invoker(capsys, monkeypatch)


def test_the_command_line_shows_the_requests_refusals(glide, shapes, tmp_path):
    base = ["train", shapes, "--preset", "micro", "--model", "m", "--device", "cpu", "--out", tmp_path / "o"]
    assert_one_error_line(glide(*base, "--name", "a b"), 2, "Invalid value for '--name': 'a b': use letters, digits, '-', '_' and '.'")
    assert_one_error_line(glide(*base, "--clip", "c"), 2, "--clip goes with --kind unclip-prior or unclip-decoder (see 'glide train --help')")
    assert not (tmp_path / "o").exists()
