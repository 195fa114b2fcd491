"""The paper's main claims (paper-notes section 4) checked against one preset's measurements: one
module per claim family, and one registry that lists them.

* :mod:`qd.report.claims.base`: a claim's spec (number, statement, threshold keys), its paired cells,
  and the evidence of one task that every check reads;
* :mod:`qd.report.claims.accuracy` (1, 3a-3c, 4a-4b), :mod:`~qd.report.claims.speed` (2, 2a-2c),
  :mod:`~qd.report.claims.weights` (5, 6: the saved models), :mod:`~qd.report.claims.recurrent` (7):
  the families, each with its specs and its check;
* :mod:`qd.report.claims.registry`: the families in order and ``check_claims``;
* :mod:`qd.report.claims.page`: ``claims.md`` and ``claims.csv``.

This package module imports nothing, so that a family module importing ``base`` loads no other family.

Try: ``pytest tests/test_claims.py``; on real runs ``qd report --config config/config.yaml``.
"""
