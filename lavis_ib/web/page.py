"""The web demo's page (Gradio): an image or video upload, a prompt, generation settings
or a candidate list, the answer or the scores as a bar chart and a table.

Offline and private by construction (analytics off, no web fonts, nothing shared, loopback
unless told otherwise: docs/web_demo.md), within Gradio's own limits on uploads and queued
requests (`web.limits`); the computing is in `lavis_ib.web.model`."""
from __future__ import annotations

import functools
import os
from typing import Any

from lavis_ib.common.errors import LavisIbError
from lavis_ib.web.limits import ServeLimits
from lavis_ib.web.model import (GENERATION_DEFAULTS, DemoModel, generate_for_page, preview_for_page,
                              rank_for_page)

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Helvetica", "Arial", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "Consolas", "Menlo", "monospace"]


def require_gradio():
    """The gradio module, imported with analytics off; its absence is one clear error."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise LavisIbError("the web demo needs gradio, which is not installed: "
                           "pip install 'lavis_ib[demo]'") from None
    return gradio


def local_theme(gr):
    """Gradio's default look with system fonts only, so the page loads nothing from the web."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)


def _media_inputs(gr):
    """An image file (a file widget: gr.Image would decode it itself and fail on a bad file
    with Gradio's internals in the message) with its preview, or a video, and the prompt.
    No 'share' buttons: they post to Hugging Face Spaces."""
    with gr.Row():
        with gr.Column():
            image = gr.File(label="Image", file_types=["image"], type="filepath",
                            elem_id="image")
            preview = gr.Image(label="Image as read", interactive=False, format="png",
                               buttons=["download", "fullscreen"], elem_id="preview")
        video = gr.Video(label="Video (4 frames are sampled)", sources=["upload"],
                         buttons=["download"], elem_id="video")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                        placeholder="What is unusual about this image?")
    return image, preview, video, prompt


def _generation_tab(gr, demo: DemoModel, image, video, prompt, status):
    d, limit = GENERATION_DEFAULTS, demo.max_length_limit
    with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
        with gr.Row():
            beams = gr.Slider(1, 10, value=d["num_beams"], step=1, label="Beams")
            max_length = gr.Slider(1, limit, value=min(d["max_length"], limit), step=1,
                                   label="Max length", elem_id="max-length")
            min_length = gr.Slider(0, limit, value=min(d["min_length"], limit), step=1,
                                   label="Min length", elem_id="min-length")
        with gr.Row():
            nucleus = gr.Checkbox(value=d["use_nucleus_sampling"], label="Nucleus sampling")
            top_p = gr.Slider(0.05, 1.0, value=d["top_p"], step=0.05, label="Top-p")
            temperature = gr.Slider(0.05, 2.0, value=d["temperature"], step=0.05,
                                    label="Temperature")
            repetition = gr.Slider(1.0, 3.0, value=d["repetition_penalty"], step=0.05,
                                   label="Repetition penalty")
            seed = gr.Number(value=0, precision=0, label="Seed (sampling)")
        button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        answer = gr.Textbox(label="Answer", lines=3, interactive=False, elem_id="answer")
    # generate and rank share one model: one request at a time, the others wait in the queue
    button.click(functools.partial(generate_for_page, demo),
                 inputs=[image, video, prompt, beams, max_length, min_length, nucleus, top_p,
                         temperature, repetition, seed],
                 outputs=[answer, status], api_name="generate", concurrency_id="model",
                 concurrency_limit=1)


def _ranking_tab(gr, demo: DemoModel, image, video, prompt, status):
    with gr.Tab("Rank candidates", id="rank", elem_id="rank-tab"):
        candidates = gr.Textbox(label="Candidates (comma-separated)", elem_id="candidates",
                                placeholder="yes, no")
        button = gr.Button("Rank", variant="primary", elem_id="rank-button")
        chart = gr.BarPlot(x="candidate", y="log-probability", sort="-y",
                           label="Summed log-probability per candidate", elem_id="chart")
        table = gr.Markdown(elem_id="scores")
    button.click(functools.partial(rank_for_page, demo),
                 inputs=[image, video, prompt, candidates], outputs=[chart, table, status],
                 api_name="rank", concurrency_id="model", concurrency_limit=1)


def build_app(demo: DemoModel, limits: ServeLimits = ServeLimits()) -> Any:
    """The gr.Blocks page for one loaded model; uploads older than
    `limits.upload_max_age_s` are deleted as often, and all of them when the server stops."""
    gr = require_gradio()
    with gr.Blocks(title=f"lavis_ib: {demo.label}", analytics_enabled=False,
                   delete_cache=limits.delete_cache) as app:
        gr.Markdown(f"## lavis_ib web demo: `{demo.label}`\n"
                    "Upload an image or a video, type a prompt, then generate an answer or "
                    "rank candidate answers by their summed log-probability.")
        image, preview, video, prompt = _media_inputs(gr)
        status = gr.Markdown(elem_id="status")
        image.change(preview_for_page, inputs=[image], outputs=[preview, status],
                     api_name=False)
        with gr.Tabs():
            _generation_tab(gr, demo, image, video, prompt, status)
            _ranking_tab(gr, demo, image, video, prompt, status)
    return app


def launch(app: Any, host: str, port: int, block: bool = True,
           limits: ServeLimits = ServeLimits()) -> str:
    """Serve `app` on host:port (never shared); returns the local URL. With block=False
    the server runs in a thread until `app.close()`. `show_error`: an unexpected failure
    shows its message on the page, not just 'Error' (bad input never gets that far).
    Gradio refuses an upload over `limits.max_file_size` (HTTP 413) and a request beyond
    `limits.queue_size` waiting ones; `quiet`: the command prints its own one line."""
    from lavis_ib.common.quiet import quiet_web_demo

    gr = require_gradio()
    quiet_web_demo()
    app.queue(max_size=limits.queue_size)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False,
               prevent_thread_lock=not block, show_error=True, quiet=True,
               max_file_size=limits.max_file_size,
               theme=local_theme(gr), ssr_mode=False, enable_monitoring=False,
               footer_links=[], pwa=False, mcp_server=False)
    return app.local_url or f"http://{host}:{port}/"
