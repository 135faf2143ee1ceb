"""What the nodes report on ~/status and in their log, decided without ROS.

`ProblemLog` remembers the newest problem and when it happened (for `last_problem` / `last_problem_age_s`) and
says whether to log it: a new text at once, the same text again at most every `repeat_s` seconds.
`policy_level(reason)` is the diagnostic level of the policy node's "not commanding because" reason.
"""

from __future__ import annotations

from lapa_ros.safety import shorten

OK, WARN, ERROR = "ok", "warn", "error"


class ProblemLog:
    def __init__(self, repeat_s: float = 5.0):
        self.repeat_s = repeat_s
        self.text = ""  # the newest problem
        self.time: float | None = None  # when (node clock, s)
        self._logged = -float("inf")

    def report(self, text: str, now: float) -> bool:
        """Remember `text` at `now`; True when it should be logged now."""
        log = text != self.text or now - self._logged > self.repeat_s
        if log:
            self._logged = now
        self.text, self.time = text, now
        return log

    def age(self, now: float) -> str:
        """Seconds since the newest problem, formatted for the status ('' when there was none)."""
        return "" if self.time is None else f"{now - self.time:.1f}"


def policy_level(reason: str) -> str:
    """OK while commanding; ERROR when the model is not ready or gave non-finite output; WARN otherwise."""
    if reason == "commanding":
        return OK
    if reason == "model output not finite" or reason.startswith("not ready"):
        return ERROR
    return WARN


def status_instruction(instruction: str | None, limit: int = 200) -> str | None:
    """The instruction as the status shows it: whole up to `limit` characters, else shortened."""
    return instruction if instruction is None or len(instruction) <= limit else shorten(instruction, limit)
