"""Arguments and checks shared by the commands: text input, output paths, layer/head lists.

The command modules import torch-backed stages inside their ``run`` functions, not at the top:
``headmap --help``, ``--version`` and usage errors must answer without loading torch (< 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headmap.errors import HeadmapError
from headmap.models import BUNDLED, DEFAULT_MODEL, SHIPPED

if TYPE_CHECKING:
    from headmap.models import LoadedModel

RENDER_EXTENSIONS = (".png", ".svg", ".pdf", ".html")


def read_text(value: str) -> str:
    """The argument itself, or the contents of a file when it names one ('-' reads stdin).

    An empty (or all-space) text is refused here, before the model loads.
    """
    if value == "-":
        text, source = sys.stdin.read(), "the text from stdin"
    elif len(value) < 4096 and os.path.isfile(value):
        try:
            text, source = Path(value).read_text(encoding="utf-8"), f"the file {value}"
        except (OSError, UnicodeDecodeError) as exc:
            raise HeadmapError(f"cannot read text file {value}: {exc}") from exc
    else:
        text, source = value, "the text"
    if not text.strip():
        raise HeadmapError(f"{source} is empty: give some text, a UTF-8 file that holds some, or - for stdin")
    return text


def read_input(args: argparse.Namespace) -> Any:
    """The text of ``args.text``, the path of ``--image`` or ``--audio``, or a text with ``--image``
    (a vision-language model's prompt, holding its image token where the image goes)."""
    image, audio = getattr(args, "image", None), getattr(args, "audio", None)
    if image is not None and audio is not None or (image is None and audio is None and args.text is None):
        raise HeadmapError(
            "give a text, --image PATH or --audio PATH (a text with --image for a vision-language model)"
        )
    if image is not None and args.text is not None:
        from headmap.capture.images import Prompt

        return Prompt(read_text(args.text), image)
    if audio is not None and args.text is not None:
        raise HeadmapError("give the clip's transcript with --target TEXT, not as the text")
    found = image if image is not None else audio
    return found if found is not None else read_text(args.text)


def package_version() -> str:
    """The installed distribution's version (``headmap --version``), read from its metadata."""
    try:
        return metadata.version("headmap")
    except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def check_output(path: Path, extensions: Sequence[str]) -> Path:
    """Fail before any model work when the output cannot be written."""
    from headmap.render.report import check_writable

    if path.suffix.lower() not in extensions:
        raise HeadmapError(
            f"unknown output extension {path.suffix or '(none)'!r} for {path}: use one of {', '.join(extensions)}"
        )
    check_writable(path)
    return path


def add_outputs(parser: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    """``--output/-o FILE``, repeatable: every command that writes files takes all of them (``args.output``).

    ``what`` says what is written and in which formats, e.g. "the picture: .png, .svg, .pdf or .html".
    """
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        action="append",
        default=[],
        required=required,
        metavar="FILE",
        help=f"write {what} (repeat -o for several)",
    )


class Once(argparse.Action):
    """A folder option (``--out``) given twice is a usage error, not the last one silently kept."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        seen = f"_{self.dest}_given"
        if getattr(namespace, seen, False):
            parser.error(f"{option_string} is given twice: a command writes one folder")
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, values)


def check_outputs(paths: Sequence[Path], extensions: Sequence[str]) -> list[Path]:
    """:func:`check_output` for every ``-o``, and one file named twice is refused (the second would overwrite)."""
    seen: set[Path] = set()
    for path in paths:
        check_output(path, extensions)
        if path.resolve() in seen:
            raise HeadmapError(f"-o {path} is given twice: name each output once")
        seen.add(path.resolve())
    return list(paths)


def parse_heads(value: str) -> list[int] | None:
    """``"all"`` -> None, ``"3,5"`` -> ``[3, 5]``."""
    if value == "all":
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise HeadmapError(
            f"--head takes a number, a comma-separated list, or 'all', not {value!r}"
        ) from None


def int_arg(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HeadmapError(f"{flag} takes a number or a name such as layer.3, not {value!r}") from None


def parse_layers(value: str) -> list[int | str] | None:
    """``"all"`` -> None, ``"0,-1,cross.2"`` -> ``[0, -1, "cross.2"]``."""
    if value == "all":
        return None
    return [v if "." in v else int_arg(v, "--layers") for v in value.split(",")]


def add_model_args(parser: argparse.ArgumentParser, text: bool = True, image: bool = False) -> None:
    """``text`` (optional where ``image`` adds ``--image PATH``), ``--model`` and the loading options."""
    if text:
        parser.add_argument(
            "text",
            nargs="?" if image else None,
            help="the input text, a path to a UTF-8 text file, or - for stdin"
            + (
                " (with --image: a vision-language model's prompt, holding its image token, e.g. <image>)"
                if image
                else ""
            ),
        )
    if image:
        parser.add_argument(
            "--image",
            type=Path,
            help="an image file (PNG, JPEG...) for an image model such as digits-vit, or with a text for a "
            "vision-language model (LLaVA)",
        )
        parser.add_argument(
            "--audio", type=Path, help="a WAV file at the model's rate (16 kHz) for a speech model (Whisper)"
        )
    shipped = f", {', '.join(SHIPPED)} (images)" if image else ""
    parser.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"bundled name ({', '.join(BUNDLED)}{shipped}), local model folder, .gguf file or hub id "
        "(default: %(default)s)",
    )
    parser.add_argument("--target", help="decoder text for encoder-decoder models (default: the input text)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off by default)",
    )
    add_device_args(parser)


#: The names ``--dtype`` takes (headmap.models.devices.DTYPES, repeated here to keep --help free of torch).
DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--device-map`` and ``--offload-folder``: where the model loads
    and in which precision (every command that loads a model takes them; see :func:`load_options`)."""
    group = parser.add_argument_group("device and precision")
    group.add_argument(
        "--device",
        metavar="DEVICE",
        help="put the whole model on this device: cpu (default), cuda, cuda:N or mps",
    )
    group.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default="float32",
        help="weights and compute precision (default: %(default)s; auto keeps the checkpoint's); "
        "maps and statistics come back in float32",
    )
    group.add_argument(
        "--device-map",
        choices=("auto", "balanced", "sequential"),
        help="spread the model with accelerate over the GPUs, then the CPU, then the disk (instead of --device)",
    )
    group.add_argument(
        "--offload-folder",
        type=Path,
        metavar="FOLDER",
        help="with --device-map: folder for the weights that do not fit in memory",
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords :func:`headmap.load` takes from :func:`add_device_args`' options."""
    options: dict[str, Any] = {"dtype": getattr(args, "dtype", "float32")}
    for name in ("device", "device_map", "offload_folder"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def add_display_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--words",
        action="store_true",
        help="aggregate sub-tokens into words (sum over keys, mean over queries)",
    )
    parser.add_argument(
        "--norm",
        default="raw",
        help="display normalization: raw (default), topk:K, window:W, threshold:T, log, renorm; join with commas",
    )
    parser.add_argument(
        "--mask-special", action="store_true", help="hide special tokens ([CLS], [SEP], BOS, ...)"
    )
    parser.add_argument(
        "--mask-first", action="store_true", help="hide the first token (a common attention sink)"
    )
    parser.add_argument("--renorm-masked", action="store_true", help="renormalize rows after masking")
    parser.add_argument(
        "--cmap", default="viridis", help="colormap: sequential (viridis, magma, Blues) or diverging (RdBu_r)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="downsample (max-pool) beyond this many tokens per axis"
    )


def load_model(args: argparse.Namespace) -> LoadedModel:
    from headmap.models import load

    return load(args.model, trust_remote_code=args.trust_remote_code, **load_options(args))


def note_paths(result: object) -> None:
    """Print the result's notes (e.g. which capture path was used) to stderr."""
    for note in getattr(result, "notes", ()):
        print(f"headmap: {note}", file=sys.stderr)
