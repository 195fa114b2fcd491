"""Using a compressed model on new inputs: ``qd translate`` and ``qd classify``.

    qd translate --model results/demo/numbers/student1/qd/b4-d256/seed0/model.qda results/demo/numbers/data/test.raw.de
    qd classify  --model results/demo/digits/student1/qd/b4-d256/seed0/model.qda my_digits/ --out predictions.csv

A model file (``model.qda``) carries the weights and what rebuilds the model; what it does not carry
(vocabularies and tokenisation, normalisation, class names) is read from its task's prepared data
folder: by default the one in the results folder that holds the run (``<results>/<task>/data``, as
``qd evaluate`` finds it), else ``--data``. The beam search is the run's (its ``spec.json``
``evaluation`` block, when the file sits in its run folder; else the task's defaults). The task adapter
does the work (``translate_sentences``, ``classify_images``: ``qd/tasks/base.py``), through the code
that evaluates a run, so a compressed model translates and classifies exactly as it was scored.

``qd translate`` writes one output line per input line. A line that cannot be translated (not UTF-8,
empty, longer than the model reads) is reported on standard error with its line number, its output
line is left empty so the lines stay aligned, the other lines are translated, and the exit status is 1.

``qd classify`` writes a CSV row per image: ``file,class,probability,top5`` (``top5``: the five most
probable classes as ``class:probability`` separated by spaces). Classes are named as the prepared
data names them (image folders), else by their index (the digits: the digit; CIFAR: the label index).

Try: ``pytest tests/test_use.py``.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qd.config import data_folder
from qd.errors import DataMissing, QdError

# the extensions torchvision's ImageFolder reads: the image files of a folder given to qd classify
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def run_data_folder(run_dir: Path, header: dict, data: str | None) -> Path:
    """The prepared data folder of a run's model: ``data`` when given, else its task's in the results
    folder holding the run (``<results>/<run>`` is the run folder)."""
    if data:
        return Path(data)
    path = Path(run_dir).as_posix()
    if not path.endswith(header["run"]):
        raise QdError(f"{run_dir} is not <results>/{header['run']}: give --data (the task's prepared data folder)")
    return data_folder(Path(path.removesuffix(header["run"])), header["task"])


@dataclass
class UsedModel:
    """A model file loaded for use: the model, its header, its task adapter class, the prepared data
    folder and the run's evaluation settings."""

    model: object
    header: dict
    task: type
    folder: Path
    evaluation: dict

    @property
    def meta(self) -> dict:
        return self.header.get("model_meta", self.header.get("shape"))  # format 1 files called it 'shape'


def load_for_use(path: str | Path, data: str | None, device: str = "cpu") -> UsedModel:
    from qd.run import model_from_artefact, resolve_device, task_of

    path = Path(path)
    if not path.is_file():
        raise QdError(f"model file {path} does not exist (a finished run's model.qda, or a file 'qd export' wrote)")
    model, _, header = model_from_artefact(path, resolve_device(device))
    folder = run_data_folder(path.parent, header, data)
    folder = folder if folder.is_dir() or not folder.exists() else folder.parent  # a file in the folder
    if not folder.is_dir():
        raise DataMissing(f"{folder} does not exist: {path} (task {header['task']}) reads its vocabularies, "
                          "normalisation and class names from its task's prepared data folder; prepare it "
                          f"('qd data --config <config> --task {header['task']}') or give it with --data")
    spec = path.parent / "spec.json"
    evaluation = json.loads(spec.read_text()).get("evaluation", {}) if spec.exists() else {}
    return UsedModel(model, header, task_of(header), folder, evaluation)


# ------------------------------------------------------------------------------------------ translate
def read_lines(stream: BinaryIO) -> list[bytes]:
    """The lines of ``stream`` without their line ends (``\\n`` or ``\\r\\n``)."""
    return [raw.rstrip(b"\r\n") for raw in stream]


def decode_lines(lines: list[bytes]) -> tuple[list[str], dict[int, str]]:
    """Lines decoded as UTF-8; one that is not is left empty, and its index maps to why."""
    text, refused = [], {}
    for i, raw in enumerate(lines):
        try:
            text.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            text.append("")
            refused[i] = f"not valid UTF-8 ({e.reason} at byte {e.start}: {raw[max(e.start - 10, 0):e.start + 10]!r})"
    return text, refused


def translate_lines(used: UsedModel, lines: list[bytes]) -> tuple[list[str], dict[int, str]]:
    """One translation per line (empty for a refused line) and the refused lines' reasons by index."""
    text, refused = decode_lines(lines)
    readable = [i for i in range(len(text)) if i not in refused]
    translations, untranslatable = used.task.translate_sentences(used.model, used.meta, used.folder, used.evaluation,
                                                                 [text[i] for i in readable])
    out = [""] * len(text)
    for j, i in enumerate(readable):
        out[i] = translations[j]
    return out, refused | {readable[j]: why for j, why in untranslatable.items()}


def translate(model: str, source: str | None, out: str | None, data: str | None, device: str) -> int:
    """``qd translate``: the exit status (1 when a line was refused)."""
    used = load_for_use(model, data, device)
    name = source if source and source != "-" else "<stdin>"
    if name == "<stdin>":
        lines = read_lines(sys.stdin.buffer)
    else:
        if not Path(source).is_file():
            raise QdError(f"source file {source} does not exist")
        with open(source, "rb") as f:
            lines = read_lines(f)
    translations, refused = translate_lines(used, lines)
    for i in sorted(refused):
        print(f"qd: {name}, line {i + 1}: {refused[i]}; its output line is empty", file=sys.stderr)
    write_output("".join(t + "\n" for t in translations), out)
    return 1 if refused else 0


def write_output(text: str, out: str | None) -> None:
    if out:
        from qd.io import atomic_write_text

        atomic_write_text(text, out)
    else:
        sys.stdout.write(text)


# ------------------------------------------------------------------------------------------ classify
def image_files(paths: list[str]) -> list[Path]:
    """The files named, and the image files under the folders named (sorted, sub-folders included)."""
    files = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise QdError(f"image folder {p} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise QdError(f"image {p} does not exist")
    return files


def predictions_csv(files: list[Path], logits, classes: list[str]) -> str:
    """``file,class,probability,top5``, one row per image."""
    probabilities = logits.float().softmax(dim=-1)
    top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # from the logits, as evaluation ranks them
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "class", "probability", "top5"])
    for f, p, t in zip(files, probabilities.tolist(), top.tolist()):
        w.writerow([f.as_posix(), classes[t[0]], f"{p[t[0]]:.6f}", " ".join(f"{classes[c]}:{p[c]:.6f}" for c in t)])
    return buf.getvalue()


def classify(model: str, images: list[str], out: str | None, data: str | None, device: str) -> int:
    """``qd classify``."""
    used = load_for_use(model, data, device)
    files = image_files(images)
    logits, classes = used.task.classify_images(used.model, used.meta, used.folder, used.evaluation, files)
    write_output(predictions_csv(files, logits, classes), out)
    return 0
