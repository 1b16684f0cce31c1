"""A tiny model and media files shared by the web demo's tests (one model load)."""
import numpy as np
import pytest

MODEL = ("instructblip", "tiny_vicuna")


@pytest.fixture(scope="session")
def tiny_model():
    """(model, vis_processors) of the tiny random InstructBLIP (seeded, the same every run)."""
    from lavis_ib.models.loading import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess(*MODEL, is_eval=True, device="cpu")
    return model, vis


@pytest.fixture(scope="session")
def demo(tiny_model):
    from lavis_ib.web.model import DemoModel

    return DemoModel(*tiny_model, label=":".join(MODEL))


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """An image, a video and a file that is neither, written by the fixtures writer."""
    from lavis_ib.testing.fixtures import write_image, write_video

    root = tmp_path_factory.mktemp("web_media")
    rng = np.random.default_rng(16)
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return {"image": write_image(str(root / "photo.png"), rng, size=48),
            "video": write_video(str(root / "clip.mp4"), rng),
            "broken": str(broken)}


COMPARE = ("blip2_opt", "tiny_opt")


@pytest.fixture(scope="session")
def compare_model():
    """(model, vis_processors) of the tiny random BLIP-2 OPT: the second model of a
    comparison (its Q-Former does not read the instruction)."""
    from lavis_ib.models.loading import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess(*COMPARE, is_eval=True, device="cpu")
    return model, vis


@pytest.fixture(scope="session")
def compare_demo(compare_model):
    from lavis_ib.web.model import DemoModel

    return DemoModel(*compare_model, label=":".join(COMPARE))
