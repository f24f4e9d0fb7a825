"""The main demo: one capture of a bundled model, rendered the ways a user would look at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headmap.capture import capture
from headmap.errors import HeadmapError
from headmap.models import load
from headmap.render.profile import plot_layer_profile
from headmap.render.report import save_figure
from headmap.result import CAUSATION_WARNING, AttentionResult

#: A middle layer and a head with a clear pattern, per bundled model (found by looking, see docs/).
SHOWCASE = {"minilm": (3, 5), "smollm2": (12, 4)}


def run_demo(model_name: str, out: Path, text: str, **load_options: Any) -> list[Path]:
    """Capture every layer of ``model_name`` on ``text`` and write the demo pictures into ``out``.

    ``load_options`` go to :func:`headmap.load` (``device``, ``dtype``, ``device_map``...)."""

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadmapError(f"cannot create the demo folder {out}: {exc.strerror}") from exc
    model = load(model_name, **load_options)
    layer, head = SHOWCASE.get(model_name, (0, 0))
    result = capture(model, text)
    assert isinstance(result, AttentionResult)  # one text gives one result
    words = result.to_words()
    stem = model_name.replace("/", "_")
    written = [
        result.render(out / f"{stem}-layer{layer}-head{head}-tokens.png", layer, head),
        words.render(out / f"{stem}-layer{layer}-head{head}-words.png", layer, head),
        words.mask(special=True).render(out / f"{stem}-layer{layer}-all-heads.svg", layer, None),
        words.normalize("topk:3").render(out / f"{stem}-layer{layer}-head{head}-top3.html", layer, head),
    ]
    profile = out / f"{stem}-layer-profile.png"
    save_figure(plot_layer_profile(result, kind="heatmap"), profile)
    written.append(profile)
    result.save(out / f"{stem}-capture.safetensors")
    written.append(out / f"{stem}-capture.safetensors")
    print(CAUSATION_WARNING)
    return written
