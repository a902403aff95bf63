"""LoRA adapters (nets/lora.py, files/lora_file.py) against Hugging Face PEFT itself: PEFT's
adapters load here and give PEFT's outputs; glidecli's load into PEFT and give glidecli's;
weight 0 is the base network bit for bit, weight 1 the merged weights, two adapters their sum."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from glidecli.files.lora_file import AdapterError, read_adapter, write_adapter
from glidecli.nets.lora import (
    ATTENTION_TARGETS,
    Adapter,
    AdapterMismatch,
    LoraPair,
    apply_adapters,
    lora_layers,
    merged_delta,
    remove_adapters,
)
from helpers.tiny import tiny_network

CONVS = ("in_layers.2", "out_layers.3")


def _inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    tokens = torch.randint(0, 64, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    return x, torch.tensor([10, 600]), tokens, mask


def _out(network: torch.nn.Module) -> torch.Tensor:
    x, t, tokens, mask = _inputs()
    with torch.no_grad():
        return network(x, t, network.encode_text(tokens, mask))


def _random_adapter(network: torch.nn.Module, rank: int, seed: int, targets=("qkv", "proj_out", "encoder_kv")) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for path, module in network.named_modules():
        if any(path.endswith("." + t) for t in targets):
            out_ch, in_ch, *kernel = module.weight.shape
            down = torch.randn(rank, in_ch, *kernel, generator=g) * 0.2
            up = torch.randn(out_ch, rank, *(1 for _ in kernel), generator=g) * 0.2
            pairs[path] = LoraPair(down, up, scaling=2.0 / rank)
    return Adapter(pairs)


def test_weight_zero_and_removal_give_the_base_network_bit_for_bit():
    network = tiny_network("base")
    base = _out(network)
    adapter = _random_adapter(network, 4, seed=1)
    apply_adapters(network, [(adapter, 0.0)])
    assert not list(lora_layers(network))
    assert torch.equal(_out(network), base)
    apply_adapters(network, [(adapter, 1.0)])
    assert list(lora_layers(network))
    assert not torch.allclose(_out(network), base, atol=1e-3)
    remove_adapters(network)
    assert not list(lora_layers(network))
    assert torch.equal(_out(network), base)
    # The cached weights were never touched.
    assert torch.equal(_out(tiny_network("base")), base)


def _merged(network: torch.nn.Module, adapters: list[tuple[Adapter, float]]) -> torch.nn.Module:
    merged = copy.deepcopy(network)
    with torch.no_grad():
        for adapter, weight in adapters:
            for path, pair in adapter.pairs.items():
                layer = merged.get_submodule(path)
                layer.weight += weight * merged_delta(layer, pair)
    return merged


def test_weight_one_equals_merged_weights_and_two_adapters_stack_as_their_sum():
    network = tiny_network("base")
    first = _random_adapter(network, 4, seed=1)
    second = _random_adapter(network, 2, seed=2, targets=("qkv", "c_qkv", *CONVS))
    merged_one = _out(_merged(network, [(first, 1.0)]))
    apply_adapters(network, [(first, 1.0)])
    assert torch.allclose(_out(network), merged_one, atol=1e-5)
    stack = [(first, 0.7), (second, -0.4)]
    apply_adapters(network, stack)
    merged_stack = _out(_merged(network_base := tiny_network("base"), stack))
    assert torch.allclose(_out(network), merged_stack, atol=1e-5)
    assert not torch.allclose(merged_stack, _out(network_base), atol=1e-3)


def test_an_adapter_for_other_shapes_is_refused_and_leaves_the_network_as_loaded():
    network = tiny_network("base")
    other = _random_adapter(tiny_network("base", model_channels=64, num_head_channels=32), 4, seed=1)
    base = _out(network)
    with pytest.raises(AdapterMismatch, match="shapes"):
        apply_adapters(network, [(_random_adapter(network, 4, seed=3), 1.0), (other, 1.0)])
    assert not list(lora_layers(network))
    assert torch.equal(_out(network), base)
    with pytest.raises(AdapterMismatch, match="no layer"):
        apply_adapters(network, [(Adapter({"nowhere.qkv": next(iter(other.pairs.values()))}), 1.0)])


# --- against PEFT -------------------------------------------------------------------------------


def test_an_adapter_made_by_peft_gives_peft_outputs(tmp_path: Path):
    peft = pytest.importorskip("peft")
    network = tiny_network("base")
    torch.manual_seed(5)
    config = peft.LoraConfig(r=4, lora_alpha=6, target_modules=[*ATTENTION_TARGETS, *CONVS], init_lora_weights=False, rank_pattern={"c_qkv": 2}, alpha_pattern={"proj_out": 3})
    wrapped = peft.get_peft_model(copy.deepcopy(network), config)
    lora_b = [p for name, p in wrapped.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # random, nonzero B: the update is real
    expected = _out(wrapped.base_model.model)
    wrapped.save_pretrained(str(tmp_path / "peft"))

    found = read_adapter(tmp_path / "peft")
    adapter = found.load()
    assert set(adapter.pairs) == {n.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for n in found.shapes}
    assert any(p.rank == 2 for p in adapter.pairs.values())
    apply_adapters(network, [(adapter, 1.0)])
    assert torch.allclose(_out(network), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, _out(tiny_network("base")), atol=1e-3)


def test_an_adapter_written_by_glidecli_loads_into_peft_and_gives_glidecli_outputs(tmp_path: Path):
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    network = tiny_network("base")
    adapter = _random_adapter(network, 4, seed=7, targets=(*ATTENTION_TARGETS, "out_layers.3"))
    state = {}
    for path, pair in adapter.pairs.items():
        state[f"base_model.model.{path}.lora_A.weight"] = pair.down
        state[f"base_model.model.{path}.lora_B.weight"] = pair.up
    config = {"r": 4, "lora_alpha": 8, "target_modules": [*ATTENTION_TARGETS, "out_layers.3"]}
    folder = write_adapter(tmp_path / "ours", state, config, base_model="tiny", base_kind="base", base_sha256="ab" * 32)

    found = read_adapter(folder)
    assert (found.base_model, found.base_kind, found.base_sha256) == ("tiny", "base", "ab" * 32)
    apply_adapters(network, [(found.load(), 1.0)])
    ours = _out(network)

    peft_config = peft.LoraConfig.from_pretrained(str(folder))
    assert peft_config.r == 4 and peft_config.lora_alpha == 8
    wrapped = peft.get_peft_model(tiny_network("base"), peft_config)
    result = peft.set_peft_model_state_dict(wrapped, load_file(str(folder / "adapter_model.safetensors")))
    assert not [k for k in result.unexpected_keys if "lora" in k]
    assert torch.allclose(_out(wrapped.base_model.model), ours, atol=1e-6, rtol=0)
    # PEFT's own loader of a saved adapter agrees too.
    loaded = peft.PeftModel.from_pretrained(tiny_network("base"), str(folder))
    assert torch.allclose(_out(loaded.base_model.model), ours, atol=1e-6, rtol=0)


# --- bad files ------------------------------------------------------------------------------------


def _valid(tmp_path: Path) -> Path:
    network = tiny_network("base")
    adapter = _random_adapter(network, 2, seed=1, targets=("qkv",))
    state = {f"base_model.model.{p}.lora_{half}.weight": t for p, pair in adapter.pairs.items() for half, t in (("A", pair.down), ("B", pair.up))}
    return write_adapter(tmp_path / "good", state, {"r": 2}, base_model="tiny", base_kind="base", base_sha256=None)


def test_bad_adapter_files_are_refused_in_one_line(tmp_path: Path):
    good = _valid(tmp_path)
    pickle = tmp_path / "adapter_model.bin"
    pickle.write_bytes(b"not read")
    cases = {tmp_path / "absent": "no such adapter", pickle: "pickled"}
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text(json.dumps({"r": 2}))
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    cases[corrupt] = "not a readable safetensors"
    rank0 = tmp_path / "rank0"
    rank0.mkdir()
    (rank0 / "adapter_config.json").write_text(json.dumps({"r": 0}))
    (rank0 / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes())
    cases[rank0] = "rank"
    only_pickle = tmp_path / "only-pickle"
    only_pickle.mkdir()
    (only_pickle / "adapter_model.bin").write_bytes(b"x")
    cases[only_pickle] = "pickled"
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(json.dumps({"r": 2, "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes((good / "adapter_model.safetensors").read_bytes())
    cases[dora] = "DoRA"
    for path, words in cases.items():
        with pytest.raises(AdapterError, match=words) as caught:
            read_adapter(path)
        assert "\n" not in str(caught.value)
    assert read_adapter(good / "adapter_model.safetensors").rank == 2


def test_peft_adapters_on_unclips_prior_and_super_resolution_pair(tmp_path: Path):
    """Linear layers (the prior's transformer) and a network of two U-Nets (unCLIP's SR pair)."""
    peft = pytest.importorskip("peft")
    from glidecli.nets.prior import ClipText
    from helpers.tiny_unclip import CLIP_DIM, TEXT_CTX, tiny_unclip_network

    prior = tiny_unclip_network("unclip-prior")
    g = torch.Generator().manual_seed(3)
    text = ClipText(torch.randn(2, CLIP_DIM, generator=g), torch.randn(2, TEXT_CTX, CLIP_DIM, generator=g), torch.ones(2, TEXT_CTX, dtype=torch.bool))
    x, t = torch.randn(2, CLIP_DIM, generator=g), torch.tensor([3, 700])
    torch.manual_seed(1)
    wrapped = peft.get_peft_model(copy.deepcopy(prior), peft.LoraConfig(r=3, lora_alpha=5, target_modules=["c_qkv", "c_proj", "out_proj"], init_lora_weights=False))
    with torch.no_grad():
        expected = wrapped.base_model.model(x, t, text)
    wrapped.save_pretrained(str(tmp_path / "prior"))
    apply_adapters(prior, [(read_adapter(tmp_path / "prior").load(), 1.0)])
    with torch.no_grad():
        assert torch.allclose(prior(x, t, text), expected, atol=1e-6, rtol=0)
        assert prior.dtype == torch.float32  # read through the adapted out_proj
    pair = tiny_unclip_network("unclip-sr")
    adapter = _random_adapter(pair, 2, seed=4, targets=CONVS)
    assert any(path.startswith("model_last_step.") for path in adapter.pairs)
    apply_adapters(pair, [(adapter, 1.0)])
    assert len(list(lora_layers(pair))) == len(adapter.pairs)
    remove_adapters(pair)
    assert not list(lora_layers(pair))
