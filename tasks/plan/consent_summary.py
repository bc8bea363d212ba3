"""Findings that need consent, said in one bounded line however many there are.

A real history adopted at once can have hundreds of findings (253 on one application): listing
every `revision:rule` in the refusal made a 4 KB line on stderr and in the audit row. The line
now gives the total, the first few `revision:rule` and, past those, counts per rule; the
full list goes to the run log and, capped, to the audit row's arguments as JSON.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.lint.classifier import Finding

# Rules and findings named in the one line; the rest are counted.
LISTED_RULES = 5
LISTED_FINDINGS = 5
# Findings kept in the audit row's JSON (the run log keeps them all).
AUDIT_FINDINGS = 200


def describe(revision: str, finding: Finding) -> str:
    """`a1b2c3:drop-table (drop table users)`."""
    subject = f" ({finding.subject})" if finding.subject else ""
    return f"{revision}:{finding.rule}{subject}"


def one_line(pending: list[tuple[str, Finding]]) -> str:
    """`2 destructive or blocking statements pending (a1:drop-column, a2:drop-table)`, or with
    many: the first few `revision:rule`, then `and 248 more in 12 revisions: drop-table 120,
    drop-column 80, ...` (counts per rule, most frequent first)."""
    from tasks.core.console import plural

    named = sorted({f"{revision}:{finding.rule}" for revision, finding in pending})
    listed = ", ".join(named[:LISTED_FINDINGS])
    if len(named) > LISTED_FINDINGS:
        revisions = len({revision for revision, _ in pending})
        by_rule = Counter(finding.rule for _, finding in pending).most_common()
        counts = ", ".join(f"{rule} {count}" for rule, count in by_rule[:LISTED_RULES])
        if len(by_rule) > LISTED_RULES:
            counts += f", {plural(len(by_rule) - LISTED_RULES, 'more rule')}"
        listed += (
            f", and {len(named) - LISTED_FINDINGS} more in {plural(revisions, 'revision')}: "
            f"{counts}"
        )
    return f"{plural(len(pending), 'destructive or blocking statement')} pending ({listed})"


def for_audit(pending: list[tuple[str, Finding]]) -> dict[str, Any]:
    """Counts per rule and the findings (capped) for the audit row's arguments."""
    listed = [describe(revision, finding) for revision, finding in pending]
    return {
        "count": len(pending),
        "by_rule": dict(Counter(finding.rule for _, finding in pending).most_common()),
        "findings": listed[:AUDIT_FINDINGS],
        "truncated": max(0, len(listed) - AUDIT_FINDINGS),
    }
