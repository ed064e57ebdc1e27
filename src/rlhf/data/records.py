"""The record types of docs/CONTRACTS.md as the readers return them, and the flag names of a
rating record. Types and names only: the SFT reader (rlhf.data.sft), the ranking reader
(rlhf.data.rankings) and the public-format adapters (rlhf.data.adapters) all build these
records, and the gold judge (rlhf.world), the labeling app and the evaluation all use the flag
names, without importing one another for them."""

from __future__ import annotations

from dataclasses import dataclass, field

# The metadata flags of a rating ({"flags": {name: bool}}), in the order reports show them: the
# labels of the paper's Table 3 that docs/CONTRACTS.md names ("fails to follow the correct
# instruction" stored positively). The labeling form asks the rest of Table 3 after these.
RATING_FLAGS: tuple[str, ...] = ("follows_instruction", "satisfies_constraint", "hallucination",
                                 "harmful_compliance", "appropriate_for_customer")


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
