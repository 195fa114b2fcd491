"""Raw parallel corpora as train / val / test lists of (source line, target line) pairs.

* ``multi30k``: the raw (cased, untokenised) task-1 files ``train``, ``val`` and ``test_2016_flickr``
  ``.{lang}.gz`` under ``dataset.root`` (downloaded from the Multi30k repository when allowed);
* ``onmt-integ``: the OpenNMT integration set the official code used, ``{lang}-train-clean.200K.txt``
  and ``{lang}-val-clean.10K.txt`` (already tokenised). As in the official code the 10K set is the
  test set, all 200K pairs train and, with ``val_fraction: 0`` (the preset's), the 10K set is also the
  validation set that drives the LR decay (``openNMT_integ_dataset.py``: no other set exists); a
  ``val_fraction`` above 0 holds a seeded share of the training pairs out instead;
* ``wmt13``: Europarl v7 de-en. ``split: europarl-90-10`` is the official code's split: line ``i``
  (0-based, blank lines counted) is training data when ``i <= 9 * n // 10`` for ``n`` lines, test data
  otherwise; validation is a seeded share of the training part. ``split: newstest`` trains on all of
  Europarl and uses newstest2012 / newstest2013 as validation / test sets;
* ``numbers``: the generated demo corpus (:mod:`qd.text.numbers`).

Every file is read strictly: invalid UTF-8, an empty file and parallel files of different lengths
are refused with the file name and the line. Pairs with a blank side are dropped (the official code
removed blank lines; OpenNMT could not train on them) and counted in the manifest.

Try: ``python -c "from qd.text.corpora import read_lines; print(len(read_lines('train.de.gz')))"``.
"""
from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path

from qd.errors import DataMissing, QdError
from qd.text import download


# the corpora this module reads, declared for qd.tasks (a literal, read without importing this module);
# ``build`` is the reader, called as ``reader(dataset, source_lang, target_lang)``
DATASETS = {
    "numbers": {"kind": "translation", "build": "numbers",
                "keys": ["split_seed", "val_fraction", "test_fraction", "pairs", "source_lang", "target_lang",
                         "vocab_size", "max_length", "lowercase"]},
    "multi30k": {"kind": "translation", "build": "multi30k",
                 "keys": ["root", "download", "source_lang", "target_lang", "vocab_size", "max_length", "lowercase",
                          "train_limit"]},
    "onmt-integ": {"kind": "translation", "build": "onmt_integ",
                   "keys": ["root", "download", "source_lang", "target_lang", "vocab_size", "max_length",
                            "lowercase", "train_limit", "val_fraction", "split_seed"]},
    "wmt13": {"kind": "translation", "build": "wmt13",
              "keys": ["root", "download", "source_lang", "target_lang", "vocab_size", "max_length", "lowercase",
                       "split", "train_limit", "val_fraction", "split_seed"]},
}


class CorpusError(QdError, ValueError):
    """A raw corpus file the suite refuses; the message names the file and the line."""


@dataclass
class RawSplit:
    pairs: list[tuple[str, str]]
    files: tuple[str, str]  # where the pairs came from, for messages and the manifest
    blank_dropped: int = 0


@dataclass
class RawCorpus:
    splits: dict[str, RawSplit]
    pretokenised: bool
    source: str
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 text file (``.gz`` read through gzip), without line ends."""
    path = Path(path)
    lines = []
    try:
        with _open(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    lines.append(raw.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{path}, line {number}: not valid UTF-8 ({e.reason} at byte {e.start} "
                                      f"of the line: {raw[max(e.start - 10, 0):e.start + 10]!r}); convert the "
                                      "file to UTF-8") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise CorpusError(f"{path}: cannot be read ({e})") from e
    if not any(line.strip() for line in lines):
        raise CorpusError(f"{path}: the file is empty ({len(lines)} lines, none with text)")
    return lines


def read_parallel(source: str | Path, target: str | Path) -> RawSplit:
    """Aligned pairs of two files that must have the same number of lines; blank pairs dropped."""
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise CorpusError(f"{source} has {len(src)} lines but {target} has {len(tgt)}: the two sides of a "
                          f"parallel corpus must align line by line (line {min(len(src), len(tgt)) + 1} has no "
                          "partner)")
    return nonblank(list(zip(src, tgt)), (str(source), str(target)))


def nonblank(pairs: list[tuple[str, str]], files: tuple[str, str]) -> RawSplit:
    kept = [(s, t) for s, t in pairs if s.strip() and t.strip()]
    return RawSplit(kept, files, len(pairs) - len(kept))


def held_out(split: RawSplit, fraction: float, seed: int) -> tuple[RawSplit, RawSplit]:
    """``(rest, share)``: a seeded ``fraction`` of the pairs held out; both keep the original order."""
    n = len(split.pairs)
    n_held = round(fraction * n)
    if not 0 < n_held < n:
        raise CorpusError(f"{split.files[0]}: val_fraction={fraction} of {n} pairs leaves an empty split")
    chosen = set(random.Random(seed).sample(range(n), n_held))
    rest = [p for i, p in enumerate(split.pairs) if i not in chosen]
    share = [p for i, p in enumerate(split.pairs) if i in chosen]
    return RawSplit(rest, split.files, split.blank_dropped), RawSplit(share, split.files)


def _require(root: Path, names: list[str], dataset: str, fetch_url: str | None, allowed: bool) -> None:
    """Fetch what is missing when ``allowed``; otherwise say what is missing, where, and how to get it."""
    missing = [n for n in names if not (root / n).exists()]
    if not missing:
        return
    if allowed and fetch_url is not None:
        download.fetch_all(fetch_url, missing, root)
        return
    how = (f"set tasks.<task>.dataset.download: true to fetch them from {fetch_url.format(name='<file>')}"
           if fetch_url else "download them by hand")
    raise DataMissing(f"{dataset}: {', '.join(missing)} not found under {root.resolve()}; {how}, or set "
                      "tasks.<task>.dataset.root to a folder that holds them.")


# ------------------------------------------------------------------------------------------ corpora


def multi30k(spec: dict, src: str, tgt: str) -> RawCorpus:
    root = Path(spec["root"])
    stems = {"train": "train", "val": "val", "test": "test_2016_flickr"}
    names = [f"{stem}.{lang}.gz" for stem in stems.values() for lang in (src, tgt)]
    _require(root, names, "multi30k", download.MULTI30K_URL, spec.get("download", False))
    splits = {s: read_parallel(root / f"{stem}.{src}.gz", root / f"{stem}.{tgt}.gz") for s, stem in stems.items()}
    return RawCorpus(splits, pretokenised=False, source=f"multi30k task 1 raw files under {root}")


def onmt_integ(spec: dict, src: str, tgt: str) -> RawCorpus:
    root = Path(spec["root"])
    train_names = [f"{lang}-train-clean.200K.txt" for lang in (src, tgt)]
    test_names = [f"{lang}-val-clean.10K.txt" for lang in (src, tgt)]
    _require(root, train_names + test_names, "onmt-integ", download.ONMT_INTEG_URL, spec.get("download", False))
    train = read_parallel(*(root / n for n in train_names))
    test = read_parallel(*(root / n for n in test_names))
    notes = ["the 10K validation file is the test set, as in the official code"]
    if spec.get("val_fraction", 0.0):
        train, val = held_out(train, spec["val_fraction"], spec.get("split_seed", 0))
        notes.append(f"validation: a seeded {spec['val_fraction']:g} share of the training pairs (not official)")
    else:  # the official code: every training pair trains, the 10K set drives the decay
        val = RawSplit(list(test.pairs), test.files)
        notes.append("all training pairs train; the 10K set is also the validation set (official code)")
    return RawCorpus({"train": train, "val": val, "test": test}, pretokenised=True,
                     source=f"OpenNMT integration set under {root}", notes=notes)


def _europarl(root: Path, src: str, tgt: str, allowed: bool) -> tuple[Path, Path]:
    names = {lang: f"europarl-v7.de-en.{lang}" for lang in (src, tgt)}
    if {src, tgt} != {"de", "en"}:
        raise CorpusError(f"wmt13: Europarl v7 is read as the de-en pair; got {src}-{tgt}")
    if not all((root / n).exists() for n in names.values()):
        archive = root / Path(download.EUROPARL_URL).name
        if not archive.exists():
            _require(root, [archive.name], "wmt13", download.EUROPARL_URL.rsplit("/", 1)[0] + "/{name}", allowed)
        download.extract_members(archive, {f"training/{n}": n for n in names.values()}, root)
    return root / names[src], root / names[tgt]


def wmt13(spec: dict, src: str, tgt: str) -> RawCorpus:
    root = Path(spec["root"])
    allowed = spec.get("download", False)
    src_path, tgt_path = _europarl(root, src, tgt, allowed)
    s, t = read_lines(src_path), read_lines(tgt_path)
    if len(s) != len(t):
        raise CorpusError(f"{src_path} has {len(s)} lines but {tgt_path} has {len(t)}: the two sides of a "
                          "parallel corpus must align line by line")
    files = (str(src_path), str(tgt_path))
    split = spec.get("split", "europarl-90-10")
    if split == "europarl-90-10":
        last_train = len(s) * 9 // 10  # the official code: line index <= 90% of the line count
        rest = nonblank(list(zip(s[:last_train + 1], t[:last_train + 1])), files)
        test = nonblank(list(zip(s[last_train + 1:], t[last_train + 1:])), files)
        train, val = held_out(rest, spec["val_fraction"], spec["split_seed"])
        notes = ["official sequential split: first 90% of Europarl v7 lines train, the rest test"]
    elif split == "newstest":
        train = nonblank(list(zip(s, t)), files)
        names = [f"newstest{year}.{lang}" for year in (2012, 2013) for lang in (src, tgt)]
        if not all((root / n).exists() for n in names):
            archive = root / Path(download.NEWSTEST_URL).name
            if not archive.exists():
                _require(root, [archive.name], "wmt13 (newstest)", download.NEWSTEST_URL.rsplit("/", 1)[0] + "/{name}",
                         allowed)
            download.extract_members(archive, {f"dev/{n}": n for n in names}, root)
        val = read_parallel(root / f"newstest2012.{src}", root / f"newstest2012.{tgt}")
        test = read_parallel(root / f"newstest2013.{src}", root / f"newstest2013.{tgt}")
        notes = ["standard split: all of Europarl v7 trains, newstest2012 validates, newstest2013 tests"]
    else:
        raise CorpusError(f"dataset.split must be europarl-90-10 or newstest, got {split!r}")
    return RawCorpus({"train": train, "val": val, "test": test}, pretokenised=False,
                     source=f"WMT13 Europarl v7 de-en under {root} ({split})", notes=notes)


def numbers(spec: dict, src: str, tgt: str) -> RawCorpus:
    from qd.text.numbers import numbers_splits

    if {src, tgt} != {"de", "en"}:
        raise CorpusError(f"numbers: the demo corpus is German-English; got {src}-{tgt}")
    splits = numbers_splits(spec.get("pairs", 6000), spec["split_seed"], spec["val_fraction"], spec["test_fraction"])
    swap = src == "en"
    raw = {name: RawSplit([(e, d) if swap else (d, e) for d, e in pairs],
                          (f"numbers:{name}.{src}", f"numbers:{name}.{tgt}"))
           for name, pairs in splits.items()}
    return RawCorpus(raw, pretokenised=False, source=f"generated (qd.text.numbers, {spec.get('pairs', 6000)} pairs, "
                                                     f"split_seed {spec['split_seed']})")




def load_corpus(spec: dict) -> RawCorpus:
    """The raw splits of the corpus a ``dataset`` block names."""
    from qd.tasks import dataset_builder

    read = dataset_builder(spec["name"], "translation")
    corpus = read(spec, spec.get("source_lang", "de"), spec.get("target_lang", "en"))
    limit = spec.get("train_limit")
    if limit:
        train = corpus.splits["train"]
        corpus.splits["train"] = RawSplit(train.pairs[:limit], train.files, train.blank_dropped)
    return corpus
