"""The documentation stays true: README.md and docs/ are checked against the code, their links
resolve, and their command blocks run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nico_api.cli import contract
from nico_api.config import Settings, spec_document
from tests.demo import ACME, ACME_SITE

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len(page("README.md").splitlines()) <= 150


@pytest.mark.parametrize("doc", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or (
            anchor and file.suffix == ".md" and anchor not in anchors(file.read_text("utf-8"))
        ):
            broken.append(target)
    assert broken == []


def test_nothing_points_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = ("UP" + "STREAM.md", "CON" + "TRACT.md", "../" + "shared", "/work/" + "shared")
    found = [
        name
        for name in files
        if (ROOT / name).is_file()
        and any(word in (ROOT / name).read_text("utf-8", errors="ignore") for word in outside)
    ]
    assert found == []


def test_every_setting_is_documented_with_its_default() -> None:
    table = page("docs/production.md").split("## Settings")[1].split("\n## ")[0]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(NICO_[A-Z_]+)` \| ([^|]*) \|", table, re.M)
    }
    fields = Settings.model_fields
    assert set(rows) == {f"NICO_{name.upper()}" for name in fields}
    for name, info in fields.items():
        default, cell = info.default, rows[f"NICO_{name.upper()}"].strip()
        if isinstance(default, bool):
            assert cell == ("on" if default else "off"), name
        elif isinstance(default, int | float):
            assert float(cell) == default, name


def test_the_help_points_to_the_settings_page() -> None:
    from nico_api.cli.main import build_parser

    parser = build_parser()
    assert "docs/production.md" in parser.format_help()
    for command in ("serve", "flow", "db", "token", "auth", "conformance"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])


def test_every_contract_row_is_on_the_contract_page() -> None:
    text = page("docs/contract.md")
    documented = set(re.findall(r"^\| ([a-z-]+-\d+) \|", text, re.M))
    for section, rows in (("get-rack-tasks", 13), ("get-tray-tasks", 13)):
        documented |= {f"{section}-{n}" for n in range(1, rows + 1)}
    documented |= shared_create_rows(text)
    from nico_api.cli.conformance import KnownValues  # imports schemathesis: not at collection

    caller = contract.Caller("t", KnownValues(org="o", site_id="s"))
    used = {
        row_id
        for check in contract.checks(caller)
        for row_id in check.name.split(":")[0].split(" (")[0].split(" before ")
    }
    assert used and used <= documented


def shared_create_rows(text: str) -> set[str]:
    """The create operations share two tables (one target, a batch), each listing its operations."""
    rows = set()
    for lead in ("**One rack or tray**", "**Batches**"):
        listed, table = text.split(lead, 1)[1].split("\n\n", 2)[:2]
        numbers = re.findall(r"^\| (\d+) \|", table, re.M)
        rows |= {f"{op}-{n}" for op in re.findall(r"`([a-z-]+)`", listed) for n in numbers}
    return rows


def test_tests_named_after_a_row_name_a_row_of_the_contract() -> None:
    text = page("docs/contract.md")
    sections = {m.replace("-", "_") for m in re.findall(r"^\| ([a-z-]+)-\d+ \|", text, re.M)}
    sections |= {"get_rack_tasks", "get_tray_tasks"}
    pattern = re.compile(r"^def test_(" + "|".join(sorted(sections)) + r")_(\d+)_", re.M)
    named = {
        f"{m.group(1).replace('_', '-')}-{m.group(2)}"
        for test in (ROOT / "tests").glob("test_*.py")
        for m in pattern.finditer(test.read_text("utf-8"))
    }
    documented = set(re.findall(r"^\| ([a-z-]+-\d+) \|", text, re.M)) | shared_create_rows(text)
    assert named and named <= documented


def test_the_conformance_samples_count_what_a_run_counts() -> None:
    text = page("docs/consumers.md")
    operations = [
        method
        for item in spec_document()["paths"].values()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    ]
    reads = sum(method == "get" for method in operations)
    assert f"  operations: {reads}\n" in text
    assert f"  skipped:    {len(operations) - reads} operations that change records" in text
    from nico_api.cli.conformance import KnownValues  # imports schemathesis: not at collection

    caller = contract.Caller(
        "t",
        KnownValues(org="o", site_id="s", task_ids=["t"], rack_ids=["r"], tray_ids=["y"]),
        tenant_token="t",
        other_org="g",
        non_flow_site_id="n",
    )
    checks = contract.checks(caller)
    not_run = [check for check in checks if check.needs]
    total, passed = len(checks), len(checks) - len(not_run)
    assert (
        f"checks:     {total} ({passed} passed, 0 failed, 0 known differences, "
        f"{len(not_run)} not run)" in text
    )


@pytest.mark.slow
def test_the_readmes_walkthrough_runs(server: str, env: dict[str, str]) -> None:
    from tests.processes import run

    block = page("README.md").split("## A living task")[1].split("```sh\n")[1].split("```")[0]
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    script = block.replace("http://127.0.0.1:8080", server)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**env, "TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ACME_SITE in script
    answers = result.stdout
    assert '"status":"Terminated"' in answers and '"message":"Cancelled by user"' in answers
