"""LLaVA-1.5 with the Delta-LLaVA projector.

Upstream exposes the model class at the package root; importing it here is explicit, so an
import failure surfaces as the real error instead of being swallowed.
"""

from llava.model import LlavaConfig, LlavaLlamaForCausalLM

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM"]
