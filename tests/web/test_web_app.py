"""The web demo's computing, without a browser: what the page shows equals what the Python
API (`model.generate`, `model.score_candidates`) returns for the same file and settings,
and bad input becomes a message on the page instead of an exception."""
import pytest
import torch
from PIL import Image

from lavis_ib.web.callbacks import generate_for_page
from lavis_ib.web.model import GENERATION_DEFAULTS, rank_for_page

PROMPT = "What is in the picture?"


def image_batch(vis, path):
    return vis["eval"](Image.open(path).convert("RGB")).unsqueeze(0)


def video_batch(vis, path):
    from lavis_ib.common.registry import registry

    proc = vis["eval"]
    video_eval = registry.get_processor_class("video_eval")(
        image_size=proc.image_size, mean=proc.mean, std=proc.std)
    return video_eval(path).unsqueeze(0)


def page_settings(**changes):
    d = {**GENERATION_DEFAULTS, **changes}
    return [d["num_beams"], d["max_length"], d["min_length"], d["use_nucleus_sampling"],
            d["top_p"], d["temperature"], d["repetition_penalty"]]


@pytest.mark.parametrize("changes", [{}, {"num_beams": 2, "max_length": 7, "min_length": 3,
                                          "repetition_penalty": 1.1}])
def test_generated_answer_is_the_models(demo, tiny_model, media, changes):
    model, vis = tiny_model
    answer, status = generate_for_page(demo, media["image"], None, PROMPT,
                                       *page_settings(**changes), 0)
    settings = {**GENERATION_DEFAULTS, **changes}
    expected = model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                              **settings)[0]
    assert status.startswith("Generated: done in") and "tokens/s" in status
    assert answer == expected and answer.strip()


def test_nucleus_sampling_is_seeded(demo, tiny_model, media):
    model, vis = tiny_model
    changes = {"use_nucleus_sampling": True, "top_p": 0.8, "temperature": 1.7, "max_length": 12}
    first, _ = generate_for_page(demo, media["image"], None, PROMPT, *page_settings(**changes), 7)
    again, _ = generate_for_page(demo, media["image"], None, PROMPT, *page_settings(**changes), 7)
    torch.manual_seed(7)
    expected = model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                              **{**GENERATION_DEFAULTS, **changes})[0]
    assert first == again == expected


def test_ranking_is_the_models_scores_best_first(demo, tiny_model, media, tmp_path,
                                                 monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))   # where the page's CSV goes
    model, vis = tiny_model
    candidates = ["a red bus", "two dogs", "yes"]
    ranking = demo.rank(media["image"], None, PROMPT, " a red bus, two dogs ,yes ")
    _, table, _, _, status = rank_for_page(demo, media["image"], None, PROMPT,
                                           " a red bus, two dogs ,yes ")
    scores, _ = model.score_candidates({"image": image_batch(vis, media["image"]),
                                        "prompt": PROMPT}, candidates)
    expected = sorted(zip(scores[0].tolist(), candidates), reverse=True)
    assert ranking.candidates == [c for _, c in expected]
    assert ranking.scores == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert f"| 1 | {expected[0][1]} | " in table and f"| {expected[0][0]:.4f} |" in table
    assert status.endswith(f"best: {expected[0][1]}.")
    assert sum(ranking.shares) == pytest.approx(1.0)


def test_video_is_answered_from_its_frames(demo, tiny_model, media):
    model, vis = tiny_model
    batch = video_batch(vis, media["video"])
    assert batch.dim() == 5
    answer, status = generate_for_page(demo, None, media["video"], PROMPT, *page_settings(), 0)
    assert answer == model.generate({"image": batch, "prompt": PROMPT}, **GENERATION_DEFAULTS)[0]
    ranking = demo.rank(None, media["video"], PROMPT, "yes, no")
    scores, _ = model.score_candidates({"image": batch, "prompt": PROMPT}, ["yes", "no"])
    assert dict(zip(ranking.candidates, ranking.scores)) == pytest.approx(
        dict(zip(["yes", "no"], scores[0].tolist())), abs=1e-5)


@pytest.mark.parametrize("image,video,prompt,extra,message", [
    (None, None, PROMPT, {}, "Upload an image or a video first"),
    ("image", "video", PROMPT, {}, "clear one of them"),
    ("broken", None, PROMPT, {}, "image 'broken.png' is not a readable image"),
    ("missing", None, PROMPT, {}, "image 'photo.jpg' does not exist"),
    (None, "broken", PROMPT, {}, "video 'broken.png' cannot be decoded"),
    ("image", None, "   ", {}, "Type a prompt"),
    ("image", None, PROMPT, {"top_p": 0.0}, "Top-p 0.0 must be in (0, 1]"),
    ("image", None, PROMPT, {"min_length": 9, "max_length": 4}, "Min length 9"),
])
def test_bad_generation_input_is_a_message_on_the_page(demo, media, image, video, prompt, extra,
                                                       message):
    files = {**media, "missing": "/nonexistent/photo.jpg", None: None}
    answer, status = generate_for_page(demo, files[image], files[video], prompt,
                                       *page_settings(**extra), 0)
    assert answer == ""
    assert status.startswith("**Error:**") and message in status


@pytest.mark.parametrize("candidates,message", [
    (" , ", "type at least one answer"),
    ("yes, no, yes", "'yes' is listed twice"),
])
def test_bad_candidates_are_a_message_on_the_page(demo, media, candidates, message):
    chart, table, tokens, csv_file, status = rank_for_page(demo, media["image"], None, PROMPT,
                                                           candidates)
    assert chart is None and table == tokens == "" and csv_file is None
    assert status.startswith("**Error:**") and message in status


def test_seed_must_be_a_whole_number(demo, media):
    answer, status = generate_for_page(demo, media["image"], None, PROMPT, *page_settings(), None)
    assert answer == "" and "Seed: type a whole number" in status


def test_a_setting_the_model_does_not_take_is_reported_not_dropped(tiny_model, media):
    """A plugin model whose generate() has no `temperature`: the page says it was not
    applied, and the answer is that model's answer without it."""
    import copy

    from lavis_ib.web.model import DemoModel

    model, vis = tiny_model
    base = type(model)

    class NoTemperature(base):
        def generate(self, samples, use_nucleus_sampling=False, num_beams=5, max_length=30,
                     min_length=1, top_p=0.9, repetition_penalty=1.5):
            return base.generate(self, samples, use_nucleus_sampling=use_nucleus_sampling,
                                 num_beams=num_beams, max_length=max_length,
                                 min_length=min_length, top_p=top_p,
                                 repetition_penalty=repetition_penalty)

    plugin = copy.copy(model)
    plugin.__class__ = NoTemperature
    answer, status = generate_for_page(DemoModel(plugin, vis, "plugin:tiny"), media["image"],
                                       None, PROMPT, *page_settings(temperature=1.3), 0)
    assert "plugin:tiny does not accept 'temperature'; it was not applied." in status
    settings = {k: v for k, v in GENERATION_DEFAULTS.items() if k != "temperature"}
    assert answer == model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                                    **settings)[0]


def test_upload_preview_is_the_decoded_image_or_the_reason(media):
    from lavis_ib.web.model import preview_for_page

    image, status = preview_for_page(media["image"])
    with Image.open(media["image"]) as original:
        assert image.tobytes() == original.convert("RGB").tobytes()
    assert status == "Image loaded (48x48 pixels)."
    image, status = preview_for_page(media["broken"])
    assert image is None and status.startswith("**Error:**")
    assert "image 'broken.png' is not a readable image" in status  # the name, not the folder
    assert preview_for_page(None) == (None, "")
