"""Parallel text: corpora, the numbers demo corpus, tokenisation, dictionaries, binarisation, bad input
(qd/text/). Tiny corpora are written by the tests in the layouts of the real ones."""
from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from qd.errors import DataMissing
from qd.text import download
from qd.text.corpora import CorpusError, load_corpus, read_lines
from qd.text.numbers import MONTHS, numbers_pairs, numbers_splits
from qd.text.prepare import PreparedText, prepare_translation
from qd.text.tokenise import detokenise, tokenise

STEMS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def numbers_text(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return numbers_pairs(n, seed)


def write_multi30k(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """The Multi30k raw layout: ``{train,val,test_2016_flickr}.{de,en}.gz``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        for side, lang in enumerate(("de", "en")):
            with gzip.open(root / f"{STEMS[split]}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("".join(p[side] + "\n" for p in pairs))
    return root


def tiny_splits(n_train=60, n_val=8, n_test=8) -> dict:
    pairs = numbers_text(n_train + n_val + n_test)
    return {"train": pairs[:n_train], "val": pairs[n_train:n_train + n_val], "test": pairs[n_train + n_val:]}


def spec(root: Path, **kw) -> dict:
    return {"name": "multi30k", "root": str(root), "download": False, "split_seed": 0, "val_fraction": 0.1,
            "test_fraction": 0.2, "source_lang": "de", "target_lang": "en", "vocab_size": 50000, "max_length": 50,
            "lowercase": True, **kw}


def only_folder_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# ------------------------------------------------------------------------------------------ prepare


def test_prepare_writes_fairseq_folder_that_reads_back(tmp_path):
    splits = tiny_splits()
    root = write_multi30k(tmp_path / "raw", splits)
    out = tmp_path / "data"
    manifest = prepare_translation(spec(root), out)
    assert manifest["sizes"] == {"train": 60, "val": 8, "test": 8}
    for name in ("dict.de.txt", "dict.en.txt", "train.de-en.de.bin", "valid.de-en.en.idx", "test.de-en.de.bin",
                 "test.raw.en", "test.tok.de", "translation.json"):
        assert (out / name).exists(), name
    prepared = PreparedText.read(out)
    # the binarised ids decode back to the tokenised, lowercased text, ending with </s>; words
    # outside the training vocabulary become <unk>
    d = prepared.tgt_dict
    for split in ("train", "test"):
        for ids, line in zip(prepared.tokens[split][1], prepared.text(split, "en")):
            assert ids[-1].item() == d.eos()
            expected = [w if d.index(w) != d.unk() else "<unk>" for w in line.split()]
            assert [d[i] for i in ids[:-1].tolist()] == expected
            if split == "train":
                assert "<unk>" not in expected
    tok_lines = prepared.text("test", "en")
    assert tok_lines[0] == " ".join(tokenise(splits["test"][0][1], "en", lowercase=False)).lower()
    # the raw references are kept verbatim (cased, untokenised) for sacreBLEU
    assert prepared.text("test", "en", "raw") == [p[1] for p in splits["test"]]
    # four specials, then every training word (vocab_size is not binding here)
    train_words = {w for line in prepared.text("train", "de") for w in line.split()}
    assert len(prepared.src_dict) == 4 + len(train_words) == manifest["vocab"]["source"]


def test_vocab_size_keeps_the_most_frequent_words(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    prepare_translation(spec(root, vocab_size=5), tmp_path / "data")
    prepared = PreparedText.read(tmp_path / "data")
    from collections import Counter

    counts = Counter(w for line in prepared.text("train", "en") for w in line.split())
    kept = [prepared.tgt_dict[i] for i in range(4, len(prepared.tgt_dict))]
    assert len(kept) == 5
    assert sorted(counts[w] for w in kept) == sorted(counts.values())[-5:]


def test_long_training_pairs_are_dropped_but_never_test_pairs(tmp_path):
    splits = tiny_splits()
    longest = max(len(tokenise(p[0], "de", True)) for p in splits["train"] + splits["test"])
    limit = longest - 1
    n_long_train = sum(max(len(tokenise(s, "de", True)), len(tokenise(t, "en", True))) > limit
                       for s, t in splits["train"])
    assert n_long_train > 0
    root = write_multi30k(tmp_path / "raw", splits)
    m = prepare_translation(spec(root, max_length=limit), tmp_path / "data")
    assert m["sizes"]["train"] == 60 - n_long_train and m["dropped"]["train"]["dropped_too_long"] == n_long_train
    assert m["sizes"]["test"] == 8


def test_blank_pairs_are_dropped_and_counted(tmp_path):
    splits = tiny_splits()
    splits["train"][3] = ("   ", splits["train"][3][1])
    m = prepare_translation(spec(write_multi30k(tmp_path / "raw", splits)), tmp_path / "data")
    assert m["sizes"]["train"] == 59 and m["dropped"]["train"]["dropped_blank"] == 1


def test_lowercase_off_keeps_case(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    prepare_translation(spec(root, lowercase=False), tmp_path / "data")
    assert any(w[0].isupper() for w in (tmp_path / "data" / "train.tok.de").read_text().split())


def test_tokenise_then_detokenise_restores_text():
    text = "A well-known dog's toy, \"red\" & blue."
    tokens = tokenise(text, "en", lowercase=False)
    assert tokens == ["A", "well", "@-@", "known", "dog", "'s", "toy", ",", '"', "red", '"', "&", "blue", "."]
    assert detokenise(tokens, "en") == text


# ------------------------------------------------------------------------------------------ bad input


def _assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert only_folder_entries(tmp_path) == ["raw"]  # no staging folder left behind either


def test_line_count_mismatch_names_both_files_and_line(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    with gzip.open(root / "val.en.gz", "at", encoding="utf-8") as f:
        f.write("one line too many\n")
    with pytest.raises(CorpusError, match=r"val\.de\.gz has 8 lines but .*val\.en\.gz has 9.*line 9 has no partner"):
        prepare_translation(spec(root), tmp_path / "data")
    _assert_nothing_written(tmp_path, tmp_path / "data")


def test_empty_file_is_refused(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    with gzip.open(root / "test_2016_flickr.de.gz", "wt") as f:
        f.write("\n\n")
    with pytest.raises(CorpusError, match=r"test_2016_flickr\.de\.gz: the file is empty"):
        prepare_translation(spec(root), tmp_path / "data")
    _assert_nothing_written(tmp_path, tmp_path / "data")


def test_invalid_utf8_names_file_and_line(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    lines = gzip.open(root / "train.en.gz", "rb").read().split(b"\n")
    lines[4] = "Caf\u00e9".encode("latin-1")  # a Latin-1 byte that is not UTF-8
    with gzip.open(root / "train.en.gz", "wb") as f:
        f.write(b"\n".join(lines))
    with pytest.raises(CorpusError, match=r"train\.en\.gz, line 5: not valid UTF-8"):
        prepare_translation(spec(root), tmp_path / "data")
    _assert_nothing_written(tmp_path, tmp_path / "data")


def test_vocabulary_leaving_the_test_set_all_unknown_is_refused(tmp_path):
    splits = tiny_splits()
    splits["test"] = [("Xylofon Zebra", "Quokka yak"), ("Zebra", "Yak quokka")]  # no training word at all
    root = write_multi30k(tmp_path / "raw", splits)
    with pytest.raises(CorpusError, match=r"test_2016_flickr\.de\.gz: every one of the 3 test tokens maps to <unk>"):
        prepare_translation(spec(root), tmp_path / "data")
    _assert_nothing_written(tmp_path, tmp_path / "data")


def test_a_failure_leaves_an_existing_folder_untouched(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    out = tmp_path / "data"
    prepare_translation(spec(root), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (root / "val.en.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(CorpusError, match="empty"):
        prepare_translation(spec(root, vocab_size=3), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert only_folder_entries(tmp_path) == ["data", "raw"]  # no staging folder left behind


def test_missing_files_say_which_where_and_how(tmp_path):
    root = write_multi30k(tmp_path / "raw", tiny_splits())
    (root / "val.de.gz").unlink()
    with pytest.raises(DataMissing, match=r"multi30k: val\.de\.gz not found under .*dataset\.download: true.*"
                                          r"raw\.githubusercontent\.com/multi30k/dataset"):
        load_corpus(spec(root))


# ------------------------------------------------------------------------------------------ download


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on this machine; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_fetches_the_missing_multi30k_files(tmp_path, http_folder, monkeypatch):
    served, base = http_folder
    write_multi30k(served, tiny_splits())
    monkeypatch.setattr(download, "MULTI30K_URL", base + "/{name}")
    root = tmp_path / "root"
    corpus = load_corpus(spec(root, download=True))
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in served.iterdir())
    assert len(corpus.splits["train"].pairs) == 60


def test_failed_download_names_the_url_and_leaves_no_partial_file(tmp_path, http_folder, monkeypatch):
    served, base = http_folder
    monkeypatch.setattr(download, "MULTI30K_URL", base + "/missing/{name}")
    root = tmp_path / "root"
    with pytest.raises(DataMissing, match=r"could not download http://127\.0\.0\.1:\d+/missing/train\.de\.gz"):
        load_corpus(spec(root, download=True))
    assert list(root.iterdir()) == []


def _europarl_archive(path: Path, de: list[str], en: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, lines in (("training/europarl-v7.de-en.de", de), ("training/europarl-v7.de-en.en", en),
                            ("training/europarl-v7.fr-en.fr", ["Bonjour"])):
            data = "".join(line + "\n" for line in lines).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_wmt13_official_split_is_sequential_90_10_after_download(tmp_path, http_folder, monkeypatch):
    served, base = http_folder
    de = [f"Satz {i} ." if i != 7 else "" for i in range(40)]  # line 7 blank in German: dropped
    en = [f"Sentence {i} ." for i in range(40)]
    _europarl_archive(served / "training-parallel-europarl-v7.tgz", de, en)
    monkeypatch.setattr(download, "EUROPARL_URL", base + "/training-parallel-europarl-v7.tgz")
    root = tmp_path / "root"
    corpus = load_corpus({**spec(root, download=True), "name": "wmt13", "split": "europarl-90-10",
                          "val_fraction": 0.25})
    # 40 lines: the official rule keeps index <= 40 * 9 // 10 = 36 in training, 37..39 are the test set
    assert [p[1] for p in corpus.splits["test"].pairs] == [f"Sentence {i} ." for i in (37, 38, 39)]
    train_and_val = corpus.splits["train"].pairs + corpus.splits["val"].pairs
    assert sorted(int(p[1].split()[1]) for p in train_and_val) == [i for i in range(37) if i != 7]
    assert len(corpus.splits["val"].pairs) == round(0.25 * 36)
    assert (root / "europarl-v7.de-en.de").exists() and not (root / "europarl-v7.fr-en.fr").exists()


def test_onmt_integ_uses_the_10k_file_as_test_and_holds_out_validation(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    pairs = numbers_text(50)
    for lang, side in (("de", 0), ("en", 1)):
        tok = [" ".join(tokenise(p[side], lang, lowercase=False)) for p in pairs]
        (root / f"{lang}-train-clean.200K.txt").write_text("".join(t + "\n" for t in tok[:40]))
        (root / f"{lang}-val-clean.10K.txt").write_text("".join(t + "\n" for t in tok[40:]))
    corpus = load_corpus({**spec(root), "name": "onmt-integ", "val_fraction": 0.25, "split_seed": 3})
    assert corpus.pretokenised and len(corpus.splits["test"].pairs) == 10
    assert len(corpus.splits["val"].pairs) == 10 and len(corpus.splits["train"].pairs) == 30
    again = load_corpus({**spec(root), "name": "onmt-integ", "val_fraction": 0.25, "split_seed": 3})
    assert again.splits["val"].pairs == corpus.splits["val"].pairs
    m = prepare_translation({**spec(root), "name": "onmt-integ", "val_fraction": 0.25}, tmp_path / "data")
    assert m["tokeniser"].startswith("pre-tokenised")
    # what qd translate reads to split new text on spaces rather than Moses-tokenise it
    assert json.loads((tmp_path / "data" / "translation.json").read_text())["pretokenised"] is True


# ------------------------------------------------------------------------------------------ numbers corpus


def test_numbers_corpus_is_deterministic_and_distinct():
    a, b = numbers_pairs(1000, seed=5), numbers_pairs(1000, seed=5)
    assert a == b and len({p[0] for p in a}) == 1000
    assert numbers_pairs(1000, seed=6) != a
    s = numbers_splits(6000, 0, 0.1, 0.2)
    assert [len(s[k]) for k in ("train", "val", "test")] == [4200, 600, 1200]
    assert not {p[0] for p in s["test"]} & {p[0] for p in s["train"]}


def test_numbers_corpus_reorders_words():
    """German dates put the day first, English the month; the participle moves from last to second."""
    pairs = numbers_pairs(2000, seed=0)
    ordinals = {"dritten": "third", "ersten": "first"}
    reordered = 0
    for de, en in pairs:
        d, e = tokenise(de, "de", True), tokenise(en, "en", True)
        for month_de, month_en in MONTHS:
            for o_de, o_en in ordinals.items():
                if month_de.lower() in d and o_de in d and o_en in e:
                    assert d.index(o_de) < d.index(month_de.lower()) and e.index(month_en.lower()) < e.index(o_en)
                    reordered += 1
    assert reordered > 0
    verb_final = [(de, en) for de, en in pairs if de.endswith("gekauft.") and " bought " in en]
    assert verb_final and all(tokenise(en, "en", True).index("bought") < 3 for _, en in verb_final)


def test_numbers_corpus_has_morphology():
    text = " ".join(de for de, _ in numbers_pairs(3000, seed=0))
    for form in ("einen großen", "eine große", "ein großes", "große Hunde", "Ich habe", "hat", "halb"):
        assert form in text, form
    english = " ".join(en for _, en in numbers_pairs(3000, seed=0))
    assert "an old" in english and "a big" in english and "half past" in english


# ------------------------------------------------------------------------------------------ shared data


def test_shared_multi30k_files_read_strictly(shared):
    root = shared / "multi30k"
    assert len(read_lines(root / "train.de.gz")) == 29000
    corpus = load_corpus({**spec(root), "train_limit": 100})
    assert [len(corpus.splits[s].pairs) for s in ("train", "val", "test")] == [100, 1014, 1000]
    assert corpus.splits["test"].pairs[0][1].startswith("A man in an orange hat")


@pytest.mark.slow
def test_shared_multi30k_prepares(shared, tmp_path):
    m = prepare_translation(spec(shared / "multi30k"), tmp_path / "data")
    assert m["sizes"]["val"] == 1014 and m["sizes"]["test"] == 1000 and 28000 < m["sizes"]["train"] <= 29000
    layout = json.loads((tmp_path / "data" / "translation.json").read_text())
    assert layout["vocab"] == m["vocab"]
