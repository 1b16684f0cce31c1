"""The real web demo in headless Chromium, two models side by side, one browser session:
the model panel, the example image and prompts, generation with beams and streamed, a
chat of two turns and its reset, ranking (scores, per-token view, CSV, length-normalised
order), the attention view and a video's sampled frames, each checked against the Python
API; the page must request nothing outside loopback. `make screenshots` saves the
pictures of docs/web_demo.md (LAVIS_IB_SCREENSHOTS=folder); otherwise they go to a
temporary folder.

Needs Debian's `chromium` and `chromium-driver` (`make test` installs them). Where they are
missing the test fails, naming the fix, so a machine without a browser never passes it
silently; LAVIS_IB_SKIP_BROWSER=1 skips it on purpose (say so when you report results).
"""
import csv
import io
import json
import os
import re
import urllib.request
from urllib.parse import urlparse

import pytest
from PIL import Image

from lavis_ib.web.model import GENERATION_DEFAULTS

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
PROMPT = "What is in the picture?"
CANDIDATES = ["a red bus", "two dogs", "yes"]


@pytest.fixture(autouse=True)
def _browser_present():
    if os.environ.get("LAVIS_IB_SKIP_BROWSER") == "1":
        pytest.skip("LAVIS_IB_SKIP_BROWSER=1")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make browser` (apt-get install chromium "
                    f"chromium-driver), or set LAVIS_IB_SKIP_BROWSER=1 to skip this test.")


@pytest.fixture
def served_app(demo, compare_demo):
    """The real app comparing two models, served in this process on a free loopback port
    with its own upload folder; closed afterwards."""
    from lavis_ib.cli.serve import free_port
    from lavis_ib.web.page import build_app, launch
    from lavis_ib.web.uploads import upload_folder

    with upload_folder():
        app = build_app([demo, compare_demo])
        url = launch(app, "127.0.0.1", free_port("127.0.0.1", 0), block=False)
        try:
            yield url
        finally:
            app.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def outside_loopback(urls) -> list[str]:
    return [u for u in urls if urlparse(u).scheme not in ("data", "blob")
            and urlparse(u).hostname not in LOOPBACK_HOSTS]



class Reference:
    """What the Python API returns for the fixture image, per model."""

    def __init__(self, model, vis, image_path):
        self.model = model
        self.samples = {"image": vis["eval"](Image.open(image_path).convert("RGB")).unsqueeze(0),
                        "prompt": PROMPT}

    def answer(self, **changes):
        return self.model.generate(self.samples, **{**GENERATION_DEFAULTS, **changes})[0]

    def chat(self, messages, **changes):
        return self.model.chat({"image": self.samples["image"]}, messages,
                               **{**GENERATION_DEFAULTS, **changes})

    def scores(self, candidates=CANDIDATES):
        scores, _ = self.model.score_candidates(self.samples, candidates)
        return dict(zip(candidates, scores[0].tolist()))

    def attention_difference(self, second):
        maps = [self.model.qformer_attention(self.samples, prompt=p).heatmap()[0]
                for p in (PROMPT, second)]
        a, b = (m / m.sum() for m in maps)
        return float(0.5 * (a - b).abs().sum())


def page_scores(text: str) -> dict[str, float]:
    """{candidate: log-probability} read from a rendered scores table (rank, candidate,
    tokens, log-probability, per token, probability, share)."""
    rows = re.findall(r"^\d+\s+(.+?)\s+\d+\s+(-?\d+\.\d{4})\s+-?\d+\.\d{4}\s+\S+\s+\S+$",
                      text, flags=re.M)
    return {cand.strip(): float(score) for cand, score in rows}


class Page:
    """The few moves the test makes on the page."""

    def __init__(self, driver, shots):
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.wait, self.shots = driver, WebDriverWait(driver, 90), shots

    def css(self, selector):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def tab(self, name):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC

        self.wait.until(EC.element_to_be_clickable(
            (By.XPATH, f"//button[@role='tab'][contains(., '{name}')]"))).click()

    def status(self):
        return self.css("#status").text

    def until(self, condition, what=""):
        from selenium.common.exceptions import TimeoutException

        try:
            self.wait.until(lambda d: condition() or "Error" in self.status())
        except TimeoutException:
            raise AssertionError(f"{what}: timed out; the status reads {self.status()!r}") from None
        assert "Error" not in self.status(), f"{what}: {self.status()}"

    def type(self, selector, text):
        box = self.css(selector)
        box.clear()
        box.send_keys(text)

    def set_number(self, elem_id, value):
        from selenium.webdriver.common.keys import Keys

        selector = f"#{elem_id} input[type=number]"
        # an accordion just opened renders its content a moment later
        self.wait.until(lambda d: any(b.is_displayed() for b in self.all(selector)))
        box = self.css(selector)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)
        self.wait.until(lambda d: box.get_attribute("value") == str(value))

    def shot(self, name, anchor=None):
        """A screenshot `name`.png, scrolled to the `anchor` element (else the top)."""
        self.d.execute_script("arguments[0] ? arguments[0].scrollIntoView() : "
                              "window.scrollTo(0, 0)", self.css(anchor) if anchor else None)
        path = os.path.join(self.shots, f"{name}.png")
        assert self.d.save_screenshot(path)
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > 0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_browser_research_views_offline(served_app, browser, tiny_model, compare_model, media,
                                        demo, tmp_path):
    from selenium.webdriver.common.by import By

    shots = os.environ.get("LAVIS_IB_SCREENSHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    refs = [Reference(*tiny_model, media["image"]), Reference(*compare_model, media["image"])]
    page = Page(browser, shots)
    browser.get(served_app)

    # 7: the model panel, from the models' own configs
    page.wait.until(lambda d: page.all("#image input[type=file]"))
    page.tab("Model")
    facts = page.css("#model-facts").text
    assert f"context length {tiny_model[0].llm.config.max_position_embeddings} tokens" in facts
    assert "type InstructBLIP" in facts and "quantisation none" in facts and "LoRA none" in facts
    assert f"max length up to {demo.max_length_limit} tokens" in facts
    assert "blip2_opt:tiny_opt" in page.css("#model-facts-2").text

    # 6: the example image and an example prompt, then the fixture image
    page.css("#example-image").click()
    page.until(lambda: "Image loaded (" in page.status(), "example image")
    with Image.open(os.path.join(__import__("matplotlib").get_data_path(), "sample_data",
                                 "grace_hopper.jpg")) as hopper:
        assert f"Image loaded ({hopper.width}x{hopper.height} pixels)." in page.status()
    browser.find_element(By.XPATH, "//*[@id='examples']//td[contains(., "
                                   "'A short image caption:')]").click()
    page.wait.until(lambda d: page.css("#prompt textarea").get_attribute("value")
                    == "A short image caption:")
    page.css("#new-image").click()
    page.until(lambda: "New image" in page.status(), "reset")
    page.wait.until(lambda d: page.all("#image input[type=file]"))
    page.css("#image input[type=file]").send_keys(media["image"])
    page.until(lambda: "Image loaded (48x48 pixels)." in page.status(), "upload")
    page.type("#prompt textarea", PROMPT)

    # 4 and 2: both models generate with beams (progress, then the text) ...
    page.tab("Generate")
    page.css("#generate-button").click()
    page.until(lambda: page.status().count("done in") == 2, "generate")
    assert page.css("#answer textarea").get_attribute("value") == refs[0].answer()
    assert page.css("#answer-2 textarea").get_attribute("value") == refs[1].answer()
    assert "5 beams: shown when done" in page.status()
    # ... and streamed with one beam, the text equal to the API's non-streamed answer
    page.css("#settings button.label-wrap").click()
    page.set_number("beams", 1)
    page.css("#generate-button").click()
    page.until(lambda: page.status().count("(streamed)") == 2, "stream")
    assert page.css("#answer textarea").get_attribute("value") == refs[0].answer(num_beams=1)
    assert page.css("#answer-2 textarea").get_attribute("value") == refs[1].answer(num_beams=1)
    assert "tokens/s" in page.status()
    page.shot("web_demo")

    # 1: a chat of two turns, each reply the API's `chat` with the history so far
    page.tab("Chat")
    history = []
    for turn in ("What is in the picture?", "And what colour is it?"):
        page.type("#chat-message textarea", turn)
        page.css("#chat-send").click()
        page.until(lambda: page.status().count("(streamed)") == 2 and not
                   page.css("#chat-message textarea").get_attribute("value"), "chat")
        history.append({"role": "user", "content": turn})
        expected = refs[0].chat(history, num_beams=1)
        bot = page.all("#chat [data-testid='bot']")
        assert bot and bot[-1].text.strip() == expected.strip()
        history.append({"role": "assistant", "content": expected})
    assert len(page.all("#chat-2 [data-testid='bot']")) == 2
    page.shot("web_demo_chat", "#chat-tab")

    # 5: ranking of both models, per-token view, CSV, length-normalised order
    page.tab("Rank candidates")
    page.type("#candidates textarea", ", ".join(CANDIDATES))
    page.css("#rank-button").click()
    page.until(lambda: len(page_scores(page.css("#scores").text)) == 3
               and len(page_scores(page.css("#scores-2").text)) == 3, "rank")
    for k, suffix in enumerate(("", "-2")):
        assert page_scores(page.css(f"#scores{suffix}").text) == pytest.approx(
            refs[k].scores(), abs=1e-4)
    assert all(c in page.css("#tokens").text for c in CANDIDATES)
    link = page.css("#csv a").get_attribute("href")
    with urllib.request.urlopen(link) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode("utf-8"))))
    assert {r["candidate"]: float(r["log_probability"]) for r in rows} == pytest.approx(
        refs[0].scores(), abs=1e-5)
    page.wait.until(lambda d: page.all("#chart img"))
    page.shot("web_demo_rank", "#rank-tab")
    browser.find_element(By.XPATH, "//*[@id='rank-kind']//label[contains(., 'mean per token')]"
                         ).click()
    page.css("#rank-button").click()
    page.until(lambda: "by mean per token" in page.status(), "rank by mean")

    # 3: the attention maps of two instructions, their difference as the API computes it
    page.tab("Attention")
    second = page.css("#second-instruction textarea").get_attribute("value")
    page.css("#attention-button").click()
    page.until(lambda: page.status().count("difference between the maps") == 2, "attention")
    for ref in refs:
        assert f"difference between the maps {ref.attention_difference(second):.3g} " \
            in page.status()
    assert len(page.all("#attention-first img, #attention-second-2 img")) == 2
    page.shot("web_demo_attention", "#attention-tab")

    # 6: a video shows the frames the model reads, no browser preview, no toast
    page.css("#new-image").click()
    page.until(lambda: "New image" in page.status(), "reset")
    assert page.all("#chat [data-testid='bot']") == []
    page.css("#video input[type=file]").send_keys(media["video"])
    page.until(lambda: "Video loaded: 4 frames sampled" in page.status(), "video")
    page.wait.until(lambda d: len(page.all("#frames img")) == 4)
    assert page.all("video") == [] and "not playable" not in browser.page_source
    page.shot("web_demo_video")

    urls = requested_urls(browser)
    assert any(urlparse(u).hostname == "127.0.0.1" for u in urls)
    assert outside_loopback(urls) == []
