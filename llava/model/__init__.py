"""LLaVA models. Importing this package registers ``llava_llama`` with transformers' Auto classes."""

from transformers import AutoConfig, AutoModelForCausalLM

from llava.model.language_model.configuration_llava import LlavaConfig
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM, LlavaLlamaModel

AutoConfig.register("llava_llama", LlavaConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM, exist_ok=True)

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM", "LlavaLlamaModel"]
