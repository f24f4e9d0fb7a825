"""Tiny random-weight models of each supported architecture, built from configs (no download).

Each comes twice with identical weights: under its default fast attention (what headmap taps) and
under eager attention with ``output_attentions`` (the reference it must match).
"""

from __future__ import annotations

import copy

import torch
import transformers

from headmap.models import LoadedModel

VOCAB = 30522  # the MiniLM tokenizer's vocabulary, reused as the tokenizer of every tiny model

_COMMON = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)
_ROPE = dict(_COMMON, num_key_value_heads=2, max_position_embeddings=256)

CONFIGS: dict[str, transformers.PretrainedConfig] = {
    "bert": transformers.BertConfig(**_COMMON, max_position_embeddings=64),
    "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "llama": transformers.LlamaConfig(**_ROPE),
    "qwen2": transformers.Qwen2Config(**_ROPE),
    # A window shorter than the test texts, so the sliding mask really cuts.
    "mistral": transformers.MistralConfig(**_ROPE, sliding_window=4),
    "gemma2": transformers.Gemma2Config(
        **_ROPE, head_dim=8, sliding_window=4, attn_logit_softcapping=5.0, query_pre_attn_scalar=8
    ),
    "gpt_neox": transformers.GPTNeoXConfig(**_COMMON, max_position_embeddings=256, rotary_pct=0.5),
    "t5": transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
    ),
    # Positions count from padding_idx + 1 when the model is given none.
    "roberta": transformers.RobertaConfig(**_COMMON, max_position_embeddings=66, pad_token_id=1),
    "xlm_roberta": transformers.XLMRobertaConfig(**_COMMON, max_position_embeddings=66, pad_token_id=1),
    # One attention module shared by all three layers.
    "albert": transformers.AlbertConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_hidden_groups=1,
        max_position_embeddings=64,
    ),
    # Disentangled attention (content-to-position and position-to-content terms), eager only.
    "deberta_v2": transformers.DebertaV2Config(
        **_COMMON,
        max_position_embeddings=64,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=16,
        position_biased_input=False,
    ),
    # ALiBi, eager only.
    "bloom": transformers.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4),
    # ALiBi, eager only, another code base.
    "mpt": transformers.MptConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=64),
    # Falcon calls torch's SDPA itself: rotary, multi-query.
    "falcon": transformers.FalconConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        alibi=False,
        new_decoder_architecture=False,
        multi_query=True,
    ),
    "bart": transformers.BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
    ),
}


#: Models with no SDPA path at all (Gemma 2's softcapping, DeBERTa's disentangled terms, Bloom's ALiBi).
EAGER_ONLY = ("gemma2", "deberta_v2", "bloom", "mpt")
#: How each model is captured where it is not the dispatch tap.
PATHS = {
    "deberta_v2": "eager-weights",
    "bloom": "eager-weights",
    "mpt": "eager-weights",
    "falcon": "torch-sdpa",
}

ENCODERS = ("bert", "roberta", "xlm-roberta", "albert", "deberta-v2")

#: Models whose eager path is not a valid reference: transformers 5.24's eager Falcon adds ALiBi to
#: a mask that already holds it (its SDPA and eager logits differ by ~0.4 here), so headmap is
#: checked against the kernel the model really runs instead.
KERNEL_REFERENCE: dict[str, transformers.PretrainedConfig] = {
    "falcon_alibi": transformers.FalconConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        alibi=True,
        new_decoder_architecture=False,
        multi_query=False,
    ),
}

# T5 has no 1/sqrt(d) scaling, so its logits grow fastest with the weights.
INIT_STD = {"t5": 0.15}


def _model_class(config: transformers.PretrainedConfig) -> type:
    if config.is_encoder_decoder:
        return transformers.AutoModelForSeq2SeqLM
    if config.model_type in ENCODERS:
        return transformers.AutoModel
    return transformers.AutoModelForCausalLM


def build(name: str, tokenizer: object) -> tuple[LoadedModel, torch.nn.Module]:
    """``(fast, eager)``: the same random weights under the default and the eager implementation."""
    config = CONFIGS[name] if name in CONFIGS else KERNEL_REFERENCE[name]
    fast, eager = twins(_model_class(config), config, INIT_STD.get(name, 0.3))
    return LoadedModel(model=fast, tokenizer=tokenizer, name=f"tiny-{name}"), eager


def twins(
    cls: type, config: transformers.PretrainedConfig, std: float
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(fast, eager)`` models of ``cls`` with the same random weights (matrices drawn with ``std``)."""
    # from_config writes the implementation into the config it is given: one copy per model.
    fast_config, eager_config = copy.deepcopy(config), copy.deepcopy(config)
    torch.manual_seed(0)
    # The implementation from_pretrained would choose: SDPA where the model has it (Gemma 2's
    # softcapping and the eager-only models fall back to eager by themselves).
    fast = cls.from_config(fast_config, dtype=torch.float32)
    eager = cls.from_config(eager_config, dtype=torch.float32, attn_implementation="eager")
    # Default init (std 0.02) gives near-uniform attention in such small models; larger weights
    # give sharp, varied maps, so that matching the reference actually means something.
    with torch.no_grad():
        for param in fast.parameters():
            if param.ndim == 2:
                param.normal_(0.0, std)
    eager.load_state_dict(fast.state_dict())
    fast.eval()
    eager.eval()
    return fast, eager


VISION_DIMS = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
)

#: Image encoders (and CLIP's text tower), built like the text models: 32x32 images in 8x8 patches,
#: so a 4x4 grid after the model's prefix tokens.
VISION_CONFIGS: dict[str, transformers.PretrainedConfig] = {
    "vit": transformers.ViTConfig(**VISION_DIMS),
    # A CLS and a distillation token before the patches.
    "deit": transformers.DeiTConfig(**VISION_DIMS),
    # Relative position bias inside every layer's attention.
    "beit": transformers.BeitConfig(**VISION_DIMS, use_relative_position_bias=True),
    # A CLS and four registers before the patches.
    "dinov2_with_registers": transformers.Dinov2WithRegistersConfig(**VISION_DIMS, num_register_tokens=4),
    "clip_vision": transformers.CLIPVisionConfig(**VISION_DIMS),
    # No CLS: the patches only (a pooling head with its own attention sits after the encoder).
    "siglip_vision": transformers.SiglipVisionConfig(**VISION_DIMS),
}
#: Prefix tokens of each, as labelled on the result's axes.
VISION_PREFIX = {
    "vit": ("CLS",),
    "deit": ("CLS", "DIST"),
    "beit": ("CLS",),
    "dinov2_with_registers": ("CLS", "reg0", "reg1", "reg2", "reg3"),
    "clip_vision": ("CLS",),
    "siglip_vision": (),
}
#: CLIP's text tower: a causal text encoder with the MiniLM tokenizer's vocabulary.
CLIP_TEXT = transformers.CLIPTextConfig(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)


def build_vision(name: str, processor: object) -> tuple[LoadedModel, torch.nn.Module]:
    """``(fast, eager)`` of an image encoder (or ``"clip_text"``), as :func:`build` does for text."""
    config = CLIP_TEXT if name == "clip_text" else VISION_CONFIGS[name]
    fast, eager = twins(transformers.AutoModel, config, 0.3)  # CLIPTextModel for the text tower's config
    if name == "clip_text":
        return LoadedModel(model=fast, tokenizer=processor, name="tiny-clip-text"), eager
    return LoadedModel(model=fast, tokenizer=None, name=f"tiny-{name}", processor=processor), eager
