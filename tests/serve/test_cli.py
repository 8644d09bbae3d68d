"""``python -m llava.serve.cli``: a streamed, multi-turn chat about one image; EOF ends it cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

from llava.serve import cli
from tests.serve.conftest import serve_folder


def test_cli_chats_about_an_image_until_eof(tiny_checkpoint, image_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "llava.serve.cli", "--model-path", tiny_checkpoint, "--image-file", str(image_file),
         "--device", "cpu", "--temperature", "0", "--max-new-tokens", "5"],
        input="What is in the image?\n<image> twice?\nAnd its color?\n", capture_output=True, text=True,
        timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("ASSISTANT: ") == 2 and out.rstrip().endswith("exit...")  # two turns, then EOF
    answers = [line.split("ASSISTANT: ", 1)[1] for line in out.splitlines() if "ASSISTANT: " in line]
    assert all(a.strip() for a in answers)
    assert result.stderr.count("visual tokens: 4 (projector delta)") == 2
    assert "remove '<image>' from the message" in result.stderr


def test_cli_rejects_a_file_that_is_not_an_image(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert cli.main(["--model-path", str(tmp_path), "--image-file", str(notes), "--device", "cpu"]) == 2
    assert "The uploaded file is not an image" in capsys.readouterr().err


def test_cli_refuses_an_empty_image_file_instead_of_a_text_only_chat(tmp_path, capsys):
    for value in ("", "  "):
        assert cli.main(["--model-path", str(tmp_path), "--image-file", value, "--device", "cpu"]) == 2
        assert capsys.readouterr().err == ("error: --image-file is empty: give an image file or URL, or leave the "
                                           "flag out for a text-only chat\n")


def test_without_image_file_the_chat_is_text_only(chat_model):
    import io

    args = cli.build_parser().parse_args(["--model-path", "x", "--temperature", "0", "--max-new-tokens", "3"])
    assert args.image_file is None
    messages, out, err = iter(["Hello", ""]), io.StringIO(), io.StringIO()
    assert cli.chat_loop(chat_model, None, args, read=lambda _: next(messages), out=out, err=err) == 1
    assert "visual tokens: 0" in err.getvalue() and out.getvalue().rstrip().endswith("exit...")


def test_cli_downloads_an_image_url_or_says_why_it_cannot(tiny_checkpoint, image_file, tmp_path, capsys):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with serve_folder(image_file.parent) as url:
        result = subprocess.run(
            [sys.executable, "-m", "llava.serve.cli", "--model-path", tiny_checkpoint, "--image-file",
             f"{url}/{image_file.name}", "--device", "cpu", "--temperature", "0", "--max-new-tokens", "3"],
            input="What is in the image?\n", capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert "ASSISTANT: " in result.stdout and "visual tokens: 4 (projector delta)" in result.stderr
    assert cli.main(["--model-path", str(tmp_path), "--image-file", "http://example.invalid/x.png"]) == 2
    assert "error: --image-file: cannot download http://example.invalid/x.png: " in capsys.readouterr().err
