"""The teacher's logits on K fixed augmented views of every training image, computed once per teacher.

With crop + flip a distilled student sees a new view of each image at every step, so the teacher's
outputs cannot be cached as they are without augmentation (``distill.cache_teacher``): the teacher
would run at every step, and its forward pass costs more than the student's whole step. Instead
(``distill.teacher_views: K``), K views per training image are drawn once from a fixed seed and the
teacher's logits on them computed once; each step draws one of the K views per image, the student gets
exactly that crop and flip and the loss reads that view's logits. The loss is then exact for the views
used (up to the logits' float16 rounding); what changes is that a student sees K of the 162 possible
views of an image (9 x 9 offsets, 2 flips) instead of a fresh one each time.

The file, ``teacher_views<K>.pt`` in the teacher's run folder (the workflow's ``teacher_views`` rule
writes it; every run that reads it declares it as an input), holds:

* ``logits``: (N, K, classes) float16, the teacher's (eval mode) logits on view k of training image i;
* ``dy``, ``dx``: (N, K) uint8 crop offsets into the padded image, ``flip``: (N, K) bool;
* ``key``: what the cache was computed from: the teacher's model file (``teacher``: its id, as a
  result row's ``teacher_id``), the training split (``train``: a digest of its pixels and labels), K,
  the seed and the padding. A run checks the key against its own teacher and data before using it.

Try: ``pytest tests/test_teacher_views.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from qd.config import views_file
from qd.data.augment import PAD, apply_views, draw_views
from qd.errors import MissingRun

SEED = 20180212  # the views of every cache; fixed, so that a cache is a function of the teacher and the data


def train_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short digest of the training split as stored (pixels and labels, in split order)."""
    h = hashlib.sha256()
    for t in (x, y):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_key(teacher_id: str, digest: str, k: int) -> dict:
    return {"teacher": teacher_id, "train": digest, "views": k, "seed": SEED, "pad": PAD}


def draw_all(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dy, dx, flip)``, each (n, k): the K views of every image, from the fixed seed."""
    dy, dx, flip = draw_views(n * k, torch.Generator().manual_seed(SEED))
    return dy.to(torch.uint8).view(n, k), dx.to(torch.uint8).view(n, k), flip.view(n, k)


@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor, normalise, dy, dx, flip, batch_size: int) -> torch.Tensor:
    """(N, K, classes) float16: the teacher's eval-mode logits on view k of image i of the stored pixels ``x``."""
    was_training = teacher.training
    teacher.eval()
    n, k = dy.shape
    out = None
    for v in range(k):
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            logits = teacher(normalise(apply_views(x[sl], dy[sl, v], dx[sl, v], flip[sl, v])))
            if out is None:
                out = torch.empty(n, k, logits.shape[-1], dtype=torch.float16, device=logits.device)
            out[sl, v] = logits.to(torch.float16)
    teacher.train(was_training)
    return out


@dataclass
class TeacherViews:
    """A loaded cache on the run's device."""

    logits: torch.Tensor  # (N, K, classes) float16
    dy: torch.Tensor  # (N, K) uint8
    dx: torch.Tensor
    flip: torch.Tensor  # (N, K) bool
    key: dict

    @property
    def k(self) -> int:
        return self.dy.shape[1]

    def crop(self, x: torch.Tensor, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """The batch ``x`` (the stored pixels of training images ``idx``) cut as their views ``view``."""
        return apply_views(x, self.dy[idx, view], self.dx[idx, view], self.flip[idx, view])

    def teacher_logits(self, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return self.logits[idx, view].float()


def compute(teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, normalise, k: int, teacher_id: str,
            batch_size: int) -> dict:
    """The cache's contents for the stored training pixels ``x`` and labels ``y``."""
    dy, dx, flip = draw_all(len(y), k)
    dev = x.device
    logits = teacher_logits(teacher, x, normalise, dy.to(dev), dx.to(dev), flip.to(dev), batch_size)
    return {"logits": logits.cpu(), "dy": dy, "dx": dx, "flip": flip,
            "key": cache_key(teacher_id, train_digest(x, y), k)}


def load(path: Path, key: dict, device: torch.device) -> TeacherViews:
    """The cache at ``path``, checked against the run's teacher, data and K (``key``); one missing, or
    made for another teacher or data, is a :class:`MissingRun` (the teacher's views are not there)."""
    if not path.exists():
        raise MissingRun(
            f"{path} does not exist: distill.teacher_views: {key['views']} reads the teacher's logits on "
            f"{key['views']} cached views per image; the workflow's teacher_views rule writes it (snakemake {path}), "
            f"or by hand: python -m qd.teacher_views --spec <the teacher's spec> --teacher {path.parent} --data <data> "
            f"--views {key['views']}")
    d = torch.load(path, weights_only=True)
    differ = {f: (d["key"].get(f), v) for f, v in key.items() if d["key"].get(f) != v}
    if differ:
        what = "; ".join(f"{f}: file {a!r}, run {b!r}" for f, (a, b) in differ.items())
        raise MissingRun(f"{path} was computed for another teacher or data ({what}); delete it and run the "
                         f"workflow again (snakemake {path})")
    return TeacherViews(*(d[f].to(device) for f in ("logits", "dy", "dx", "flip")), key=d["key"])


def main(argv: list[str] | None = None) -> int:
    """The workflow's ``teacher_views`` rule: write the cache of a finished teacher run."""
    ap = argparse.ArgumentParser(description="cache a teacher's logits on K augmented views of each training image")
    ap.add_argument("--spec", required=True, help="the teacher run's spec file (device, threads, evaluation batch)")
    ap.add_argument("--teacher", required=True, help="the finished teacher run folder or its model.qda")
    ap.add_argument("--data", required=True, help="the task's prepared data folder or its manifest")
    ap.add_argument("--views", type=int, required=True, help="K, views per training image")
    ap.add_argument("--out", help=f"the file to write (default: {views_file('K')} in the teacher's folder)")
    args = ap.parse_args(argv)
    import json

    from qd.gpu_slots import gpu_slot
    from qd.io import atomic_save
    from qd.run import ARTEFACT, file_id, load_run_model, resolve_device
    from qd.tasks import load_task

    if args.views < 1:
        ap.error(f"--views must be at least 1, got {args.views}")
    spec = json.loads(Path(args.spec).read_text())
    teacher_dir, data = (Path(p) if Path(p).is_dir() else Path(p).parent for p in (args.teacher, args.data))
    out = Path(args.out) if args.out else teacher_dir / views_file(args.views)
    torch.set_num_threads(spec["threads"])
    with gpu_slot(spec["device"]):
        device = resolve_device(spec["device"])
        task = load_task(spec["kind"], spec.get("task_entry"))(spec, data, device)
        if getattr(task, "streamed", True):  # only a prepared split of a classification task is resident
            raise ValueError(f"{data}: the teacher's views are cached for a prepared image split (split.pt), "
                             f"not for a {spec['kind']} task or a streamed dataset")
        teacher = load_run_model(teacher_dir, device)
        x, y = task.train
        cache = compute(teacher, x, y, task.normalise, args.views, file_id(teacher_dir / ARTEFACT),
                        spec["evaluation"]["batch_size"])
    atomic_save(cache, out)
    print(f"{spec['run']}: logits on {args.views} views of {len(y)} training images -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
