"""The labeling app under load, on SQLite and on PostgreSQL: 20 labelers x 100 submissions through
the JSON API of a real uvicorn server on loopback (rlhf.labeling.loadtest); p50/p95/max latency,
requests per second, and lost / duplicated submissions counted in the database afterwards.

    RLHF_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python benchmarks/labeling_load.py [--out benchmarks/results/labeling_load.json]

PostgreSQL runs in a fresh database on the server named by $RLHF_TEST_PG_URL (.ci/run shows how
to start a throw-away one); without it the PostgreSQL entry records why it was not measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _bench import write_result  # noqa: E402

from rlhf.labeling.loadtest import describe, run_load  # noqa: E402
from rlhf.labeling.testing import BACKENDS, NoDatabase, temporary_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "labeling_load.json")
    parser.add_argument("--labelers", type=int, default=20)
    parser.add_argument("--per-labeler", type=int, default=100)
    args = parser.parse_args()
    result: dict = {"workload": f"{args.labelers} labelers x {args.per_labeler} submissions at "
                                "once (half K=4 rankings, half demonstrations; every 10th "
                                "answer sent twice), one uvicorn process on 127.0.0.1"}
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with temporary_database(backend, Path(tmp), "load") as url:
                    if backend == "postgresql":
                        result["postgresql_server"] = _pg_version(url)
                    load_before = os.getloadavg()[0]
                    figures = run_load(url, Path(tmp), args.labelers, args.per_labeler)
                    # the machine's other work moves these figures: say how busy it was
                    figures["load_average_1min_before"] = round(load_before, 2)
            except NoDatabase as e:
                result[backend] = {"skipped": str(e)}
                print(f"{backend}: not measured: {e}")
                continue
        result[backend] = figures
        print(describe(backend, figures))
    write_result(args.out, result)


def _pg_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("show server_version")).scalar_one())
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
