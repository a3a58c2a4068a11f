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

Making a change of what is stored upgradeable (most of it is data, not code):
- state document: new optional record fields need no migration to be READ (missing keys take the
  dataclass defaults), but an earlier estore-ops would drop them when it rewrites the document. So
  bump `state.FORMAT_VERSION` (an earlier version then refuses the document, exit 3) and register
  the step in `state_formats.MIGRATIONS[old_version]` (often the identity);
- raw events: change the column in `estore_ops.schema`; the raw step adds or alters it in place.
  If the rows loaded before can be given a value, add it to `raw_table.RAW_BACKFILL`;
- marts and snapshots: nothing; the new SQL is compared with the tables. A model that must never be
  rebuilt automatically says so with `meta: {estore_ops: {full_refresh: manual}}`;
- systemd: nothing (installed units are compared with the rendered ones);
- terraform/: bump `steps.TERRAFORM_LAYOUT` and the number the startup script writes (a test
  checks they agree).
tests/test_upgrade.py then upgrades a deployment built by the previous release with the change.
"""
