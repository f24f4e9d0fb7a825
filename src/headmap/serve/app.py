"""The Gradio page of ``headmap serve``: controls on the left, the picture on the right.

The picture (``#hm-plot``) is drawn in the browser on a canvas by ``assets/heatmap.js``, from the
maps the server sends (16-bit codes): the hover needs the values anyway, and sending them once
costs less than rendering an image on the server and sending the values beside it. Analytics are
off (the variable is set before gradio is imported), the theme uses system fonts (the default one
fetches web fonts), and nothing in the page asks any host but the server for anything.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads it at import
# Gradio's queue rebuilds a pandas summary of every past event after each event, for its optional
# monitoring page (which headmap does not use): on a 2-core machine that competes with the next
# slider move. Rebuild it only every 100000 events, unless the user chose otherwise.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100000")

import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, fields  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from headmap.errors import HeadmapError  # noqa: E402
from headmap.render.embed import asset  # noqa: E402
from headmap.render.static import DIVERGING, SEQUENTIAL  # noqa: E402
from headmap.result import CAUSATION_WARNING  # noqa: E402
from headmap.serve.display import ViewSpec  # noqa: E402
from headmap.serve.endpoints import CONCURRENCY_ID, register  # noqa: E402
from headmap.serve.inputs import Modality  # noqa: E402
from headmap.serve.payload import finish, hint, message  # noqa: E402
from headmap.serve.views import VIEWS, Control, Request, View  # noqa: E402
from headmap.serve.workbench import BLOB_ROUTE, Workbench  # noqa: E402

log = logging.getLogger("headmap.serve")

#: Captures computed at once, page and API together, unless ``--max-concurrent`` says otherwise.
MAX_CONCURRENT = 4
#: The page's own events: private (not in the API listing, not callable by Gradio's clients), in the
#: one concurrency group of the API's endpoints.
PRIVATE: dict[str, Any] = {"api_visibility": "private", "concurrency_id": CONCURRENCY_ID}

NORMS = ("raw", "topk:3", "topk:3,renorm", "window:3", "threshold:0.05", "log")
EXAMPLE = "The trophy didn't fit in the suitcase because it was too big."
JS_ON_LOAD = "\n".join(
    [asset("heatmap.js"), asset("imageview.js"), "headmapView().mountPanel(element, props, watch);"]
)
#: The text box's label for each kind of model: a speech model reads it as the clip's transcript.
TEXT_LABELS = {
    Modality.TEXT: "text",
    Modality.IMAGE: "text (unused: this model takes an image)",
    Modality.AUDIO: "transcript (the decoder's tokens, aligned with the clip)",
    Modality.IMAGE_TEXT: "text, with the model's image token (e.g. <image>) where the image goes",
}
#: What the picture shows before the first draw: a neutral hint, not the error box.
START_HINT = hint("Press Show to draw the text's attention.")


@dataclass(frozen=True)
class Shared:
    """The shared controls, in the order every event passes them (after the view, before the views'
    own controls): the components when the page is built, their values in each request."""

    model: Any
    text: Any
    layer: Any
    head: Any
    words: Any
    mask_special: Any
    mask_first: Any
    renorm: Any
    norm: Any
    cmap: Any
    image: Any = None
    audio: Any = None
    resample: Any = False

    def items(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    def request(self) -> Request:
        """The values of one request, checked and typed."""
        spec = ViewSpec(
            words=bool(self.words),
            mask_special=bool(self.mask_special),
            mask_first=bool(self.mask_first),
            renormalize=bool(self.renorm),
            norm=str(self.norm or "raw"),
        )
        return Request(
            model=str(self.model),
            text=str(self.text or ""),
            layer=int(self.layer or 0),
            head=int(self.head or 0),
            spec=spec,
            cmap=str(self.cmap or "viridis"),
            image=self.image,
            audio=self.audio,
            resample=bool(self.resample),
        )


SHARED_COUNT = len(fields(Shared))


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: its own theme would fetch fonts from the web."""
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


@dataclass(frozen=True)
class Layout:
    """Where each view's own controls sit in the flat list of event inputs."""

    views: tuple[View, ...]
    spans: tuple[tuple[int, int], ...]  # per view: (first, end) in the extras

    def view(self, label: str) -> tuple[int, View]:
        for i, view in enumerate(self.views):
            if view.label == label:
                return i, view
        raise HeadmapError(f"unknown view {label!r}: choose one of {', '.join(v.label for v in self.views)}")

    def check(self, view: View, model: str, modality: Modality) -> None:
        """Refuse ``view`` for a model whose input it does not draw, naming the views that do."""
        if modality not in view.takes:
            fits = ", ".join(v.label for v in self.views if modality in v.takes)
            raise HeadmapError(
                f"{model} takes {modality.noun}: the {view.label} view does not; choose {fits}"
            )

    def first_for(self, modality: Modality) -> View:
        return first_view(self.views, modality)


def first_view(views: Sequence[View], modality: Modality) -> View:
    """The view for a model of ``modality`` at first: a text model's first view; else the first one
    drawn for such inputs and not for text (over the image, over time), or the first that draws it."""
    fits = [v for v in views if modality in v.takes]
    own = [v for v in fits if Modality.TEXT not in v.takes]
    return fits[0] if modality is Modality.TEXT else (own or fits)[0]


def draw(bench: Workbench, layout: Layout, view_label: str, values: Sequence[Any]) -> dict[str, object]:
    """One request: the values of the :class:`Shared` controls, then of every view's own controls."""
    extras = values[SHARED_COUNT:]
    try:
        index, view = layout.view(view_label)
        request = Shared(*values[:SHARED_COUNT]).request()
        layout.check(view, request.model, bench.info(request.model).modality)
        first, end = layout.spans[index]
        return finish(view.draw(bench, request, extras[first:end]), bench.publish)
    except HeadmapError as exc:
        return message(str(exc))
    except Exception as exc:  # a page shows a line, never a traceback; the server log keeps it
        log.exception("drawing failed")
        return message(f"internal error ({type(exc).__name__}): {exc}. The server log has the details.")


def build_app(
    bench: Workbench, views: Sequence[View] = VIEWS, max_concurrent: int = MAX_CONCURRENT
) -> gr.Blocks:
    """The dashboard's page for ``bench`` (not launched), with its API endpoints
    (:mod:`headmap.serve.endpoints`); at most ``max_concurrent`` events compute at once."""
    info = bench.info(bench.default_model)
    start = first_view(views, info.modality)
    with gr.Blocks(title="headmap", analytics_enabled=False) as demo:
        gr.Markdown(f"### headmap: attention heads, live\n{CAUSATION_WARNING}")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                text = gr.Textbox(
                    EXAMPLE if info.modality is Modality.TEXT else "",
                    label=TEXT_LABELS[info.modality],
                    lines=4,
                    visible=info.modality is not Modality.IMAGE,
                    elem_id="hm-text",
                )
                image = gr.File(
                    label="image (PNG, JPEG...)",
                    file_types=["image"],
                    type="filepath",
                    visible=info.modality in (Modality.IMAGE, Modality.IMAGE_TEXT),
                    elem_id="hm-image",
                )
                audio = gr.Audio(
                    label="clip (WAV, at the model's rate)",
                    type="filepath",
                    sources=["upload"],
                    editable=False,  # an edited clip would be re-encoded: keep the bytes the user gave
                    visible=info.modality is Modality.AUDIO,
                    elem_id="hm-audio",
                )
                resample = gr.Checkbox(
                    label="resample the clip to the model's rate",
                    visible=info.modality is Modality.AUDIO,
                    elem_id="hm-resample",
                )
                run = gr.Button("Show", variant="primary", elem_id="hm-run")
                model = gr.Dropdown(
                    list(bench.model_names), value=bench.default_model, label="model", elem_id="hm-model"
                )
                view = gr.Radio([v.label for v in views], value=start.label, label="view", elem_id="hm-view")
                layer = gr.Slider(0, len(info.keys) - 1, value=0, step=1, label="layer", elem_id="hm-layer")
                head = gr.Slider(0, info.num_heads - 1, value=0, step=1, label="head", elem_id="hm-head")
                words = gr.Checkbox(
                    label="word view (sum over a word's keys, mean over its queries)",
                    interactive=Control.WORDS in start.uses,
                    elem_id="hm-words",
                )
                masks = Control.MASK in start.uses
                mask_special = gr.Checkbox(
                    label="hide special tokens", interactive=masks, elem_id="hm-mask-special"
                )
                mask_first = gr.Checkbox(
                    label="hide the first token (a common sink)", interactive=masks, elem_id="hm-mask-first"
                )
                renorm = gr.Checkbox(
                    label="renormalize rows after hiding", interactive=masks, elem_id="hm-renorm"
                )
                norm = gr.Dropdown(
                    list(NORMS),
                    value="raw",
                    allow_custom_value=True,
                    label="normalization",
                    info="raw, topk:K, window:W, threshold:T, log, renorm; join with commas",
                    interactive=Control.NORM in start.uses,
                    elem_id="hm-norm",
                )
                cmap = gr.Dropdown(
                    [*SEQUENTIAL, *DIVERGING], value="viridis", label="colormap", elem_id="hm-cmap"
                )
                groups: list[gr.Group] = []
                extras: list[Any] = []  # each view's own controls (View.controls types them Any)
                spans: list[tuple[int, int]] = []
                for v in views:
                    with gr.Group(visible=v is start) as group:
                        own = list(v.controls())
                    groups.append(group)
                    spans.append((len(extras), len(extras) + len(own)))
                    extras.extend(own)
            with gr.Column(scale=3):
                plot = gr.HTML(
                    START_HINT,
                    html_template="<div class='hm-stage'></div>",
                    css_template=asset("heatmap.css"),
                    js_on_load=JS_ON_LOAD,
                    elem_id="hm-plot",
                )
                help_text = gr.Markdown(start.help, elem_id="hm-help")
        layout = Layout(tuple(views), tuple(spans))
        shared = Shared(
            model=model,
            text=text,
            layer=layer,
            head=head,
            words=words,
            mask_special=mask_special,
            mask_first=mask_first,
            renorm=renorm,
            norm=norm,
            cmap=cmap,
            image=image,
            audio=audio,
            resample=resample,
        )
        inputs = [view, *shared.items(), *extras]
        controls: dict[Control, list[gr.components.Component]] = {
            Control.LAYER: [layer],
            Control.HEAD: [head],
            Control.WORDS: [words],
            Control.MASK: [mask_special, mask_first, renorm],
            Control.NORM: [norm],
            Control.CMAP: [cmap],
        }

        def redraw(view_label: str, *values: Any) -> dict[str, object]:
            return draw(bench, layout, view_label, values)

        def choose_view(view_label: str, *values: Any) -> list[Any]:
            index, chosen = layout.view(view_label)
            toggles = [
                gr.update(interactive=c in chosen.uses) for c, group in controls.items() for _ in group
            ]
            visible = [gr.update(visible=i == index) for i in range(len(groups))]
            return [*visible, *toggles, chosen.help, draw(bench, layout, view_label, values)]

        def choose_model(name: str, layer_value: float, head_value: float, view_label: str) -> list[Any]:
            try:
                chosen = bench.info(name)
            except HeadmapError as exc:
                return [gr.update()] * 7 + [message(str(exc))]
            _, current = layout.view(view_label)
            # An image or speech model starts on its own view; a text model keeps a text view.
            keep = chosen.modality is Modality.TEXT and Modality.TEXT in current.takes
            fits = current if keep else layout.first_for(chosen.modality)
            return [
                gr.update(maximum=len(chosen.keys) - 1, value=min(int(layer_value), len(chosen.keys) - 1)),
                gr.update(maximum=chosen.num_heads - 1, value=min(int(head_value), chosen.num_heads - 1)),
                gr.update(label=TEXT_LABELS[chosen.modality], visible=chosen.modality is not Modality.IMAGE),
                gr.update(visible=chosen.modality in (Modality.IMAGE, Modality.IMAGE_TEXT)),
                gr.update(visible=chosen.modality is Modality.AUDIO),
                gr.update(visible=chosen.modality is Modality.AUDIO),
                gr.update(value=fits.label),
                hint(f"{name}: {len(chosen.keys)} layers, {chosen.num_heads} heads; drawing..."),
            ]

        for control in (layer, head, words, mask_special, mask_first, renorm, norm, cmap, *extras):
            control.change(
                redraw, inputs, plot, show_progress="hidden", trigger_mode="always_last", **PRIVATE
            )
        run.click(redraw, inputs, plot, show_progress="minimal", **PRIVATE)
        text.submit(redraw, inputs, plot, show_progress="minimal", **PRIVATE)
        toggled = [component for group in controls.values() for component in group]
        view.change(
            choose_view, inputs, [*groups, *toggled, help_text, plot], show_progress="minimal", **PRIVATE
        )
        model.change(
            choose_model,
            [model, layer, head, view],
            [layer, head, text, image, audio, resample, view, plot],
            **PRIVATE,
        ).then(redraw, inputs, plot, show_progress="minimal", **PRIVATE)
        for upload in (image, audio, resample):
            upload.change(redraw, inputs, plot, show_progress="minimal", **PRIVATE)
        demo.load(redraw, inputs, plot, show_progress="minimal", **PRIVATE)
        register(bench, max_concurrent)
    # Tabs and API clients do not wait for each other's captures, up to max_concurrent at once.
    demo.queue(default_concurrency_limit=max_concurrent)
    return demo


def blob_route(bench: Workbench) -> Any:
    """``GET /headmap/blob/<token>``: the codes of a picture, as raw bytes, for the page's script."""
    from starlette.requests import Request as HttpRequest
    from starlette.responses import Response
    from starlette.routing import Route

    def serve_blob(request: HttpRequest) -> Response:
        data = bench.blob(str(request.path_params["token"]))
        if data is None:
            return Response(b"this picture expired: move a control to draw it again", status_code=404)
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})

    return Route(f"/{BLOB_ROUTE}{{token}}", serve_blob, methods=["GET"])


def launch(
    bench: Workbench,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    quiet: bool = False,
    auth: Sequence[tuple[str, str]] | None = None,
    max_concurrent: int = MAX_CONCURRENT,
) -> gr.Blocks:
    """Build and start the dashboard on ``host:port`` (127.0.0.1 unless told otherwise).

    ``auth``: ``(user, password)`` pairs that may log in (None: no login; ``headmap serve`` refuses
    that on any address but loopback unless told ``--open``)."""
    demo = build_app(bench, max_concurrent=max_concurrent)
    demo.launch(
        auth=list(auth) if auth else None,
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=quiet,
        theme=theme(),
        ssr_mode=False,
        share=False,
        show_error=False,
        footer_links=[],
        # Gradio would keep every event's inputs and outputs (the texts) in the browser's
        # storage, and the page slows down as that history grows: record nothing.
        run_history=False,
        app_kwargs={"routes": [blob_route(bench)]},
    )
    return demo
