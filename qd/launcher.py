"""The ``qd`` command: hand the command to the workflow's warm-start server if one is running
(``qd.prefork``), else run it here. Kept import-light: with the server, this is all a job runs."""
from __future__ import annotations

import sys


def main() -> None:
    from qd.prefork import delegate

    rc = delegate(sys.argv[1:])
    if rc is None:
        from qd.cli import main as cli_main

        rc = cli_main()
    sys.exit(rc)
