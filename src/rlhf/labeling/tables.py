"""The labeling database's tables (SQLAlchemy 2.0 models) and the plain values `Store`
(rlhf.labeling.store) hands out instead of ORM objects.

Tables
    projects      a labeling round (name unique)
    prompts       imported prompts; `key` is the record's "id", unique within a project
    candidates    responses to rank or rate; each generation or import adds a new `batch` per prompt
    labelers      people or simulated labelers; only sha256(token) is stored
    tasks         one unit of work: kind demonstration | ranking | rating, over an ordered list of
                  candidate ids (empty for a demonstration, one for a rating, K for a ranking);
                  unique (prompt, kind, candidates) so re-running task creation adds nothing
    assignments   (task, labeler) pairs; several labelers on one task is the overlap
    submissions   one answer per (task, labeler), enforced by a unique constraint, which is what
                  makes submitting twice idempotent even when two requests race
    revoked_sessions, app_settings   logged-out browser sessions; the session-cookie key
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rlhf.labeling.errors import Conflict
from rlhf.labeling.records import MAX_CATEGORY_CHARS, MAX_PROMPT_ID_CHARS


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("project_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    key: Mapped[str] = mapped_column(String(MAX_PROMPT_ID_CHARS))
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(MAX_CATEGORY_CHARS), default="")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("prompt_id", "batch", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    batch: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Labeler(Base):
    __tablename__ = "labelers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("prompt_id", "kind", "candidates_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    candidate_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    candidates_key: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "labeler_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("task_id", "labeler_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32), default="app")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class RevokedSession(Base):
    """Browser sessions ended by logging out, until their cookie would have expired anyway
    (shared by every server process on the database)."""
    __tablename__ = "revoked_sessions"
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[int] = mapped_column(BigInteger, index=True)


class Setting(Base):
    """Values the app keeps with its data; `session_secret` keys the session-cookie signatures."""
    __tablename__ = "app_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# ---------------------------------------------------------------------------------------------
# What the store hands out: plain frozen values, never ORM objects bound to a closed session.


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    description: str
    n_prompts: int = 0
    n_candidates: int = 0
    n_tasks: int = 0
    n_submissions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "prompts": self.n_prompts,
                "candidates": self.n_candidates, "tasks": self.n_tasks,
                "submissions": self.n_submissions}


@dataclass(frozen=True)
class LabelerInfo:
    id: int
    name: str
    active: bool
    can_log_in: bool
    token_version: str  # a prefix of the token hash: sessions die when the token is rotated

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "active": self.active, "can_log_in": self.can_log_in}


@dataclass(frozen=True)
class TaskView:
    id: int
    kind: str
    project: str
    prompt_id: str
    prompt: str
    category: str
    responses: list[str]
    answer: dict[str, Any] | None = None  # this labeler's stored answer, once submitted

    @property
    def done(self) -> bool:
        return self.answer is not None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "project": self.project,
                "prompt_id": self.prompt_id, "prompt": self.prompt, "category": self.category,
                "responses": self.responses, "status": "done" if self.done else "pending",
                "answer": self.answer}


@dataclass(frozen=True)
class SubmitResult:
    submission_id: int
    task_id: int
    created: bool  # False: the same answer was already stored (an idempotent replay)

    def to_json(self) -> dict[str, Any]:
        return {"submission_id": self.submission_id, "task_id": self.task_id,
                "created": self.created}


@dataclass(frozen=True)
class BadRow:
    """A stored row that cannot be exported as it is: which table, which row, which field."""
    table: str
    id: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"table {self.table}, id {self.id}, field {self.field}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "id": self.id, "field": self.field, "problem": self.problem}


class BadRows(Conflict):
    """Stored rows break the export; nothing was exported. The message lists them."""

    def __init__(self, bad: Sequence[BadRow], skip_hint: str):
        self.bad = list(bad)
        shown = "; ".join(map(str, self.bad[:10]))
        more = f" (and {len(self.bad) - 10} more)" if len(self.bad) > 10 else ""
        noun = "row cannot" if len(self.bad) == 1 else "rows cannot"
        super().__init__(f"{len(self.bad)} stored {noun} be exported: {shown}{more}. Nothing was "
                         f"exported. Fix or delete the row, or leave it out with {skip_hint}.")


@dataclass
class ImportReport:
    prompts_added: int = 0
    prompts_unchanged: int = 0
    candidates_added: int = 0
    labelers_created: int = 0
    tasks_created: int = 0
    submissions_added: int = 0
    submissions_unchanged: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class AssignReport:
    tasks_created: int = 0
    tasks_total: int = 0
    assignments_created: int = 0
    skipped_prompts: list[str] = field(default_factory=list)  # ranking/rating: no candidates yet

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
