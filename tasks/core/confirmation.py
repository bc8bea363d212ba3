"""Asking a human before something dangerous, and refusing when no human can be asked.

A downgrade or stamp anywhere, and an upgrade on a protected environment, reach `Confirmer.ask`
before they change anything. `--yes` answers for scripts and CI. Without it, a prompt needs a
terminal: a piped or closed stdin is not consent, so the task refuses instead of guessing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO

from tasks.core.errors import Refused

_clock = time.monotonic  # how long the operator took to answer (a test can stand in for it)


@dataclass
class Confirmer:
    assume_yes: bool = False
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    # Seconds spent waiting for the operator's answers: run durations leave them out.
    waited: float = 0.0
    # Seconds one prompt waits for an answer (`migrations.prompt_timeout`); None: no limit.
    timeout: float | None = None

    def ask(
        self, action: str, *, type_to_confirm: str | None = None, honour_yes: bool = True
    ) -> None:
        """Return if the operator agrees to `action`; raise Refused otherwise.

        With `type_to_confirm` the operator must type that word (the environment's name on a
        protected environment); otherwise a plain y/N question. With `honour_yes` False,
        `--yes` does not answer (destructive statements need their own flag).
        """
        if self.assume_yes and honour_yes:
            return
        if not self._interactive():
            raise Refused(
                f"{action} needs confirmation and there is no terminal to ask; pass --yes"
            )
        if type_to_confirm is None:
            answer = self._prompt(f"{action}. Continue? [y/N] ")
            if answer.lower() not in {"y", "yes"}:
                raise Refused(f"{action}: not confirmed, nothing changed")
            return
        answer = self._prompt(f"{action}. Type {type_to_confirm!r} to continue: ")
        if answer != type_to_confirm:
            raise Refused(
                f"{action}: confirmation {answer!r} does not match {type_to_confirm!r}, "
                "nothing changed"
            )

    def _wait_for_answer(self) -> None:
        """Refuse when nothing is typed within `timeout` seconds (a real terminal only)."""
        if not self.timeout:
            return
        import select

        try:
            ready, _, _ = select.select([self.stdin], [], [], self.timeout)
        except (TypeError, ValueError, OSError):  # no file descriptor to wait on (a test's)
            return
        if not ready:
            self.stdout.write("\n")
            raise Refused(
                f"no answer within {self.timeout:g} s (migrations.prompt_timeout); nothing changed"
            )

    def _interactive(self) -> bool:
        try:
            return self.stdin.isatty()
        except (AttributeError, ValueError):
            return False

    def _prompt(self, question: str) -> str:
        self.stdout.write(question)
        self.stdout.flush()
        asked = _clock()
        try:
            self._wait_for_answer()
            line = self.stdin.readline()
        finally:
            self.waited += _clock() - asked
        if not line:
            raise Refused("confirmation: input closed, nothing changed")
        return line.strip()
