"""Upgrades without loss: bring a deployment made by an earlier estore-ops to what this version expects.

The pieces:
- `framework`: a list of steps; each inspects the deployment and returns a plan (what it found,
  the automatic actions, what is left for the user), which `run_steps` applies or, in a dry run,
  only reports.
- `steps`: the steps of `estore-ops upgrade`, in order: systemd units and Terraform layout, the
  state document's format, the raw events table, incremental models, snapshot column types.
- `tables`: reading and altering table columns on each warehouse (in place where the warehouse
  allows it, a rewrite only where it does not).
- `dbt_schema`: what the new dbt code would build (compiled SQL, column types) compared with the
  relations that exist; used by `upgrade`, and by `transform` and `snapshot` before they build.
- `guard`: the checks `load`, `transform` and `snapshot` run on their own, so timers alone upgrade
  everything that can be upgraded automatically.
"""
