"""The labeling store: a `Store` whose every public method is one database transaction, on the
tables of rlhf.labeling.tables, handing out the plain values defined there.

SQLite (the default) runs in WAL mode with a busy timeout; write transactions start with
BEGIN IMMEDIATE, so two writers never deadlock upgrading a read lock, and a transaction that still
meets "database is locked" is retried. PostgreSQL (postgresql+psycopg://...) runs the same code;
the store, API and load tests run on both.

Text is checked before it is stored (valid Unicode, no NUL: rlhf.labeling.records), and every
stored value is checked again when exported, so a row written before the checks is reported
(table, id, field) instead of breaking the export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from rlhf.io import atomic_path
from rlhf.labeling.errors import Conflict, Invalid, NotFound
from rlhf.labeling.records import (KINDS, MAX_DESCRIPTION_CHARS, MAX_K, MAX_OVERLAP,
                                   MAX_RESPONSE_CHARS, MIN_K, PromptRecord, RankingRecord, check_k,
                                   check_kind, check_name, check_text, check_unicode,
                                   iter_limited, normalize_answer, parse_prompt_record,
                                   parse_ranking_records, prompt_key, unicode_problem)
from rlhf.labeling.stats import agreement_report
from rlhf.labeling.tables import (Assignment, AssignReport, BadRow, BadRows, Base, Candidate,
                                  ImportReport, Labeler, LabelerInfo, Project, ProjectInfo, Prompt,
                                  RevokedSession, Setting, Submission, SubmitResult, Task,
                                  TaskView)

T = TypeVar("T")
log = logging.getLogger("rlhf.labeling")


_SURROGATES = re.compile("[\ud800-\udfff\x00]")


def _displayable(value: Any, where: Callable[[], str]) -> Any:
    """`value` with lone surrogates and NUL (which no UTF-8 response can carry) replaced by U+FFFD,
    so one bad stored row does not break a labeler's task pages; each replacement is logged."""
    if isinstance(value, str):
        if unicode_problem(value) is None:
            return value
        log.warning("stored text is not valid Unicode (%s); shown with U+FFFD", where())
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_displayable(k, where): _displayable(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_displayable(v, where) for v in value]
    return value


# ---------------------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    """sha256 of a token. Tokens are 192-bit random strings, so an unsalted fast hash is enough:
    the database alone never lets anyone log in, and lookup by hash needs no scan."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "lbl_" + secrets.token_urlsafe(24)


def _is_lock_error(exc: OperationalError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(word in text for word in ("locked", "busy", "deadlock detected",
                                         "could not serialize"))


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout, foreign keys and BEGIN IMMEDIATE for
    transactions opened through an engine with execution option `rlhf_write=True`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    in_memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each thread sees an empty db
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the "begin" hook below emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        if not in_memory:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("rlhf_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Store:
    """All reads and writes of the labeling app. Each public method runs in one transaction."""

    MAX_ATTEMPTS = 8

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.engine.execution_options(rlhf_write=True),
                                            expire_on_commit=False)
        # SQLite has one writer at a time. Queueing this process's writers on a lock (fair,
        # no sleeping) instead of in SQLite's busy handler (which polls with growing sleeps)
        # keeps tail latency low; other processes still wait through busy_timeout.
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self._sqlite else contextlib.nullcontext()

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ---------------------------------------------------------------------------

    def _transaction(self, fn: Callable[[Session], T], *, write: bool) -> T:
        """Run fn in one transaction (commit on return, rollback on error), retried from the
        start when it meets "database is locked" (SQLite under heavy concurrency), a deadlock or
        serialization failure, or, on PostgreSQL, where writers run concurrently, a unique
        constraint that a concurrent twin won after this one checked (the retry sees the twin's
        row and answers as for any existing row: a Conflict, or "unchanged")."""
        maker = self._write_sessions if write else self._read_sessions
        gate = self._write_lock if write else contextlib.nullcontext()
        delay = 0.02
        for attempt in range(1, self.MAX_ATTEMPTS + 1):
            try:
                with gate, maker() as session, session.begin():
                    return fn(session)
            except IntegrityError:
                if self._sqlite or attempt == self.MAX_ATTEMPTS:
                    raise  # SQLite serialises writers: a unique violation there is no race
            except OperationalError as exc:
                if not _is_lock_error(exc) or attempt == self.MAX_ATTEMPTS:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _write(self, fn: Callable[[Session], T]) -> T:
        return self._transaction(fn, write=True)

    def _read(self, fn: Callable[[Session], T]) -> T:
        return self._transaction(fn, write=False)

    @staticmethod
    def _project(s: Session, name: str) -> Project:
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            raise NotFound(f"no project named {name!r}")
        return project

    # -- projects -------------------------------------------------------------------------------

    def create_project(self, name: str, description: str = "") -> ProjectInfo:
        name = check_name(name, "name")
        description = check_text(description or "", "description", MAX_DESCRIPTION_CHARS,
                                 allow_empty=True)

        def tx(s: Session) -> ProjectInfo:
            if s.scalar(select(Project.id).where(Project.name == name)) is not None:
                raise Conflict(f"a project named {name!r} already exists")
            project = Project(name=name, description=description)
            s.add(project)
            s.flush()
            return ProjectInfo(project.id, project.name, project.description)

        return self._write(tx)

    def _project_info(self, s: Session, project: Project) -> ProjectInfo:
        pid = project.id
        n_prompts = s.scalar(select(func.count(Prompt.id)).where(Prompt.project_id == pid)) or 0
        n_cands = s.scalar(select(func.count(Candidate.id))
                           .join(Prompt, Candidate.prompt_id == Prompt.id)
                           .where(Prompt.project_id == pid)) or 0
        n_tasks = s.scalar(select(func.count(Task.id)).where(Task.project_id == pid)) or 0
        n_subs = s.scalar(select(func.count(Submission.id))
                          .join(Task, Submission.task_id == Task.id)
                          .where(Task.project_id == pid)) or 0
        return ProjectInfo(pid, project.name, project.description, n_prompts, n_cands, n_tasks,
                           n_subs)

    def get_project(self, name: str) -> ProjectInfo:
        return self._read(lambda s: self._project_info(s, self._project(s, name)))

    def list_projects(self) -> list[ProjectInfo]:
        return self._read(lambda s: [self._project_info(s, p) for p in
                                     s.scalars(select(Project).order_by(Project.id))])

    # -- prompts and candidates -----------------------------------------------------------------

    @staticmethod
    def _latest_batches(s: Session, prompt_ids: Sequence[int]) -> dict[int, list[Candidate]]:
        """prompt id -> candidates of its latest batch, by position."""
        out: dict[int, list[Candidate]] = {}
        if not prompt_ids:
            return out
        rows = s.scalars(select(Candidate).where(Candidate.prompt_id.in_(prompt_ids))
                         .order_by(Candidate.prompt_id, Candidate.batch, Candidate.position))
        for c in rows:
            current = out.get(c.prompt_id)
            if current is None or current[0].batch < c.batch:
                out[c.prompt_id] = [c]
            else:
                current.append(c)
        return out

    @staticmethod
    def _candidate_set(s: Session, prompt: Prompt, texts: Sequence[str], source: str,
                       report: ImportReport, *, reuse: bool) -> list[Candidate]:
        """The prompt's candidates with exactly these texts in this order: an existing batch when
        `reuse` and one matches, else a new batch."""
        existing: dict[int, list[Candidate]] = defaultdict(list)
        for c in s.scalars(select(Candidate).where(Candidate.prompt_id == prompt.id)
                           .order_by(Candidate.batch, Candidate.position)):
            existing[c.batch].append(c)
        if reuse:
            for batch in existing.values():
                if [c.text for c in batch] == list(texts):
                    return batch
        batch_no = max(existing, default=0) + 1
        new = [Candidate(prompt_id=prompt.id, batch=batch_no, position=i, text=t, source=source)
               for i, t in enumerate(texts)]
        s.add_all(new)
        s.flush()
        report.candidates_added += len(new)
        return new

    @staticmethod
    def _upsert_prompt(s: Session, project: Project, rec: PromptRecord,
                       report: ImportReport) -> Prompt:
        prompt = s.scalar(select(Prompt).where(Prompt.project_id == project.id,
                                               Prompt.key == rec.key))
        if prompt is None:
            prompt = Prompt(project_id=project.id, key=rec.key, text=rec.text,
                            category=rec.category, meta=rec.meta)
            s.add(prompt)
            s.flush()
            report.prompts_added += 1
        elif prompt.text != rec.text:
            raise Conflict(f"prompt id {rec.key!r} already exists with a different text")
        else:
            report.prompts_unchanged += 1
        return prompt

    def import_prompts(self, project: str, records: Iterable[Any]) -> ImportReport:
        """Add prompts ({"id"?, "prompt", "category"?, "responses"?, ...}) in one transaction: a bad
        record aborts the whole import with an error naming its position. Re-importing the same
        file changes nothing; "responses" adds a candidate batch unless an identical one exists."""
        parsed: list[PromptRecord] = []
        for n, obj in enumerate(iter_limited(records), start=1):
            try:
                parsed.append(parse_prompt_record(obj))
            except Invalid as e:
                raise Invalid(f"record {n}: {e}") from None
        if not parsed:
            raise Invalid("no prompt records to import")

        def tx(s: Session) -> ImportReport:
            proj = self._project(s, project)
            report = ImportReport()
            for rec in parsed:
                prompt = self._upsert_prompt(s, proj, rec, report)
                if rec.responses is not None:
                    self._candidate_set(s, prompt, rec.responses, "import", report, reuse=True)
            return report

        return self._write(tx)

    def prompts_for_generation(self, project: str, *, regenerate: bool = False
                               ) -> list[tuple[str, str]]:
        """(key, text) of the prompts to sample candidates for: those with none yet, or all."""
        def tx(s: Session) -> list[tuple[str, str]]:
            proj = self._project(s, project)
            query = select(Prompt.key, Prompt.text).where(Prompt.project_id == proj.id)
            if not regenerate:
                has = select(Candidate.id).where(Candidate.prompt_id == Prompt.id).exists()
                query = query.where(~has)
            return [(k, t) for k, t in s.execute(query.order_by(Prompt.id))]

        return self._read(tx)

    def add_candidates(self, project: str, by_key: Mapping[str, Sequence[str]], source: str
                       ) -> ImportReport:
        """Add one new candidate batch per prompt key (K texts each), all in one transaction."""
        def tx(s: Session) -> ImportReport:
            proj = self._project(s, project)
            report = ImportReport()
            for key, texts in by_key.items():
                check_k(len(texts), "number of candidates")
                prompt = s.scalar(select(Prompt).where(Prompt.project_id == proj.id,
                                                       Prompt.key == key))
                if prompt is None:
                    raise NotFound(f"project {project!r} has no prompt {key!r}")
                clean = [check_text(t, "candidate", MAX_RESPONSE_CHARS) for t in texts]
                self._candidate_set(s, prompt, clean, source[:500], report, reuse=False)
            return report

        return self._write(tx)

    # -- labelers ------------------------------------------------------------------------------

    @staticmethod
    def _labeler_info(lab: Labeler) -> LabelerInfo:
        return LabelerInfo(lab.id, lab.name, lab.active, lab.token_hash is not None,
                           (lab.token_hash or "")[:16])

    def create_labeler(self, name: str) -> tuple[LabelerInfo, str]:
        """A new labeler and its token; the token is returned once and only its hash is kept."""
        name = check_name(name, "name")
        token = new_token()

        def tx(s: Session) -> LabelerInfo:
            if s.scalar(select(Labeler.id).where(Labeler.name == name)) is not None:
                raise Conflict(f"a labeler named {name!r} already exists")
            lab = Labeler(name=name, token_hash=hash_token(token))
            s.add(lab)
            s.flush()
            return self._labeler_info(lab)

        return self._write(tx), token

    def rotate_token(self, name: str) -> tuple[LabelerInfo, str]:
        """Give a labeler a new token (the old one and its browser sessions stop working)."""
        token = new_token()

        def tx(s: Session) -> LabelerInfo:
            lab = s.scalar(select(Labeler).where(Labeler.name == name))
            if lab is None:
                raise NotFound(f"no labeler named {name!r}")
            lab.token_hash = hash_token(token)
            lab.active = True
            return self._labeler_info(lab)

        return self._write(tx), token

    def list_labelers(self) -> list[LabelerInfo]:
        return self._read(lambda s: [self._labeler_info(lab) for lab in
                                     s.scalars(select(Labeler).order_by(Labeler.id))])

    def authenticate(self, token: str) -> LabelerInfo | None:
        """The active labeler holding this token, or None."""
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)
        lab = self._read(lambda s: s.scalar(select(Labeler).where(Labeler.token_hash == digest)))
        return self._labeler_info(lab) if lab is not None and lab.active else None

    def get_labeler(self, labeler_id: int) -> LabelerInfo | None:
        lab = self._read(lambda s: s.get(Labeler, labeler_id))
        return self._labeler_info(lab) if lab is not None else None

    # -- browser sessions ------------------------------------------------------------------------

    def session_secret(self) -> str:
        """The random key of the session-cookie signatures, made on first use and kept in the
        database, so every server process on it shares it and no admin token can be guessed
        from a cookie."""
        def read(s: Session) -> str | None:
            return s.scalar(select(Setting.value).where(Setting.name == "session_secret"))

        found = self._read(read)
        if found is not None:
            return found

        def create(s: Session) -> str:
            current = read(s)
            if current is not None:
                return current
            try:
                with s.begin_nested():
                    s.add(Setting(name="session_secret", value=secrets.token_urlsafe(32)))
            except IntegrityError:  # another process made it first
                pass
            value = read(s)
            assert value is not None
            return value

        return self._write(create)

    def revoke_session(self, sid: str, expires: int) -> None:
        """End a browser session (logout) for every server process; expired entries are pruned."""
        def tx(s: Session) -> None:
            now = int(time.time())
            for old in s.scalars(select(RevokedSession).where(RevokedSession.expires < now)
                                 .limit(1000)):
                s.delete(old)
            if s.get(RevokedSession, sid) is None:
                s.add(RevokedSession(sid=sid[:64], expires=int(expires)))

        self._write(tx)

    def session_revoked(self, sid: str) -> bool:
        return self._read(lambda s: s.get(RevokedSession, sid[:64]) is not None)

    # -- tasks and assignment -------------------------------------------------------------------

    def assign(self, project: str, kind: str, overlap: int, labelers: Sequence[str] | None = None,
               *, seed: int = 0) -> AssignReport:
        """Create the project's missing tasks of `kind`, then give every task of that kind
        `overlap` distinct labelers, least-loaded first (ties broken by a seeded shuffle).

        demonstration: one task per prompt; ranking: one per prompt over its latest candidate
        batch (K = 2..9); rating: one per candidate of the latest batch. Running it again tops
        tasks up to a larger overlap, or assigns new prompts, and never duplicates anything.
        """
        check_kind(kind)
        if isinstance(overlap, bool) or not isinstance(overlap, int) \
                or not 1 <= overlap <= MAX_OVERLAP:
            raise Invalid(f"must be a whole number from 1 to {MAX_OVERLAP}", field="overlap")
        names = [check_name(n, "labelers") for n in labelers] if labelers else None

        def tx(s: Session) -> AssignReport:
            proj = self._project(s, project)
            report = AssignReport()
            if names is None:
                pool = list(s.scalars(select(Labeler).where(Labeler.active.is_(True),
                                                            Labeler.token_hash.is_not(None))
                                      .order_by(Labeler.id)))
            else:
                found = {lab.name: lab for lab in s.scalars(select(Labeler)
                                                            .where(Labeler.name.in_(names)))}
                unknown = [n for n in names if n not in found]
                if unknown:
                    raise NotFound(f"no labelers named {', '.join(map(repr, unknown))}")
                pool = [found[n] for n in dict.fromkeys(names)]
            if overlap > len(pool):
                raise Invalid(f"overlap {overlap} needs at least {overlap} labelers; "
                              f"{len(pool)} available", field="overlap")
            self._create_tasks(s, proj, kind, report)
            tasks = list(s.scalars(select(Task).where(Task.project_id == proj.id, Task.kind == kind)
                                   .order_by(Task.id)))
            report.tasks_total = len(tasks)
            have: dict[int, set[int]] = defaultdict(set)
            load: Counter[int] = Counter()
            for task_id, labeler_id, task_kind in s.execute(
                    select(Assignment.task_id, Assignment.labeler_id, Task.kind)
                    .join(Task, Assignment.task_id == Task.id).where(Task.project_id == proj.id)):
                load[labeler_id] += 1
                if task_kind == kind:
                    have[task_id].add(labeler_id)
            rng = random.Random(seed)
            for task in tasks:
                need = overlap - len(have[task.id])
                if need <= 0:
                    continue
                free = [lab for lab in pool if lab.id not in have[task.id]]
                rng.shuffle(free)
                free.sort(key=lambda lab: load[lab.id])  # stable: the shuffle breaks ties
                for lab in free[:need]:
                    s.add(Assignment(task_id=task.id, labeler_id=lab.id))
                    have[task.id].add(lab.id)
                    load[lab.id] += 1
                    report.assignments_created += 1
            return report

        return self._write(tx)

    def _create_tasks(self, s: Session, proj: Project, kind: str, report: AssignReport) -> None:
        prompts = list(s.scalars(select(Prompt).where(Prompt.project_id == proj.id)
                                 .order_by(Prompt.id)))
        existing = {(p, key) for p, key in s.execute(
            select(Task.prompt_id, Task.candidates_key)
            .where(Task.project_id == proj.id, Task.kind == kind))}
        batches = ({} if kind == "demonstration"
                   else self._latest_batches(s, [p.id for p in prompts]))
        for prompt in prompts:
            if kind == "demonstration":
                wanted = [[]]
            else:
                batch = batches.get(prompt.id, [])
                if kind == "ranking":
                    wanted = [[c.id for c in batch]] if len(batch) >= MIN_K else []
                else:
                    wanted = [[c.id] for c in batch]
                if not wanted:
                    report.skipped_prompts.append(prompt.key)
            for ids in wanted:
                key = ",".join(map(str, ids))
                if (prompt.id, key) not in existing:
                    s.add(Task(project_id=proj.id, prompt_id=prompt.id, kind=kind,
                               candidate_ids=ids, candidates_key=key))
                    existing.add((prompt.id, key))
                    report.tasks_created += 1
        s.flush()

    # -- the labeler's side ---------------------------------------------------------------------

    def _views(self, s: Session, rows: Sequence[tuple[Task, Prompt, str, Submission | None]]
               ) -> list[TaskView]:
        ids = {cid for task, *_ in rows for cid in task.candidate_ids}
        texts = dict(s.execute(select(Candidate.id, Candidate.text)
                                  .where(Candidate.id.in_(ids))).all()) if ids else {}

        def view(task: Task, prompt: Prompt, project_name: str, sub: Submission | None
                 ) -> TaskView:
            missing = [c for c in task.candidate_ids if c not in texts]
            if missing:
                raise Conflict(f"task {task.id} refers to candidates {missing} that are not in "
                               "the database (table tasks, field candidate_ids)")
            show = _displayable
            return TaskView(
                id=task.id, kind=task.kind, project=project_name, prompt_id=show(
                    prompt.key, lambda: f"table prompts, id {prompt.id}, field key"),
                prompt=show(prompt.text, lambda: f"table prompts, id {prompt.id}, field text"),
                category=show(prompt.category,
                              lambda: f"table prompts, id {prompt.id}, field category"),
                responses=[show(texts[c], lambda c=c: f"table candidates, id {c}, field text")
                           for c in task.candidate_ids],
                answer=None if sub is None else show(
                    sub.data, lambda: f"table submissions, id {sub.id}, field data"))

        return [view(*row) for row in rows]

    def _task_rows(self, labeler_id: int):
        return (select(Task, Prompt, Project.name, Submission)
                .join(Assignment, Assignment.task_id == Task.id)
                .join(Prompt, Prompt.id == Task.prompt_id)
                .join(Project, Project.id == Task.project_id)
                .outerjoin(Submission, (Submission.task_id == Task.id)
                           & (Submission.labeler_id == labeler_id))
                .where(Assignment.labeler_id == labeler_id))

    def tasks_for(self, labeler_id: int, *, project: str | None = None, status: str = "pending",
                  kind: str | None = None, limit: int = 50) -> list[TaskView]:
        """The labeler's own tasks, oldest first; status pending | done | all."""
        if status not in ("pending", "done", "all"):
            raise Invalid("must be pending, done or all", field="status")
        if kind is not None:
            check_kind(kind)

        def tx(s: Session) -> list[TaskView]:
            query = self._task_rows(labeler_id)
            if project is not None:
                query = query.where(Project.name == project)
            if kind is not None:
                query = query.where(Task.kind == kind)
            if status == "pending":
                query = query.where(Submission.id.is_(None))
            elif status == "done":
                query = query.where(Submission.id.is_not(None))
            rows = s.execute(query.order_by(Task.id).limit(max(1, min(limit, 500)))).all()
            return self._views(s, rows)

        return self._read(tx)

    def task_for(self, labeler_id: int, task_id: int) -> TaskView:
        """One task, only if it is assigned to this labeler (else NotFound: others' tasks are
        invisible, not merely forbidden)."""
        def tx(s: Session) -> TaskView:
            rows = s.execute(self._task_rows(labeler_id).where(Task.id == task_id)).all()
            if not rows:
                raise NotFound(f"task {task_id} is not one of your tasks")
            return self._views(s, rows)[0]

        return self._read(tx)

    def labeler_progress(self, labeler_id: int) -> dict[str, int]:
        def tx(s: Session) -> dict[str, int]:
            assigned = s.scalar(select(func.count(Assignment.id))
                                .where(Assignment.labeler_id == labeler_id)) or 0
            done = s.scalar(select(func.count(Submission.id))
                            .where(Submission.labeler_id == labeler_id)) or 0
            return {"assigned": assigned, "done": done, "pending": assigned - done}

        return self._read(tx)

    def submit(self, labeler_id: int, task_id: int, answer: Mapping[str, Any], *,
               source: str = "app") -> SubmitResult:
        """Store a labeler's answer to one of its tasks. Sending the same answer again returns the
        stored submission (created=False); a different answer to an answered task is a Conflict."""
        def tx(s: Session) -> SubmitResult:
            task = s.scalar(select(Task).join(Assignment, Assignment.task_id == Task.id)
                            .where(Task.id == task_id, Assignment.labeler_id == labeler_id))
            if task is None:
                raise NotFound(f"task {task_id} is not one of your tasks")
            data = normalize_answer(task.kind, answer, len(task.candidate_ids))
            return self._store_submission(s, task.id, labeler_id, data, source)

        return self._write(tx)

    @staticmethod
    def _store_submission(s: Session, task_id: int, labeler_id: int, data: dict[str, Any],
                          source: str) -> SubmitResult:
        def existing() -> Submission | None:
            return s.scalar(select(Submission).where(Submission.task_id == task_id,
                                                     Submission.labeler_id == labeler_id))

        def replay(sub: Submission) -> SubmitResult:
            if sub.data != data:
                raise Conflict(f"task {task_id} was already submitted with a different answer; "
                               "submissions are final")
            return SubmitResult(sub.id, task_id, created=False)

        found = existing()
        if found is not None:
            return replay(found)
        sub = Submission(task_id=task_id, labeler_id=labeler_id, data=data, source=source)
        try:
            with s.begin_nested():  # a concurrent twin may win the unique constraint (PostgreSQL)
                s.add(sub)
        except IntegrityError:
            found = existing()
            if found is None:
                raise
            return replay(found)
        return SubmitResult(sub.id, task_id, created=True)

    # -- imported rankings ----------------------------------------------------------------------

    def import_rankings(self, project: str, records: Iterable[Any], fmt: str = "auto"
                        ) -> ImportReport:
        """Import finished rankings (our JSONL, Argilla or Label Studio records), each as a
        prompt, a candidate batch, a ranking task, and one labeler's submission, in one
        transaction. Labelers named in the file are created without a token (they cannot log in).
        The same prompt with the same responses from several labelers becomes one task with
        overlap, so agreement is measured on imported data too."""
        parsed: list[RankingRecord] = []
        for n, obj in enumerate(iter_limited(records), start=1):
            try:
                parsed.extend(parse_ranking_records(obj, fmt))
            except Invalid as e:
                raise Invalid(f"record {n}: {e}") from None
        if not parsed:
            raise Invalid("no ranking records to import")

        def tx(s: Session) -> ImportReport:
            proj = self._project(s, project)
            report = ImportReport()
            labelers: dict[str, Labeler] = {}
            for rec in parsed:
                prompt = self._upsert_prompt(s, proj, PromptRecord(
                    key=rec.key or prompt_key(rec.prompt), text=rec.prompt,
                    category=rec.category), report)
                cands = self._candidate_set(s, prompt, rec.responses, "import", report, reuse=True)
                ids = [c.id for c in cands]
                key = ",".join(map(str, ids))
                task = s.scalar(select(Task).where(Task.prompt_id == prompt.id,
                                                   Task.kind == "ranking",
                                                   Task.candidates_key == key))
                if task is None:
                    task = Task(project_id=proj.id, prompt_id=prompt.id, kind="ranking",
                                candidate_ids=ids, candidates_key=key)
                    s.add(task)
                    s.flush()
                    report.tasks_created += 1
                lab = labelers.get(rec.labeler) or s.scalar(select(Labeler)
                                                            .where(Labeler.name == rec.labeler))
                if lab is None:
                    lab = Labeler(name=rec.labeler, token_hash=None)
                    s.add(lab)
                    s.flush()
                    report.labelers_created += 1
                labelers[rec.labeler] = lab
                if s.scalar(select(Assignment.id).where(Assignment.task_id == task.id,
                                                        Assignment.labeler_id == lab.id)) is None:
                    s.add(Assignment(task_id=task.id, labeler_id=lab.id))
                result = self._store_submission(s, task.id, lab.id, {"ranking": rec.ranking},
                                                "import")
                if result.created:
                    report.submissions_added += 1
                else:
                    report.submissions_unchanged += 1
            return report

        return self._write(tx)

    # -- export and dashboard -------------------------------------------------------------------

    def export_records(self, project: str, kind: str, *, skip_invalid: bool = False,
                       skipped: list[BadRow] | None = None) -> list[dict[str, Any]]:
        """Every submission of one kind as the JSONL records of docs/CONTRACTS.md, oldest first:
        demonstration {"prompt", "response", "labeler_id"}; ranking {"prompt", "responses",
        "ranking", "labeler_id"}; rating {"prompt", "response", "likert", "flags", "labeler_id"}.

        Every stored value is checked again as it is read. A row that breaks a rule (text that
        is not valid Unicode, an answer of the wrong shape, a missing candidate) raises BadRows
        naming table, id and field, and nothing is returned; with `skip_invalid` such records
        are left out and their BadRows appended to `skipped`."""
        check_kind(kind)
        return self._read(lambda s: self._export(s, project, kind, skip_invalid, skipped,
                                                 "skip_invalid=true"))

    def _export(self, s: Session, project: str, kind: str, skip_invalid: bool,
                skipped: list[BadRow] | None, skip_hint: str) -> list[dict[str, Any]]:
        proj = self._project(s, project)
        rows = s.execute(select(Submission.id, Submission.data, Task.id, Task.candidate_ids,
                                Prompt.id, Prompt.text, Labeler.id, Labeler.name)
                         .join(Task, Task.id == Submission.task_id)
                         .join(Prompt, Prompt.id == Task.prompt_id)
                         .join(Labeler, Labeler.id == Submission.labeler_id)
                         .where(Task.project_id == proj.id, Task.kind == kind)
                         .order_by(Submission.id)).all()
        ids = {c for row in rows if isinstance(row[3], list) for c in row[3]
               if isinstance(c, int) and not isinstance(c, bool)}
        texts = dict(s.execute(select(Candidate.id, Candidate.text)
                               .where(Candidate.id.in_(ids))).all()) if ids else {}
        out: list[dict[str, Any]] = []
        bad: list[BadRow] = []
        for sub_id, data, task_id, cids, prompt_id, prompt, labeler_id, labeler in rows:
            try:
                out.append(_export_record(kind, sub_id, data, task_id, cids, prompt_id, prompt,
                                          labeler_id, labeler, texts))
            except _BadRowError as e:
                bad.append(e.row)
        if bad and not skip_invalid:
            raise BadRows(bad, skip_hint)
        for row in bad:
            log.warning("export of project %s left out a %s record: %s", project, kind, row)
        if skipped is not None:
            skipped.extend(bad)
        return out

    def export_to_dir(self, project: str, out_dir: str | Path, *, skip_invalid: bool = False,
                      skipped: list[BadRow] | None = None) -> dict[str, tuple[Path, int]]:
        """Write demonstrations.jsonl, rankings.jsonl and ratings.jsonl and return {kind: (path,
        number of records)}. All three are read in one transaction and checked before anything is
        written, then written to temporary files beside their targets and renamed into place
        together: a bad row (BadRows) or a failed write changes no file in `out_dir`. With
        `skip_invalid` bad rows are left out and appended to `skipped`."""
        out = Path(out_dir)
        files = {"demonstration": "demonstrations.jsonl", "ranking": "rankings.jsonl",
                 "rating": "ratings.jsonl"}

        def tx(s: Session) -> dict[str, list[dict[str, Any]]]:
            self._project(s, project)  # a clear NotFound before anything is written
            return {kind: self._export(s, project, kind, skip_invalid, skipped, "--skip-invalid")
                    for kind in files}

        records = self._read(tx)
        texts = {kind: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                 .encode("utf-8") for kind, rows in records.items()}
        with contextlib.ExitStack() as stack:  # every rename happens after every write
            for kind, filename in files.items():
                tmp = stack.enter_context(atomic_path(out / filename))
                with open(tmp, "wb") as f:
                    f.write(texts[kind])
                    f.flush()
                    os.fsync(f.fileno())
        return {kind: (out / filename, len(records[kind])) for kind, filename in files.items()}

    def dashboard(self, project: str) -> dict[str, Any]:
        """Progress per kind and per labeler, and inter-labeler agreement on overlapping tasks."""
        def tx(s: Session) -> dict[str, Any]:
            proj = self._project(s, project)
            assignments = s.execute(select(Task.id, Task.kind, Labeler.name)
                                    .join(Assignment, Assignment.task_id == Task.id)
                                    .join(Labeler, Labeler.id == Assignment.labeler_id)
                                    .where(Task.project_id == proj.id)).all()
            subs = s.execute(select(Task.id, Task.kind, Labeler.name, Submission.data)
                             .join(Submission, Submission.task_id == Task.id)
                             .join(Labeler, Labeler.id == Submission.labeler_id)
                             .where(Task.project_id == proj.id)).all()
            task_kinds = dict(s.execute(select(Task.id, Task.kind)
                                        .where(Task.project_id == proj.id)).all())
            return {"project": self._project_info(s, proj).to_json(),
                    **_progress(task_kinds, assignments, subs),
                    "agreement": agreement_report(
                        [(task_id, kind, name, data) for task_id, kind, name, data in subs])}

        return self._read(tx)


def _progress(task_kinds: Mapping[int, str], assignments: Sequence[Any], subs: Sequence[Any]
              ) -> dict[str, Any]:
    assigned_to: dict[int, int] = Counter(task_id for task_id, _, _ in assignments)
    answered: dict[int, int] = Counter(task_id for task_id, _, _, _ in subs)
    kinds: dict[str, dict[str, int]] = {k: {"tasks": 0, "assigned": 0, "submissions": 0,
                                            "complete": 0} for k in KINDS}
    for task_id, kind in task_kinds.items():
        row = kinds[kind]
        row["tasks"] += 1
        row["assigned"] += assigned_to.get(task_id, 0)
        row["submissions"] += answered.get(task_id, 0)
        if assigned_to.get(task_id, 0) and answered.get(task_id, 0) >= assigned_to[task_id]:
            row["complete"] += 1
    people: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"assigned": 0, "done": 0, **{k: 0 for k in KINDS}})
    for _, _, name in assignments:
        people[name]["assigned"] += 1
    for _, kind, name, _ in subs:
        people[name]["done"] += 1
        people[name][kind] += 1
    for row in people.values():
        row["pending"] = row["assigned"] - row["done"]
    return {"kinds": kinds, "labelers": dict(sorted(people.items()))}


class _BadRowError(Exception):
    def __init__(self, row: BadRow):
        super().__init__(str(row))
        self.row = row


def _stored_text(value: Any, table: str, row_id: int, field: str) -> str:
    if not isinstance(value, str):
        raise _BadRowError(BadRow(table, row_id, field, f"is a {type(value).__name__}, "
                                                        "not a string"))
    problem = unicode_problem(value)
    if problem:
        raise _BadRowError(BadRow(table, row_id, field, problem))
    return value


def _export_record(kind: str, sub_id: int, data: Any, task_id: int, cids: Any, prompt_id: int,
                   prompt: Any, labeler_id: int, labeler: Any, texts: Mapping[int, Any]
                   ) -> dict[str, Any]:
    """One export record, every stored value checked; _BadRowError names the first bad one."""
    prompt = _stored_text(prompt, "prompts", prompt_id, "text")
    labeler = _stored_text(labeler, "labelers", labeler_id, "name")
    want = {"demonstration": (0, 0), "ranking": (MIN_K, MAX_K), "rating": (1, 1)}[kind]
    if not isinstance(cids, list) or not want[0] <= len(cids) <= want[1]:
        raise _BadRowError(BadRow("tasks", task_id, "candidate_ids",
                                  f"a {kind} task needs {want[0]}..{want[1]} candidate ids, "
                                  f"got {cids!r:.60}"))
    missing = [c for c in cids if c not in texts]
    if missing:
        raise _BadRowError(BadRow("tasks", task_id, "candidate_ids",
                                  f"refers to candidates {missing!r:.60} that do not exist"))
    responses = [_stored_text(texts[c], "candidates", c, "text") for c in cids]
    if not isinstance(data, dict):
        raise _BadRowError(BadRow("submissions", sub_id, "data",
                                  f"is a {type(data).__name__}, not an object"))
    try:
        check_unicode(data, "data")
        answer = normalize_answer(kind, data, len(cids))
    except Invalid as e:
        field = e.field if (e.field or "").startswith("data") else f"data.{e.field or kind}"
        raise _BadRowError(BadRow("submissions", sub_id, field,
                                  str(e).split(": ", 1)[-1])) from None
    if kind == "demonstration":
        return {"prompt": prompt, "response": answer["response"], "labeler_id": labeler}
    if kind == "ranking":
        return {"prompt": prompt, "responses": responses, "ranking": answer["ranking"],
                "labeler_id": labeler}
    return {"prompt": prompt, "response": responses[0], "likert": answer["likert"],
            "flags": answer["flags"], "labeler_id": labeler}
