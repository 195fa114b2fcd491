"""Fetching the public parallel corpora (used only where ``dataset.download`` is true).

Each file is streamed to a temporary name beside its destination and renamed once complete, so an
interrupted download never leaves a file that looks whole. Archives are opened with ``tarfile`` and
only the members a corpus needs are extracted.

Exercise it with ``pytest tests/test_translation_data.py -k download`` (a local HTTP server).
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from qd.errors import DataMissing

# the Multi30k repository's raw (untokenised, cased) task-1 files
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
# the files the official code downloaded for the OpenNMT integration set (already tokenised)
ONMT_INTEG_URL = "https://raw.githubusercontent.com/OpenNMT/IntegrationTesting/master/data/{name}"
# WMT13's Europarl v7 release (about 600 MB; holds every language pair, we keep de-en)
EUROPARL_URL = "http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz"
# plain-text newstest sets (newstest2012 and newstest2013 among them)
NEWSTEST_URL = "http://data.statmt.org/wmt17/translation-task/dev.tgz"

TIMEOUT_S = 60


def fetch(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` (atomically); a failure names the URL and what to do instead."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(tmp, dest)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        Path(tmp).unlink(missing_ok=True)
        raise DataMissing(f"could not download {url} to {dest} ({e}). Download it by hand and place it "
                          f"there, or point tasks.<task>.dataset.root at a folder that holds it.") from e
    return dest


def fetch_all(url_pattern: str, names: list[str], root: Path) -> None:
    """Every ``name`` missing under ``root``, from ``url_pattern.format(name=name)``."""
    for name in names:
        if not (root / name).exists():
            fetch(url_pattern.format(name=name), root / name)


def extract_members(archive: Path, members: dict[str, str], root: Path) -> None:
    """Extract the archive members ``{member path: file name under root}`` (others are skipped)."""
    wanted = dict(members)
    with tarfile.open(archive) as tar:
        for info in tar:
            if info.name in wanted and info.isfile():
                dest = root / wanted.pop(info.name)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=root)
                with os.fdopen(fd, "wb") as out, tar.extractfile(info) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
                os.replace(tmp, dest)
    if wanted:
        raise DataMissing(f"{archive} does not hold {', '.join(sorted(wanted))}; delete it and download it again")
