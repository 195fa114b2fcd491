"""The teacher's cache of K augmented views per training image (``distill.teacher_views``): its logits
are the teacher's on exactly those views, a step's crop reproduces the view it reads, K = 0 changes
nothing, and a distilled run with views trains, resumes and runs through the workflow's rule."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import snakemake, workflow_copy
from qd import teacher_views
from qd.config import load_config, run_spec, spec_hash, views_file
from qd.data.augment import PAD, apply_views
from qd.errors import ConfigError, MissingRun
from qd.methods.contract import RunContext
from qd.tasks.classification import Classification
from qd.train import Fit, run_epochs

CPU = torch.device("cpu")
DIGITS = {"kind": "classification", "name": "digits", "split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.2,
          "train_limit": 200}
DISTILL = {"temperature": 2.0, "weight": 0.7, "reduction": "batchmean"}
K = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("digits")
    Classification.prepare(DIGITS, f)
    return f


def _teacher():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 64, 10)).eval()


def _task(folder, views=K, augment=True, batch=64):
    spec = {"train": {"augment": augment}, "distill": {**DISTILL, "teacher_views": views},
            "evaluation": {"batch_size": batch}}
    return Classification(spec, folder, CPU)


@pytest.fixture(scope="module")
def teacher_run(folder, tmp_path_factory):
    """A teacher 'run folder': its model file (any bytes identify it) and its cache of K views."""
    run = tmp_path_factory.mktemp("teacher")
    (run / "model.qda").write_bytes(b"the teacher's weights")
    task, teacher = _task(folder), _teacher()
    from qd.run import file_id

    # batches of 64 for the cache: the step's view logits are compared with a teacher pass of other shapes
    cache = teacher_views.compute(teacher, *task.train, task.normalise, K, file_id(run / "model.qda"), 64)
    torch.save(cache, run / views_file(K))
    return run, teacher, cache


def test_the_views_are_drawn_from_the_fixed_seed_within_the_padding():
    a, b = teacher_views.draw_all(50, 4), teacher_views.draw_all(50, 4)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    dy, dx, flip = a
    assert dy.shape == (50, 4) and dy.dtype == torch.uint8 and flip.dtype == torch.bool
    assert int(dy.max()) <= 2 * PAD and int(dx.max()) <= 2 * PAD
    # the first n draws of 200 are the first 50 images' 4 views: a cache for fewer images is no prefix
    assert not torch.equal(teacher_views.draw_all(200, 1)[0][:50, 0], dy[:, 0])


def test_cached_logits_are_the_teachers_on_the_same_view(teacher_run, folder):
    run, teacher, cache = teacher_run
    task = _task(folder)
    x = task.train[0]
    assert cache["logits"].shape == (200, K, 10) and cache["logits"].dtype == torch.float16
    for i, v in [(0, 0), (7, 2), (123, 1), (199, 2)]:
        dy, dx, flip = (int(cache[f][i, v]) for f in ("dy", "dx", "flip"))
        # the view cut by hand: the 8x8 window at (dy, dx) of the image padded with 4 black pixels
        window = torch.nn.functional.pad(x[i:i + 1], (PAD,) * 4)[..., dy:dy + 8, dx:dx + 8]
        view = window.flip(-1) if flip else window
        with torch.no_grad():
            expected = teacher(task.normalise(view))[0]
        assert torch.allclose(cache["logits"][i, v].float(), expected, rtol=1e-3, atol=1e-3)  # float16


def test_a_step_reads_the_logits_of_the_view_the_student_sees(teacher_run, folder):
    run, teacher, cache = teacher_run
    task = _task(folder)
    task.use_teacher_run(run)
    batches = list(task.train_batches(32, torch.Generator().manual_seed(1)))
    again = list(task.train_batches(32, torch.Generator().manual_seed(1)))
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)  # (x, y, indices, views)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[3], b[3]) for a, b in zip(batches, again))
    assert len(torch.cat([b[3] for b in batches]).unique()) == K  # every view is drawn
    for x, y, idx, view in batches[:3]:
        stored = task.train[0][idx]
        # the student's input is the stored view of each image, normalised
        cut = apply_views(stored, cache["dy"][idx, view], cache["dx"][idx, view], cache["flip"][idx, view])
        assert torch.equal(x, task.normalise(cut))
        with torch.no_grad():
            assert torch.allclose(task.teacher_output(teacher, (x, y, idx, view)), teacher(x), rtol=1e-3, atol=1e-3)


def test_no_views_is_the_augmented_path_as_before(folder):
    plain = Classification({"train": {"augment": True}, "distill": DISTILL}, folder, CPU)
    zero = _task(folder, views=0)
    for a, b in zip(plain.train_batches(64, torch.Generator().manual_seed(2)),
                    zero.train_batches(64, torch.Generator().manual_seed(2))):
        assert len(a) == len(b) == 3 and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    teacher = _teacher()
    batch = next(zero.train_batches(64, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        assert torch.equal(zero.teacher_output(teacher, batch), teacher(batch[0]))  # the teacher on every step


def test_a_cache_of_another_teacher_or_k_is_refused_naming_the_file(teacher_run, folder, tmp_path):
    run, _, cache = teacher_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.qda").write_bytes(b"another teacher")
    torch.save(cache, other / views_file(K))
    with pytest.raises(MissingRun, match=rf"{other / views_file(K)} was computed for another teacher.*teacher: file"):
        _task(folder).use_teacher_run(other)
    with pytest.raises(MissingRun, match=rf"{run / views_file(2)} does not exist.*snakemake"):
        _task(folder, views=2).use_teacher_run(run)
    with pytest.raises(ValueError, match="does not augment"):
        _task(folder, augment=False)
    with pytest.raises(ValueError, match="no teacher run was given"):
        next(_task(folder).train_batches(32, torch.Generator()))


def test_a_distilled_run_with_views_trains_and_resumes_as_an_uninterrupted_one(teacher_run, folder, tmp_path):
    run, teacher, _ = teacher_run
    cfg = {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False,
           "weight_decay": 0.0, "schedule": "constant"}

    def train(epochs, checkpoint):
        task = _task(folder)
        task.use_teacher_run(run)
        torch.manual_seed(0)
        student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 10))
        ctx = RunContext({"distill": DISTILL, "seed": 0}, task, CPU, tmp_path)
        fit = Fit(params=list(student.parameters()), loss=ctx.objective(student, teacher),
                  evaluate=lambda: {"test_accuracy": 0.0}, modules=[student])
        history = run_epochs(fit, task, {**cfg, "epochs": epochs}, 0, "views", checkpoint, "spec")
        return student, history

    whole, history = train(2, tmp_path / "whole.pt")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    train(1, tmp_path / "stopped.pt")  # a run stopped after its first epoch ...
    resumed, _ = train(2, tmp_path / "stopped.pt")  # ... and run again
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


CONFIG = {"preset": "views", "seeds": [0],
          "tasks": {"digits": {"dataset": {"name": "digits", "test_fraction": 0.2, "val_fraction": 0.1},
                               "models": {"teacher": "teacher", "students": ["student3"], "width": 0.125,
                                          "methods": {"student3": ["fp", "distill", "qd", "dq"]}},
                               "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.003,
                                         "weight_decay": 0.0, "schedule": "constant", "augment": True}}},
          "methods": {"fp": {}, "distill": {}, "qd": {}, "dq": {"train": {"epochs": 1}}},
          "quant": {"bits": [2]}}


def test_the_key_enters_only_the_specs_of_runs_that_read_the_teacher(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(CONFIG))
    plain = load_config(path)
    views = load_config(path, {"distill": {"teacher_views": 4}})
    from qd.config import planned_runs

    for run in planned_runs(plain):
        a, b = run_spec(plain, run), run_spec(views, run)
        reads_teacher = run.method in ("distill", "qd")  # dq distils from its own unquantized student
        assert "teacher_views" not in a.get("distill", {})  # left at 0: the specs (and hashes) as before
        assert (spec_hash(a) != spec_hash(b)) == reads_teacher
        assert b.get("distill", {}).get("teacher_views") == (4 if reads_teacher else None)
    unaugmented = copy.deepcopy(CONFIG)
    unaugmented["tasks"]["digits"]["train"]["augment"] = False
    unaugmented["distill"] = {"teacher_views": 4}
    path.write_text(json.dumps(unaugmented))
    with pytest.raises(ConfigError, match="tasks.digits.distill.teacher_views: the students do not augment"):
        load_config(path)


def test_the_workflow_computes_the_views_once_per_teacher_for_the_runs_that_read_them(tmp_path):
    root = workflow_copy(tmp_path)
    (root / "views.yaml").write_text(json.dumps({**CONFIG, "distill": {"teacher_views": 2}}))
    teacher = "results/views/digits/teacher/fp/fp32/seed0"
    targets = [f"results/views/digits/student3/{m}/seed0/metrics.json" for m in ("distill/fp32", "qd/b2-d256")]
    dry = snakemake(root, *targets, "-n", "--configfile", "views.yaml")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert (dry.stdout + dry.stderr).count("rule teacher_views:") == 1
    proc = snakemake(root, *targets, "--cores", "2", "--configfile", "views.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cache = torch.load(root / teacher / views_file(2), weights_only=True)
    assert cache["logits"].shape[1] == 2 and cache["key"]["views"] == 2
    from qd.run import file_id

    assert cache["key"]["teacher"] == file_id(root / teacher / "model.qda")
    for t in targets:
        row = json.loads((root / t).read_text())
        assert row["teacher_id"] == cache["key"]["teacher"]
        assert json.loads((root / Path(t).parent / "spec.json").read_text())["distill"]["teacher_views"] == 2
    again = snakemake(root, *targets, "-n", "--configfile", "views.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
