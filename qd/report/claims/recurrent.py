"""Claim 7: both methods work on convolutional and recurrent models, checked on the task whose models are
recurrent (``TaskInfo.recurrent``: the seq2seq LSTMs of translation); the other tasks name it.

Try: ``pytest tests/test_claims.py -k recurrent``.
"""
from __future__ import annotations

from qd.report import table_metrics
from qd.report.claims.base import FAIL, INCONCLUSIVE, Claim, ClaimSpec, Evidence

RECURRENT = ClaimSpec("7", "Both methods work on convolutional and recurrent (seq2seq LSTM) models.",
                      ("recurrent_tolerance",))


def claim_recurrent(ev: Evidence) -> Claim:
    """On a task of recurrent models: 4-bit QD and DQ students each within ``recurrent_tolerance`` points
    of the primary metric (BLEU) of the same student trained in full precision with distillation."""
    tol = ev.cfg["recurrent_tolerance"]
    c = RECURRENT.claim(f"on the recurrent task `{ev.task}`: 4-bit QD and 4-bit DQ each >= FP distilled - {tol:g} "
                        f"{ev.metric.upper()} points for every student (`report.recurrent_tolerance`; the paper's "
                        "translation numbers are not retrieved)")
    others = table_metrics(ev.info)[1:]  # shown beside each cell (perplexity for translation)
    for method in ("qd", "dq"):
        bucket = ev.main_bucket(method)
        for s in ev.students:
            values = [(m, ev.mean(s, method, 4, bucket, m)) for m in others]
            note = ", ".join(f"{m} {v:.2f}" for m, v in values if v is not None)
            cell = ev.cell(f"{s} {method.upper()} 4-bit", (s, method, 4, bucket), (s, "distill", None, None), -tol,
                           method.upper(), "FP distilled", note)
            if cell:
                c.cells.append(cell)
    missing = [m for m in ("qd", "dq") if not any(cell.a == m.upper() for cell in c.cells)]
    c = ev.finish(c, ev.students, spec=RECURRENT, context=(ev.teacher,))
    if missing and c.cells:
        c.verdict = c.measured = INCONCLUSIVE if c.verdict != FAIL else FAIL
        c.evidence.append(f"no 4-bit {', '.join(m.upper() for m in missing)} run: 'both methods' is not tested")
    return c


def check(ev: Evidence) -> list[Claim]:
    """Claim 7 where the task's models are recurrent; elsewhere NOT TESTED, naming the task that tests it."""
    if ev.info.recurrent:
        return [claim_recurrent(ev)]
    if ev.recurrent_task:
        name, kind = ev.recurrent_task
        return [RECURRENT.untested(f"tested on the {kind} task `{name}`")]
    return [RECURRENT.untested("needs a task of recurrent models (a translation task) in the preset")]
