"""`history --graph`: the revision graph in the terminal, newest first, like `git log --graph`.

Each revision gets a row with `*` in its lane; `|` carries lanes past it. A branch point (a
revision with several children) closes the extra lanes with `/`; a merge point opens a lane per
extra parent with `\\`. Heads, branch and merge points and the database's revision(s) are marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory

    from tasks.core.session import Session


@dataclass(frozen=True)
class GraphRow:
    lanes: str
    text: str

    def render(self) -> str:
        return f"{self.lanes}  {self.text}".rstrip() if self.text else self.lanes.rstrip()


def show_graph(session: Session) -> list[GraphRow]:
    """Print the graph with the database's current revision(s) marked."""
    from alembic.script import ScriptDirectory

    from tasks.core.alembic_config import alembic_config
    from tasks.migrate.verbs import current_if_configured

    script = ScriptDirectory.from_config(alembic_config(session.settings))
    found = current_if_configured(session)  # None: no URL, nothing to mark (issue 12.2)
    current = set(found or ())
    rows = graph_rows(script, current)
    for row in rows:
        session.console.line(row.render())
    if found is not None and not current:
        session.console.line(f"({session.environment.name} is at base: no revision applied)")
    return rows


def graph_rows(script: ScriptDirectory, current: set[str]) -> list[GraphRow]:
    """Rows of the graph; pure, so it can be tested on any revision map."""
    revisions = list(script.walk_revisions())  # heads first, each before its ancestors
    heads = set(script.get_heads())
    lanes: list[str | None] = []
    rows: list[GraphRow] = []
    for revision in revisions:
        column = _lane_of(lanes, revision.revision)
        _close_duplicate_lanes(lanes, column, revision.revision, rows)
        _trim(lanes)
        rows.append(GraphRow(_draw(lanes, column, "*"), _label(revision, heads, current)))
        _continue_with_parents(lanes, column, revision, rows)
        _trim(lanes)
    return rows


def _trim(lanes: list[str | None]) -> None:
    while lanes and lanes[-1] is None:
        lanes.pop()


def _lane_of(lanes: list[str | None], revision: str) -> int:
    if revision in lanes:
        return lanes.index(revision)
    if None in lanes:
        free = lanes.index(None)
        lanes[free] = revision
        return free
    lanes.append(revision)
    return len(lanes) - 1


def _close_duplicate_lanes(
    lanes: list[str | None], column: int, revision: str, rows: list[GraphRow]
) -> None:
    """Several children reached this revision on their own lanes: a branch point."""
    others = [index for index, lane in enumerate(lanes) if lane == revision and index != column]
    if not others:
        return
    marks = {index: "/" for index in others}
    for index in others:
        lanes[index] = None
    rows.append(GraphRow(_draw(lanes, column, "|", marks), ""))


def _continue_with_parents(
    lanes: list[str | None], column: int, revision: Script, rows: list[GraphRow]
) -> None:
    parents = _parents(revision)
    if not parents:
        lanes[column] = None
        return
    lanes[column] = parents[0]
    opened = {}
    for parent in parents[1:]:
        if parent in lanes:
            continue  # the other parent already has a lane; it joins there
        slot = _lane_of(lanes, parent)
        opened[slot] = "\\"
    if opened:
        rows.append(GraphRow(_draw(lanes, column, "|", opened), ""))


def _parents(revision: Script) -> list[str]:
    down = revision.down_revision
    if down is None:
        return []
    return [down] if isinstance(down, str) else list(down)


def _draw(
    lanes: list[str | None], column: int, mark: str, extra: dict[int, str] | None = None
) -> str:
    extra = extra or {}
    cells = []
    for index in range(max(len(lanes), column + 1, *(key + 1 for key in extra))):
        if index == column:
            cells.append(mark)
        elif index in extra:
            cells.append(extra[index])
        elif index < len(lanes) and lanes[index] is not None:
            cells.append("|")
        else:
            cells.append(" ")
    return " ".join(cells)


def _label(revision: Script, heads: set[str], current: set[str]) -> str:
    tags = []
    if revision.revision in heads:
        tags.append("head")
    if revision.revision in current:
        tags.append("current")
    if revision.is_branch_point:
        tags.append("branchpoint")
    if revision.is_merge_point:
        tags.append("mergepoint")
    marks = f" ({', '.join(tags)})" if tags else ""
    return f"{revision.revision}{marks} {revision.doc or ''}".rstrip()


# --- review formats: Mermaid (GitHub renders it) and DOT (Graphviz) -----------------------------

GRAPH_FORMATS = ("text", "mermaid", "dot")


@dataclass(frozen=True)
class GraphNode:
    revision: str
    message: str
    parents: tuple[str, ...]
    tags: tuple[str, ...]  # head, current, branchpoint, mergepoint


def graph_nodes(script: ScriptDirectory, current: set[str]) -> list[GraphNode]:
    """Every revision, base first, with its parents and marks: what the text formats draw."""
    heads = set(script.get_heads())
    nodes = []
    for revision in reversed(list(script.walk_revisions())):
        tags = tuple(
            tag
            for tag, present in (
                ("head", revision.revision in heads),
                ("current", revision.revision in current),
                ("branchpoint", revision.is_branch_point),
                ("mergepoint", revision.is_merge_point),
            )
            if present
        )
        nodes.append(
            GraphNode(revision.revision, revision.doc or "", tuple(_parents(revision)), tags)
        )
    return nodes


def render_mermaid(nodes: list[GraphNode]) -> str:
    """A Mermaid flowchart, base at the top, each edge from parent to child; GitHub renders a
    ```mermaid block in pull requests and issues. Marks are classes and text in the label."""
    lines = ["flowchart TD"]
    for node in nodes:
        marks = f" ({', '.join(node.tags)})" if node.tags else ""
        label = _mermaid_text(f"{node.revision}{marks}") + "<br/>" + _mermaid_text(node.message)
        lines.append(f'    {_mermaid_id(node.revision)}["{label}"]')
    for node in nodes:
        for parent in node.parents:
            lines.append(f"    {_mermaid_id(parent)} --> {_mermaid_id(node.revision)}")
    styles = {
        "head": "stroke-width:3px",
        "current": "fill:#cde4ff",
        "mergepoint": "stroke-dasharray:4 2",
    }
    for tag, style in styles.items():
        members = [_mermaid_id(node.revision) for node in nodes if tag in node.tags]
        if members:
            lines.append(f"    classDef {tag} {style}")
            lines.append(f"    class {','.join(members)} {tag}")
    return "\n".join(lines) + "\n"


def _mermaid_id(revision: str) -> str:
    """A node id that only this revision gets: ASCII letters and digits kept, anything else
    (`_` too) as `_<hex>_`, so `a.b` and `a_b` stay two nodes (a shared id merged them)."""
    return "r_" + "".join(
        ch if ch.isascii() and ch.isalnum() else f"_{ord(ch):x}_" for ch in revision
    )


# Characters that end a quoted label, start an entity, open a code fence in the Markdown the
# block sits in, or read as Mermaid/HTML syntax: all as Mermaid entity codes (`#quot;`).
_MERMAID_ENTITIES = {
    "#": "#35;",
    "&": "#amp;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "[": "#91;",
    "]": "#93;",
    "{": "#123;",
    "}": "#125;",
    "|": "#124;",
}


def _mermaid_text(text: str) -> str:
    """A label's text on one line with every special character as an entity.

    A newline would end the node's line and the rest of a message (a fence, `click ... href`)
    would be read as Mermaid or, after a ``` line, as the pull request's Markdown.
    """
    flat = " ".join(text.split())
    return "".join(_MERMAID_ENTITIES.get(ch, ch) for ch in flat)


def render_dot(nodes: list[GraphNode]) -> str:
    """Graphviz DOT: `dot -Tsvg` draws it; heads are bold, the current revision filled."""
    lines = [
        "digraph revisions {",
        "    rankdir=TB;",
        '    node [shape=box, fontname="monospace"];',
    ]
    for node in nodes:
        marks = f" ({', '.join(node.tags)})" if node.tags else ""
        attributes = [f"label={_dot_string(f'{node.revision}{marks}' + chr(10) + node.message)}"]
        if "head" in node.tags:
            attributes.append("penwidth=3")
        if "current" in node.tags:
            attributes.append('style=filled, fillcolor="#cde4ff"')
        if "mergepoint" in node.tags:
            attributes.append("shape=octagon")
        lines.append(f"    {_dot_string(node.revision)} [{', '.join(attributes)}];")
    for node in nodes:
        for parent in node.parents:
            lines.append(f"    {_dot_string(parent)} -> {_dot_string(node.revision)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\r\n", "\n")
        .replace("\r", "\n")
        .replace("\n", "\\n")
    )
    return f'"{escaped}"'


def show_graph_as(session: Session, graph_format: str) -> list[GraphNode]:
    """`history --graph --format mermaid|dot`: the same graph as text for review tools."""
    from alembic.script import ScriptDirectory

    from tasks.core.alembic_config import alembic_config
    from tasks.core.errors import UsageError
    from tasks.migrate.verbs import current_if_configured

    if graph_format not in GRAPH_FORMATS:
        raise UsageError(
            f"--format must be one of {', '.join(GRAPH_FORMATS)}, not {graph_format!r}"
        )
    if graph_format == "text":
        show_graph(session)
        return []
    script = ScriptDirectory.from_config(alembic_config(session.settings))
    nodes = graph_nodes(script, set(current_if_configured(session) or ()))
    render = render_mermaid if graph_format == "mermaid" else render_dot
    session.console.line(render(nodes).rstrip("\n"))
    return nodes
