"""The page in a real browser (Debian's Chromium driven by Playwright): upload a picture,
paint a stroke on its mask, inpaint with shapes-inpaint, see the result in the gallery;
the written PNG changed where painted and kept the source's pixels far from it.

Skips where Chromium or Playwright is missing. With GLIDE_SCREENSHOT=PATH it also saves a
screenshot of the page there (docs/images/serve-page.png is one)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.serving import start_server

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")


def source_picture(path: Path) -> np.ndarray:
    """32x32: a blue background, a red square and a yellow stripe (things to keep)."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[:] = (30, 60, 200)
    array[8:24, 8:24] = (220, 30, 30)
    array[26:30, :] = (240, 220, 40)
    Image.fromarray(array).save(path)
    return array


def test_paint_a_mask_and_inpaint_in_the_browser(tmp_path):
    source = source_picture(tmp_path / "source.png")
    process, base = start_server(tmp_path)
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1300, "height": 860})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(base + "/")
            page.wait_for_function("document.body.dataset.ready === '1'")  # the commands' options are in
            page.select_option("#command", "inpaint")
            page.set_input_files("#file", str(tmp_path / "source.png"))
            page.wait_for_function("document.getElementById('view').width === 32")
            page.fill("#prompt", "a green circle")
            page.fill("#steps", "4")
            page.fill("#seed", "7")
            page.click("#more summary")
            page.fill("#more-fields [data-option=model]", "shapes-inpaint")
            page.fill("#more-fields [data-option=size]", "32")
            page.eval_on_selector("#brush", "b => { b.value = 6; b.dispatchEvent(new Event('input')); }")
            box = page.locator("#view").bounding_box()
            at = lambda fx, fy: (box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)  # noqa: E731
            page.mouse.move(*at(0.15, 0.5))
            page.mouse.down()
            page.mouse.move(*at(0.45, 0.5), steps=10)
            page.mouse.up()
            painted = page.evaluate("() => { const d = mask.getContext('2d').getImageData(0, 0, 32, 32).data;"
                                    " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 127; return n; }")
            assert 40 < painted < 300, painted
            page.click("#run")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')"
                                   " || document.getElementById('status').classList.contains('error')", timeout=90_000)
            status = page.text_content("#status")
            assert status.startswith("done: "), status
            name = status.removeprefix("done: ")
            page.wait_for_selector(f"#gallery img[data-name='{name}']")
            page.wait_for_function("document.getElementById('details-image').complete && !document.getElementById('details').hidden")
            if os.environ.get("GLIDE_SCREENSHOT"):
                page.screenshot(path=os.environ["GLIDE_SCREENSHOT"])
            browser.close()
        assert problems == []
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    made = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB"))
    rows, cols = np.mgrid[0:32, 0:32]
    far = (cols >= 24) | (rows <= 8) | (rows >= 24)  # the stroke ran across x 5..14 at y 16, 6 pixels wide
    near = (rows >= 14) & (rows <= 17) & (cols >= 6) & (cols <= 13)
    assert np.array_equal(made[far], source[far])
    assert np.abs(made[near].astype(int) - source[near]).sum() > 0
