"""Environment of one submitted job, applied on the cluster without passing through Ray's logs.

`difffusr submit` copies this file (standard library only) as ``difffusr_job_env/__init__.py`` into
a temporary package, next to an ``env.json`` (mode 0600) holding the forwarded variables, and ships
it as the job's ``py_modules`` entry. On the cluster:

- the driver runs as ``python -m difffusr_job_env <command...>``: `main` sets the variables and
  replaces itself with the command (``os.execvp``), so the values never appear on a command line;
- every Ray worker of the job, on every node, calls `apply` at start-up (the job's
  ``worker_process_setup_hook``), before it runs any task or actor.

Why not ``runtime_env["env_vars"]``: Ray's runtime-env agent logs the whole runtime environment, values
included, at INFO level into every node's ``runtime_env_agent.log``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ENV_FILE = "env.json"


def apply() -> None:
    """Set this process's environment variables from the package's env.json."""
    os.environ.update(json.loads(Path(__file__).with_name(ENV_FILE).read_text()))


def main(argv: list[str] | None = None) -> None:
    """`python -m difffusr_job_env CMD ARGS...`: apply the environment, then exec CMD."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m difffusr_job_env COMMAND [ARGS...]")
    apply()
    os.execvp(args[0], args)
