"""Moses tokenisation and detokenisation (sacremoses), as the official code's ``tokenizer.perl -a -no-escape``.

* ``aggressive_dash_splits``: ``well-known`` becomes ``well @-@ known`` (the perl script's ``-a``);
* ``escape=False``: ``&`` and quotes stay as they are (``-no-escape``);
* lowercasing (``dataset.lowercase``) happens after tokenisation, so Moses' rules that read case
  (a full stop before a capital ends a sentence) see the original text.

Detokenisation undoes the Moses rules for sacreBLEU, which scores detokenised text against the raw
references with its own tokeniser.

Try: ``python -m qd.text.tokenise en "A well-known dog's toy."``.
"""
from __future__ import annotations

import sys
from functools import lru_cache

from sacremoses import MosesDetokenizer, MosesTokenizer


@lru_cache(maxsize=None)
def _tokenizer(lang: str) -> MosesTokenizer:
    return MosesTokenizer(lang=lang)


@lru_cache(maxsize=None)
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


def tokenise(line: str, lang: str, lowercase: bool) -> list[str]:
    """The Moses tokens of one raw line (lowercased after tokenisation when ``lowercase``)."""
    tokens = _tokenizer(lang).tokenize(line, aggressive_dash_splits=True, escape=False)
    return [t.lower() for t in tokens] if lowercase else tokens


def split_pretokenised(line: str, lowercase: bool) -> list[str]:
    """Tokens of a line that is already tokenised (the OpenNMT integration set): split on spaces."""
    tokens = line.split()
    return [t.lower() for t in tokens] if lowercase else tokens


def detokenise(tokens: list[str], lang: str) -> str:
    """Text from Moses tokens (``@-@`` joins are undone)."""
    return _detokenizer(lang).detokenize(tokens)


if __name__ == "__main__":
    toks = tokenise(sys.argv[2], sys.argv[1], lowercase=False)
    print(" ".join(toks))
    print(detokenise(toks, sys.argv[1]))
