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
    assert isinstance(build_vision_projector(_config("linear"))[0], nn.Linear)
    assert list(build_vision_projector(_config("linear")).state_dict()) == ["0.weight", "0.bias"]
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
