"""Errors the CLI turns into exit codes: input problems (2) and failed runs (1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, printed as ``FILE:LINE: path: message``."""

    path: str  # dotted path into the pipeline ("clean.0.with.k"), or "" for the file itself
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file and self.line else (self.file or "")
        return ": ".join(p for p in (where, self.path, self.message) if p)


class ForgelineError(Exception):
    """Base of forgeline's own errors."""


class InputError(ForgelineError):
    """The input (pipeline file, option, data) is wrong: exit code 2, one line per problem."""

    def __init__(self, problems: list[Problem] | str) -> None:
        self.problems = [Problem("", problems)] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StageError(ForgelineError):
    """A component failed inside a stage: exit code 1, naming the plugin and the stage."""

    def __init__(self, stage: str, component: str, provider: str, error: BaseException) -> None:
        self.stage, self.component, self.provider, self.error = stage, component, provider, error
        super().__init__(f"stage {stage!r} failed in {component!r} (from {provider}): "
                         f"{type(error).__name__}: {error}")


class Terminated(BaseException):
    """SIGTERM arrived: like KeyboardInterrupt for SIGINT, it unwinds the run so that its end
    is written (status ``interrupted``) before the process exits with 143."""

    def __init__(self) -> None:
        super().__init__("terminated by SIGTERM")


def raise_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in this process (main thread only)."""
    import signal
    import threading

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
