"""Media files written by the prediction tests: PNGs of different sizes, an MP4 (PyAV)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def write_png(path, seed: int, size=(20, 30)) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return str(path)


def write_mp4(path, seed: int = 1, frames: int = 8) -> str:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture()
def pngs(tmp_path):
    return [write_png(tmp_path / f"img{i}.png", i, (20 + 5 * i, 30)) for i in range(2)]


@pytest.fixture(scope="module")
def tiny_vicuna():
    """(model, eval image processor) of the seeded random tiny type, for reference values
    computed by calling the model directly."""
    from lavis_ib.models.loading import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess("instructblip", "tiny_vicuna", is_eval=True)
    return model, vis["eval"]
