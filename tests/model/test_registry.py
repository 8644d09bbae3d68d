"""The projector registry: exact names, the mlp{N}x_gelu family, clear errors, token counts."""

import pytest
import torch
from torch import nn

from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.builder import (
    Projector,
    build_vision_projector,
    known_projectors,
    register_projector,
)
from llava.model import LlavaConfig


def _config(name, **kw):
    return LlavaConfig(hidden_size=64, mm_hidden_size=32, mm_projector_type=name, **kw)


@pytest.mark.parametrize("name,depth", [("mlp1x_gelu", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_mlp_family(name, depth):
    proj = build_vision_projector(_config(name))
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert len(linears) == depth and linears[0].in_features == 32
    assert proj(torch.randn(2, 16, 32)).shape == (2, 16, 64)
    assert proj(VisionFeatures(torch.randn(2, 16, 32), None, (4, 4))).shape == (2, 16, 64)
    assert proj.num_tokens((24, 24)) == 576 and proj.num_tokens((4, 6)) == 24


def test_linear_and_identity():
    linear = build_vision_projector(_config("linear"))
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (32, 64)
    assert list(linear.state_dict()) == ["weight", "bias"]  # upstream's bare nn.Linear: mm_projector.weight
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(linear(x), x @ linear.weight.T + linear.bias)
    assert linear(VisionFeatures(x, None, (4, 4))).shape == (2, 16, 64) and linear.num_tokens((24, 24)) == 576
    ident = build_vision_projector(LlavaConfig(hidden_size=32, mm_hidden_size=32, mm_projector_type="identity"))
    x = torch.randn(1, 4, 32)
    assert ident(x) is x
    with pytest.raises(ValueError, match="mm_hidden_size == hidden_size"):
        build_vision_projector(_config("identity"))


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"Unknown mm_projector_type 'mlp2x_relu'; known: \[.*'linear'.*\]"):
        build_vision_projector(_config("mlp2x_relu"))
    # no substring matching: a name that merely contains a known one is unknown
    with pytest.raises(ValueError, match="Unknown mm_projector_type 'linear_v2'"):
        build_vision_projector(_config("linear_v2"))
    assert "mlp{N}x_gelu" in known_projectors()


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        @register_projector("linear")
        class Again(Projector):
            pass


@pytest.mark.parametrize("names", [("weight", "bias"), ("0.weight", "0.bias")])
def test_linear_projector_file_loads_upstream_and_earlier_names(names):
    """An upstream ``linear`` stage-1 file (``model.mm_projector.weight``) loads, and so does one
    this project wrote before ``linear`` became a bare nn.Linear (``model.mm_projector.0.weight``)."""
    from llava.model.weights import load_projector_weights

    weight, bias = torch.randn(64, 32), torch.randn(64)
    state = {f"model.mm_projector.{names[0]}": weight, f"model.mm_projector.{names[1]}": bias}
    linear = build_vision_projector(_config("linear"))
    load_projector_weights(linear, state, "linear", source="mm_projector.bin")
    assert torch.equal(linear.weight, weight) and torch.equal(linear.bias, bias)
    with pytest.raises(ValueError, match="in mm_projector.bin do not fit mm_projector_type 'linear'.*another --mm_projector_type"):
        load_projector_weights(linear, {"model.mm_projector.2.weight": weight}, "linear", source="mm_projector.bin")


def test_delta_builds_from_a_config_without_its_keys():
    """Upstream code passes a plain config to build_vision_projector; a released-style one has only
    ``scale_factor``. The missing mm_delta_* settings take LlavaConfig's defaults."""
    from types import SimpleNamespace

    from llava.model.multimodal_projector.delta import DeltaProjector

    plain = SimpleNamespace(mm_projector_type="delta", mm_hidden_size=64, hidden_size=96, scale_factor=2)
    proj = build_vision_projector(plain)
    reference = build_vision_projector(LlavaConfig(hidden_size=96, mm_hidden_size=64, mm_projector_type="delta"))
    assert DeltaProjector.vision_layers(plain) == (12, 16, 22, 23)
    assert {k: v.shape for k, v in proj.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert proj.num_tokens((24, 24)) == 144


@pytest.mark.parametrize("projector,tokens", [("mlp2x_gelu", 16), ("delta", 4)])
def test_upstream_composition_of_tower_and_projector(tower_dir, llama_tokenizer, projector, tokens):
    """``build_vision_projector(cfg)(build_vision_tower(cfg)(images))``, as upstream code composes
    them: the tower computes the extra layers the config's projector reads (delta's levels)."""
    from llava.model.multimodal_encoder.builder import build_vision_tower
    from tests.conftest import tiny_llava_config

    config = tiny_llava_config(tower_dir, llama_tokenizer, projector=projector, mm_delta_depth=0)
    tower = build_vision_tower(config)
    features = tower(torch.randn(2, 3, 56, 56))
    assert build_vision_projector(config)(features).shape == (2, tokens, config.hidden_size)
    assert build_vision_tower(config, extra_layers=()).extra_layers == ()


def test_build_vision_tower_from_a_namespace_with_only_the_tower(tower_dir):
    """Upstream code passes its own args; the select layer and feature default to LLaVA-1.5's."""
    from types import SimpleNamespace

    from llava.model.multimodal_encoder.builder import build_vision_tower

    tower = build_vision_tower(SimpleNamespace(mm_vision_tower=str(tower_dir)))
    explicit = build_vision_tower(SimpleNamespace(mm_vision_tower=str(tower_dir), mm_vision_select_layer=-2,
                                                  mm_vision_select_feature="patch"))
    assert (tower.select_layer, tower.select_feature) == (explicit.select_layer, explicit.select_feature)
    images = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(tower(images).patch, explicit(images).patch)
