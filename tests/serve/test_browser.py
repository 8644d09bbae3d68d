"""A real browser loads the demo: headless Chromium shows the uploaded image, an answer and its stats."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.serve.examples import example_images
from llava.serve.gradio_web_server import DemoApp, LocalBackend, launch
from tests.serve.conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = Path(__file__).resolve().parents[2] / "scripts" / "install_chromium.sh"
WINDOW = (1280, 900)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, installed by scripts/install_chromium.sh when missing (CI runs as root)."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("chromium is missing and scripts/install_chromium.sh needs root and apt-get")
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=900, capture_output=True)
    return CHROMIUM


def headless(chromium: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=8000",
             *mode, url], capture_output=True, text=True, timeout=120, check=True)


def visible_text(html: str) -> str:
    """The page's rendered text: scripts (which hold gradio's config, answer included) removed."""
    html = re.sub(r"<script\b.*?</script>", " ", html, flags=re.S | re.I)
    html = re.sub(r"<style\b.*?</style>", " ", html, flags=re.S | re.I)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_browser_shows_uploaded_image_answer_and_visual_tokens(chromium, chat_model, tmp_path):
    examples_dir = tmp_path / "examples"
    app = DemoApp(LocalBackend(chat_model), example_images(examples_dir, image_size=112))
    session = app.preload()  # the first example (a red circle) asked about and answered, greedily
    answer = session.conv.messages[-1][1]
    demo = app.build(preload_session=session)
    launch(demo, port=free_port(), allowed_paths=[str(examples_dir), str(app.upload_dir)], block=False, quiet=True)
    shot = tmp_path / "demo.png"
    try:
        headless(chromium, demo.local_url, f"--screenshot={shot}")
        dom = headless(chromium, demo.local_url, "--dump-dom").stdout
    finally:
        demo.close()
        app.close()

    text = visible_text(dom)
    assert answer and answer in text
    assert "visual tokens: 4 (projector delta) · time to first token:" in text
    assert "What color is the shape?" in text

    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    pixels = np.asarray(image).astype(np.int16)
    assert pixels.std() > 20  # not a blank page
    red = (abs(pixels[..., 0] - 220) < 30) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 500  # the uploaded red circle is on screen
