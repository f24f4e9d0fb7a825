"""What one dashboard request captures: a text, an uploaded image, or an uploaded clip and its transcript.

The page offers a text box, an image upload and a WAV upload; which of them a request reads follows
from the model it names (:class:`Modality`). Uploads are keyed by the SHA-256 of their bytes, not
by their path: Gradio keeps uploads under temporary paths, and the caches must not confuse two
images that happened to share one, nor capture one image twice because it was uploaded twice.
"""

from __future__ import annotations

import enum
import hashlib
import wave
from dataclasses import dataclass
from pathlib import Path

from headmap.capture import Audio
from headmap.capture.audio import read_wav
from headmap.capture.discovery import Architecture
from headmap.capture.images import Prompt
from headmap.errors import HeadmapError

#: Largest upload a request may name: hashing and decoding are themselves work, so they are bounded.
MAX_UPLOAD_BYTES = 64 << 20


class Modality(enum.Enum):
    """What a model reads, and so which input of the page a request takes."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    IMAGE_TEXT = "image and text"  # a vision-language model: a text holding the image token, and an image

    @property
    def noun(self) -> str:
        """What such a model takes, for messages: "digits-vit takes images"."""
        return {
            "text": "text",
            "image": "images",
            "audio": "audio clips",
            "image and text": "an image with a text",
        }[self.value]

    @property
    def arguments(self) -> str:
        """How ``headmap render`` takes such an input."""
        return {
            "text": "TEXT",
            "image": "--image PATH",
            "audio": "--audio PATH --target TRANSCRIPT",
            "image and text": "TEXT --image PATH",
        }[self.value]


def modality_of(arch: Architecture, config: object = None) -> Modality:
    """What a model reads, from its discovered layout (and its config, which marks a VLM)."""
    if getattr(config, "image_token_id", None) is not None and hasattr(config, "vision_config"):
        return Modality.IMAGE_TEXT
    if arch.vision is not None:
        return Modality.IMAGE
    if arch.audio_frames is not None:
        return Modality.AUDIO
    return Modality.TEXT


@dataclass(frozen=True)
class Item:
    """One request's input for its model.

    ``text``: the text (a text model), the transcript whose tokens the decoder reads (a speech model;
    may be empty), the prompt holding the image token (a vision-language model), or unused (an image
    model). ``path``/``digest``: the upload and its bytes' SHA-256.
    ``rate``: resample the clip to this rate first (None: take it as it is, or refuse a wrong rate).
    """

    modality: Modality
    text: str = ""
    path: Path | None = None
    digest: str = ""
    rate: int | None = None

    @property
    def key(self) -> tuple[object, ...]:
        """What the caches key this input by (with the model's name)."""
        if self.modality is Modality.TEXT:
            return (self.text,)
        return (self.modality.value, self.digest, self.text, self.rate)

    @property
    def ident(self) -> str:
        """A short fingerprint for picture keys: two inputs share one only if they are equal."""
        return hashlib.sha1(repr(self.key).encode("utf-8")).hexdigest()[:10]

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else ""

    def capture_input(self) -> str | Path | Audio | Prompt:
        """What :func:`headmap.capture` takes for this input."""
        if self.modality is Modality.TEXT or self.path is None:
            return self.text
        if self.modality is Modality.IMAGE:
            return self.path
        if self.modality is Modality.IMAGE_TEXT:
            return Prompt(self.text, self.path)
        return Audio.read(self.path, rate=self.rate)

    def target(self) -> str | None:
        """A clip's transcript for the decoder (None: the start token alone)."""
        return self.text if self.modality is Modality.AUDIO and self.text.strip() else None


def file_digest(path: Path, limit: int = MAX_UPLOAD_BYTES) -> str:
    """SHA-256 of the file at ``path``; one clear error for a missing or too large file."""
    try:
        size = path.stat().st_size
    except OSError:
        raise HeadmapError(f"the uploaded file {path.name} is gone: upload it again") from None
    if size > limit:
        raise HeadmapError(
            f"the uploaded file {path.name} has {size / 2**20:.1f} MB but this server takes at most "
            f"{limit / 2**20:.0f} MB: upload a smaller file"
        )
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clip_rate(path: Path) -> int:
    """The sampling rate of the WAV clip at ``path``, from its header alone (every request of a tab
    checks it); where the header cannot be read, :func:`read_wav` raises its one clear line."""
    try:
        with wave.open(str(path), "rb") as handle:
            return int(handle.getframerate())
    except (wave.Error, EOFError, OSError):
        return read_wav(path)[1]


def upload_path(value: object) -> Path | None:
    """The path of an upload as Gradio passes it (a path string, a dict or file object with a
    ``path``/``name``), or None when nothing was uploaded."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return Path(value)
    if isinstance(value, dict):
        found = value.get("path") or value.get("name")
        return Path(str(found)) if found else None
    found = getattr(value, "path", None) or getattr(value, "name", None)
    if isinstance(found, str):
        return Path(found)
    raise HeadmapError(f"cannot read the upload ({type(value).__name__}): upload the file again")


def make_item(
    modality: Modality,
    model: str,
    text: str,
    image: object,
    audio: object,
    rate: int | None,
    limit: int = MAX_UPLOAD_BYTES,
) -> Item:
    """The input a request for ``model`` takes; one clear line when the upload it needs is missing."""
    if modality is Modality.TEXT:
        return Item(Modality.TEXT, text)
    pictured = modality in (Modality.IMAGE, Modality.IMAGE_TEXT)
    upload = upload_path(image if pictured else audio)
    if upload is None:
        what = "an image (PNG, JPEG...)" if pictured else "a WAV clip"
        raise HeadmapError(f"{model} takes {modality.noun}: upload {what} on the left, then press Show")
    if modality is Modality.IMAGE_TEXT and not text.strip():
        raise HeadmapError(
            f"{model} takes an image and a text: type the text, with the image token where the image goes"
        )
    kept = "" if modality is Modality.IMAGE else text
    return Item(modality, kept, upload, file_digest(upload, limit), rate)
