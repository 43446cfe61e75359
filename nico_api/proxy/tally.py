"""What the proxy saw, by operation: exchanges and violations, for the summary printed at exit
and the JUnit file (one test case per operation, one failure per rule broken)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree

from nico_api.proxy.contract import Side, Violation


@dataclass
class OperationTally:
    exchanges: int = 0
    # By side and rule: how often, and the first value seen.
    broken: Counter[tuple[Side, str]] = field(default_factory=Counter)
    first_seen: dict[tuple[Side, str], str] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(self.broken.values())


@dataclass
class Tally:
    target: str
    operations: dict[str, OperationTally] = field(default_factory=dict)

    def record(self, operation: str, violations: Iterable[Violation]) -> None:
        tally = self.operations.setdefault(operation, OperationTally())
        tally.exchanges += 1
        for violation in violations:
            # A violation may name the operation its exchange was routed to, or none.
            key = (violation.side, violation.rule)
            tally.broken[key] += 1
            tally.first_seen.setdefault(key, violation.seen)

    @property
    def exchanges(self) -> int:
        return sum(tally.exchanges for tally in self.operations.values())

    @property
    def violations(self) -> int:
        return sum(tally.violations for tally in self.operations.values())

    def summary(self) -> str:
        lines = [f"Contract check of the exchanges with {self.target}"]
        width = max([len(name) for name in self.operations] + [len("operation")])
        lines.append(f"  {'operation':<{width}}  exchanges  violations")
        for name, tally in sorted(self.operations.items()):
            lines.append(f"  {name:<{width}}  {tally.exchanges:>9}  {tally.violations:>10}")
            for (side, rule), count in sorted(tally.broken.items()):
                seen = tally.first_seen[(side, rule)]
                lines.append(f"    {side} {rule} ({count}x), first seen: {seen}")
        lines.append(f"  {'all':<{width}}  {self.exchanges:>9}  {self.violations:>10}")
        lines.append("")
        lines.append("PASSED" if not self.violations else "FAILED")
        return "\n".join(lines)

    def junit(self) -> str:
        suites = ElementTree.Element("testsuites")
        suite = ElementTree.SubElement(
            suites,
            "testsuite",
            name="nico-proxy",
            tests=str(len(self.operations)),
            failures=str(sum(1 for tally in self.operations.values() if tally.violations)),
        )
        for name, tally in sorted(self.operations.items()):
            case = ElementTree.SubElement(suite, "testcase", classname="nico-proxy", name=name)
            for (side, rule), count in sorted(tally.broken.items()):
                failure = ElementTree.SubElement(
                    case, "failure", type=rule, message=f"{side} broke {rule} ({count}x)"
                )
                failure.text = f"first seen: {tally.first_seen[(side, rule)]}"
            ElementTree.SubElement(case, "system-out").text = f"{tally.exchanges} exchanges"
        return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)
