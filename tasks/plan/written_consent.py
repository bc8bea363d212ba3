"""Consent written in a revision, reviewed with it: `consent = {"drop-column": "why it is safe"}`.

A team that reviewed a drop and wants it records that in the revision file itself, at module
level: each key a rule id (`tasks.lint.rules`), each value the reason, in words. The plan shows
it, a protected upgrade applies a revision whose findings it all covers without
`--allow-destructive`, `ci.check` passes it, and the audit row keeps each rule, its reason and the
file's hash. What is written must be exact, so a stale or careless entry fails loudly (exit 2):
a rule no finding of the revision breaks, a rule that does not exist, a reason left empty.

A revision the plan cannot fully read (its SQL built at run time, a use of the connection, an
unknown statement) may also name rules only the statement guard will see when it runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import UsageError
from tasks.lint import classifier as lint
from tasks.lint.rules import RULES, Rule

if TYPE_CHECKING:
    from tasks.lint.findings import Finding

# Findings that say the plan could not see everything the revision will run.
UNSEEN = frozenset(
    {
        Rule.DYNAMIC_SQL,
        Rule.CONNECTION_USE,
        Rule.DYNAMIC_CODE,
        Rule.PROCEDURAL_BLOCK,
        Rule.FUNCTION_CALL,
        Rule.UNKNOWN_STATEMENT,
        Rule.NOT_RENDERABLE,
    }
)


def read(module: Any, where: str) -> dict[str, str]:
    """The revision module's `consent`, validated: rule id -> reason. `where` names the file."""
    written = getattr(module, "consent", None)
    if written is None:
        return {}
    if not isinstance(written, dict):
        raise UsageError(f"{where}: consent must be a dict of rule id -> reason")
    consent: dict[str, str] = {}
    for rule, reason in written.items():
        if not isinstance(rule, str) or rule not in RULES:
            raise UsageError(
                f"{where}: consent names {str(rule)[:60]!r}, which is not a rule "
                f"(see tasks/lint/rules.py)"
            )
        if not RULES[rule].needs_consent:  # type: ignore[index]
            raise UsageError(f"{where}: consent names {rule!r}, which never needs consent")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{where}: consent for {rule!r} has no reason; say why it is safe")
        consent[rule] = " ".join(reason.split())
    return consent


def check_matches(consent: dict[str, str], findings: list[Finding], where: str) -> None:
    """Every entry must cover a finding of the revision (an entry covering nothing is stale or
    a typo), unless the plan could not see everything the revision runs."""
    if not consent:
        return
    found = {str(finding.rule) for finding in findings if finding.severity in lint.NEEDS_CONSENT}
    if any(str(finding.rule) in UNSEEN or finding.source == "source" for finding in findings):
        return
    for rule in consent:
        if rule not in found:
            raise UsageError(
                f"{where}: consent for {rule!r} matches no finding of this revision "
                f"(its findings: {', '.join(sorted(found)) or 'none'}); remove it"
            )


def file_hash(path: str | Path) -> str:
    """The revision file's SHA-256, so the audit row says which text was consented to."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""
