"""VQA answer normalisation and the soft VQA accuracy (TextVQA, VQAv2, VizWiz).

The normalisation is the one used by the VQA / EvalAI servers (as packaged in MMF's M4C
evaluator, which upstream LLaVA vendors under this module name):

1. lower-case; drop every ``,`` and ``?``; split the possessive ``'s`` off its word;
2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a
   space (or when the text has a digit-comma-digit group), otherwise replaced by a space;
3. a period is deleted unless a digit follows it (``"1.5"`` keeps its period, ``"yes."``
   loses it);
4. number words ``none, zero .. ten`` become digits, articles ``a an the`` are removed;
5. apostrophe-less contractions are restored (``"dont"`` -> ``"don't"``).

Soft accuracy of a prediction against N human answers (N = 10 in these benchmarks):
``min(1, matches / 3)`` computed against each of the N leave-one-out subsets of N - 1 answers,
then averaged. With ``c`` of the N answers equal to the prediction this is
``(c * min(1, (c - 1) / 3) + (N - c) * min(1, c / 3)) / N``.

``EvalAIAnswerProcessor`` and ``TextVQAAccuracyEvaluator`` keep upstream's class names and
call signatures so code written against upstream keeps importing.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

# Contractions table of the official VQA evaluation, "written-without-apostrophe=canonical".
# Kept verbatim for score parity, quirks included: the capitalised keys never match (text is
# lower-cased first) and "somebody'd" maps to "somebodyd".
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't
itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
somebodys=somebody's someoned=someone'd someoned've=someone'd've someone'dve=someone'd've
someonell=someone'll someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't
whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd
wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll
whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've
wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd
youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split("=", 1) for pair in _CONTRACTION_PAIRS.split())

NUMBER_WORDS: dict[str, str] = {
    word: str(value)
    for value, word in enumerate("zero one two three four five six seven eight nine ten".split())
}
NUMBER_WORDS["none"] = "0"

ARTICLES = frozenset({"a", "an", "the"})

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")

# A comma between digits ("1,000"). Step 1 already drops every comma, so in the full pipeline
# this only matters to callers of `process_punctuation` on raw text.
_DIGIT_COMMA = re.compile(r"(?<=\d),+(?=\d)")
# The official pattern is r"(?!<=\d)(\.)(?!\d)"; its first group is a mistyped lookbehind
# that always succeeds, so it behaves as "a period not followed by a digit", written so here.
_PERIOD = re.compile(r"\.(?!\d)")


def tokenize(text: str) -> str:
    """Step 1: lower-case, drop ``,`` and ``?``, split ``'s`` off, flatten whitespace."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Steps 2-3: delete or space out punctuation, delete periods not followed by a digit."""
    out = text
    digit_comma = _DIGIT_COMMA.search(text) is not None
    for p in PUNCTUATION:
        # The test is on the input text, not on `out`, as in the official code.
        if digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def process_digit_article(text: str) -> str:
    """Step 4-5: number words to digits, articles removed, contractions restored."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """The full VQA answer normalisation (see the module docstring).

    Example: ``normalize_answer("Two dogs.") == "2 dogs"``.
    """
    return process_digit_article(process_punctuation(tokenize(text)))


def soft_accuracy(prediction: str, gt_answers: Iterable[str]) -> float:
    """VQA soft accuracy of one prediction, both sides normalised.

    Args:
        prediction: the model's raw answer.
        gt_answers: the N raw human answers (N >= 2; 10 in VQAv2 / TextVQA / VizWiz).

    Returns:
        The mean over the N leave-one-out subsets of ``min(1, matches / 3)``, in [0, 1].
    """
    gts = [normalize_answer(a) for a in gt_answers]
    if len(gts) < 2:
        raise ValueError(f"soft accuracy needs at least 2 ground-truth answers, got {len(gts)}")
    n = len(gts)
    c = Counter(gts)[normalize_answer(prediction)]
    # The c subsets that leave out a matching answer see c - 1 matches; the other n - c see c.
    return (c * min(1.0, (c - 1) / 3) + (n - c) * min(1.0, c / 3)) / n


class EvalAIAnswerProcessor:
    """Callable answer normaliser; upstream's name for :func:`normalize_answer`."""

    def __call__(self, item: str) -> str:
        return normalize_answer(item)


class TextVQAAccuracyEvaluator:
    """Mean soft accuracy over ``[{"pred_answer": str, "gt_answers": [str, ...]}, ...]``."""

    def eval_pred_list(self, pred_list: list[dict]) -> float:
        """Returns the mean soft accuracy in [0, 1]; 0.0 for an empty list."""
        if not pred_list:
            return 0.0
        return sum(soft_accuracy(e["pred_answer"], e["gt_answers"]) for e in pred_list) / len(pred_list)
