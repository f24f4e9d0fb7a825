"""Stage 3, view: turn captured maps into what a person looks at (words, masking, display
normalization, pooling for long inputs). Every function returns a new result."""

from headmap.view.masking import mask_tokens
from headmap.view.normalize import describe_normalization, normalize_result, parse_normalization
from headmap.view.words import aggregate_words, word_groups

__all__ = [
    "aggregate_words",
    "describe_normalization",
    "mask_tokens",
    "normalize_result",
    "parse_normalization",
    "word_groups",
]
