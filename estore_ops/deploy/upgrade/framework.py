"""A small migration framework: steps that inspect, plan and apply, with a report per step.

A step is anything with a `name` and an `inspect(ctx) -> Plan`. The plan says what the step found,
the actions that can run on their own (each a description and a function), and what is left for the
user (a command to run, or an instruction, where nothing can be done automatically or safely).
`run_steps` applies the actions in order (or, in a dry run, only lists them) and returns one
`StepReport` per step. A failing action stops the upgrade there: the later steps may depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from estore_ops.errors import EstoreError
from estore_ops.logs import get_logger
from estore_ops.redact import redact

log = get_logger("upgrade")

OK, PLANNED, DONE, ACTION_NEEDED, FAILED, NOT_RUN = "ok", "planned", "done", "action needed", "failed", "not run"


@dataclass
class Action:
    description: str
    apply: Callable[[], None]


@dataclass
class Plan:
    found: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


class Step(Protocol):
    name: str

    def inspect(self, ctx: Any) -> Plan: ...


@dataclass
class StepReport:
    name: str
    status: str = OK
    found: list[str] = field(default_factory=list)
    would_do: list[str] = field(default_factory=list)  # dry run: the actions it would take
    did: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name, "status": self.status, "found": self.found, "would_do": self.would_do,
            "did": self.did, "left": self.left, "error": self.error,
        }


@dataclass
class UpgradeResult:
    run_id: str
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing is left for the user."""
        return all(s.status in (OK, PLANNED, DONE) for s in self.steps)

    @property
    def left(self) -> list[str]:
        return [item for s in self.steps for item in s.left]

    @property
    def failed(self) -> list[StepReport]:
        return [s for s in self.steps if s.status == FAILED]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "dry_run": self.dry_run, "ok": self.ok,
            "steps": [s.as_dict() for s in self.steps], "left": self.left,
        }

    def render(self, out: Any) -> None:
        """JSON, a Rich table on a terminal, or one key=value line per step (estore_ops.output.Output)."""
        if out.json_mode:
            out.json(self.as_dict())
            return
        done = "Would do" if self.dry_run else "Did"
        out.table(
            f"Upgrade {self.run_id}" + (" (dry run: nothing changed)" if self.dry_run else ""),
            ["Step", "Status", "Found", done, "Left to you"],
            [[s.name, s.status, "\n".join(s.found), "\n".join(s.would_do if self.dry_run else s.did),
              "\n".join(([s.error] if s.error else []) + s.left)] for s in self.steps],
            keys=["step", "status", "found", "would_do" if self.dry_run else "did", "left"],
        )
        if self.left:
            out.line("Left to do:", style="yellow")
            for item in self.left:
                out.line(f"- {item}", style="yellow")
        elif self.dry_run:
            out.line("Run `estore-ops upgrade` to do it." if any(s.would_do for s in self.steps)
                     else "Nothing to upgrade: this deployment is up to date.")
        else:
            out.line("Upgrade complete." if any(s.did for s in self.steps) else "Nothing to upgrade: this deployment is up to date.")


def run_steps(steps: Sequence[Step], ctx: Any, dry_run: bool, run_id: str = "") -> UpgradeResult:
    """Inspect each step, then apply its actions (unless dry_run). Errors of inspection propagate
    (a newer state document is exit 3, an unreachable warehouse exit 4); an action that fails is
    reported on its step and stops the run."""
    result = UpgradeResult(run_id, dry_run)
    for index, step in enumerate(steps):
        plan = step.inspect(ctx)
        report = StepReport(step.name, found=list(plan.found), left=list(plan.left))
        result.steps.append(report)
        if dry_run:
            report.would_do = [a.description for a in plan.actions]
            report.status = ACTION_NEEDED if plan.left else (PLANNED if plan.actions else OK)
            continue
        for action in plan.actions:
            log.info("upgrade %s: %s", step.name, action.description)
            try:
                action.apply()
            except (EstoreError, OSError) as exc:
                report.status = FAILED
                report.error = redact(f"{action.description}: {exc}")
                report.left.append("Fix the cause above, then run `estore-ops upgrade` again (what was done stays done).")
                result.steps += [StepReport(s.name, status=NOT_RUN) for s in steps[index + 1:]]
                return result
            report.did.append(action.description)
        report.status = ACTION_NEEDED if report.left else (DONE if report.did else OK)
    return result
