"""Video analysis page: upload a recorded interview, analyse it into a session (the same format
as a live recording) and open it on the Analysis page.

Thin by design: emotion_core.video_job runs the analysis on a worker thread; this page only
collects the inputs, starts the job, polls its lock-guarded progress and shows the outcome.
Analyses are kept server-wide (video_job.video_jobs): every session shows those still running
(progress, Cancel) and warns before a second one is started; a session that started none (a
reload, a new tab) follows the oldest one and shows its outcome.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` adds the root; AppTest and tools may not
    sys.path.insert(0, str(_ROOT))

import os  # isort: skip
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.uploaded_file_manager import UploadedFile

import ui_common
from emotion_core.inference import EmotionClassifier
from emotion_core.sessions import sessions_dir_default
from emotion_core.video_job import (
    VIDEO_TYPES,
    JobView,
    VideoJob,
    check_video_file,
    forget_video_job,
    running_video_jobs,
    start_video_job,
    sweep_stale_video_folders,
    video_jobs,
)

MAX_MB_ENV = "EMOTION_MAX_VIDEO_MB"
DEFAULT_MAX_MB = 200
JOB_KEY = "video_job"
MESSAGE_KEY = "video_message"
UPLOAD_KEY = "video_upload"
CANDIDATE_KEY = "video_candidate"
NOTES_KEY = "video_notes"
CONSENT_KEY = "video_consent"
EVERY_KEY = "video_every"
MODEL_KEY = "video_model"
TTA_KEY = "video_tta"
FORCE_KEY = "video_force"
NEW_CANDIDATE_KEY = "video_new_candidate"  # set once an analysis starts: clear the form
CANCEL_KEY = "video_cancel_{}"  # .format(job.job_id)
ANALYSIS_PAGE = "pages/2_Analysis.py"
POLL_S = 1.0


def max_video_mb() -> tuple[int, str | None]:
    """The upload limit in MB ($EMOTION_MAX_VIDEO_MB, default 200, capped by the server's
    server.maxUploadSize) and a warning when the setting could not be used as given."""
    server_mb = int(st.get_option("server.maxUploadSize"))
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    try:
        wanted = int(raw) if raw else DEFAULT_MAX_MB
        if wanted < 1:
            raise ValueError(raw)
    except ValueError:
        limit = min(DEFAULT_MAX_MB, server_mb)
        return limit, f"{MAX_MB_ENV}={raw!r} is not a positive whole number; using {limit} MB."
    if wanted > server_mb:
        return server_mb, (
            f"{MAX_MB_ENV}={wanted} is above the server's upload limit; using {server_mb} MB "
            "(raise server.maxUploadSize in .streamlit/config.toml)."
        )
    return wanted, None


@st.cache_resource(show_spinner=False)
def sweep_leftover_uploads() -> int:
    """Once per server process: delete the uploads a stopped server left in the temp folder."""
    return len(sweep_stale_video_folders())


def start_job(
    upload: UploadedFile,
    classifier: EmotionClassifier,
    candidate: str,
    notes: str,
    every: int,
    tta: bool,
    thresholds: dict[str, Any],
) -> VideoJob:
    """Start analysing the upload on a worker thread (emotion_core.video_job)."""
    return start_video_job(
        upload, upload.name, classifier, sessions_dir_default(),
        candidate=candidate, notes=notes, every=every, tta=tta, thresholds=thresholds,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def followed_job() -> VideoJob | None:
    """The analysis whose outcome this session shows: the one it started, else (a reload, a new
    tab) the oldest one in this server that runs or whose outcome no page has shown yet."""
    job: VideoJob | None = st.session_state.get(JOB_KEY)
    if job is None:
        job = next(iter(video_jobs()), None)
        if job is not None:
            st.session_state[JOB_KEY] = job
    return job


@st.fragment(run_every=POLL_S)
def progress_panel(shown: tuple[str, ...]) -> None:
    """Progress bar, ETA and Cancel of each analysis running in this server (ids `shown`).

    # NOTE: a fragment re-run every POLL_S seconds by the browser (only while it is rendered,
    # i.e. while analyses run); when the running ones change (one ended, another tab started
    # one) it asks for one full rerun, which shows outcomes and stops the polling once none runs.
    """
    running = running_video_jobs()
    if tuple(job.job_id for job in running) != shown:
        st.rerun()
    for job in running:
        job_progress(job)


def job_progress(job: VideoJob) -> None:
    """One running analysis: its bar, how long it runs, Cancel."""
    view = job.view()
    if view.total > 0:
        fraction = min(1.0, view.done / view.total)
        eta = f"about {_duration(view.eta_s)} left" if view.done else "starting..."
        text = f"{view.file_name}: frame {view.done:,} of {view.total:,} - {eta}"
    else:
        fraction = 0.0
        length = "starting..." if view.done == 0 else "length unknown"
        text = f"{view.file_name}: frame {view.done:,} ({length})"
    st.progress(fraction, text=text)
    st.caption(f"Running for {_duration(view.elapsed_s)}.")
    st.button(
        "Cancel",
        key=CANCEL_KEY.format(job.job_id),
        icon=":material/cancel:",
        on_click=job.cancel.set,
        disabled=view.cancelling,
    )
    if view.cancelling:
        st.info("Cancelling: the frames analysed so far are kept in an incomplete session.")


def may_start_another(running: list[VideoJob]) -> bool:
    """Warn when analyses run in this server; True when one may start (none runs, or the user
    ticked "anyway")."""
    if not running:
        return True
    names = ", ".join(f"**{job.file_name}**" for job in running)
    st.warning(
        f"An analysis is running in this server ({names}); its progress and Cancel are below. "
        "Analyses share the CPU: one at a time keeps each fast."
    )
    return st.checkbox("Start another analysis anyway (both run slower)", key=FORCE_KEY)


def outcome_panel(view: JobView) -> None:
    """The result of a finished job: summary, numbers and a way to the Analysis page."""
    if view.error:
        st.error(view.error)
        st.caption("No complete session was saved. Choose another file and start again.")
        return
    result = view.result
    if result is None:
        return
    if not result.complete:
        st.warning(
            f"The session is incomplete: {result.message}. The frames analysed so far were kept "
            "and the session is marked incomplete."
        )
    elif result.faces == 0:
        st.warning(
            f"Analysis finished, but {result.message}. Check that the face is visible, frontal "
            "and not too small, or try analysing more frames."
        )
    else:
        st.success(f"Analysis finished: {result.message}.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Frames analysed", f"{result.frames:,}")
    c2.metric("Face detections", f"{result.faces:,}")
    c3.metric(
        "Speed vs real time",
        f"{result.speed:.1f}x",
        help=f"{result.video_seconds:.1f} s of video in {result.wall_seconds:.1f} s",
    )
    c4.metric("Session", "complete" if result.complete else "incomplete")
    session_id = result.session_dir.name
    st.caption(f"Session `{session_id}` saved in `{result.session_dir.parent}`.")
    if st.button("Open in Analysis", key="video_open", icon=":material/analytics:"):
        st.session_state[ui_common.PRESELECT_KEY] = session_id
        try:
            st.switch_page(ANALYSIS_PAGE)
        except StreamlitAPIException:  # e.g. this page run on its own, without app.py
            st.info(f"Open the Analysis page and select session {session_id}.")


def main() -> None:
    st.set_page_config(page_title="Video analysis - Emotion analytics", page_icon="🎬")
    ui_common.page_nav()
    st.title("🎬 Video analysis")
    sweep_leftover_uploads()
    limit_mb, limit_warning = max_video_mb()
    st.caption(
        f"Analyse a recorded interview ({', '.join(VIDEO_TYPES)}; **at most {limit_mb} MB**) "
        "into a session like a live recording, then study it on the Analysis page."
    )
    if limit_warning:
        st.warning(limit_warning)

    default_card, version = ui_common.default_model_or_stop("videos cannot be analysed")
    job = followed_job()
    running_jobs = running_video_jobs()
    locked = not may_start_another(running_jobs)  # the inputs too, while "anyway" is not ticked
    # NOTE: offline analysis may trade speed for accuracy, so any registered model can run it.
    card = ui_common.model_choice(default_card, MODEL_KEY, disabled=locked)
    ui_common.model_sidebar(card)
    if st.session_state.pop(NEW_CANDIDATE_KEY, False):
        # consent, name and notes were for the video that started: the next one asks again
        for key in (CONSENT_KEY, CANDIDATE_KEY, NOTES_KEY):
            st.session_state.pop(key, None)
    classifier = ui_common.classifier_or_error(
        card, version, hint="\n\nChoose another model in the sidebar."
    )
    upload = st.file_uploader(
        f"Video file (at most {limit_mb} MB)",
        type=VIDEO_TYPES,
        key=UPLOAD_KEY,
        max_upload_size=limit_mb,
        disabled=locked,
    )
    upload_error = None
    if upload is not None:
        try:
            check_video_file(upload.name, upload.size, limit_mb)
        except ValueError as exc:
            upload_error = str(exc)
            st.error(upload_error)
    st.text_input(
        "Candidate name", key=CANDIDATE_KEY, max_chars=200, disabled=locked,
        placeholder="default: the file name",
    )  # fmt: skip
    st.text_area("Notes", key=NOTES_KEY, height=68, max_chars=10_000, disabled=locked)
    c1, c2 = st.columns(2)
    every = c1.number_input(
        "Analyse every N-th frame", min_value=1, max_value=100, value=1, step=1, key=EVERY_KEY,
        disabled=locked,
        help="1 analyses every frame; 3 analyses a third of them, about 3x faster.",
    )  # fmt: skip
    tta = c2.checkbox(
        "Mirror test-time augmentation (slower)", key=TTA_KEY, disabled=locked,
        help="Classify each face and its mirror image and average the two.",
    )  # fmt: skip
    consent = st.checkbox(ui_common.CONSENT_LABEL, key=CONSENT_KEY, disabled=locked)
    st.caption(ui_common.stored_statement(sessions_dir_default(), video=True))
    ready = consent and upload is not None and upload_error is None and classifier is not None
    clicked = st.button(
        "Start analysis", key="video_start", type="primary", icon=":material/play_arrow:",
        disabled=locked or not ready,
    )  # fmt: skip
    if not locked and not consent:
        st.caption("The analysis can start only after the candidate has consented.")
    elif not locked and upload is None:
        st.caption("Choose a video file to analyse.")

    if clicked and ready and not locked and upload is not None and classifier is not None:
        st.session_state.pop(MESSAGE_KEY, None)
        try:
            st.session_state[JOB_KEY] = start_job(
                upload,
                classifier,
                st.session_state.get(CANDIDATE_KEY, ""),
                st.session_state.get(NOTES_KEY, ""),
                int(every),
                bool(tta),
                ui_common.current_rule().to_dict(),
            )
            st.session_state[NEW_CANDIDATE_KEY] = True
        except OSError as exc:
            st.session_state[MESSAGE_KEY] = f"The upload could not be stored for analysis: {exc}"
        st.rerun()
    message = st.session_state.get(MESSAGE_KEY)
    if message:
        st.error(message)

    if running_jobs:
        st.subheader("Progress")
        progress_panel(tuple(j.job_id for j in running_jobs))
    if job is not None and (view := job.view()).finished:
        st.subheader("Result")
        outcome_panel(view)
        forget_video_job(job)


main()
