"""A recorded-video analysis running on a worker thread, for a UI that polls it.

The Video page (or any other front end) checks an upload with `check_video_file`, starts a job
with `start_video_job` and renders `VideoJob.view()` copies until `finished`. The job copies the
upload to a private temporary folder, runs `analyze_video` on it and deletes the copy at the end.
Jobs are kept process-wide (`video_jobs`) until a page has shown their outcome
(`forget_video_job`), so a reloaded page or another tab can show and cancel them.
Folders left behind by a server that stopped mid-analysis are deleted by
`sweep_stale_video_folders` (at the next job, or when a page calls it).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from emotion_core.analyze_video import AnalysisResult, analyze_video
from emotion_core.detect import DetectorError
from emotion_core.inference import Classifier
from emotion_core.procs import process_alive, process_start
from emotion_core.registry import ModelError
from emotion_core.sessions import SessionError
from emotion_core.video import VideoError, probe_video
from emotion_core.worker import WorkerJob

VIDEO_TYPES = ("mp4", "avi", "mov", "webm", "mkv")
COPY_CHUNK = 8 * 1024 * 1024
MAX_NAME_BYTES = 100  # UTF-8 bytes of a stored file name (file systems allow 255)
MAX_SUFFIX_BYTES = 16
TEMP_PREFIX = "emotion-video-"
OWNER_FILE = "owner.pid"  # "<pid> <process start time>" of the server that made the folder
ORPHAN_AGE_S = 3600.0  # a temp folder without a readable owner file older than this is a leftover

_OWNED: set[Path] = set()  # temp folders of this process's jobs, removed at exit
_OWNED_LOCK = threading.Lock()


def safe_file_name(name: str) -> str:
    """The base name with only harmless characters (it becomes the session's source), cut to
    MAX_NAME_BYTES of UTF-8 on a character boundary, keeping the extension."""
    base = re.sub(r"[^\w.\- ]", "_", Path(name).name).strip(" .") or "video"
    if len(base.encode()) <= MAX_NAME_BYTES:
        return base
    suffix = Path(base).suffix
    if len(suffix.encode()) > MAX_SUFFIX_BYTES:
        suffix = ""
    stem = base[: len(base) - len(suffix)].encode()[: MAX_NAME_BYTES - len(suffix.encode())]
    return (stem.decode(errors="ignore").rstrip(" .") or "video") + suffix


# ---------------------------------------------------------------- temporary folders


def _owner_alive(folder: Path) -> bool | None:
    """Whether the process in folder's owner file still runs (a reused pid does not count);
    None when there is no readable owner file."""
    try:
        pid_text, _, started = (folder / OWNER_FILE).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return process_alive(pid, started) if pid > 0 else None


def _is_stale(folder: Path) -> bool:
    """A folder of ours whose owner process is gone (or, ownerless, an old one)."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    if not folder.is_dir() or folder.is_symlink():
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False  # another user's, in a shared temp folder
    alive = _owner_alive(folder)
    if alive is None:
        return time.time() - info.st_mtime > ORPHAN_AGE_S
    return not alive


def sweep_stale_video_folders(temp_root: Path | None = None) -> list[Path]:
    """Delete the emotion-video-* folders (uploaded videos) that a stopped server left in
    temp_root (default: the system temp folder); those of running processes stay. Returns the
    folders deleted."""
    root = Path(temp_root) if temp_root is not None else Path(tempfile.gettempdir())
    try:
        candidates = sorted(root.glob(f"{TEMP_PREFIX}*"))
    except OSError:
        return []
    removed = []
    for folder in candidates:
        if _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def _new_video_folder(temp_root: Path | None = None) -> Path:
    """A private emotion-video-* folder, marked as this process's (see OWNER_FILE)."""
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=temp_root))
    with _OWNED_LOCK:
        _OWNED.add(folder)
    try:
        (folder / OWNER_FILE).write_text(f"{os.getpid()} {process_start(os.getpid())}\n")
    except OSError:
        _remove_folder(folder)
        raise
    return folder


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with _OWNED_LOCK:
        _OWNED.discard(folder)


def _remove_owned_folders() -> None:
    """At exit: delete the folders of jobs still running (their daemon threads die with us)."""
    with _OWNED_LOCK:
        folders = list(_OWNED)
    for folder in folders:
        _remove_folder(folder)


atexit.register(_remove_owned_folders)


def check_video_file(name: str, size: int, limit_mb: int) -> None:
    """Raise ValueError with a sentence for the user when a file cannot be accepted
    (unsupported type, empty, over `limit_mb` MB)."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in VIDEO_TYPES:
        raise ValueError(f"{name}: not a supported video type (use {', '.join(VIDEO_TYPES)}).")
    if size > limit_mb * 1024 * 1024:
        raise ValueError(
            f"{name} is {size / 1024 / 1024:.1f} MB, over the {limit_mb} MB upload "
            "limit. Shorten or re-encode the video, or analyse it with "
            "`python -m emotion_core.analyze_video`."
        )
    if size == 0:
        raise ValueError(f"{name} is empty.")


@dataclass(frozen=True)
class JobView:
    """A consistent copy of a job's state for one render. total is 0 while unknown."""

    file_name: str
    done: int
    total: int
    eta_s: float
    elapsed_s: float
    cancelling: bool
    finished: bool
    result: AnalysisResult | None
    error: str | None


class VideoJob(WorkerJob[JobView]):
    """One analysis of the video at `video_path` (a private copy, deleted when the job ends).

    # NOTE: the worker thread writes progress and the outcome under the lock; readers only get
    # JobView copies and may set `cancel`. Nothing here touches a UI.
    """

    def __init__(self, file_name: str, video_path: Path) -> None:
        super().__init__()
        self.job_id = uuid.uuid4().hex[:12]
        self.file_name = file_name
        self.video_path = video_path
        self.cancel = threading.Event()
        self._done = 0
        self._total = 0
        self._eta_s = 0.0
        self._result: AnalysisResult | None = None
        self._error: str | None = None

    def report(self, done: int, total: int, eta_s: float) -> None:
        """analyze_video's progress callback (worker thread)."""
        with self._lock:
            self._done, self._total, self._eta_s = done, total, eta_s

    def finish(self, result: AnalysisResult | None = None, error: str | None = None) -> None:
        """Record the outcome (worker thread)."""
        with self._lock:
            self._result, self._error = result, error
            self._mark_ended()

    def view(self) -> JobView:
        with self._lock:
            return JobView(
                file_name=self.file_name,
                done=self._done,
                total=self._total,
                eta_s=self._eta_s,
                elapsed_s=self._elapsed_s(),
                cancelling=self.cancel.is_set(),
                finished=self._ended is not None,
                result=self._result,
                error=self._error,
            )

    def _user_text(self, text: str) -> str:
        """Messages name the temporary copy; show the original file's name instead."""
        return text.replace(str(self.video_path), self.file_name)

    def run(self, **analysis: Any) -> None:
        """Thread body: analyse (keyword arguments go to analyze_video), record the outcome,
        delete the temporary copy. Every failure becomes `error`, a sentence for the user."""
        try:
            self.report(0, probe_video(self.video_path).frame_count, 0.0)  # the bar's length
            result = analyze_video(
                self.video_path, progress=self.report, cancel=self.cancel, **analysis
            )
            self.finish(result=replace(result, message=self._user_text(result.message)))
        except VideoError as exc:
            self.finish(error=f"Could not analyse the video - {self._user_text(str(exc))}")
        except ModelError as exc:
            self.finish(error=f"The emotion model could not be used: {exc}")
        except DetectorError as exc:
            self.finish(error=f"The face detector could not be started: {exc}")
        except (SessionError, OSError) as exc:
            self.finish(error=f"The session could not be saved: {self._user_text(str(exc))}")
        except Exception as exc:  # noqa: BLE001  shown to the user instead of a dead thread
            self.finish(
                error=f"The analysis failed unexpectedly ({type(exc).__name__}: "
                f"{self._user_text(str(exc))}). Any frames analysed before the failure were kept "
                "in a session marked incomplete."
            )
        finally:
            _remove_folder(self.video_path.parent)


def start_video_job(
    source: BinaryIO,
    file_name: str,
    classifier: Classifier,
    sessions_dir: Path,
    candidate: str = "",
    notes: str = "",
    every: int = 1,
    tta: bool = False,
    thresholds: dict[str, Any] | None = None,
    temp_root: Path | None = None,
) -> VideoJob:
    """Copy `source` (an open binary file, read from the start) to a temporary file in
    temp_root (default: the system temp folder) and start analysing it on a daemon thread.
    The candidate defaults to the file name's stem. Videos that stopped servers left there
    are deleted first. The job is listed by video_jobs() until forget_video_job. Raises OSError
    when the copy cannot be written (nothing is left behind then)."""
    name = safe_file_name(file_name)
    sweep_stale_video_folders(temp_root)
    folder = _new_video_folder(temp_root)
    path = folder / name
    try:
        source.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(source, out, length=COPY_CHUNK)
    except OSError:
        _remove_folder(folder)
        raise
    job = VideoJob(name, path)
    analysis = {
        "sessions_dir": sessions_dir,
        "candidate": candidate.strip() or Path(name).stem,
        "every": every,
        "tta": tta,
        "classifier": classifier,
        "notes": notes,
        "thresholds": thresholds,
    }
    job.start(job.run, "video-job", **analysis)
    with _JOBS_LOCK:
        _JOBS[job.job_id] = job
    return job


# This process's analyses, by job id, oldest first: running, or ended with their outcome not yet
# shown by a page. Any session of the server sees them (a reload, another tab).
_JOBS: dict[str, VideoJob] = {}
_JOBS_LOCK = threading.Lock()


def video_jobs() -> list[VideoJob]:
    """The analyses of this process that run, or that ended and no page has shown yet (see
    forget_video_job), oldest first."""
    with _JOBS_LOCK:
        return list(_JOBS.values())


def running_video_jobs() -> list[VideoJob]:
    """The analyses of this process still running, oldest first."""
    return [job for job in video_jobs() if not job.view().finished]


def forget_video_job(job: VideoJob) -> None:
    """Drop an ended job once a page has shown its outcome (a running one stays listed)."""
    with _JOBS_LOCK:
        if _JOBS.get(job.job_id) is job and job.view().finished:
            del _JOBS[job.job_id]
