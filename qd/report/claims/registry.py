"""Every claim the report checks, in one list: each family names its claims (number, statement,
threshold keys: :class:`qd.report.claims.base.ClaimSpec`) and the check that decides them on one
task's evidence, NOT TESTED rows included. Adding a claim is a spec and a check in a family module
and one line here.

Try: ``python -c "from qd.report.claims.registry import CLAIMS; print([s.number for s in CLAIMS])"``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qd.report.claims import accuracy, recurrent, speed, weights
from qd.report.claims.base import Claim, ClaimSpec, Evidence


@dataclass(frozen=True)
class Family:
    """Claims decided together (they share their runs or their measurements)."""

    specs: tuple[ClaimSpec, ...]
    check: Callable[[Evidence], list[Claim]]


FAMILIES = (
    Family((accuracy.MATCH_TEACHER,), lambda ev: [accuracy.claim_match_teacher(ev)]),
    Family((speed.SPEED, speed.DEPTH_SPEED, speed.WIDE_SPEED, speed.TRAINED_SPEED), speed.check),
    Family((accuracy.DISTILLATION_HELPS, accuracy.QD_BEATS_PM, accuracy.BUCKETING_HELPS),
           accuracy.claim_distillation_helps),
    Family((accuracy.DQ_COMPETITIVE, accuracy.QD_BETTER_2BIT), accuracy.claim_dq_competitive),
    Family((weights.INTEGER, weights.NOISE), weights.check),
    Family((recurrent.RECURRENT,), recurrent.check),
)
CLAIMS = tuple(spec for family in FAMILIES for spec in family.specs)


def spec_of(number: str) -> ClaimSpec:
    for spec in CLAIMS:
        if spec.number == number:
            return spec
    raise KeyError(f"no claim {number!r}; registered: {', '.join(s.number for s in CLAIMS)}")


def check_claims(ev: Evidence) -> list[Claim]:
    """Every registered claim on one task, ordered by number; a family's check returns only its own claims."""
    claims = []
    for family in FAMILIES:
        mine = {s.number: s for s in family.specs}
        for c in family.check(ev):
            if c.number not in mine or c.statement != mine[c.number].statement:
                raise ValueError(f"claim {c.number} is not one of its family's ({', '.join(mine)}) as registered")
            claims.append(c)
    return sorted(claims, key=lambda c: c.number)
