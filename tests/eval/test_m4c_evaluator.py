import pytest

from llava.eval.m4c_evaluator import (
    EvalAIAnswerProcessor,
    TextVQAAccuracyEvaluator,
    normalize_answer,
    process_punctuation,
    soft_accuracy,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("Yes!", "yes"),
        ("What?", "what"),
        ("  Yes \n", "yes"),
        ("Two", "2"),
        ("two dogs", "2 dogs"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("The dog", "dog"),
        ("a cat", "cat"),
        ("an apple", "apple"),
        ("1,000", "1000"),  # commas are dropped before anything else
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("e.g.", "eg"),
        ("end.", "end"),
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("it's", "it 's"),  # possessive/contraction 's is split off
        ("one-way", "1 way"),  # '-' not touching a space becomes a space
        ("hot - dog", "hot dog"),  # punctuation touching a space is deleted
        ("t-shirt -blue", "tshirt blue"),  # one '-' touches a space: every '-' is deleted, as in the official code
        ("(dog)", "dog"),
        ('"stop"', "stop"),
        ("red,blue", "redblue"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected
    assert EvalAIAnswerProcessor()(raw) == expected


def test_digit_comma_rule_in_process_punctuation():
    # On raw text (before commas are dropped), a digit-comma-digit group makes every
    # punctuation mark be deleted instead of replaced by a space.
    assert process_punctuation("1,000 x-y") == "1000 xy"
    assert process_punctuation("a,b x-y") == "a b x y"


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_accuracy_leave_one_out(matches, expected):
    # c of 10 answers match: (c * min(1, (c-1)/3) + (10-c) * min(1, c/3)) / 10
    gts = ["cat"] * matches + ["dog"] * (10 - matches)
    assert soft_accuracy("cat", gts) == pytest.approx(expected)


def test_soft_accuracy_normalises_both_sides():
    gts = ["Two", "2", "two.", "3", "3", "3", "3", "3", "3", "3"]
    assert soft_accuracy("2", gts) == pytest.approx(0.9)
    assert soft_accuracy("The 3", gts) == pytest.approx(1.0)


def test_soft_accuracy_needs_answers():
    with pytest.raises(ValueError, match="at least 2"):
        soft_accuracy("a", ["a"])


def test_textvqa_evaluator():
    preds = [
        {"pred_answer": "Yes.", "gt_answers": ["yes"] * 10},
        {"pred_answer": "cat", "gt_answers": ["cat"] * 2 + ["dog"] * 8},
    ]
    assert TextVQAAccuracyEvaluator().eval_pred_list(preds) == pytest.approx((1.0 + 0.6) / 2)
    assert TextVQAAccuracyEvaluator().eval_pred_list([]) == 0.0
