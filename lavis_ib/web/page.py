"""The web demo's page (Gradio): media, prompt, examples and tabs to generate, chat, rank,
see the Q-Former's attention and read what is loaded, for one model or two side by side.
Offline and private by construction (analytics off, no web fonts, nothing shared, loopback
unless told otherwise), within Gradio's limits on uploads and queued requests
(`web.limits`); the computing is in `web.model` and `web.callbacks`."""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

from lavis_ib.common.errors import LavisIbError
from lavis_ib.web.limits import ServeLimits
from lavis_ib.web.callbacks import (attention_compare_for_page, chat_live_for_page,
                                   example_image_for_page, generate_live_for_page,
                                   rank_compare_for_page)
from lavis_ib.web.model import GENERATION_DEFAULTS, DemoModel, frames_for_page, preview_for_page
from lavis_ib.web.ranking import SCORE_KINDS

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Helvetica", "Arial", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "Consolas", "Menlo", "monospace"]
#: the status line stands out: every message of the page (errors too) is written there
STATUS_CSS = ("#status {border: 2px solid #4c72b0; border-radius: 6px; min-height: 2.5em; "
              "font-size: 1.05em}")


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
    with Gradio's internals in the message) with its preview and the example image, or a
    video file with the frames the model will see (a file widget too: a browser preview
    needs the file converted by an external program, and fails on MSVD's formats).
    No 'share' buttons: they post to Hugging Face Spaces."""
    with gr.Column(scale=1):
        image = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="image")
        example = gr.Button("Use the example image (Grace Hopper, public domain)",
                            size="sm", elem_id="example-image")
        preview = gr.Image(label="Image as read", interactive=False, format="png",
                           buttons=["download", "fullscreen"], elem_id="preview", height=240)
        video = gr.File(label="Video", file_types=["video"], type="filepath", elem_id="video")
        frames = gr.Gallery(label="Video: the frames the model reads", columns=4, height=140,
                            format="png", interactive=False, elem_id="frames",
                            buttons=["fullscreen"])
        new_image = gr.Button("New image (clears the media and the chat)", size="sm",
                              elem_id="new-image")
    return image, example, preview, video, frames, new_image


def _generation_settings(gr, demo: DemoModel) -> list:
    d, limit = GENERATION_DEFAULTS, demo.max_length_limit
    with gr.Accordion("Generation settings (Generate and Chat)", open=False,
                      elem_id="settings"):
        with gr.Row():
            beams = gr.Slider(1, 10, value=d["num_beams"], step=1, label="Beams",
                              info="1: the answer streams as it is generated", elem_id="beams")
            max_length = gr.Slider(1, limit, value=min(d["max_length"], limit), step=1,
                                   label="Max length", elem_id="max-length",
                                   info=f"up to {limit}: the LLM's context less the soft prompts")
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
    return [beams, max_length, min_length, nucleus, top_p, temperature, repetition, seed]


def _suffix(i: int) -> str:
    return "" if i == 0 else f"-{i + 1}"


def _generation_tab(gr, demos, media, prompt, settings, status):
    with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
        button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Row():
            answers = [gr.Textbox(label=f"Answer: {d.label}", lines=3, interactive=False,
                                  elem_id=f"answer{_suffix(i)}") for i, d in enumerate(demos)]
    # every model request shares one slot: one at a time, the others wait in the queue
    button.click(functools.partial(generate_live_for_page, demos),
                 inputs=[*media, prompt, *settings], outputs=[*answers, status],
                 api_name="generate", concurrency_id="model", concurrency_limit=1)


def _chat_tab(gr, demos, media, settings, status):
    with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
        gr.Markdown("A conversation about the image or video: the LLM reads the history, "
                    "the Q-Former the current question only. *New image* starts over.")
        with gr.Row():
            chats = [gr.Chatbot(label=f"Chat: {d.label}", height=300,
                                elem_id=f"chat{_suffix(i)}", buttons=["copy"])
                     for i, d in enumerate(demos)]
        message = gr.Textbox(label="Your message", lines=1, elem_id="chat-message",
                             placeholder="What is in the picture?")
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
    for trigger in (send.click, message.submit):
        trigger(functools.partial(chat_live_for_page, demos),
                inputs=[*media, message, *settings, *chats],
                outputs=[*chats, message, status], api_name="chat" if trigger == send.click
                else False, concurrency_id="model", concurrency_limit=1)
    return chats


def _ranking_tab(gr, demos, media, prompt, status):
    with gr.Tab("Rank candidates", id="rank", elem_id="rank-tab"):
        with gr.Row():
            candidates = gr.Textbox(label="Candidates (comma-separated)", elem_id="candidates",
                                    placeholder="yes, no", scale=3)
            kind = gr.Radio(list(SCORE_KINDS), value="sum", label="Order and chart by",
                            info="summed log-probability, or its mean per token "
                                 "(length-normalised)", elem_id="rank-kind", scale=2)
        button = gr.Button("Rank", variant="primary", elem_id="rank-button")
        outputs = []
        with gr.Row():
            for i, demo in enumerate(demos):
                with gr.Column():
                    outputs += [
                        gr.Plot(label=f"Log-probability: {demo.label}", format="png",
                                elem_id=f"chart{_suffix(i)}"),
                        gr.Markdown(elem_id=f"scores{_suffix(i)}"),
                        gr.Markdown(elem_id=f"tokens{_suffix(i)}",
                                    label="Each token's log-probability"),
                        gr.File(label="CSV", interactive=False, elem_id=f"csv{_suffix(i)}")]
    button.click(functools.partial(rank_compare_for_page, demos),
                 inputs=[*media, prompt, candidates, kind], outputs=[*outputs, status],
                 api_name="rank", concurrency_id="model", concurrency_limit=1)
    return candidates


def cross_attention_layers(demo: DemoModel) -> list[int]:
    """The Q-Former layers that read the image (those with cross-attention)."""
    qformer = getattr(demo.model, "qformer", None)
    return [i for i, layer in enumerate(getattr(qformer, "layers", []))
            if getattr(layer, "cross_attn", None) is not None]


def _attention_tab(gr, demos, media, prompt, status):
    with gr.Tab("Attention", id="attention", elem_id="attention-tab"):
        gr.Markdown("Where the Q-Former's queries look in the image (cross-attention to the "
                    "patches, averaged over heads and queries), for the prompt above and a "
                    "second instruction. InstructBLIP's Q-Former reads the instruction, so "
                    "its maps can differ; BLIP-2's does not. Both maps share one colour scale.")
        with gr.Row():
            second = gr.Textbox(label="Second instruction", elem_id="second-instruction",
                                value="Where is the text in the image?", scale=3)
            layer = gr.Dropdown(["all"] + [str(i) for i in cross_attention_layers(demos[0])],
                                value="all", label="Q-Former layer", elem_id="attention-layer",
                                scale=1, info="'all': the mean over its cross-attention layers")
        button = gr.Button("Show attention", variant="primary", elem_id="attention-button")
        outputs = []
        for i, demo in enumerate(demos):
            with gr.Row():
                outputs += [gr.Image(label=f"{demo.label}: the prompt", format="png",
                                     interactive=False, elem_id=f"attention-first{_suffix(i)}",
                                     height=320, buttons=["download", "fullscreen"]),
                            gr.Image(label=f"{demo.label}: the second instruction",
                                     format="png", interactive=False, height=320,
                                     buttons=["download", "fullscreen"],
                                     elem_id=f"attention-second{_suffix(i)}")]
    button.click(functools.partial(attention_compare_for_page, demos),
                 inputs=[*media, prompt, second, layer], outputs=[*outputs, status],
                 api_name="attention", concurrency_id="model", concurrency_limit=1)


def _model_tab(gr, demos):
    from lavis_ib.web.model_info import facts_markdown

    with gr.Tab("Model", id="model", elem_id="model-tab"):
        with gr.Row():
            for i, demo in enumerate(demos):
                gr.Markdown(facts_markdown(demo), elem_id=f"model-facts{_suffix(i)}")


def _examples(gr):
    from lavis_ib.web.examples import example_rows

    return gr.Dataset(components=["textbox", "textbox", "textbox"], samples=example_rows(),
                      headers=["task family", "prompt", "candidates"],
                      label="Examples (click one: it fills the prompt and the candidates)",
                      layout="table", samples_per_page=20, elem_id="examples")


def _use_example(gr, row):
    """(prompt, candidates) of an example row; the candidates stay when it has none."""
    return row[1], (row[2] if row[2] else gr.skip())


def build_app(demo: DemoModel | Sequence[DemoModel], limits: ServeLimits = ServeLimits()) -> Any:
    """The gr.Blocks page for one loaded model, or several side by side (the first one's
    limits set the sliders); uploads older than `limits.upload_max_age_s` are deleted as
    often, and all of them when the server stops."""
    gr = require_gradio()
    demos = [demo] if isinstance(demo, DemoModel) else list(demo)
    names = " vs ".join(f"`{d.label}`" for d in demos)
    with gr.Blocks(title=f"lavis_ib: {' vs '.join(d.label for d in demos)}",
                   analytics_enabled=False, delete_cache=limits.delete_cache) as app:
        gr.Markdown(f"## lavis_ib web demo: {names}\n"
                    "Upload an image or a video (or use the example image), type a prompt, "
                    "then generate, chat, rank candidate answers or see where the Q-Former "
                    "looks.")
        with gr.Row():
            image, example, preview, video, frames, new_image = _media_inputs(gr)
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                    placeholder="What is unusual about this image?")
                status = gr.Markdown("Ready.", elem_id="status", container=True, padding=True)
                settings = _generation_settings(gr, demos[0])
                examples = _examples(gr)
        media = [image, video]
        with gr.Tabs():
            _generation_tab(gr, demos, media, prompt, settings, status)
            chats = _chat_tab(gr, demos, media, settings, status)
            candidates = _ranking_tab(gr, demos, media, prompt, status)
            _attention_tab(gr, demos, media, prompt, status)
            _model_tab(gr, demos)
        examples.click(functools.partial(_use_example, gr), inputs=[examples],
                       outputs=[prompt, candidates], api_name=False)
        # a cleared upload clears its preview and leaves the status line as it is
        image.change(lambda path: preview_for_page(path) if path else (None, gr.skip()),
                     inputs=[image], outputs=[preview, status], api_name=False)
        video.change(lambda path: frames_for_page(demos[0], path) if path else (None, gr.skip()),
                     inputs=[video], outputs=[frames, status], api_name=False)
        example.click(example_image_for_page, outputs=[image, status], api_name=False)
        new_image.click(lambda: (None, None, None, None, *([[]] * len(chats)),
                                 "New image: media and chat cleared."),
                        outputs=[image, video, preview, frames, *chats, status], api_name=False)
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
               footer_links=[], pwa=False, mcp_server=False, css=STATUS_CSS)
    return app.local_url or f"http://{host}:{port}/"
