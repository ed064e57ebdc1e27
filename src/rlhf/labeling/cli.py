"""`rlhf label ...`: run the labeling app and move data in and out of its database.

    rlhf label serve --db sqlite:///labels.db [--host 127.0.0.1 --port 8000 --admin-token T]
    rlhf label create-project NAME --db URL
    rlhf label import FILE --db URL --project NAME [--kind auto|prompts|rankings] [--create]
    rlhf label generate --db URL --project NAME --checkpoint DIR [--k 4]
    rlhf label add-labeler NAME --db URL          (prints the labeler's token once)
    rlhf label assign --db URL --project NAME --kind ranking --overlap 2
    rlhf label export --db URL --project NAME --out DIR
    rlhf label dashboard --db URL --project NAME
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Optional

import typer

from rlhf.errors import UserError
from rlhf.labeling.errors import NotFound
from rlhf.labeling.records import parse_records_text

# The store (SQLAlchemy, torch), the web app (FastAPI) and the sampler are imported inside the
# commands that use them: every `rlhf` command imports this module to mount `rlhf label`.

app = typer.Typer(help="The labeling app: serve it, import prompts and rankings, export the "
                       "JSONL records SFT, RM training and evaluation read.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DEFAULT_DB = "sqlite:///labels.db"
DbOpt = typer.Option(DEFAULT_DB, "--db", envvar="RLHF_LABEL_DB",
                     help="SQLAlchemy URL: sqlite:///labels.db or postgresql://user@host/db.")
ProjectOpt = typer.Option(..., "--project", "-p", help="Project name.")


def _store(db: str):
    from rlhf.labeling.store import Store

    return Store(db)


@app.command()
def serve(db: str = DbOpt,
          host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8000, help="TCP port."),
          admin_token: Optional[str] = typer.Option(
              None, "--admin-token", envvar="RLHF_ADMIN_TOKEN",
              help="Token for admin routes and pages (default: $RLHF_ADMIN_TOKEN, else a new "
                   "random one, printed)."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Run the web app (pages for labelers and the admin, JSON API under /api)."""
    import uvicorn

    from rlhf.labeling.app import create_app

    if not admin_token:
        admin_token = secrets.token_urlsafe(24)
        typer.echo(f"admin token (generated; set RLHF_ADMIN_TOKEN to keep one): {admin_token}")
    web = create_app(db, admin_token)
    typer.echo(f"labeling app on http://{host}:{port}/  (database {db})")
    uvicorn.run(web, host=host, port=port, log_level=log_level)


@app.command("create-project")
def create_project(name: str = typer.Argument(..., help="Project name."), db: str = DbOpt,
                   description: str = typer.Option("", help="Shown on the project page.")) -> None:
    """Create a project (one labeling round)."""
    _store(db).create_project(name, description)
    typer.echo(f"created project {name}")


def _read_records(path: Path) -> list:
    if not path.is_file():
        raise UserError("file not found", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte {e.start})", path=str(path)) from None
    return parse_records_text(text, str(path))


@app.command("import")
def import_records(file: Path = typer.Argument(..., help="JSONL file (or a JSON array)."),
                   db: str = DbOpt, project: str = ProjectOpt,
                   kind: str = typer.Option("auto", help="prompts | rankings | auto (records "
                                            "with a ranking, chosen/rejected, Argilla or Label "
                                            "Studio answers are rankings)."),
                   fmt: str = typer.Option("auto", "--format", help="For rankings: auto | "
                                           "contract | argilla | label-studio."),
                   create: bool = typer.Option(False, help="Create the project if missing.")
                   ) -> None:
    """Import prompts ({"id", "prompt", "category", "responses"?}) or finished rankings."""
    store = _store(db)
    records = _read_records(file)
    if create:
        try:
            store.get_project(project)
        except NotFound:
            store.create_project(project)
    if kind == "auto":
        first = records[0] if records and isinstance(records[0], dict) else {}
        is_ranking = any(k in first for k in ("ranking", "chosen", "annotations", "completions",
                                              "fields")) or isinstance(first.get("responses"), dict)
        kind = "rankings" if is_ranking else "prompts"
    if kind == "prompts":
        report = store.import_prompts(project, records)
    elif kind == "rankings":
        report = store.import_rankings(project, records, fmt)
    else:
        raise UserError("must be prompts, rankings or auto", field="--kind")
    typer.echo(f"imported {kind} from {file}: " + json.dumps(report.to_json()))


@app.command()
def generate(db: str = DbOpt, project: str = ProjectOpt,
             checkpoint: Path = typer.Option(..., help="Hugging Face causal-LM folder."),
             k: int = typer.Option(4, help="Responses per prompt (2..9)."),
             max_new_tokens: int = typer.Option(64), temperature: float = typer.Option(1.0),
             seed: int = typer.Option(0),
             regenerate: bool = typer.Option(False, help="New batch for every prompt, not only "
                                             "those without candidates.")) -> None:
    """Sample K candidate responses per prompt from a checkpoint."""
    from rlhf.labeling.generate import generate_candidates

    report = generate_candidates(_store(db), project, checkpoint, k=k,
                                 max_new_tokens=max_new_tokens, temperature=temperature,
                                 seed=seed, regenerate=regenerate)
    typer.echo(f"generated {report.candidates} candidates for {report.prompts} prompts")


@app.command("add-labeler")
def add_labeler(name: str = typer.Argument(..., help="Labeler id (appears in exports)."),
                db: str = DbOpt) -> None:
    """Create a labeler and print its token (shown only this once)."""
    _, token = _store(db).create_labeler(name)
    typer.echo(f"labeler {name} token: {token}")


@app.command()
def assign(db: str = DbOpt, project: str = ProjectOpt,
           kind: str = typer.Option(..., help="demonstration | ranking | rating"),
           overlap: int = typer.Option(1, help="Labelers per task (>1 measures agreement)."),
           labeler: Optional[list[str]] = typer.Option(None, "--labeler", "-l",
                                                       help="Only these labelers (repeat)."),
           seed: int = typer.Option(0)) -> None:
    """Create the missing tasks of one kind and assign them with the given overlap."""
    report = _store(db).assign(project, kind, overlap, labeler, seed=seed)
    typer.echo(json.dumps(report.to_json()))


@app.command()
def export(db: str = DbOpt, project: str = ProjectOpt,
           out: Path = typer.Option(..., "--out", "-o", help="Folder for the JSONL files."),
           skip_invalid: bool = typer.Option(
               False, "--skip-invalid", help="Leave out stored rows that cannot be exported "
               "(each is reported) instead of stopping with no file changed.")) -> None:
    """Write demonstrations.jsonl, rankings.jsonl and ratings.jsonl (docs/CONTRACTS.md), all
    three or none: a stored row that cannot be exported stops the export before any file is
    changed, naming its table, id and field (or is left out with --skip-invalid)."""
    skipped: list = []
    written = _store(db).export_to_dir(project, out, skip_invalid=skip_invalid, skipped=skipped)
    for path, n in written.values():
        typer.echo(f"{n:6d} records  {path}")
    for row in skipped:
        typer.echo(f"skipped: {row}", err=True)
    if skipped:
        typer.echo(f"skipped {len(skipped)} stored row(s) that cannot be exported", err=True)


@app.command()
def dashboard(db: str = DbOpt, project: str = ProjectOpt) -> None:
    """Print progress per labeler and inter-labeler agreement as JSON."""
    typer.echo(json.dumps(_store(db).dashboard(project), indent=2))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
