"""Operation rules: the ordered stages of an operation, each a set of steps by component type,
and whether a rule applies to what a request targets. Each operation's built-in rule, used when
neither the request nor the Site names one, is declared with the operation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PS, SW, CO = "PowerShelf", "NVSwitch", "Compute"


@dataclass(frozen=True)
class Rule:
    """A rule's stages as {number: component types}; `id` is None for a built-in rule."""

    id: uuid.UUID | None
    name: str
    stages: tuple[tuple[int, tuple[str, ...]], ...]

    @classmethod
    def stored(cls, rule_id: uuid.UUID, name: str, stages: Iterable[dict[str, Any]]) -> Rule:
        return cls(
            rule_id,
            name,
            tuple(
                sorted(
                    (stage["number"], tuple(step["component_type"] for step in stage["steps"]))
                    for stage in stages
                )
            ),
        )

    def component_types(self) -> set[str]:
        return {kind for _, kinds in self.stages for kind in kinds}

    def check_applies_to(self, targeted: Iterable[str]) -> None:
        """Flow refuses a rule that has no step for any component type the request targets."""
        targeted = sorted(set(targeted))
        if not self.component_types() & set(targeted):
            named = f'"{self.name}"' if self.id is None else f'"{self.name}" ({self.id})'
            raise NoApplicableStepError(
                f"operation rule {named} has no step applicable to targeted component types "
                f"[{', '.join(targeted)}]"
            )

    def as_plan(self) -> list[dict[str, Any]]:
        """The stages as the simulated Flow stores a task's plan."""
        return [
            {"number": number, "steps": [{"component_type": kind} for kind in kinds]}
            for number, kinds in self.stages
        ]


class NoApplicableStepError(ValueError):
    """A rule that would do nothing to what the request targets."""


def built_in(name: str, *stages: tuple[str, ...]) -> Rule:
    """One of Flow's hardcoded rules (nico_api.flow.operations), its stages numbered from 1."""
    return Rule(None, f"Hardcoded Default {name}", tuple(enumerate(stages, start=1)))
