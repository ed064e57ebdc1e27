"""The record types of docs/CONTRACTS.md as the readers return them. Types only: the SFT reader
(rlhf.data.sft), the ranking reader (rlhf.data.rankings) and the public-format adapters
(rlhf.data.adapters) all build them, and none has to import another for them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Demonstration:
    prompt: str
    response: str
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (user, assistant) turns
    labeler_id: str | None = None


@dataclass
class RankingExample:
    prompt: str
    responses: list[str]
    ranking: list[list[int]]          # tie groups, best first
    labeler_id: str | None = None

    @property
    def k(self) -> int:
        return len(self.responses)
