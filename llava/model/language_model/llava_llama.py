"""LLaVA on a Llama-family LLM (Llama, Vicuna, SmolLM2, ...)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, LlamaModel
from transformers.generation.utils import GenerateOutput
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from llava.constants import IGNORE_INDEX
from llava.model.language_model.configuration_llava import LlavaConfig
from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel

# transformers 5.24 renamed the key/value cache argument and output field from ``past_key_values``
# to ``cache`` (the old name warns, and goes in 5.40). Both names are accepted here; the installed
# version's own name is the one passed on and set on outputs.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def _one_cache(past_key_values, kwargs: dict):
    """The cache given as ``past_key_values`` or as ``cache`` (popped from ``kwargs``), not both."""
    cache = kwargs.pop("cache", None)
    if past_key_values is not None and cache is not None:
        raise ValueError("pass the key/value cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    config_class = LlavaConfig

    def __init__(self, config: LlavaConfig):
        super().__init__(config)


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaConfig

    def __init__(self, config: LlavaConfig):
        # Skip LlamaForCausalLM.__init__, which would build a plain LlamaModel first.
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: torch.FloatTensor | None = None,
        image_sizes: list[list[int]] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Causal-LM forward; ``images`` are spliced at each ``IMAGE_TOKEN_INDEX`` of ``input_ids``.

        In training mode with ``labels``, the LM head runs only at positions whose next token has a
        label (see :meth:`_labelled_forward`): same loss and gradients, ``logits`` is ``None``.
        The key/value cache may be passed as ``past_key_values`` (upstream's name) or ``cache``
        (transformers >= 5.24).
        """
        past_key_values = _one_cache(past_key_values, kwargs)
        if inputs_embeds is None:
            input_ids, position_ids, attention_mask, past_key_values, inputs_embeds, labels = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
                )
            )
        if labels is not None and self.training and isinstance(logits_to_keep, int) and logits_to_keep == 0:
            return self._labelled_forward(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                          labels, use_cache, **kwargs)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{CACHE_ARG: past_key_values},
            **kwargs,
        )

    def _labelled_forward(self, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, labels,
                          use_cache, **kwargs) -> CausalLMOutputWithPast:
        """The training forward without the LM head's avoidable work.

        The loss reads the logits only where the next token has a label. Visual tokens, prompts
        and padding have none, so the full forward spends most of its vocabulary projection (and
        the float32 softmax over it) on rows the loss ignores: 576 of ~600 rows per sample in a
        LLaVA-1.5 stage 1. Here the last hidden states are gathered at the labelled positions
        first, and only those rows go through ``lm_head`` and the same ``loss_function``.
        """
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, **{CACHE_ARG: past_key_values},
                             **kwargs)
        shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        keep = shift_labels != IGNORE_INDEX
        logits = self.lm_head(outputs.last_hidden_state[keep])  # (labelled positions, vocab)
        loss = self.loss_function(logits=logits, labels=None, shift_labels=shift_labels[keep],
                                  vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=None, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_ARG: getattr(outputs, CACHE_ARG)})

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: list[list[int]] | None = None,
        **kwargs,
    ) -> GenerateOutput | torch.LongTensor:
        """Upstream's signature: ``generate(input_ids, images=..., image_sizes=...)``.

        Returns only the new tokens (generation runs from ``inputs_embeds``), as upstream does.
        A padded batch is re-padded on the left after the splice, whatever side training used, so
        every row's prompt ends where its new tokens start and a batch answers as its rows alone.
        """
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("pass input_ids (with -200 image tokens) and images, not inputs_embeds")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if images is not None:
            _, _, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, image_sizes, padding_side="left"
            )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)
        # Positions come from the attention mask inside generate, so left padding works.
        return super().generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
