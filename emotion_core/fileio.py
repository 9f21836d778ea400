"""Crash-safe file writes shared by the registry, sessions, settings and training."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FileId = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size


def file_id(path: Path) -> FileId | None:
    """Which file is at path now (device, inode, mtime, size); None when there is none. A file
    rewritten or replaced (by anyone) since an earlier call gets another id."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class JsonFileError(ValueError):
    """A JSON object file that cannot be used: `reason` says why ("missing", "unreadable",
    "invalid" or "not_object") and `detail` holds the OS or JSON error text ("" for
    not_object). Callers turn it into their own error and wording."""

    def __init__(self, path: Path, reason: str, detail: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def load_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in a UTF-8 file, as a dict; JsonFileError otherwise: "missing" (no such
    file), "unreadable" (any other OS error: a folder, no permission), "invalid" (not UTF-8,
    not JSON, nested too deep, an integer too long to convert) or "not_object" (a list, string,
    number or null)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise JsonFileError(path, "missing", str(exc)) from exc
    except OSError as exc:
        raise JsonFileError(path, "unreadable", str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise JsonFileError(path, "invalid", str(exc)) from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an int too long
        raise JsonFileError(path, "invalid", str(exc)) from exc
    if not isinstance(data, dict):
        raise JsonFileError(path, "not_object")
    return data


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object, as a dict; {} when it is missing, unreadable or not one
    (see load_json_object)."""
    try:
        return load_json_object(path)
    except JsonFileError:
        return {}


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON crash-safely (see atomic_write_bytes)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then durable_replace it into place, so readers
    see either the old or the new file, never half of one (not even after a power loss)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
        durable_replace(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def durable_replace(tmp: Path, path: Path) -> None:
    """os.replace a fully written temp file onto path: its data is fsynced first and the folder
    after, so a power loss leaves the old file or the complete new one, never an empty one."""
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def save_keras_atomically(model: Any, path: Path) -> None:
    """model.save(path) through a temp file beside it: Keras truncates the target first, so a
    kill mid-save would otherwise leave no checkpoint at all, only a broken zip."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # Keras wants the .keras suffix
    try:
        model.save(tmp)
        durable_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (renames, new files) durable; best effort where the OS or file
    system cannot fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open a folder
    try:
        with contextlib.suppress(OSError):  # some file systems refuse (EINVAL)
            os.fsync(fd)
    finally:
        os.close(fd)
