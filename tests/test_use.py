"""Using a compressed model (qd/use.py): ``qd translate`` reproduces a run's test translations and
``qd classify`` its test accuracy, from the model file and the prepared data folder; bad input lines
are named and skipped, missing data is named.

Two tiny quantized runs (QT at 4 bits, no teacher needed) of the demo's two tasks are trained once per
module through ``qd data`` and ``qd train``, in-process.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from qd.cli import main
from qd.data import load_prepared
from test_translation import one_thread  # noqa: F401 - the module-wide single-thread fixture (autouse)

CONFIG = {
    "preset": "use",
    "seeds": [0],
    "tasks": {
        "digits": {
            "dataset": {"name": "digits", "test_fraction": 0.2, "val_fraction": 0.1},
            "models": {"teacher": "teacher", "students": ["student3"], "width": 0.125},
            "train": {"epochs": 4, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0,
                      "schedule": "constant"},
        },
        "numbers": {
            "kind": "translation",
            "dataset": {"name": "numbers", "pairs": 400, "split_seed": 0, "test_fraction": 0.1, "val_fraction": 0.1,
                        "vocab_size": 1000},
            "models": {"family": "lstm", "teacher": "teacher", "students": ["student1"],
                       "architectures": {"teacher": {"layers": 1, "hidden": 32, "embed": 16},
                                         "student1": {"layers": 1, "hidden": 32, "embed": 16}}},
            "train": {"epochs": 8, "batch_size": 32, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0,
                      "schedule": "constant", "grad_clip": 5.0},
            "distill": {"reduction": "token_mean"},
        },
    },
    "methods": {"fp": {}, "qt": {}},
    "quant": {"bits": [4]},
    "evaluation": {"beam": 3, "decode_max_length": 30},
}
RUNS = {"digits": "digits/student3/qt/b4-d256/seed0", "numbers": "numbers/student1/qt/b4-d256/seed0"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder holding each task's prepared data and its quantized run."""
    tmp = tmp_path_factory.mktemp("use")
    config = tmp / "use.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root = tmp / "results"
    threads = torch.get_num_threads()
    try:
        for task, model in (("digits", "student3"), ("numbers", "student1")):
            common = ["--config", str(config), "--task", task, "--results", str(root)]
            assert main(["data", *common]) == 0
            assert main(["train", *common, "--model", model, "--method", "qt", "--bits", "4"]) == 0
    finally:
        torch.set_num_threads(threads)  # a run sets the process's threads to its spec's
    return root


def model_file(results: Path, task: str) -> Path:
    return results / RUNS[task] / "model.qda"


def qd(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------ translate


def test_translations_of_the_test_sources_are_the_runs_test_hypotheses(results, capsys, monkeypatch):
    sources = (results / "numbers" / "data" / "test.raw.de").read_bytes()
    expected = (results / RUNS["numbers"] / "test_hypotheses.txt").read_text(encoding="utf-8")
    assert len(expected.splitlines()) == 40
    assert len(set(expected.splitlines())) > 5  # the run translates: not one line repeated or all empty
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(sources)))  # raw text on standard input
    code, out, err = qd(capsys, "translate", "--model", str(model_file(results, "numbers")))
    assert (code, err) == (0, "")
    assert out == expected


def test_bad_lines_are_named_and_left_empty_and_the_others_translated(results, capsys, tmp_path):
    sources = (results / "numbers" / "data" / "test.raw.de").read_text(encoding="utf-8").splitlines()
    hypotheses = (results / RUNS["numbers"] / "test_hypotheses.txt").read_text(encoding="utf-8").splitlines()
    lines = [sources[0].encode(), b"   ", ("eins " * 1100).encode(), b"Ich habe \xff drei", sources[1].encode()]
    path = tmp_path / "in.de"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = qd(capsys, "translate", "--model", str(model_file(results, "numbers")), str(path),
                        "--out", str(tmp_path / "out.en"))
    assert code == 1 and out == ""
    assert (tmp_path / "out.en").read_text(encoding="utf-8").split("\n") == [
        hypotheses[0], "", "", "", hypotheses[1], ""]
    messages = err.splitlines()
    assert len(messages) == 3
    assert messages[0].startswith(f"qd: {path}, line 2: empty")
    assert messages[1].startswith(f"qd: {path}, line 3: too long: 1100 tokens, the model reads at most 1023")
    assert messages[2].startswith(f"qd: {path}, line 4: not valid UTF-8 (invalid start byte at byte 9")
    assert all(m.endswith("its output line is empty") for m in messages)


def test_a_model_outside_its_results_folder_needs_data(results, capsys, tmp_path):
    moved = tmp_path / "model.qda"
    shutil.copy(model_file(results, "numbers"), moved)
    source = tmp_path / "one.de"
    source.write_text("Meine Schwester ist sechs Jahre alt.\n", encoding="utf-8")
    code, out, err = qd(capsys, "translate", "--model", str(moved), str(source))
    assert code == 1 and out == ""
    assert f"{tmp_path} is not <results>/{RUNS['numbers']}: give --data" in err
    data = results / "numbers" / "data"
    assert qd(capsys, "translate", "--model", str(moved), str(source), "--data", str(data))[:2] == (
        0, qd(capsys, "translate", "--model", str(model_file(results, "numbers")), str(source))[1])


def test_a_data_folder_without_the_vocabulary_is_named(results, capsys, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(results / "numbers" / "data", data)
    (data / "dict.en.txt").unlink()
    code, _, err = qd(capsys, "translate", "--model", str(model_file(results, "numbers")), "--data", str(data),
                      str(data / "test.raw.de"))
    assert code == 1
    assert f"{data / 'dict.en.txt'} does not exist: the model file does not carry the en vocabulary" in err
    assert "give that folder with --data" in err


def test_a_data_folder_prepared_without_the_tokenisation_flag_is_named(results, capsys, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(results / "numbers" / "data", data)
    layout = json.loads((data / "translation.json").read_text())
    assert layout["pretokenised"] is False  # the numbers corpus is raw text, Moses-tokenised
    del layout["pretokenised"]
    (data / "translation.json").write_text(json.dumps(layout))
    code, _, err = qd(capsys, "translate", "--model", str(model_file(results, "numbers")), "--data", str(data),
                      str(data / "test.raw.de"))
    assert code == 1
    assert f"{data / 'translation.json'} has no 'pretokenised' key (how new text is tokenised)" in err


def test_a_classification_model_does_not_translate(results, capsys, tmp_path):
    source = tmp_path / "one.de"
    source.write_text("eins\n", encoding="utf-8")
    code, _, err = qd(capsys, "translate", "--model", str(model_file(results, "digits")), str(source))
    assert code == 1 and "a classification model does not translate sentences" in err


def test_evaluate_finds_the_data_folder_of_the_runs_results_folder(results, capsys):
    """``qd evaluate`` shares the default data folder with ``qd translate`` and ``qd classify``."""
    code, out, _ = qd(capsys, "evaluate", "--run", str(results / RUNS["digits"]))
    metrics = json.loads((results / RUNS["digits"] / "metrics.json").read_text())
    assert code == 0 and f"test: accuracy {metrics['accuracy']:.2f}%" in out


# ------------------------------------------------------------------------------------------ classify


def export_test_images(data: Path, folder: Path) -> list[int]:
    """The prepared test split as 8-bit greyscale PNG files, in split order (``00000.png``, ...),
    scaled from the stored pixels (0..white) to 0..255; their labels."""
    from PIL import Image

    splits = load_prepared(data / "split.pt")
    white = splits.meta["normalize"]["white"]
    x, y = splits.test
    folder.mkdir()
    for i, image in enumerate(x):
        pixels = torch.round(image[0].float() * 255 / white).to(torch.uint8)
        Image.fromarray(pixels.numpy(), "L").save(folder / f"{i:05d}.png")
    return y.tolist()


def test_classifying_the_exported_test_images_gives_the_runs_accuracy(results, capsys, tmp_path):
    labels = export_test_images(results / "digits" / "data", tmp_path / "images")
    code, out, err = qd(capsys, "classify", "--model", str(model_file(results, "digits")), str(tmp_path / "images"))
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["file"]).name for r in rows] == [f"{i:05d}.png" for i in range(len(labels))]
    correct = sum(r["class"] == str(label) for r, label in zip(rows, labels))
    metrics = json.loads((results / RUNS["digits"] / "metrics.json").read_text())
    assert len(rows) == metrics["n_test"] == 359
    assert 100.0 * correct / len(rows) == metrics["accuracy"]
    for r in rows:
        top5 = [pair.split(":") for pair in r["top5"].split(" ")]
        assert len(top5) == 5 and top5[0] == [r["class"], r["probability"]]
        probabilities = [float(p) for _, p in top5]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-5


def test_an_unreadable_image_is_named(results, capsys, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code, _, err = qd(capsys, "classify", "--model", str(model_file(results, "digits")), str(bad))
    assert code == 1 and f"cannot read image {bad}" in err


def test_streamed_image_files_are_read_as_their_evaluation_reads_them(tmp_path):
    """An image-folder dataset (ImageNet's kind): the test images' logits through classify_images equal
    those of the adapter's evaluation batches, and the classes are the folder names."""
    from qd.tasks.classification import Classification
    from qd.use import image_files
    from test_imagefolder import CLASSES, SPEC, write_tree

    spec = {**SPEC, "root": str(write_tree(tmp_path / "raw"))}
    folder = tmp_path / "data"
    meta = Classification.prepare(spec, folder)
    (folder / "manifest.json").write_text(json.dumps({"dataset": spec, **meta}))  # as qd data writes it
    task = Classification({"evaluation": {"batch_size": 4, "workers": 0}}, folder, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.new_model({"family": "convnet", "name": "student3", "width": 0.125}).eval()
    with torch.no_grad():
        expected = torch.cat([model(x) for x, _ in task.eval_batches("test", 4)])
    files = image_files([str(tmp_path / "raw" / "val")])  # the test split's files, in its order
    logits, classes = Classification.classify_images(model, task.model_meta(), folder, {"batch_size": 4}, files)
    assert len(files) == 6 and classes == list(CLASSES)
    assert len(set(map(tuple, expected.tolist()))) == 6  # six images, six different outputs
    assert torch.equal(logits, expected)


def blank_image(path: Path) -> Path:
    from PIL import Image

    Image.new("L", (8, 8)).save(path)
    return path


def test_a_data_folder_without_the_normalisation_is_named(results, capsys, tmp_path):
    (tmp_path / "data").mkdir()
    code, _, err = qd(capsys, "classify", "--model", str(model_file(results, "digits")), "--data",
                      str(tmp_path / "data"), str(blank_image(tmp_path / "a.png")))
    assert code == 1
    assert (f"{tmp_path / 'data' / 'manifest.json'} does not exist: the model file does not carry the images' "
            "normalisation and class names") in err


def test_a_translation_model_does_not_classify(results, capsys, tmp_path):
    code, _, err = qd(capsys, "classify", "--model", str(model_file(results, "numbers")),
                      str(blank_image(tmp_path / "a.png")))
    assert code == 1 and "a translation model does not classify images" in err
