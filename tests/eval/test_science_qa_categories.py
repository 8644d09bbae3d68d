"""ScienceQA's context categories: a hint of only whitespace is no text context."""

from __future__ import annotations

import pytest

from llava.eval.eval_science_qa import problem_categories


@pytest.mark.parametrize("hint, image, expected", [
    ("  ", None, ["NO"]),
    ("\n\t", None, ["NO"]),
    ("  ", "image.png", ["IMG"]),
    (None, None, ["NO"]),
    (" Read the text. ", None, ["TXT"]),
    (" Read the text. ", "image.png", ["TXT", "IMG"]),
])
def test_context_category_from_hint_and_image(hint, image, expected):
    problem = {"subject": "natural science", "grade": "grade3", "hint": hint, "image": image}
    cats = problem_categories(problem)
    assert [c for c in cats if c in ("TXT", "IMG", "NO")] == expected
    assert cats[0] == "NAT" and cats[-1] == "G1-6"
