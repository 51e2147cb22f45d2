"""Running difffusr at scale: work plans over MGRS tiles x date windows, and Ray job submission.

Public surface: `WorkUnit`, `load_plan`, `pending_units`, `unit_output` (the `run --plan` contract,
see `pipeline.cluster.plan`); the CLI entry points live in `plan` and `submit`.
"""

from pipeline.cluster.plan import WorkUnit, load_plan, pending_units, unit_output

__all__ = ["WorkUnit", "load_plan", "pending_units", "unit_output"]
