"""Turn an audio clip into what a speech model (Whisper) takes, and into the units its maps run over.

A clip goes through the model's feature extractor (log-mel features, padded with silence to the
model's window: 30 s for Whisper), exactly as ``model(input_features=extractor(audio)...)`` sees it.
Its units are the encoder frames (Whisper: one per 20 ms); :class:`~headmap.tokens.Frames` records
their times. The decoder side is the target text, after the decoder start token.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from headmap.capture.discovery import Architecture
from headmap.capture.encoding import Encoded, encode_targets
from headmap.capture.images import Input, Prompt, encode_inputs, image_inputs, is_single
from headmap.capture.vlm import prompt_input
from headmap.errors import HeadmapError
from headmap.models import LoadedModel
from headmap.result import Side
from headmap.tokens import Frames, Tokens

__all__ = ["Audio", "capture_items", "encode_media", "is_one", "media_inputs", "read_wav"]

#: Mel frames per encoder frame: Whisper's second convolution has stride 2.
_STRIDE = 2


@dataclass(frozen=True)
class Audio:
    """One mono clip: ``samples`` (float, about -1..1) at ``rate`` Hz; ``name`` labels it."""

    samples: np.ndarray = field(repr=False)
    rate: int
    name: str = ""

    @classmethod
    def read(cls, path: str | os.PathLike[str], rate: int | None = None) -> Audio:
        """A WAV file's clip; ``rate``: resample it to this rate (e.g. the model's 16000)."""
        samples, found = read_wav(path)
        clip = cls(samples, found, Path(path).name)
        return clip if rate is None else clip.resampled(rate)

    def resampled(self, rate: int) -> Audio:
        """The clip at ``rate`` Hz (polyphase resampling, as scipy.signal.resample_poly does it)."""
        if rate == self.rate:
            return self
        common = gcd(rate, self.rate)
        samples = resample_poly(self.samples, rate // common, self.rate // common)
        return Audio(np.asarray(samples, dtype=np.float32), rate, self.name)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Samples of a PCM WAV file as float32 mono in -1..1 (channels averaged), and its rate."""
    try:
        with wave.open(str(path), "rb") as handle:
            width, channels, rate = handle.getsampwidth(), handle.getnchannels(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except FileNotFoundError:
        raise HeadmapError(f"audio file {path} does not exist: give the path of a WAV file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise HeadmapError(
            f"cannot read {path} as a PCM WAV file ({exc}): convert it, e.g. ffmpeg -i IN -ar 16000 OUT.wav"
        ) from None
    if width == 1:
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        kind = np.int16 if width == 2 else np.int32
        values = np.frombuffer(raw, dtype=kind).astype(np.float32) / float(np.iinfo(kind).max)
    else:
        raise HeadmapError(f"{path} has {8 * width}-bit samples: give a 8, 16 or 32-bit PCM WAV file")
    return values.reshape(-1, channels).mean(axis=1), rate


def is_one(item: object) -> bool:
    """Whether a capture input is one text, image or clip (rather than a list of them)."""
    return is_single(item) or isinstance(item, Audio)


def capture_items(loaded: LoadedModel, text: Input | Audio | Sequence[Input | Audio]) -> list[Input | Audio]:
    """The inputs of a capture as a list (one input or a list of them); a text with an image becomes
    the exact ids and pixels of the vision-language model's input (an :class:`Encoded`)."""
    items: list[Input | Audio] = [text] if is_one(text) else list(text)  # type: ignore[list-item, arg-type]  # narrowed by is_one
    return [prompt_input(loaded, item) if isinstance(item, Prompt) else item for item in items]


def _clip(loaded: LoadedModel, item: object) -> Audio:
    if isinstance(item, Audio):
        return item
    if isinstance(item, os.PathLike):
        return Audio.read(item)
    raise HeadmapError(
        f"{loaded.name} takes audio, not text: give headmap.Audio(samples, rate) or a WAV path "
        "(on the command line, --audio PATH)"
    )


def encode_audio(loaded: LoadedModel, frames: int, item: object) -> tuple[torch.Tensor, Tokens]:
    """``input_features`` ``[mels, 2 * frames]`` of one clip, and its encoder frames as :class:`Tokens`."""
    extractor = loaded.processor
    if extractor is None:
        raise HeadmapError(f"{loaded.name} has no feature extractor: load it from a folder with one")
    clip = _clip(loaded, item)
    expected = int(getattr(extractor, "sampling_rate", 16000))
    if clip.rate != expected:
        raise HeadmapError(
            f"{clip.name or 'the clip'} is at {clip.rate} Hz but {loaded.name} takes {expected} Hz: "
            f"resample it (Audio.read(path, rate={expected}) or ffmpeg -ar {expected})"
        )
    hop = int(getattr(extractor, "hop_length", 160))
    window = int(getattr(extractor, "n_samples", 2 * frames * hop))
    if len(clip.samples) > window:
        raise HeadmapError(
            f"{clip.name or 'the clip'} lasts {len(clip.samples) / expected:.1f} s, longer than "
            f"{loaded.name}'s {window / expected:.0f} s window: cut it into pieces of at most that"
        )
    features = extractor(clip.samples, sampling_rate=expected, return_tensors="pt")["input_features"][0]  # type: ignore[operator]  # untyped extractor
    if features.shape[-1] != _STRIDE * frames:
        raise HeadmapError(
            f"{loaded.name}'s feature extractor gives {features.shape[-1]} mel frames but the model "
            f"takes {_STRIDE * frames}: give it an extractor with chunk_length to match"
        )
    seconds = _STRIDE * hop / expected
    audible = min(frames, int(np.ceil(len(clip.samples) / (hop * _STRIDE))))
    labels = tuple(f"{i * seconds:.2f}s" for i in range(frames))
    tokens = Tokens(
        text=clip.name,
        tokens=labels,
        offsets=((0, 0),) * frames,
        special=(False,) * frames,
        unit="frame",
        frames=Frames(seconds, audible),
    )
    return features, tokens


def _start_only(loaded: LoadedModel, arch: Architecture, n: int) -> list[tuple[list[int], Tokens]]:
    """The decoder start token alone, for clips captured without a target text."""
    start = int(getattr(loaded.model.config, "decoder_start_token_id", 0) or 0)
    label = str(loaded.tokenizer.convert_ids_to_tokens([start])[0]) if loaded.tokenizer else "<start>"  # type: ignore[attr-defined]  # untyped tokenizer
    return [([start], Tokens("", (label,), ((0, 0),), (True,)))] * n


def encode_media(
    loaded: LoadedModel,
    arch: Architecture,
    items: Sequence[Input | Audio],
    target: str | Sequence[str] | None,
    limit: int | None,
) -> tuple[list[tuple[list[int], Tokens]], list[torch.Tensor], list[tuple[list[int], Tokens]]]:
    """Each input's ids and :class:`Tokens`, the images' pixels or clips' features, and the decoder
    inputs of encoder-decoder models (for a clip: the start token, then ``target``'s tokens)."""
    clips = [isinstance(item, Audio) for item in items]
    if arch.audio_frames is None:
        if any(clips):
            raise HeadmapError(f"{loaded.name} takes no audio: give it a text, or load a speech model")
        encoded, pixels = encode_inputs(loaded, arch, items, limit)  # type: ignore[arg-type]  # no clips
        return encoded, pixels, encode_targets(loaded, arch.is_encoder_decoder, items, target, limit)  # type: ignore[arg-type]  # texts wherever a model has targets
    pairs = [encode_audio(loaded, arch.audio_frames, item) for item in items]
    if target is None:
        targets = _start_only(loaded, arch, len(items))
    else:
        texts: list[str | Encoded] = [""] * len(items)
        targets = encode_targets(loaded, True, texts, target, limit)
    return [([], tokens) for _, tokens in pairs], [f for f, _ in pairs], targets


def media_inputs(
    arch: Architecture,
    pixels: Sequence[torch.Tensor],
    encoded: Sequence[tuple[list[int], Tokens]],
    decoder: Sequence[tuple[list[int], Tokens]],
    batch: range,
) -> tuple[dict[str, torch.Tensor], dict[Side, list[torch.Tensor]]]:
    """Model inputs of the images or clips at ``batch`` (clips: with their decoder ids, all of one
    length, since Whisper's decoder takes no attention mask here)."""
    features = [pixels[i] for i in batch]
    units = [len(encoded[i][1]) for i in batch]
    targets = [decoder[i][0] for i in batch] if decoder else []
    if arch.audio_frames is None:
        return image_inputs(features, units)
    if len({len(t) for t in targets}) > 1:
        raise HeadmapError(
            "the target texts of a batch of clips differ in length: capture them with batch_size=1"
        )
    inputs = {"input_features": torch.stack(list(features)), "decoder_input_ids": torch.tensor(list(targets))}
    valid = {
        Side.SOURCE: [torch.arange(n) for n in units],
        Side.TARGET: [torch.arange(len(t)) for t in targets],
    }
    return inputs, valid
