"""Parallel text for the translation task: corpora, tokenisation, vocabularies and binarised data.

* :mod:`qd.text.corpora`: read the raw corpora (``multi30k``, ``onmt-integ``, ``wmt13``) and the
  embedded ``numbers`` demo corpus into raw train / val / test pairs, refusing bad files with their
  name and line;
* :mod:`qd.text.download`: fetch them from their public sources when ``dataset.download`` allows;
* :mod:`qd.text.numbers`: the demo corpus (German and English number words and dates, generated);
* :mod:`qd.text.tokenise`: Moses tokenisation and detokenisation (sacremoses);
* :mod:`qd.text.prepare`: fairseq dictionaries and binarised data in the task's data folder, with
  file names fairseq's own tools read (``fairseq-train <folder>`` works on it).

Try: ``python -m qd.text.prepare numbers /tmp/numbers`` (writes the prepared demo corpus).
"""
from __future__ import annotations

import logging
import warnings

SPLITS = ("train", "val", "test")
# fairseq's tools name the validation split "valid"
FAIRSEQ_SPLIT = {"train": "train", "val": "valid", "test": "test"}


def import_fairseq() -> None:
    """Import fairseq without its side effects on the process: some of its modules call
    ``logging.basicConfig(level=INFO)`` at import (every later INFO line of any library would reach
    the job's log), log about optional packages, and warn about ``torch.jit.script``."""
    import sys

    if "fairseq" in sys.modules:
        return
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import fairseq  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
