"""Run difffusr on a Ray cluster via the Jobs API (`difffusr submit`, `status`, `logs`: pipeline.cli.cluster).

The job's entrypoint is ``difffusr <the words after -->`` and runs on the cluster's head node (the
cluster's image has difffusr installed; ``--working-dir`` ships a source tree that then shadows it).
The runtime environment carries:

- ``working_dir`` (optional): a local folder uploaded to the cluster and made the job's current
  directory and first import path; ``.gitignore``/``.rayignore`` and ``UPLOAD_EXCLUDES`` are honoured;
- the job's environment variables: those of the submitting shell that hold credentials/endpoints
  (``pipeline.cluster.runtime.FORWARDED_ENV_PREFIXES``) plus each ``--env KEY=VALUE``.
  They travel in a small ``py_modules`` package (see `pipeline.cluster.job_env`), not as
  ``runtime_env["env_vars"]``, because Ray's runtime-env agent writes env_vars values into its logs.
  The driver starts through ``python -m difffusr_job_env``; every worker process of the job, on
  every node, applies them through ``worker_process_setup_hook`` before running anything.

Values are never printed, only variable names. The package sits in the cluster's internal store and
in each node's session folder for the job's lifetime, readable by whoever administers the cluster.
On Kubernetes prefer the Secret of ``k8s/`` mounted into the pods, and submit with ``--no-forward-env``.

Address: ``--address`` or ``RAY_ADDRESS``, the dashboard's HTTP URL (``http://HEAD:8265``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pipeline.cluster import job_env
from pipeline.cluster.runtime import FORWARDED_ENV_PREFIXES
from pipeline.errors import ConfigError

#: Never forwarded: paths to files of the submitting machine, and the profile (resolved instead).
LOCAL_ONLY = frozenset(
    {
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CA_BUNDLE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
    }
)
#: Never uploaded with --working-dir (besides .gitignore/.rayignore entries): big or machine-local.
UPLOAD_EXCLUDES = [
    ".git",
    ".venv",
    ".venv-*",
    "**/__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "out",
    "runs",
]
#: Name of the package that carries the job's environment (see `pipeline.cluster.job_env`).
ENV_PACKAGE = "difffusr_job_env"
#: How long to wait for a just-started head's job agent before giving up, seconds.
AGENT_WAIT_S = 60.0
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def forwarded_env(environ: Mapping[str, str], extra: list[str]) -> dict[str, str]:
    """Variables to hand to the job: the forwarded ones of `environ`, then `--env KEY=VALUE` pairs.

    Variables that point at this machine's files (`LOCAL_ONLY`) stay behind; an AWS profile
    (`AWS_PROFILE`) is resolved here, with botocore, into the credentials and region it stands for,
    because the cluster has neither the profile nor its files.
    """
    env = {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV_PREFIXES) and k not in LOCAL_ONLY}
    if environ.get("AWS_PROFILE") and "AWS_ACCESS_KEY_ID" not in environ:
        env.update(_profile_credentials(environ))
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {pair.split('=')[0]!r}... is not KEY=VALUE; write --env NAME=value")
        env[key] = value
    return env


def _profile_credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """AWS_* variables equivalent to the profile named by AWS_PROFILE (temporary ones for SSO/roles)."""
    import botocore.exceptions
    import botocore.session

    profile = environ["AWS_PROFILE"]
    session = botocore.session.Session(profile=profile)
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        if var in environ:
            session.set_config_variable(var.removeprefix("AWS_").lower().replace("shared_", ""), environ[var])
    try:
        creds = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(
            f"AWS profile {profile!r} cannot be resolved here: {exc}; fix it or unset AWS_PROFILE"
        ) from exc
    if creds is None:
        raise ConfigError(f"AWS profile {profile!r} holds no credentials; fix it or unset AWS_PROFILE")
    frozen = creds.get_frozen_credentials()
    out = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        out["AWS_SESSION_TOKEN"] = frozen.token
    region = session.get_config_variable("region")
    if region and "AWS_DEFAULT_REGION" not in environ and "AWS_REGION" not in environ:
        out["AWS_DEFAULT_REGION"] = region
    return out


def build_entrypoint(words: list[str], raw: bool) -> str:
    """Shell command the job runs: `difffusr WORDS...`, or WORDS verbatim with --raw."""
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise ConfigError(
            "nothing to submit: put the difffusr command after `--`, e.g. "
            "`difffusr submit -- run --bbox ... --out s3://bucket/run1`"
        )
    if not raw and words[0] in {"submit", "status", "logs"}:
        raise ConfigError(
            f"`difffusr {words[0]}` runs on your machine, not as a cluster job; submit run/train/plan"
        )
    return shlex.join(words if raw else ["difffusr", *words])


def write_env_package(folder: str | Path, env: dict[str, str]) -> Path:
    """Write the `difffusr_job_env` package (code + env.json, owner-only) into `folder`; return it."""
    pkg = Path(folder) / ENV_PACKAGE
    pkg.mkdir(mode=0o700)
    shutil.copyfile(job_env.__file__, pkg / "__init__.py")
    (pkg / "__main__.py").write_text(f"from {ENV_PACKAGE} import main\n\nmain()\n")
    fd = os.open(pkg / job_env.ENV_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(env, f)
    return pkg


def build_runtime_env(working_dir: str | None, env_package: Path | None) -> dict:
    """Ray runtime_env for the job (see the module docstring)."""
    runtime_env: dict = {}
    if working_dir:
        if not os.path.isdir(working_dir):
            raise ConfigError(f"--working-dir {working_dir!r} is not a folder; pass the difffusr source tree")
        runtime_env["working_dir"] = os.path.abspath(working_dir)
        runtime_env["excludes"] = list(UPLOAD_EXCLUDES)
    if env_package is not None:
        runtime_env["py_modules"] = [str(env_package)]
        runtime_env["worker_process_setup_hook"] = f"{ENV_PACKAGE}.apply"
    return runtime_env


def client_for(address: str | None):
    """A JobSubmissionClient for --address / RAY_ADDRESS (it connects), with errors that say what to fix."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError(
            "no Ray cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS "
            "(the Ray dashboard's URL of the cluster's head node)"
        )
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot reach the Ray Jobs API at {address!r}: {str(exc).splitlines()[0]}; check --address/"
            "RAY_ADDRESS and that the head's dashboard port (8265) is reachable"
        ) from exc


def job_call(fn, job: str, address: str | None):
    """`fn(job)`, with a missing job turned into a ConfigError that says how to list the cluster's jobs."""
    try:
        return fn(job)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise ConfigError(
                f"no job {job!r} on the cluster at {address or os.environ.get('RAY_ADDRESS')!r}; "
                "`difffusr status` lists the cluster's jobs"
            ) from exc
        raise


def submit_with_retry(client, retry_s: float = AGENT_WAIT_S, **kwargs) -> str:
    """submit_job, retrying while the head's job agent is still starting (a fresh cluster)."""
    deadline = time.monotonic() + retry_s
    delay = 0.5
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise ConfigError(f"the cluster refused the job: {str(exc).splitlines()[0]}") from exc


def wait_for_job(client, job: str, timeout_s: float | None = None, poll_s: float = 1.0, echo=True) -> str:
    """Poll until the job ends, echoing new log text; return its final status name."""
    shown = 0
    start = time.monotonic()
    while True:
        status = client.get_job_status(job).value
        if echo:
            logs = client.get_job_logs(job)
            sys.stdout.write(logs[shown:])
            sys.stdout.flush()
            shown = len(logs)
        if status in _TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return status
        time.sleep(poll_s)
