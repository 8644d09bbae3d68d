"""``python -m llava.eval.run_llava``: bad images, queries and templates are refused before the model loads."""

from __future__ import annotations

import pytest

from llava.eval import run_llava


@pytest.mark.parametrize("image_file, query, extra, message", [
    ("{folder}/missing.png", "What is it?", [], "error: cannot read {folder}/missing.png: No such file or directory"),
    ("http://example.invalid/x.png", "What is it?", [], "error: cannot download http://example.invalid/x.png: "),
    ("{notes}", "What is it?", [], "error: The uploaded file is not an image ({notes}): "),
    ("{folder}/a.png,{folder}/b.png", "Compare them",
     [], "error: --image-file gives 2 images but --query has no <image-placeholder>; put one"),
    ("{folder}/a.png", "<image-placeholder> and <image-placeholder>?",
     [], "error: --image-file gives 1 image but --query has 2 <image-placeholder>s; put one"),
    ("{folder}/a.png", "<image>\n<image>\nWhat is it?",
     [], "error: --image-file gives 1 image but --query has 2 <image>s; put one <image> in the query"),
    ("{folder}/a.png", "<image> or <image-placeholder>?",
     [], "error: --query has both <image-placeholder> and <image>; mark where each image goes"),
    ("{folder}/a.png", "What is it?", ["--conv-mode", "nope"], "error: Unknown conversation template 'nope' (from --conv-mode); known: ["),
])
def test_bad_inputs_exit_2_with_one_line_before_the_model_loads(tmp_path, image_folder, capsys, image_file, query,
                                                                extra, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    names = {"folder": image_folder, "notes": notes}
    # the checkpoint folder does not exist: loading it would fail with another error
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(tmp_path / "no-checkpoint"), "--image-file", image_file.format(**names),
                        "--query", query, *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**names)) and err.count("\n") == 1, err
