"""User-facing errors. The CLI prints them without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, config, flag). Printed as one clear line by the CLI."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
        if field is not None:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)
