"""What the benchmark scripts share: fresh-process runs, the machine's size, the README tables."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_bytes() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fresh_runs(command: list[str], repeats: int, timeout: int = 7200) -> list[dict[str, object]] | str:
    """Run ``command`` ``repeats`` times, each in a fresh process that prints one JSON object as its
    last line; the objects, or the first failure's last line of stderr."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return (proc.stderr.strip().splitlines() or ["failed"])[-1]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def write_block(name: str, body: str, readme: Path = HERE / "README.md") -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``readme``
    (appended at the end where the markers are missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text(encoding="utf-8")
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


# --- Corpora of the corpus-report benchmarks --------------------------------------------------------

CORPORA = HERE.parent / "corpora"
#: Corpora named on the command line; anything else is a path (.txt, .jsonl or a folder).
NAMED_CORPORA = {"sentences": CORPORA / "sentences.txt", "mixed": CORPORA / "mixed.txt"}
#: ``long``: the mixed texts joined, in order and wrapping round, into texts of this many words,
#: ~700 SmolLM2 tokens (1.11 tokens a word on mixed.txt): long enough for a 512-token sliding
#: window to cut, which no text of the other corpora is, and short enough that every head's maps of
#: one text (72 heads x 700 x 700 float32, 141 MB) fit the report's distance budget in one forward.
LONG_WORDS = 630
LONG_TEXTS = 8


def corpus_label(corpus: str) -> str:
    """How a corpus is shown in tables: its name, or its file name."""
    return corpus if corpus in NAMED_CORPORA or corpus == "long" else Path(corpus).name


def long_texts(count: int = LONG_TEXTS, words: int = LONG_WORDS) -> list[str]:
    """The ``long`` corpus: ``count`` texts of ``words`` words made of consecutive mixed texts."""
    from headmap.analysis.corpus import read_corpus

    stream = [w for t in read_corpus(NAMED_CORPORA["mixed"]) for w in t.text.split()]
    # Each text continues where the last one stopped, wrapping round: the texts differ in content
    # and in where their sentences fall, which is all a throughput run needs.
    return [" ".join(stream[(k * words + i) % len(stream)] for i in range(words)) for k in range(count)]


def bench_texts(corpus: str, max_texts: int | None = None) -> list[str]:
    """The texts of ``corpus`` (``sentences``, ``mixed``, ``long`` or a path), the first
    ``max_texts`` of them where given."""
    from headmap.analysis.corpus import read_corpus

    if corpus == "long":
        texts = long_texts()
        return texts[:max_texts] if max_texts else texts
    return [t.text for t in read_corpus(NAMED_CORPORA.get(corpus, Path(corpus)), max_texts)]


# --- Models -------------------------------------------------------------------------------------------

GEMMA_RANDOM = "gemma3-270m-random"


def gemma3_270m_config() -> object:
    """The published config of google/gemma-3-270m (written here: there is no hub access), in
    transformers 5's field names: the two RoPE bases live in ``rope_parameters`` per layer type
    (``rope_theta`` 1e6 for full layers, ``rope_local_base_freq`` 1e4 for sliding ones)."""
    import transformers

    layers = 18
    return transformers.Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        query_pre_attn_scalar=256,
        sliding_window=512,
        # Five sliding layers, then one full one: layers 5, 11 and 17 attend to everything.
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        attention_bias=False,
        tie_word_embeddings=True,
        architectures=["Gemma3ForCausalLM"],
    )


def gemma3_random(seed: int = 0) -> object:
    """A Gemma-3-270M-shaped ``Gemma3ForCausalLM`` with random weights (float32, eval, the default
    SDPA attention) as a headmap ``LoadedModel``, with the bundled SmolLM2 tokenizer (49,152 ids,
    all inside Gemma's 262,144): the text only has to be tokens, the weights are not trained."""
    import torch
    import transformers

    from headmap.models import LoadedModel
    from headmap.models.gguf_cache import converted_folder
    from headmap.models.loading import bundled_path

    # Only the tokenizer, from the folder headmap converts the bundled GGUF to: loading the whole
    # SmolLM2 model for it would add ~0.5 GB to the peak memory every method is measured by.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(converted_folder(bundled_path("smollm2"))))
    config = gemma3_270m_config()
    torch.manual_seed(seed)
    # Gemma3ForCausalLM(config) would allocate its own 671 MB LM head before tying it to the
    # embeddings, a transient peak above what any method then uses, which would hide their peaks
    # (RSS is measured as the process's maximum). So: the body on the CPU with random weights
    # (float32, transformers' init), the wrapper on the meta device, and the head tied by hand.
    body = transformers.Gemma3TextModel(config)
    with torch.device("meta"):
        model = transformers.Gemma3ForCausalLM(config)
    model.model = body
    model.lm_head.weight = body.embed_tokens.weight
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=GEMMA_RANDOM)


def load_bench_model(name: str) -> object:
    """``headmap.load(name)`` for the bundled models (and anything ``load`` takes), or the random
    Gemma 3 model for ``gemma3-270m-random``."""
    if name == GEMMA_RANDOM:
        return gemma3_random()
    from headmap import load

    return load(name)
