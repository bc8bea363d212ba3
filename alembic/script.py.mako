<%!
def docstring_text(text):
    # The message is data: inside the triple-quoted docstring, backslashes, double quotes and
    # anything unprintable (newlines, NUL, lone surrogates) are escaped, so no message can end
    # the docstring, break the file or run as code in every later task (issue 11).
    escaped = []
    for char in str(text):
        if char in '\\"':
            escaped.append("\\" + char)
        elif char.isprintable():
            escaped.append(char)
        else:
            escaped.append(repr(char)[1:-1])
    return "".join(escaped)
%>"""${message | docstring_text}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
