"""Where a loader finds its data: an explicit path, or the datasets folder from the settings."""

from __future__ import annotations

from pathlib import Path

from shopml.errors import DataError
from shopml.settings import load_settings


def _missing(file: Path, default: str, what: str) -> DataError:
    return DataError(
        f"{what}: {file} not found; pass its path, or set SHOPML_DATASETS to the folder holding "
        f"'{default}' (default: ../shared/datasets beside the repository)"
    )


def resolve_file(path: str | Path | None, default: str, what: str) -> Path:
    """The data file: `path` (a file, or a folder holding the file) or `datasets_dir/default`."""
    file = load_settings().datasets_dir / default if path is None else Path(path).expanduser()
    if file.is_dir():
        file = file / Path(default).name
    if not file.is_file():
        raise _missing(file, default, what)
    return file


def resolve_dir(path: str | Path | None, default: str, what: str, needs: tuple[str, ...]) -> Path:
    """The data folder: `path` or `datasets_dir/default`; each name in `needs` must be in it."""
    folder = load_settings().datasets_dir / default if path is None else Path(path).expanduser()
    for name in needs:
        if not (folder / name).is_file():
            raise _missing(folder / name, f"{default}/{name}", what)
    return folder
