"""The chat template question both prompt builders ask (the RAG prompt and the bias prompts)."""

from __future__ import annotations


def has_chat_template(tokenizer: object) -> bool:
    """Whether ``tokenizer`` carries a chat template (then prompts go through ``apply_chat_template``)."""
    return bool(getattr(tokenizer, "chat_template", None))


__all__ = ["has_chat_template"]
