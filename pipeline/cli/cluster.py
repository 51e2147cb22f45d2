"""`difffusr submit`, `status`, `logs` (Ray Jobs API: cluster/submit.py), `plan` (cluster/plan.py) and
`schedule` (cluster/schedule.py, the production CronJob's command)."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.args import Parser
from pipeline.errors import ConfigError


def submit_parser() -> Parser:
    p = Parser(
        prog="difffusr submit",
        description="Send a difffusr command to a running Ray cluster as a job (Ray Jobs API). "
        "Example: difffusr submit --address http://head:8265 -- run --stac-url URL ... --out s3://b/run1",
    )
    p.add_argument(
        "--address", help="Ray dashboard URL of the cluster, http://HEAD:8265 (default: $RAY_ADDRESS)"
    )
    p.add_argument("--working-dir", help="local source folder to upload as the job's working directory")
    p.add_argument(
        "--wait", action="store_true", help="stream the job's logs until it ends; exit 0 iff it succeeded"
    )
    p.add_argument("--timeout", type=float, help="with --wait: stop waiting after this many seconds")
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra env var for the job"
    )
    p.add_argument(
        "--no-forward-env", action="store_true", help="do not forward AWS_*/GDAL_*/CPL_* variables"
    )
    p.add_argument("--job-id", help="submission id (a cluster refuses a second job with the same id)")
    p.add_argument("--num-gpus", type=float, help="GPUs reserved for the job's driver process (default none)")
    p.add_argument(
        "--raw", action="store_true", help="run the words after -- as they are, without `difffusr`"
    )
    p.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- then the difffusr subcommand and its options"
    )
    return p


def cmd_submit(argv: list[str]) -> int:
    """`difffusr submit [...] -- COMMAND...`: prints the job id (and with --wait its logs)."""
    from pipeline.cluster.submit import (
        ENV_PACKAGE,
        build_entrypoint,
        build_runtime_env,
        client_for,
        forwarded_env,
        submit_with_retry,
        wait_for_job,
        write_env_package,
    )

    args = submit_parser().parse_args(argv)
    entrypoint = build_entrypoint(args.command, args.raw)
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout} must be positive (seconds)")
    env = forwarded_env({} if args.no_forward_env else os.environ, args.env)
    with tempfile.TemporaryDirectory(prefix="difffusr-submit-") as tmp:
        package = write_env_package(tmp, env) if env else None
        runtime_env = build_runtime_env(args.working_dir, package)
        client = client_for(args.address)  # after the local checks: it connects
        # The env package's launcher needs only the standard library; it then execs the command.
        command = f"python -m {ENV_PACKAGE} {entrypoint}" if package else entrypoint
        job = submit_with_retry(
            client,
            entrypoint=command,
            submission_id=args.job_id,
            runtime_env=runtime_env or None,
            metadata={"tool": "difffusr", "command": entrypoint[:200]},
            entrypoint_num_gpus=args.num_gpus,
        )
    names = ", ".join(sorted(env)) or "none"
    print(f"submitted job {job}: {entrypoint}")
    print(f"forwarded env vars (values not shown): {names}")
    if not args.wait:
        print(f"follow it with: difffusr status {job} ; difffusr logs {job}")
        return 0
    status = wait_for_job(client, job, timeout_s=args.timeout)
    print(f"job {job}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def status_parser() -> Parser:
    p = Parser(prog="difffusr status", description="Status of a Ray job (or list all jobs).")
    p.add_argument("job", nargs="?", help="submission id printed by `difffusr submit` (omit to list jobs)")
    p.add_argument("--address", help="Ray dashboard URL of the cluster (default: $RAY_ADDRESS)")
    return p


def cmd_status(argv: list[str]) -> int:
    """`difffusr status [JOB]`: one job's status and message, or every job's."""
    from pipeline.cluster.submit import client_for, job_call

    args = status_parser().parse_args(argv)
    client = client_for(args.address)
    if args.job is None:
        for info in client.list_jobs():
            print(f"{info.submission_id or info.job_id}\t{info.status.value}\t{info.entrypoint}")
        return 0
    info = job_call(client.get_job_info, args.job, args.address)
    line = f"{args.job}: {info.status.value}"
    if info.message:
        line += f" - {info.message.strip()}"
    if info.start_time and info.end_time:
        line += f" ({(info.end_time - info.start_time) / 1000:.1f} s)"
    print(line)
    return 0


def logs_parser() -> Parser:
    p = Parser(prog="difffusr logs", description="Output of a Ray job's driver.")
    p.add_argument("job", help="submission id printed by `difffusr submit`")
    p.add_argument("--address", help="Ray dashboard URL of the cluster (default: $RAY_ADDRESS)")
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    return p


def cmd_logs(argv: list[str]) -> int:
    """`difffusr logs JOB [--follow]`: the job's driver output."""
    import sys

    from pipeline.cluster.submit import client_for, job_call, wait_for_job

    args = logs_parser().parse_args(argv)
    client = client_for(args.address)
    if args.follow:
        job_call(client.get_job_status, args.job, args.address)
        wait_for_job(client, args.job)
        return 0
    sys.stdout.write(job_call(client.get_job_logs, args.job, args.address))
    return 0


def plan_parser() -> Parser:
    from pipeline.cluster.plan import GPU_SECONDS_PER_KM2

    p = Parser(
        prog="difffusr plan",
        description="Split a region and date range into work units (MGRS 100 km squares x date windows), "
        "estimate GPU-hours and output size, and write the job list `difffusr run --plan` executes. "
        "`difffusr plan status ROOT [--json]` shows where a run of a plan stands (its ledger).",
    )
    p.add_argument("--aoi", required=True, help="GeoJSON file with the region's polygon(s), lon/lat")
    p.add_argument(
        "--datetime", required=True, help="START/END dates, end inclusive, e.g. 2024-06-01/2024-08-31"
    )
    p.add_argument("--window", default="all", help="date window per unit: all (default), month or <N>d")
    p.add_argument("--out", help="write the plan JSON here (default: only print the summary)")
    p.add_argument(
        "--gpu-seconds-per-km2",
        type=float,
        default=GPU_SECONDS_PER_KM2,
        help="inference rate for the estimate when no --rates is given (default %(default)s, an assumed "
        "GPU speed-up of a CPU measurement)",
    )
    p.add_argument(
        "--rates",
        help="rates file measured on the target hardware (`python -m benchmarks.scale --rates FILE`): "
        "accelerator-seconds and COG bytes per km2; replaces --gpu-seconds-per-km2",
    )
    return p


def plan_status_parser() -> Parser:
    p = Parser(
        prog="difffusr plan status",
        description="Where a `difffusr run --plan` stands: units per state (pending, running, done, empty, "
        "failed, dead), throughput, time and accelerator-seconds so far, an estimate to finish, and the dead "
        "units' errors, from the run ledger under ROOT/_ledger.",
    )
    p.add_argument("root", help="the plan's output root (--out of `difffusr run --plan`), local or s3://")
    p.add_argument("--plan", help="the plan file: count its units without an event yet as pending")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def cmd_plan_status(argv: list[str]) -> int:
    """`difffusr plan status ROOT`: read the run ledger and print where the plan stands."""
    import json

    from pipeline.cluster.ledger import Ledger, status
    from pipeline.cluster.plan import load_plan, unit_seconds

    args = plan_status_parser().parse_args(argv)
    units = load_plan(args.plan) if args.plan else []
    records = Ledger(args.root).records([u.key for u in units])
    st = status(records)
    doc = st.to_dict()
    if units:  # the plan's estimate for the units finished so far, against what they cost
        rates = json.loads(Path(args.plan).read_text()).get("rates", {})
        finished = [u for u in units if records[u.key].state == "done"]
        estimates = [unit_seconds(u, rates) for u in finished]
        if finished and None not in estimates:
            doc["finished_estimate_s"] = round(sum(estimates), 3)  # type: ignore[arg-type]
            doc["finished_actual_s"] = round(sum(records[u.key].accelerator_s for u in finished), 3)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    counts = ", ".join(f"{n} {state}" for state, n in st.counts.items())
    print(f"{st.units} units: {counts}")
    rate = f"{st.units_per_hour:.1f} units/h" if st.units_per_hour else "no unit finished yet"
    eta = f", about {st.eta_s / 3600:.2f} h to finish" if st.eta_s is not None else ""
    print(f"throughput {rate} over {st.elapsed_s / 3600:.2f} h{eta}")
    print(f"written {st.tiles} tiles, {st.bytes / 1e9:.3f} GB; inference busy {st.accelerator_s:.0f} s")
    if "finished_estimate_s" in doc:
        print(
            f"done units: inference {doc['finished_actual_s']:.0f} s against the plan's estimate "
            f"{doc['finished_estimate_s']:.0f} s"
        )
    for key in st.stale_running:
        print(f"  running but silent (its driver is gone; the next run takes it over): {key}")
    for key, error in st.dead.items():
        print(f"  dead {key}: {error}")
    return 0


def cmd_plan(argv: list[str]) -> int:
    """`difffusr plan`: print the units' counts and estimates; with --out write the plan file.
    `difffusr plan status ROOT`: where a run of a plan stands."""
    if argv[:1] == ["status"]:
        return cmd_plan_status(argv[1:])
    from pipeline.bands import TARGET_GSD_M
    from pipeline.catalog.query import parse_datetime_range
    from pipeline.cluster.plan import (
        BYTES_PER_PIXEL,
        date_windows,
        estimate,
        human_bytes,
        load_rates,
        make_units,
        read_aoi,
        write_plan,
    )

    args = plan_parser().parse_args(argv)
    if args.gpu_seconds_per_km2 <= 0:
        raise ConfigError(f"--gpu-seconds-per-km2 {args.gpu_seconds_per_km2} must be positive")
    start, end = parse_datetime_range(args.datetime)
    windows = date_windows(start.date(), end.date(), args.window)
    units = make_units(read_aoi(args.aoi), windows)
    rates = load_rates(args.rates) if args.rates else None
    est = estimate(units, args.gpu_seconds_per_km2, rates)
    print(
        f"{est.units} work units = {est.tiles} MGRS tiles x {est.windows} date windows "
        f"({est.area_km2:,.0f} km2 per window)"
    )
    if rates:
        rate = (
            f"{rates.accelerator_seconds_per_tile:.3g} s per {rates.tile_core} px tile"
            if rates.accelerator_seconds_per_tile
            else f"{rates.accelerator_seconds_per_km2:.3g} s/km2"
        )
        job = f"{rates.method} {rates.precision or ''} steps {rates.steps}"
        print(
            f"estimated accelerator-hours: {est.gpu_hours:,.1f} (measured {rate} "
            f"on {rates.device}, {job}; {rates.source})\n"
            f"estimated output: {human_bytes(est.output_bytes)} (measured COG bytes per km2)"
        )
    else:
        print(
            f"estimated GPU-hours: {est.gpu_hours:,.1f} (at {args.gpu_seconds_per_km2} GPU-s/km2, "
            "not measured on this hardware: pass --rates)\n"
            f"estimated output: {human_bytes(est.output_bytes)} "
            f"(12 bands x uint16 at {TARGET_GSD_M} m, before compression)"
        )
    if args.out:
        rate_meta: dict = (
            {**asdict(rates), "source": rates.source}
            if rates
            else {"gpu_seconds_per_km2": args.gpu_seconds_per_km2, "bytes_per_pixel": BYTES_PER_PIXEL}
        )
        meta = {
            "aoi": str(args.aoi),
            "datetime": args.datetime,
            "window": args.window,
            "rates": rate_meta,
            "totals": asdict(est),
        }
        try:
            write_plan(args.out, units, meta)
        except OSError as exc:
            raise ConfigError(f"cannot write plan to {args.out!r}: {exc}; pick a writable --out") from exc
        print(f"plan written to {args.out}")
    return 0


def schedule_parser() -> Parser:
    p = Parser(
        prog="difffusr schedule",
        description="Create the RayJob of the latest complete date window from a template (the command of "
        "the CronJob difffusr-production in k8s/; the window follows from the date alone, so a retried run "
        "picks the same one, and its RayJob, if already there, is left alone).",
    )
    p.add_argument("--template", required=True, help="RayJob template with @WINDOW@ / @WINDOW_ID@")
    p.add_argument("--window", default="month", help="month (previous calendar month) or <N>d")
    p.add_argument("--today", help="date to schedule from, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--dry-run", action="store_true", help="print the RayJob as JSON instead of creating it")
    return p


def cmd_schedule(argv: list[str]) -> int:
    """`difffusr schedule --template FILE [--window month|<N>d] [--today DATE] [--dry-run]`."""
    import json

    from pipeline.cluster.schedule import create_rayjob, latest_window, parse_today, read_template, render

    args = schedule_parser().parse_args(argv)
    start, end = latest_window(parse_today(args.today), args.window)
    doc = render(read_template(args.template), start, end)
    if args.dry_run:
        print(json.dumps(doc, indent=1))
        return 0
    outcome = create_rayjob(doc)
    left = "created" if outcome == "created" else "already submitted, left alone"
    print(f"RayJob {doc['metadata']['name']} for {start}/{end}: {left}")
    return 0
