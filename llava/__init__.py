"""LLaVA-1.5 with the Delta-LLaVA projector.

Upstream exposes the model class at the package root. It is imported on first access (PEP 562),
so light modules (scorers, converters) start without torch; the import itself is plain, so a
failure surfaces as the real error instead of being swallowed.
"""

__all__ = ["LlavaConfig", "LlavaLlamaForCausalLM"]


def __getattr__(name: str):
    if name in __all__:
        from llava import model

        return getattr(model, name)
    raise AttributeError(f"module 'llava' has no attribute {name!r}")
