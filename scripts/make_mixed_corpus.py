"""Write ``corpora/mixed.txt``: 160 texts of 6 to 90 words, roughly uniform over that range.

The corpus report benchmark needs texts of mixed length (``sentences.txt`` is nearly all 10-20
tokens, so its batches carry almost no padding). Each text starts at a line of ``sentences.txt``
followed by ``heldout.txt`` (drawn with a fixed seed), joins that line with the ones after it
(wrapping around at the end) and is cut to its word count. The word counts are one per stratum of
the 6-90 range, shuffled, so the lengths are spread evenly rather than as lumpy as 160 free draws.
Run from anywhere: ``python scripts/make_mixed_corpus.py``; the output is the same every time.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

CORPORA = Path(__file__).resolve().parent.parent / "corpora"
SOURCES = ("sentences.txt", "heldout.txt")
SEED = 0


def source_lines(folder: Path = CORPORA) -> list[str]:
    """The non-empty lines of the source corpora, in order."""
    lines: list[str] = []
    for name in SOURCES:
        text = (folder / name).read_text(encoding="utf-8")
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    return lines


def word_counts(count: int, shortest: int, longest: int, rng: random.Random) -> list[int]:
    """``count`` word counts spread evenly over ``shortest..longest`` (one per equal stratum,
    a uniform draw inside it), in a shuffled order."""
    span = longest - shortest + 1
    counts = [shortest + int((i + rng.random()) * span / count) for i in range(count)]
    rng.shuffle(counts)
    return counts


def mixed_texts(
    lines: list[str], count: int = 160, shortest: int = 6, longest: int = 90, seed: int = SEED
) -> list[str]:
    """``count`` texts made of consecutive ``lines``, each cut to its drawn number of words."""
    rng = random.Random(seed)
    texts = []
    for words in word_counts(count, shortest, longest, rng):
        at = rng.randrange(len(lines))
        picked: list[str] = []
        while len(picked) < words:  # join the next lines until the text is long enough
            picked += lines[at % len(lines)].split()
            at += 1
        texts.append(" ".join(picked[:words]))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=CORPORA / "mixed.txt")
    parser.add_argument("--count", type=int, default=160)
    args = parser.parse_args()
    texts = mixed_texts(source_lines(), count=args.count)
    args.out.write_text("\n".join(texts) + "\n", encoding="utf-8")
    lengths = sorted(len(t.split()) for t in texts)
    print(
        f"{args.out}: {len(texts)} texts, {lengths[0]}-{lengths[-1]} words, median {lengths[len(lengths) // 2]}"
    )


if __name__ == "__main__":
    main()
