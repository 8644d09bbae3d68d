"""The benchmark runners on a tiny random checkpoint: batching, resuming, chunking, each format."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import torch

from llava.eval import (eval_qbench, merge_answers, model_vqa, model_vqa_loader, model_vqa_mmbench, model_vqa_qbench,
                        model_vqa_science, run_llava)
from llava.eval import runner
from llava.eval.runner import get_chunk, load_model

# Different lengths, so a batch needs real left padding.
QUESTIONS = [
    (101, "a.png", "What is in the image?"),
    (102, "b.png", "Describe the image in detail."),
    (103, "sub/c.png", "What color is the car? Answer the question using a single word or phrase."),
    (104, "a.png", "How many people are there?"),
    (105, "b.png", "Is there a dog in the picture? Answer yes or no."),
    (106, "sub/c.png", "Where was this photo taken? Describe the city street, the blue sky and the tall tree."),
]
MAX_NEW_TOKENS = "8"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: extra threads only fight the other test processes for the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(model_vqa_loader.build_parser().parse_args(["--model-path", tiny_checkpoint, "--device", "cpu"]))


@pytest.fixture(scope="module")
def question_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    path.write_text("".join(json.dumps({"question_id": q, "image": im, "text": t}) + "\n" for q, im, t in QUESTIONS))
    return str(path)


def _args(module, tiny_checkpoint, image_folder, question_file, answers_file, *extra):
    return module.build_parser().parse_args([
        "--model-path", tiny_checkpoint, "--image-folder", image_folder, "--question-file", question_file,
        "--answers-file", str(answers_file), "--temperature", "0", "--max_new_tokens", MAX_NEW_TOKENS,
        "--device", "cpu", *extra])


def _read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, loaded, tiny_checkpoint, image_folder, question_file):
    """Batch-size-1 answers for QUESTIONS."""
    out = tmp_path_factory.mktemp("reference") / "answers.jsonl"
    model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out), loaded)
    return _read(out)


def test_answer_file_format(reference):
    assert [a["question_id"] for a in reference] == [q for q, _, _ in QUESTIONS]
    for answer, (_, _, text) in zip(reference, QUESTIONS):
        assert set(answer) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert answer["prompt"] == text and answer["model_id"] == "llava-tiny-mlp2x" and answer["metadata"] == {}
    assert len({a["answer_id"] for a in reference}) == len(reference)
    assert len({a["text"] for a in reference}) > 1  # the batching tests compare more than one constant


def test_answers_are_cut_at_the_stop_string_and_eos(llama_tokenizer):
    """Rows end differently in a batch; each is cut at its own stop string / eos, pads dropped."""

    class StubModel:  # returns fixed "new tokens", as LlavaLlamaForCausalLM.generate does
        device, dtype = torch.device("cpu"), torch.float32
        generation_config = type("GenerationConfig", (), {"eos_token_id": llama_tokenizer.eos_token_id})()

        def generate(self, input_ids, **kwargs):
            self.kwargs = kwargs
            rows = [llama_tokenizer("Yes ### the rest", add_special_tokens=False).input_ids,
                    llama_tokenizer("No", add_special_tokens=False).input_ids + [llama_tokenizer.eos_token_id]]
            width = max(map(len, rows)) + 2
            return torch.tensor([r + [llama_tokenizer.eos_token_id] * (width - len(r)) for r in rows])

    model = StubModel()
    texts = runner.generate_texts(model, llama_tokenizer, ["USER: Hi? ASSISTANT:", "USER: Longer question? ASSISTANT:"],
                                  [None, None], [None, None], runner.GenerationSettings(max_new_tokens=9), "###")
    assert texts == ["Yes", "No"]
    assert model.kwargs["do_sample"] is False and "temperature" not in model.kwargs
    assert model.kwargs["attention_mask"][0].tolist()[:2] == [0, 0]  # the shorter prompt is padded on the left


def test_batch_of_4_gives_the_batch_1_answers(tmp_path, loaded, tiny_checkpoint, image_folder, question_file,
                                              reference):
    out = tmp_path / "b4.jsonl"
    summary = model_vqa_loader.eval_model(
        _args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out, "--batch-size", "4"), loaded)
    batched = _read(out)
    assert summary.generated == 6
    assert [(a["question_id"], a["text"]) for a in batched] == [(a["question_id"], a["text"]) for a in reference]


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch, loaded, tiny_checkpoint, image_folder,
                                                     question_file, reference):
    out = tmp_path / "answers.jsonl"
    args = _args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out, "--batch-size", "2")
    real, calls = runner.generate_texts, []

    def dies_on_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "generate_texts", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        model_vqa_loader.eval_model(args, loaded)
    assert [a["question_id"] for a in _read(out)] == [101, 102]  # the first batch was flushed
    monkeypatch.setattr(runner, "generate_texts", real)

    with open(out, "a") as f:
        f.write('{"question_id": 103, "prom')  # killed in the middle of a line
    summary = model_vqa_loader.eval_model(args, loaded)
    assert (summary.resumed, summary.generated) == (2, 4)
    answers = _read(out)
    assert [a["question_id"] for a in answers] == [101, 102, 103, 104, 105, 106]
    assert [a["text"] for a in answers] == [a["text"] for a in reference]

    # a finished run generates nothing; --no-resume starts again
    assert model_vqa_loader.eval_model(args, loaded).generated == 0
    args.resume = False
    args.batch_size = 6
    assert model_vqa_loader.eval_model(args, loaded).generated == 6 and len(_read(out)) == 6


def test_resume_refuses_an_answer_file_of_other_questions(tmp_path, loaded, tiny_checkpoint, image_folder,
                                                          question_file):
    out = tmp_path / "answers.jsonl"
    out.write_text(json.dumps({"question_id": 999, "prompt": "x", "text": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"answers.jsonl already has 1 answer\(s\) for questions not in this run"):
        model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out), loaded)
    out.write_text('{"question_id": 101, "prompt": "What is in the image?", "text": "y"}\nnot json\n')
    with pytest.raises(ValueError, match=r"answers.jsonl:2: not valid JSON"):
        model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out), loaded)


def test_repeated_question_ids_and_lines_are_answered_merged_and_resumed(tmp_path, loaded, tiny_checkpoint,
                                                                        image_folder):
    """TextVQA's question files use the image id as question_id, so ids repeat with other texts;
    a whole line may repeat too. Every line is answered (as upstream), the chunks merge, and a
    resumed run answers each repeat once more, no more."""
    lines = [("img1", "a.png", "What is written?"), ("img1", "a.png", "What brand is it?"),
             ("img2", "b.png", "What is written?"), ("img2", "b.png", "What is written?")]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": q, "image": im, "text": t}) + "\n" for q, im, t in lines))
    for k in range(2):
        model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, image_folder, str(questions),
                                          tmp_path / f"2_{k}.jsonl", "--num-chunks", "2", "--chunk-idx", str(k)),
                                    loaded)
    merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2"])
    merged = _read(tmp_path / "merge.jsonl")
    assert [(a["question_id"], a["prompt"]) for a in merged] == [(q, t) for q, _, t in lines]

    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(json.dumps(a) + "\n" for a in merged[:3]))  # killed before the repeat was answered
    args = _args(model_vqa_loader, tiny_checkpoint, image_folder, str(questions), whole)
    assert model_vqa_loader.eval_model(args, loaded).generated == 1
    assert [(a["question_id"], a["prompt"]) for a in _read(whole)] == [(q, t) for q, _, t in lines]
    assert model_vqa_loader.eval_model(args, loaded).generated == 0
    with open(whole, "a") as f:
        f.write(json.dumps(merged[3]) + "\n")
    with pytest.raises(ValueError, match=r"whole.jsonl: question_id 'img2' is answered 3 times \(lines 3, 4, 5\) "
                                         r"but asked 2 time\(s\)"):
        model_vqa_loader.eval_model(args, loaded)


@pytest.mark.parametrize("image, message", [
    (["a.png"], r"q.jsonl:2: question_id 7: 'image' must be one file name .*got \['a.png'\]"),
    ("", r"q.jsonl:2: question_id 7: 'image' must be one file name"),
    ("notes.txt", r"question_id 7: cannot read .*notes.txt: UnidentifiedImageError"),
])
def test_bad_image_entries_name_the_question(tmp_path, loaded, tiny_checkpoint, image_folder, image, message):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes((Path(image_folder) / "a.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "Hi?"}) + "\n"
                         + json.dumps({"question_id": 7, "image": image, "text": "What?"}) + "\n")
    with pytest.raises(ValueError, match=message):
        model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, str(folder), str(questions),
                                          tmp_path / "answers.jsonl"), loaded)


def test_get_chunk_splits_like_upstream():
    items = list(range(10))
    assert [get_chunk(items, 3, k) for k in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [get_chunk(items, 8, k) for k in range(8)][4:] == [[8, 9], [], [], []]  # ceil(10 / 8) = 2 per chunk
    assert get_chunk([], 2, 1) == []
    with pytest.raises(ValueError, match="chunk 3 of 3"):
        get_chunk(items, 3, 3)


def test_chunks_merged_equal_the_unchunked_run(tmp_path, loaded, tiny_checkpoint, image_folder, question_file,
                                               reference):
    for k in range(4):  # 6 questions in 4 chunks: 2, 2, 2 and an empty one
        out = tmp_path / f"4_{k}.jsonl"
        model_vqa_loader.eval_model(_args(model_vqa_loader, tiny_checkpoint, image_folder, question_file, out,
                                          "--num-chunks", "4", "--chunk-idx", str(k), "--batch-size", "2"), loaded)
    assert (tmp_path / "4_3.jsonl").read_text() == ""
    merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "4"])
    merged = _read(tmp_path / "merge.jsonl")
    assert [(a["question_id"], a["text"]) for a in merged] == [(a["question_id"], a["text"]) for a in reference]


def test_main_loads_the_checkpoint_and_model_vqa_answers_too(tmp_path, tiny_checkpoint, image_folder, question_file,
                                                              reference, capsys):
    out = tmp_path / "vqa.jsonl"
    model_vqa.main(["--model-path", tiny_checkpoint, "--image-folder", image_folder, "--question-file", question_file,
                    "--answers-file", str(out), "--temperature", "0", "--max_new_tokens", MAX_NEW_TOKENS,
                    "--batch-size", "3", "--num-workers", "1"])
    assert [a["text"] for a in _read(out)] == [a["text"] for a in reference]
    assert f"{out}: 6 answers, 6 generated" in capsys.readouterr().out


def test_bad_question_line_and_missing_image(tmp_path, tiny_checkpoint, image_folder):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 1, "image": "a.png", "text": "Hi?"}\n\n{"question_id": 2, "image": \n')
    args = _args(model_vqa_loader, tiny_checkpoint, image_folder, str(questions), tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match=r"q\.jsonl:3: not valid JSON"):
        model_vqa_loader.eval_model(args)
    questions.write_text('{"question_id": 1, "image": "a.png"}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1: question has no 'text'"):
        model_vqa_loader.eval_model(args)
    questions.write_text('{"question_id": 1, "image": "a.png", "text": "Hi?"}\n'
                         '{"question_id": "q7", "image": "gone.png", "text": "Hi?"}\n'
                         '{"question_id": 8, "image": "gone2.png", "text": "Hi?"}\n')
    with pytest.raises(FileNotFoundError, match=r"question_id 'q7' not found: .*gone\.png \(1 more missing"):
        model_vqa_loader.eval_model(args)  # raised before any model is loaded
    questions.write_text('{"question_id": 1, "image": "sub", "text": "Hi?"}\n')
    with pytest.raises(IsADirectoryError, match=r"question_id 1 is a folder, not an image file: .*sub$"):
        model_vqa_loader.eval_model(args)
    for text, shown in ((None, "null"), (5, "5")):
        questions.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": text}) + "\n")
        with pytest.raises(ValueError, match=rf"q\.jsonl:1: question_id 1: 'text' must be a string, got {shown}"):
            model_vqa_loader.eval_model(args)
    questions.write_text("\n")
    with pytest.raises(ValueError, match=r"q\.jsonl: no questions in the file"):
        model_vqa_loader.eval_model(args)
    science = tmp_path / "sqa.json"
    science.write_text("[]")
    with pytest.raises(ValueError, match=r"sqa\.json: no questions in the file"):
        model_vqa_science.eval_model(_args(model_vqa_science, tiny_checkpoint, image_folder, str(science),
                                           tmp_path / "a.jsonl"))


def _no_model(args):
    raise AssertionError("the model was loaded before the bad input file was refused")


@pytest.mark.parametrize("question_id, shown", [
    (None, "null"), ({"id": 7}, r'\{"id": 7\}'), ([7], r"\[7\]"), (7.0, r"7\.0"), (True, "true")])
def test_question_ids_other_than_strings_and_integers_are_refused(tmp_path, monkeypatch, image_folder,
                                                                  question_id, shown):
    """A null id is no id, and an object, list, float or boolean one is matched by its Python
    text (7.0 is not the benchmark's 7): refused before the model is loaded."""
    monkeypatch.setattr(runner, "load_model", _no_model)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "Hi?"}) + "\n"
                         + json.dumps({"question_id": question_id, "image": "a.png", "text": "What?"}) + "\n")
    args = _args(model_vqa_loader, "no-checkpoint", image_folder, str(questions), tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match=rf"q\.jsonl:2: 'question_id' must be a string or an integer, got {shown}$"):
        model_vqa_loader.eval_model(args)
    questions.write_text("".join(json.dumps({"question_id": q, "text": "Hi?"}) + "\n" for q in (7, "q7", 0, "")))
    assert [q["question_id"] for q in runner.load_questions(str(questions))] == [7, "q7", 0, ""]


@pytest.mark.parametrize("flag, value, message", [
    ("--num_beams", "0", "must be >= 1, got 0"), ("--temperature", "-1", "must be >= 0, got -1"),
    ("--max_new_tokens", "0", "must be >= 1, got 0"), ("--top_p", "0", "must be > 0 and <= 1, got 0"),
    ("--top_p", "1.5", "must be > 0 and <= 1, got 1.5"), ("--batch-size", "0", "must be >= 1, got 0"),
    ("--num_beams", "two", "invalid int value: 'two'"),
])
def test_decoding_flags_out_of_range_stop_the_parser(capsys, flag, value, message):
    with pytest.raises(SystemExit):
        model_vqa_loader.build_parser().parse_args(["--model-path", "unused", flag, value])
    assert f"error: argument {flag}: {message}" in capsys.readouterr().err


def test_resume_drops_a_last_line_cut_inside_a_character(tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    whole = json.dumps({"question_id": 1, "prompt": "Colour?", "text": "rouge"}) + "\n"
    out.write_bytes(whole.encode() + '{"question_id": 2, "prompt": "Colour?", "text": "é'.encode()[:-1])
    answers = runner.AnswerFile(str(out))
    answers.close()
    assert list(answers.done) == [("1", None, "Colour?", None)]
    assert out.read_text() == whole
    assert "dropping the last line, cut short by an interrupted run" in capsys.readouterr().out


def test_science_single_pred_prompt_with_text_only_questions(tmp_path, loaded, tiny_checkpoint, image_folder):
    questions = [
        {"id": "s1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich is a mammal?\nA. cat\nB. fish"}, {"from": "gpt", "value": "A"}]},
        {"id": "s2", "conversations": [{"from": "human", "value": "Which word is a noun?\nA. run\nB. dog\nC. blue"}]},
        {"id": "s3", "image": "sub/c.png",
         "conversations": [{"from": "human", "value": "What colour?\nA. red\nB. green"}]},
    ]
    question_file = tmp_path / "llava_test_CQM-A.json"
    question_file.write_text(json.dumps(questions, indent=1))
    texts = {}
    for batch in ("1", "3"):
        out = tmp_path / f"sqa{batch}.jsonl"
        model_vqa_science.eval_model(_args(model_vqa_science, tiny_checkpoint, image_folder, str(question_file), out,
                                           "--single-pred-prompt", "--batch-size", batch), loaded)
        answers = _read(out)
        texts[batch] = [a["text"] for a in answers]
    suffix = "\nAnswer with the option's letter from the given choices directly."
    assert [a["question_id"] for a in answers] == ["s1", "s2", "s3"]
    assert answers[0]["prompt"] == "<image>\nWhich is a mammal?\nA. cat\nB. fish" + suffix
    assert answers[1]["prompt"] == "Which word is a noun?\nA. run\nB. dog\nC. blue" + suffix
    assert texts["1"] == texts["3"]  # a batch mixing text-only and image questions answers each the same

    question_file.write_text(json.dumps(questions[:1])[:-5])
    with pytest.raises(ValueError, match=r"llava_test_CQM-A\.json:1:\d+: not valid JSON"):
        model_vqa_science.eval_model(_args(model_vqa_science, tiny_checkpoint, image_folder, str(question_file),
                                           tmp_path / "x.jsonl"))


def _png_base64(colour: str, size=(32, 24)) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_mmbench_tsv_all_rounds_and_converter(tmp_path, loaded, tiny_checkpoint):
    import pandas as pd

    from llava.eval import convert_mmbench_for_submission

    table = pd.DataFrame([
        {"index": 0, "question": "What colour is it?", "hint": None, "A": "red", "B": "blue", "C": "green", "D": None,
         "answer": "B", "category": "color", "l2-category": "attribute", "image": _png_base64("blue")},
        {"index": 7, "question": "Is it a cat?", "hint": "Look closely.", "A": "yes", "B": "no", "C": None,
         "D": None, "answer": "A", "category": "object", "l2-category": "instance", "image": _png_base64("red")},
    ])
    tsv = tmp_path / "mmbench_dev.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    out = tmp_path / "answers" / "tiny.jsonl"
    args = model_vqa_mmbench.build_parser().parse_args([
        "--model-path", tiny_checkpoint, "--question-file", str(tsv), "--answers-file", str(out),
        "--single-pred-prompt", "--lang", "cn", "--all-rounds", "--temperature", "0",
        "--max_new_tokens", MAX_NEW_TOKENS, "--batch-size", "4", "--device", "cpu"])
    model_vqa_mmbench.eval_model(args, loaded)
    answers = _read(out)
    assert [(a["question_id"], a["round_id"]) for a in answers] == [(0, 0), (0, 1), (0, 2), (7, 0), (7, 1)]
    first, rotated = answers[0], answers[1]
    assert first["prompt"] == "What colour is it?\nA. red\nB. blue\nC. green"
    assert rotated["options"] == ["blue", "green", "red"] and rotated["option_char"] == ["B", "C", "A"]
    assert (first["answer"], rotated["answer"], answers[2]["answer"]) == ("B", "A", "C")  # "blue" follows the rotation
    assert answers[3]["prompt"] == "Look closely.\nIs it a cat?\nA. yes\nB. no"
    assert first["category"] == "color" and first["l2-category"] == "attribute"
    assert first["instruction"] == model_vqa_mmbench.SINGLE_PRED_PROMPT["cn"]

    # The recorded prompt leaves the instruction out, as upstream's does; resuming still refuses a
    # file answered with another instruction, or none.
    for other in (["--lang", "en"], []):
        again = model_vqa_mmbench.build_parser().parse_args([
            "--model-path", tiny_checkpoint, "--question-file", str(tsv), "--answers-file", str(out),
            "--all-rounds", "--device", "cpu", *(["--single-pred-prompt"] if other else []), *other])
        with pytest.raises(ValueError, match=r"already has 5 answer\(s\) for questions not in this run .*prompt option"):
            model_vqa_mmbench.eval_model(again, loaded)
    assert _read(out) == answers

    result = convert_mmbench_for_submission.main([
        "--annotation-file", str(tsv), "--result-dir", str(tmp_path / "answers"),
        "--upload-dir", str(tmp_path / "upload"), "--experiment", "tiny"])
    assert (result["answered"], result["total"], result["extra_rounds"]) == (2, 2, 3)


@pytest.mark.parametrize("text", ["index\tquestion\thint\tA\tB\tanswer\timage\n", ""])
def test_mmbench_tsv_without_rows_is_refused(tmp_path, monkeypatch, text):
    """A tsv with only its header (or nothing) has no question to answer: refused before the model loads."""
    monkeypatch.setattr(model_vqa_mmbench, "load_model", _no_model)
    tsv = tmp_path / "mmbench_dev.tsv"
    tsv.write_text(text)
    args = model_vqa_mmbench.build_parser().parse_args([
        "--model-path", "no-checkpoint", "--question-file", str(tsv), "--answers-file", str(tmp_path / "a.jsonl"),
        "--device", "cpu"])
    with pytest.raises(ValueError, match=r"mmbench_dev\.tsv: no questions in the file"):
        model_vqa_mmbench.eval_model(args)


def test_run_llava_prints_an_answer(tiny_checkpoint, image_folder, capsys):
    answer = run_llava.main(["--model-path", tiny_checkpoint, "--image-file", f"{image_folder}/a.png",
                             "--query", "What is in the image?", "--temperature", "0", "--max_new_tokens", "6"])
    assert capsys.readouterr().out == answer + "\n"
    # two images, placed by <image-placeholder>, through upstream's README-style args object
    args = type("Args", (), {"model_path": tiny_checkpoint, "model_base": None, "model_name": None,
                             "query": "<image-placeholder> and <image-placeholder>: the same?", "conv_mode": None,
                             "image_file": f"{image_folder}/a.png,{image_folder}/b.png", "sep": ",",
                             "temperature": 0, "top_p": None, "num_beams": 1, "max_new_tokens": 4})()
    assert isinstance(run_llava.eval_model(args), str)
    # A query written with LLaVA's own <image> tag is used as written: the same answer as the image
    # placed first for it (upstream added a second tag, and the run failed on the count).
    tagged = run_llava.main(["--model-path", tiny_checkpoint, "--image-file", f"{image_folder}/a.png",
                             "--query", "<image>\nWhat is in the image?", "--temperature", "0",
                             "--max_new_tokens", "6"])
    assert tagged == answer


def test_run_llava_query_tags(tiny_checkpoint):
    from llava.model.builder import read_config_dict
    config = type("Config", (), read_config_dict(tiny_checkpoint))()
    assert run_llava.build_query("<image>\nWhat?", config) == "<image>\nWhat?"
    assert run_llava.build_query("What?", config) == "<image>\nWhat?"
    config.mm_use_im_start_end = True
    assert run_llava.build_query("A <image> and <image>", config) == "A <im_start><image><im_end> and <im_start><image><im_end>"


LLVISIONQA = [
    {"img_path": "a.png", "question": "Is the image blurry?", "candidates": ["Yes", "No"], "correct_ans": "No",
     "type": 0, "concern": 0},
    {"img_path": "sub/c.png", "question": "What is the main colour?", "candidates": ["red", "green", "blue"],
     "correct_ans": "green", "type": 1, "concern": 1},
    {"img_path": "b.png", "question": "How is the lighting?", "candidates": ["dim", "bright", "harsh", "even"],
     "correct_ans": "even", "type": 2, "concern": 3},
]


def test_qbench_prompts_records_chunks_and_score(tmp_path, loaded, tiny_checkpoint, image_folder):
    question_file = tmp_path / "llvisionqa_dev.json"
    question_file.write_text(json.dumps(LLVISIONQA))
    out = tmp_path / "answers.jsonl"
    args = _args(model_vqa_qbench, tiny_checkpoint, image_folder, str(question_file), out, "--batch-size", "2")
    assert args.conv_mode == "llava_v1" and args.max_new_tokens == int(MAX_NEW_TOKENS)  # upstream's template
    model_vqa_qbench.eval_model(args, loaded)
    answers = _read(out)
    assert [a["question_id"] for a in answers] == [0, 1, 2]
    assert answers[2]["prompt"] == ("How is the lighting?\nChoose between one of the options as follows:\n"
                                    "A. dim\nB. bright\nC. harsh\nD. even\n")
    for answer, question in zip(answers, LLVISIONQA):
        assert {k: answer[k] for k in question} == question  # the question's own record, kept whole
        assert answer["response"] == answer["text"]
    zh = model_vqa_qbench.build_parser().parse_args(["--model-path", "x", "--questions-file", "q.json", "--lang", "zh"])
    assert zh.question_file == "q.json"  # upstream's spelling of --question-file
    assert model_vqa_qbench.question_message(LLVISIONQA[0], "zh") == "Is the image blurry?\n在下列选项中选择一个:\nA. Yes\nB. No\n"

    # two chunks, merged, give the same answers; question ids are positions in the whole file
    for k in (0, 1):
        model_vqa_qbench.eval_model(_args(model_vqa_qbench, tiny_checkpoint, image_folder, str(question_file),
                                          tmp_path / f"2_{k}.jsonl", "--num-chunks", "2", "--chunk-idx", str(k)),
                                    loaded)
    merged = tmp_path / "merged.jsonl"
    merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2", "--output-file", str(merged)])
    assert [(a["question_id"], a["response"]) for a in _read(merged)] == [(a["question_id"], a["response"])
                                                                         for a in answers]
    # the random model's answers score, whatever they say, and answer every question of the file
    result = eval_qbench.score(_read(merged), str(merged), LLVISIONQA, str(question_file))
    assert result["total"] == 3 and set(result["by_type"]) == {"0", "1", "2"}

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([LLVISIONQA[0], {**LLVISIONQA[1], "candidates": ["only one"]}]))
    with pytest.raises(ValueError, match=r"bad.json: question 1 \(sub/c.png\) needs 'candidates', 2 to 4 texts"):
        model_vqa_qbench.eval_model(_args(model_vqa_qbench, tiny_checkpoint, image_folder, str(bad), tmp_path / "x"))


def test_qbench_empty_question_list_is_refused(tmp_path, monkeypatch, image_folder):
    monkeypatch.setattr(model_vqa_qbench, "load_model", _no_model)
    question_file = tmp_path / "llvisionqa_dev.json"
    question_file.write_text("[]")
    with pytest.raises(ValueError, match=r"llvisionqa_dev\.json: no questions in the file"):
        model_vqa_qbench.eval_model(_args(model_vqa_qbench, "no-checkpoint", image_folder, str(question_file),
                                          tmp_path / "answers.jsonl"))
