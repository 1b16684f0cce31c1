"""What one visitor can cost `lavis-ib serve`: an over-limit prompt is refused with a line
on the page (characters counted before tokenizing, then the model's tokens), Gradio's own
upload, queue and cache limits are set from the command's options, and the uploads are
removed when the server stops."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from lavis_ib.cli import dispatch as cli
from lavis_ib.cli.serve import free_port
from lavis_ib.web import model as web_model
from lavis_ib.web.limits import ServeLimits
from lavis_ib.web.callbacks import generate_for_page
from lavis_ib.web.model import GENERATION_DEFAULTS, rank_for_page


def _generate(demo, image, prompt, max_length=30):
    d = GENERATION_DEFAULTS
    return generate_for_page(demo, image, None, prompt, 1, max_length, d["min_length"],
                             False, d["top_p"], d["temperature"], 1.0, 0)


def test_a_megabyte_prompt_is_refused_before_it_is_tokenized(demo, media, monkeypatch):
    def no_tokenizing(model, text):
        raise AssertionError("a prompt over the character limit was tokenized")

    monkeypatch.setattr(web_model, "prompt_tokens", no_tokenizing)
    before = demo.refused_prompts
    answer, status = _generate(demo, media["image"], "x" * 1_000_000)
    assert answer == ""
    assert status == ("**Error:** Prompt: 1,000,000 characters; this server (lavis-ib serve "
                      "--max-prompt-chars) takes at most 2,000. Shorten it.")
    *_, status = rank_for_page(demo, media["image"], None, "y" * 2001, "yes, no")
    assert "Prompt: 2,001 characters" in status
    assert demo.refused_prompts == before + 2


def test_a_prompt_over_the_models_tokens_is_refused_not_cut(demo, tiny_model, media):
    import torch

    from lavis_ib.processors.media_files import load_image

    model, vis = tiny_model
    tokenizer = model.adapter.tokenizer
    # the tiny LLaMA's context less one image's query tokens less the answer's 30 tokens
    room = (model.llm.config.max_position_embeddings - model.query_tokens.shape[1] - 30)
    extra = len(tokenizer("a").input_ids) - 1          # BOS and the like, one token per char
    over, at = "a" * (room + 1 - extra), "a" * (room - extra)
    assert len(tokenizer(over).input_ids) == room + 1 and len(over) < 2000
    answer, status = _generate(demo, media["image"], over)
    assert answer == "" and status == (
        f"**Error:** Prompt: {room + 1} tokens; instructblip:tiny_vicuna beside the image and "
        f"the answer reads at most {room}. Shorten it.")
    before = model.inference_counts()["num_truncated"]
    answer, status = _generate(demo, media["image"], at)
    image = load_image(media["image"], vis["eval"])     # as predict reads it
    with torch.inference_mode():
        expected = model.generate({"image": image[None], "prompt": at}, num_beams=1,
                                  max_length=30, repetition_penalty=1.0)[0]
    assert status.startswith("Generated: done in") and answer == expected
    assert model.inference_counts()["num_truncated"] == before


def _upload(url: str, data: bytes, name: str = "a.png"):
    """(status, body) of a POST of one file to Gradio's upload route."""
    body = (b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" +
            name.encode() + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data +
            b"\r\n--BOUNDARY--\r\n")
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type":
                                              "multipart/form-data; boundary=BOUNDARY"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(120)
def test_gradio_limits_and_uploads_removed_when_the_server_stops(demo):
    from lavis_ib.web.page import build_app, launch
    from lavis_ib.web.uploads import upload_folder

    limits = ServeLimits(max_upload_mb=0.001, queue_size=3, upload_max_age_s=60)
    before = os.environ.get("GRADIO_TEMP_DIR")
    with upload_folder() as folder:
        assert os.environ["GRADIO_TEMP_DIR"] == folder
        app = build_app(demo, limits)
        assert app.delete_cache == (60, 60)
        url = launch(app, "127.0.0.1", free_port("127.0.0.1", 0), block=False, limits=limits)
        try:
            assert app.max_file_size == 1000 and app._queue.max_size == 3
            status, body = _upload(url, b"\x89PNG" + b"0" * 500)
            assert status == 200, body
            (stored,) = json.loads(body)
            assert stored.startswith(folder + os.sep) and os.path.isfile(stored)
            status, body = _upload(url, b"0" * 1001, "big.png")
            assert status == 413 and "maximum allowed size of 1000 bytes" in body
        finally:
            app.close()
    assert not os.path.exists(folder)
    assert os.environ.get("GRADIO_TEMP_DIR") == before


def test_serve_hands_its_limits_to_the_page(tiny_model, monkeypatch, capsys):
    from lavis_ib.models import loading
    from lavis_ib.web import page

    seen = {}

    def fake_launch(app, host, port, block=True, limits=None):
        seen.update(app=app, limits=limits, folder=os.environ["GRADIO_TEMP_DIR"])
        seen["exists"] = os.path.isdir(seen["folder"])

    monkeypatch.setattr(loading, "load_model_and_preprocess",
                        lambda *a, **k: (*tiny_model, None))
    monkeypatch.setattr(page, "launch", fake_launch)
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--port", "0",
                     "--max-upload-mb", "5", "--queue-size", "4", "--max-prompt-chars", "300",
                     "--upload-max-age", "600"]) == 0
    assert seen["limits"] == ServeLimits(max_upload_mb=5, queue_size=4, max_prompt_chars=300,
                                         upload_max_age_s=600)
    assert seen["app"].delete_cache == (600, 600) and seen["exists"]
    assert not os.path.exists(seen["folder"])
    handler = [fn for fn in seen["app"].fns.values() if fn.api_name == "generate"][0].fn
    assert handler.args[0][0].max_prompt_chars == 300


def test_default_limits_are_the_options_defaults():
    from lavis_ib.cli.serve import build_parser, serve_limits

    args = build_parser().parse_args(["--model", "instructblip:tiny_vicuna"])
    assert serve_limits(args) == ServeLimits()
    assert ServeLimits().max_file_size == 50_000_000


def test_bad_limits_fail_before_the_model_loads(monkeypatch, capsys):
    from lavis_ib.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the limits were checked")

    monkeypatch.setattr(loading, "load_model_and_preprocess", refuse)
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--queue-size", "0",
                     "--max-upload-mb", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "lavis-ib serve: error: --max-upload-mb -1.0 must be above 0; --queue-size 0 must be "
        "at least 1.")


def test_serve_compare_loads_each_model_once_and_shows_both(tiny_model, compare_model,
                                                            monkeypatch):
    from lavis_ib.models import loading
    from lavis_ib.web import page

    loaded, seen = [], {}

    def load(name, model_type, **kwargs):
        loaded.append((name, model_type, kwargs.get("llm_model")))
        return (*(tiny_model if name == "instructblip" else compare_model), None)

    monkeypatch.setattr(loading, "load_model_and_preprocess", load)
    monkeypatch.setattr(page, "launch", lambda app, *a, **k: seen.update(app=app))
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--port", "0",
                     "--compare", "blip2_opt:tiny_opt"]) == 0
    assert loaded == [("instructblip", "tiny_vicuna", None), ("blip2_opt", "tiny_opt", None)]
    handler = [fn for fn in seen["app"].fns.values() if fn.api_name == "generate"][0].fn
    assert [d.label for d in handler.args[0]] == ["instructblip:tiny_vicuna", "blip2_opt:tiny_opt"]
    assert "blip2_opt:tiny_opt" in seen["app"].title


def test_compare_with_itself_is_one_line_before_loading(monkeypatch, capsys):
    from lavis_ib.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_model_and_preprocess", refuse)
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna",
                     "--compare", "instructblip:tiny_vicuna"]) == 2
    assert "--compare instructblip:tiny_vicuna is the --model itself" in capsys.readouterr().err
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--compare", "blip2"]) == 2
    assert "--compare 'blip2': write NAME:TYPE" in capsys.readouterr().err
