"""Published model configs (written here: there is no hub access), random-weight models built from
them, and a tokenizer that needs no download. Shared by billion.py and gpu.py.

The configs are the ``config.json`` files of the published checkpoints, field for field, in the hub's
names (``rope_theta`` and ``rope_scaling``); :func:`llama_config` turns them into transformers 5's
``LlamaConfig``, whose RoPE settings live in ``rope_parameters``. Weights are random (seeded): the
time and memory of a forward do not depend on them.
"""

from __future__ import annotations

import random
from typing import Any

#: Special tokens first (ids 0-3), then the words ``w0`` ... ``w3999`` (ids 4-4003).
SPECIALS = ("<s>", "</s>", "<unk>", "<pad>")
WORDS = 4000

#: meta-llama/Llama-3.2-1B, config.json (1.24 B parameters; the LM head is the embedding matrix).
LLAMA_3_2_1B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

#: meta-llama/Llama-3.1-8B, config.json (8.03 B parameters, untied LM head). Its RoPE scaling
#: factor is 8 (Llama 3.2's small models use 32).
LLAMA_3_1_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}


def tiny(published: dict[str, Any], **sizes: Any) -> dict[str, Any]:
    """``published`` shrunk to a few thousand parameters for dry runs: same family, same RoPE
    scaling, same tying and grouped-query layout, small widths (``sizes`` overrides)."""
    small = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": WORDS + len(SPECIALS),
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    return {**published, **small, **sizes}


#: Dry-run stand-ins for the two published models: tied and 2 layers, untied and 3 layers.
TINY_1B = tiny(LLAMA_3_2_1B)
TINY_8B = tiny(LLAMA_3_1_8B, num_hidden_layers=3, hidden_size=96, head_dim=24)

MODELS = {"llama-3.2-1b": LLAMA_3_2_1B, "llama-3.1-8b": LLAMA_3_1_8B}
TINY_MODELS = {"tiny-1b": TINY_1B, "tiny-8b": TINY_8B}


def llama_config(published: dict[str, Any]) -> Any:
    """transformers' ``LlamaConfig`` of a published config: ``rope_theta`` and ``rope_scaling``
    become ``rope_parameters`` (transformers 5's one RoPE field); the hub's bookkeeping fields
    (``torch_dtype``, ``model_type``) are left out: the dtype is the caller's choice."""
    import transformers

    fields = {k: v for k, v in published.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")}
    fields.pop("model_type", None)
    rope = {**published.get("rope_scaling", {"rope_type": "default"}), "rope_theta": published["rope_theta"]}
    return transformers.LlamaConfig(**fields, rope_parameters=rope)


def parameter_count(published: dict[str, Any]) -> int:
    """Parameters of the Llama model a published config describes (embeddings counted once if tied)."""
    h, i, layers = published["hidden_size"], published["intermediate_size"], published["num_hidden_layers"]
    heads, kv = published["num_attention_heads"], published["num_key_value_heads"]
    d = published.get("head_dim") or h // heads
    attention = h * heads * d * 2 + h * kv * d * 2
    per_layer = attention + 3 * h * i + 2 * h
    embeddings = published["vocab_size"] * h * (1 if published["tie_word_embeddings"] else 2)
    return layers * per_layer + embeddings + h


# --- A tokenizer with nothing to download -------------------------------------------------------------


def word_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` built in code: each whitespace-separated word
    ``w<k>`` is one token, ``<s>`` is added in front, offsets and special-token masks work as
    headmap needs. No model's own tokenizer can be had offline (and none is on the GPU machine);
    with random weights the text only has to be tokens, and this gives exactly N of them."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{k}": len(SPECIALS) + k for k in range(WORDS)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def word_text(n: int, seed: int = 0) -> str:
    """``n - 1`` random words (seeded), which :func:`word_tokenizer` turns into exactly ``n`` tokens."""
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(WORDS)}" for _ in range(n - 1))


def encoded_text(tokenizer: Any, n: int, seed: int = 0) -> Any:
    """A headmap ``Encoded`` of exactly ``n`` tokens: the ids the plain forward gets too, so that
    tokenizing is in no method's time."""
    from headmap.capture.encoding import Encoded, encode

    ids, tokens = encode(tokenizer, word_text(n, seed))
    assert len(ids) == n, (len(ids), n)
    return Encoded(tuple(ids), tokens)


# --- Random-weight models -----------------------------------------------------------------------------


def random_llama(
    published: dict[str, Any], name: str, device: str = "cpu", dtype: Any = None, seed: int = 0
) -> Any:
    """A ``LlamaForCausalLM`` of ``published``'s shape with random weights (transformers' init,
    seeded), in eval mode with the default SDPA attention, as a headmap ``LoadedModel`` with
    :func:`word_tokenizer`.

    On a CPU the body is built alone and the LM head tied to its embeddings by hand (as common.py's
    Gemma is), so no transient head (1 GB in float32 for Llama 3.2 1B) raises the peak RSS every
    method is measured by; an untied head is built for real. On a GPU the model is built there
    directly (``with torch.device("cuda")``), which is quick, and peaks are reset after building."""
    import torch
    import transformers

    from headmap.models import LoadedModel

    dtype = dtype or torch.float32
    config = llama_config(published)
    torch.manual_seed(seed)
    if device == "cpu" and config.tie_word_embeddings:
        body = transformers.LlamaModel(config).to(dtype)
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(config)
        model.model = body
        model.lm_head.weight = body.embed_tokens.weight
    else:
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    return LoadedModel(model=model, tokenizer=word_tokenizer(), name=name)
