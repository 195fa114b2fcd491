"""A translation task's prepared data folder: tokenised text, fairseq dictionaries, binarised splits.

``prepare_translation(dataset, folder)`` (the workflow's data rule, through
``Translation.prepare``):

1. reads the raw corpus (:func:`qd.text.corpora.load_corpus`; bad files are refused there);
2. tokenises both sides with Moses (:mod:`qd.text.tokenise`) and lowercases when asked; training
   pairs with more than ``max_length`` tokens on either side are dropped (the official
   ``src_seq_length`` / ``tgt_seq_length`` of 50); validation and test pairs are all kept;
3. builds one fairseq ``Dictionary`` per side from the training tokens: the ``vocab_size`` most
   frequent words (ties in alphabetical order) after fairseq's four specials ``<s> <pad> </s> <unk>``;
4. refuses a vocabulary under which a side of the test set is nothing but ``<unk>``;
5. binarises every split with fairseq's mmap indexed dataset.

The folder then holds, with fairseq's own names (``fairseq-train <folder> --source-lang de
--target-lang en`` trains on it):

* ``dict.{lang}.txt`` and ``{split}.{src}-{tgt}.{lang}.bin|idx`` (``split`` = train, valid, test);
* ``{split}.tok.{lang}``: the tokenised text, one sentence per line (source words for ``<unk>``
  replacement, references for the legacy BLEU);
* ``valid.raw.{lang}``, ``test.raw.{lang}``: the raw text (the references sacreBLEU scores against);
* ``translation.json``: languages, lowercasing, whether the corpus came tokenised (then new text is split
  on spaces rather than Moses-tokenised), special indices, sizes (what :class:`PreparedText` and
  ``qd translate`` read).

Everything is written to a staging folder beside ``folder`` and moved in only once every check has
passed: a refused corpus leaves nothing behind.

Try: ``python -m qd.text.prepare numbers /tmp/numbers``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qd.text import FAIRSEQ_SPLIT, SPLITS, import_fairseq
from qd.text.corpora import CorpusError, RawCorpus, load_corpus
from qd.text.tokenise import split_pretokenised, tokenise

REFERENCES = "test_references.txt"
LAYOUT = "translation.json"


def _tokens_of(corpus: RawCorpus, lowercase: bool):
    if corpus.pretokenised:
        return lambda line, lang: split_pretokenised(line, lowercase)
    return lambda line, lang: tokenise(line, lang, lowercase)


def _tokenise_split(corpus: RawCorpus, split: str, langs: tuple[str, str], lowercase: bool, max_length: int | None,
                    staging: Path, counts: tuple[Counter, Counter] | None) -> dict:
    """Write ``{split}.tok.{lang}`` (and the raw text of val/test); returns the split's statistics."""
    tok = _tokens_of(corpus, lowercase)
    raw = corpus.splits[split]
    name = FAIRSEQ_SPLIT[split]
    out = [open(staging / f"{name}.tok.{lang}", "w", encoding="utf-8") for lang in langs]
    keep_raw = split != "train"
    raw_out = [open(staging / f"{name}.raw.{lang}", "w", encoding="utf-8") for lang in langs] if keep_raw else []
    kept = too_long = empty = 0
    try:
        for pair in raw.pairs:
            tokens = [tok(line, lang) for line, lang in zip(pair, langs)]
            if not all(tokens):  # a line of punctuation-free whitespace: nothing left to translate
                empty += 1
                continue
            if max_length is not None and max(len(t) for t in tokens) > max_length:
                too_long += 1
                continue
            kept += 1
            for f, t in zip(out, tokens):
                f.write(" ".join(t) + "\n")
            for f, line in zip(raw_out, pair):
                f.write(line.strip() + "\n")
            if counts is not None:
                for c, t in zip(counts, tokens):
                    c.update(t)
    finally:
        for f in out + raw_out:
            f.close()
    if kept == 0:
        raise CorpusError(f"{raw.files[0]}: no {split} pair is left after tokenisation"
                          + (f" and the max_length={max_length} filter" if max_length else ""))
    return {"pairs": kept, "dropped_too_long": too_long, "dropped_blank": raw.blank_dropped + empty}


def build_dictionary(counts: Counter, vocab_size: int):
    """A fairseq dictionary of the ``vocab_size`` most frequent words (after the four specials)."""
    import_fairseq()
    from fairseq.data import Dictionary

    d = Dictionary()
    for word, n in sorted(counts.items()):
        d.add_symbol(word, n)
    # nwords counts the specials; padding_factor 1 keeps the size exact (fairseq-preprocess pads to 8)
    d.finalize(threshold=-1, nwords=vocab_size + d.nspecial, padding_factor=1)
    return d


def unknown_rate(path: Path, dictionary) -> tuple[float, int]:
    """Share of the tokens of a tokenised file that ``dictionary`` maps to ``<unk>``, and the token count."""
    unk = total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            total += len(words)
            unk += sum(dictionary.index(w) == dictionary.unk_index for w in words)
    return unk / max(total, 1), total


def binarise(text: Path, dictionary, prefix: Path) -> int:
    """``prefix.bin|idx`` (fairseq mmap) from a tokenised file; every sentence ends with ``</s>``."""
    import torch

    import_fairseq()
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=len(dictionary))
    n = 0
    with open(text, encoding="utf-8") as f:
        for line in f:
            ids = [dictionary.index(w) for w in line.split()] + [dictionary.eos_index]
            builder.add_item(torch.tensor(ids, dtype=torch.int32))
            n += 1
    builder.finalize(f"{prefix}.idx")
    return n


def _staging(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))


def prepare_translation(dataset: dict, folder: str | Path) -> dict:
    """Prepare the corpus ``dataset`` names into ``folder``; returns the manifest."""
    import sacremoses

    folder = Path(folder)
    src, tgt = dataset.get("source_lang", "de"), dataset.get("target_lang", "en")
    lowercase = dataset.get("lowercase", True)
    vocab_size = dataset.get("vocab_size", 50000)
    corpus = load_corpus(dataset)
    staging = _staging(folder)
    try:
        counts = (Counter(), Counter())
        stats = {split: _tokenise_split(corpus, split, (src, tgt), lowercase,
                                        dataset.get("max_length", 50) if split == "train" else None, staging,
                                        counts if split == "train" else None)
                 for split in SPLITS}
        dicts = {lang: build_dictionary(c, vocab_size) for lang, c in zip((src, tgt), counts)}
        unk = {}
        for lang, d in dicts.items():
            rate, n = unknown_rate(staging / f"test.tok.{lang}", d)
            if rate == 1.0:
                raise CorpusError(
                    f"{corpus.splits['test'].files[(src, tgt).index(lang)]}: every one of the {n} test tokens maps "
                    f"to <unk> under the {lang} vocabulary of {len(d) - d.nspecial} words built from "
                    f"{corpus.splits['train'].files[(src, tgt).index(lang)]}: the training and test files share no "
                    "word (wrong files or languages?), or dataset.vocab_size is too small")
            unk[f"test_{lang}"] = round(rate, 6)
        for lang, d in dicts.items():
            d.save(str(staging / f"dict.{lang}.txt"))
            for split in SPLITS:
                name = FAIRSEQ_SPLIT[split]
                binarise(staging / f"{name}.tok.{lang}", d, staging / f"{name}.{src}-{tgt}.{lang}")
        d_src, d_tgt = dicts[src], dicts[tgt]
        layout = {"source_lang": src, "target_lang": tgt, "lowercase": lowercase, "pretokenised": corpus.pretokenised,
                  "sizes": {s: stats[s]["pairs"] for s in SPLITS},
                  "specials": {"bos": d_tgt.bos(), "pad": d_tgt.pad(), "eos": d_tgt.eos(), "unk": d_tgt.unk()},
                  "vocab": {"source": len(d_src), "target": len(d_tgt)}}
        (staging / LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")
        # the references every BLEU of the test set is scored against, in the case sacreBLEU compares
        # (lowercased data is scored case-insensitively): the report's paired bootstrap reads them
        refs = (staging / f"test.raw.{tgt}").read_text(encoding="utf-8")
        (staging / REFERENCES).write_text(refs.lower() if lowercase else refs, encoding="utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tokeniser = ("pre-tokenised (split on spaces)" if corpus.pretokenised else
                 f"sacremoses {sacremoses.__version__} Moses tokenizer, aggressive dash splits, no escaping")
    return {"kind": "translation", "dataset": dataset["name"], "source": corpus.source, "notes": corpus.notes,
            "languages": {"source": src, "target": tgt}, "sizes": layout["sizes"],
            "dropped": {s: {k: v for k, v in stats[s].items() if k != "pairs"} for s in SPLITS},
            "vocab": layout["vocab"], "vocab_size": vocab_size, "max_length": dataset.get("max_length", 50),
            "lowercase": lowercase, "tokeniser": tokeniser, "unk_rate": unk, "specials": layout["specials"],
            "test_references": REFERENCES}


# ------------------------------------------------------------------------------------------ reading


@dataclass
class PreparedText:
    """The prepared folder as the adapter reads it: dictionaries, token tensors, text."""

    folder: Path
    layout: dict
    src_dict: object
    tgt_dict: object
    tokens: dict  # split -> (list of source id tensors, list of target id tensors)

    @classmethod
    def read(cls, folder: str | Path) -> "PreparedText":
        import_fairseq()
        from fairseq.data import Dictionary
        from fairseq.data.indexed_dataset import MMapIndexedDataset

        from qd.errors import DataMissing

        folder = Path(folder)
        if not (folder / LAYOUT).exists():
            raise DataMissing(f"{folder / LAYOUT} does not exist: {folder} is not a prepared translation dataset; "
                              "run the workflow's data rule or 'qd data' first")
        layout = json.loads((folder / LAYOUT).read_text())
        src, tgt = layout["source_lang"], layout["target_lang"]
        dicts = {lang: Dictionary.load(str(folder / f"dict.{lang}.txt")) for lang in (src, tgt)}
        tokens = {}
        for split in SPLITS:
            sides = []
            for lang in (src, tgt):
                ds = MMapIndexedDataset(str(folder / f"{FAIRSEQ_SPLIT[split]}.{src}-{tgt}.{lang}"))
                sides.append([ds[i].long() for i in range(len(ds))])
            tokens[split] = tuple(sides)
        return cls(folder, layout, dicts[src], dicts[tgt], tokens)

    def text(self, split: str, lang: str, kind: str = "tok") -> list[str]:
        """Lines of ``{split}.{kind}.{lang}`` (``kind`` tok or raw)."""
        path = self.folder / f"{FAIRSEQ_SPLIT[split]}.{kind}.{lang}"
        return path.read_text(encoding="utf-8").splitlines()


if __name__ == "__main__":
    name, out = sys.argv[1], Path(sys.argv[2])
    spec = {"name": name, "root": sys.argv[3] if len(sys.argv) > 3 else "data", "split_seed": 0, "val_fraction": 0.1,
            "test_fraction": 0.2, "download": False}
    manifest = prepare_translation(spec, out)
    print(json.dumps(manifest, indent=2))
    print(f"train pairs: {manifest['sizes']['train']}; log2 vocab: {math.log2(manifest['vocab']['target']):.1f}")
