"""Markdown for review: `plan --format markdown` and `ci.check --format markdown`.

Made to be posted as a pull-request comment or appended to `$GITHUB_STEP_SUMMARY`: a heading, a
summary line, one section per pending revision with its findings (and their help text, when the
linter gives one) and its SQL in a fenced block. Fed from the plan's own data (`Plan.as_dict()`)
and ci.check's outcomes, so neither module needs to know about Markdown.

Everything here comes from files and databases a pull request can change, and the comment is
read by the people who approve it: prose (messages, errors, help) is one line with HTML and
Markdown structure escaped (`_text`), and code (revision ids, rules, statements, SQL) sits in
code spans or fenced blocks whose backtick runs are longer than any inside (`_code`, `_fence`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

SEVERITY_ORDER = ("destructive", "blocking", "warning")
SEVERITY_LABELS = {"destructive": "DESTRUCTIVE", "blocking": "BLOCKING", "warning": "warning"}
# Keys a finding may carry its explanation under (squawk's help text, a documentation link).
HELP_KEYS = ("help", "help_text", "hint", "url")


def plan_markdown(plan: Mapping[str, Any]) -> str:
    """The plan (as `Plan.as_dict()` gives it) as a Markdown document."""
    revisions = list(plan.get("revisions", []))
    verb = "apply" if plan.get("direction") == "upgrade" else "revert"
    current = ", ".join(plan.get("current") or []) or "base"
    lines = [
        f"## Migration plan: {_text(plan.get('environment'))}",
        "",
        f"At {_code(current)}, target {_code(plan.get('target'))}: "
        f"{_count(len(revisions), 'revision')} to {verb}.",
        "",
        f"**Summary:** {_summary(revisions)}",
        "",
    ]
    if revisions:
        lines += [
            "| Revision | Message | Findings |",
            "|---|---|---|",
            *(
                f"| {_code_cell(item['revision'])} | {_cell(item.get('message', ''))} | "
                f"{_cell(_finding_counts(item.get('findings', [])) or 'clean')} |"
                for item in revisions
            ),
            "",
        ]
    for item in revisions:
        lines += _revision_section(item, plan.get("direction") == "upgrade")
    return "\n".join(lines).rstrip() + "\n"


def _revision_section(item: Mapping[str, Any], upgrade: bool) -> list[str]:
    lines = [f"### {_code(item['revision'])} {_text(item.get('message', ''))}".rstrip(), ""]
    if item.get("file"):
        lines += [f"File: {_text(item['file'])}", ""]  # prose: a name can hold HTML
    findings = sorted(item.get("findings", []), key=_severity_rank)
    for finding in findings:
        label = SEVERITY_LABELS.get(finding.get("severity", ""), finding.get("severity", ""))
        rule, message = _code(finding.get("rule")), _text(finding.get("message", ""))
        text = f"- **{_text(label)}** {rule}: {message}"
        help_text = next((finding[key] for key in HELP_KEYS if finding.get(key)), "")
        if help_text:
            text += f" ({_text(help_text)})"
        lines.append(text)
        if finding.get("statement"):
            lines.append(f"  - statement: {_code(_inline(finding['statement'])[:200])}")
    if findings:
        lines.append("")
    if item.get("render_error"):
        lines += [f"_No offline SQL: {_text(item['render_error'])}_", ""]
    sql = (item.get("sql") or "").strip()
    if sql:
        fence = _fence(sql)
        lines += [f"{fence}sql", sql, fence, ""]
    elif not item.get("render_error"):
        lines += [f"_No SQL ({'upgrade' if upgrade else 'downgrade'} is empty)._", ""]
    return lines


def _severity_rank(finding: Mapping[str, Any]) -> int:
    severity = finding.get("severity", "")
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def _summary(revisions: Iterable[Mapping[str, Any]]) -> str:
    counts = dict.fromkeys(SEVERITY_ORDER, 0)
    total = 0
    for item in revisions:
        total += 1
        for finding in item.get("findings", []):
            severity = finding.get("severity", "")
            counts[severity] = counts.get(severity, 0) + 1
    parts = [_count(total, "revision")]
    parts += [_count(counts[severity], f"{severity} finding") for severity in SEVERITY_ORDER]
    consent = counts["destructive"] + counts["blocking"]
    verdict = (
        "needs `--allow-destructive` on protected environments" if consent else "no consent needed"
    )
    return ", ".join(parts) + f"; {verdict}."


def _finding_counts(findings: Iterable[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.get("severity", "")] = counts.get(finding.get("severity", ""), 0) + 1
    return ", ".join(
        f"{counts[severity]} {SEVERITY_LABELS.get(severity, severity)}"
        for severity in sorted(counts, key=lambda s: _severity_rank({"severity": s}))
    )


def ci_markdown(outcomes: Iterable[Any]) -> str:
    """ci.check's outcomes (check, ok, detail, code) as a Markdown table with a verdict."""
    outcomes = list(outcomes)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    verdict = (
        f"**{_count(len(failed), 'check')} failed** of {len(outcomes)}; "
        f"exit code {int(failed[0].code)}."
        if failed
        else f"**All {_count(len(outcomes), 'check')} passed.**"
    )
    lines = [
        "## Migration checks (ci.check)",
        "",
        verdict,
        "",
        "| | Check | Detail |",
        "|---|---|---|",
    ]
    for outcome in outcomes:
        mark = "ok" if outcome.ok else "**FAILED**"
        lines.append(f"| {mark} | {_cell(outcome.check)} | {_cell(outcome.detail)} |")
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _cell(text: object) -> str:
    """Table cells: prose, one line, pipes escaped (`_text` escapes them)."""
    return _text(text)


def _code_cell(text: object) -> str:
    """Code in a table cell: GitHub splits cells on `|` even inside a code span."""
    return _code(text).replace("|", "\\|")


def _inline(text: object) -> str:
    return " ".join(str(text).split())


# Characters that start or end Markdown structure (emphasis, links, images, tables, headings,
# strikethrough, escapes); backslash-escaped in prose. Backticks become an entity instead.
_MARKDOWN_SPECIAL = re.compile(r"[\\*_\[\]|#!~]")


def _text(text: object) -> str:
    """Prose from data (a message, an error, help text) that renders as exactly its characters.

    One line (a newline could start a heading or close a fence), `<`, `>`, `&` as entities (no
    HTML: images, links, comments), Markdown specials backslash-escaped and backticks as
    `&#96;` (no code span can swallow what follows).
    """
    flat = _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), _inline(text))
    return html.escape(flat, quote=False).replace("`", "&#96;")


def _code(text: object) -> str:
    """An inline code span on one line, delimited by a backtick run longer than any inside.

    A single-backtick span would end at the first backtick of a hostile statement and render
    the rest (HTML, links) in the comment. Spaces pad the content when it holds backticks, so
    one at either end cannot join the delimiters (CommonMark strips one space each side).
    """
    flat = _inline(text)
    ticks = "`" * (_longest_backtick_run(flat) + 1)
    pad = " " if "`" in flat or not flat else ""
    return f"{ticks}{pad}{flat}{pad}{ticks}"


def _longest_backtick_run(text: str) -> int:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def _fence(text: str) -> str:
    """A fence longer than any run of backticks inside the SQL (a comment could hold some)."""
    return "`" * max(3, _longest_backtick_run(text) + 1)
