"""Analysis page: pick recorded (or uploaded) sessions, see their statistics, verdicts and
comparisons, export a summary CSV and an HTML report.

Thin by design: inputs are read here, sessions are loaded by emotion_core.sessions.collect,
all numbers come from emotion_core.stats / emotion_core.nervousness, tables and exports from
emotion_core.report.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` adds the root; AppTest and tools may not
    sys.path.insert(0, str(_ROOT))

import pandas as pd
import streamlit as st

import ui_common
from emotion_core.charts import comparison_chart, distribution_ci_chart, timeline_chart
from emotion_core.nervousness import (
    NervousnessRule,
    evaluate_distribution,
    evaluate_rule,
    per_face_table,
)
from emotion_core.registry import ModelCard, ModelError, read_card
from emotion_core.report import (
    RESPONSIBLE_USE,
    analysis_settings_text,
    build_html_report,
    export_meta,
    pairs_frame,
    per_class_frame,
    summary_csv,
    verdicts_frame,
)
from emotion_core.sessions import (
    LoadedSession,
    Session,
    SessionError,
    collect,
    delete_session,
    file_stamp,
    list_sessions,
    load_session,
    session_table,
    sessions_dir_default,
)
from emotion_core.stats import (
    BASIS_LABELS,
    BootstrapConfig,
    Comparison,
    SessionStats,
    compare_sessions,
    resolve_range,
    summarize_session,
    timeline,
)

SELECT_KEY = "an_selected"
DETAIL_KEY = "an_detail"
MESSAGE_KEY = "an_message"


# ------------------------------------------------------------------------------------------
# Cached computations (keys include file mtimes, so edits and new recordings are picked up)
# ------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def _load(path: str, stamp: tuple[float, float]) -> Session:
    return load_session(Path(path))


def _load_folder(folder: Path) -> Session:
    return _load(str(folder), file_stamp(folder))


CfgKey = tuple[tuple[str, Any], ...]


def _cfg_key(cfg: BootstrapConfig) -> CfgKey:
    """A hashable form of the config for st.cache_data (rebuilt with BootstrapConfig(**dict))."""
    return tuple(sorted(asdict(cfg).items()))


@st.cache_data(show_spinner="Computing statistics...", max_entries=256)
def _stats(
    key: str,
    _frames: pd.DataFrame,
    name: str,
    cfg_key: CfgKey,
    t_range: tuple[float, float] | None,
) -> SessionStats:
    cfg = BootstrapConfig(**dict(cfg_key))
    return summarize_session(_frames, name, cfg, t_range)


@st.cache_data(show_spinner="Comparing sessions...", max_entries=64)
def _compare(
    keys: tuple[str, ...],
    _frames: list[pd.DataFrame],
    names: tuple[str, ...],
    basis: str,
    cfg_key: CfgKey,
) -> Comparison:
    cfg = BootstrapConfig(**dict(cfg_key))
    return compare_sessions(_frames, list(names), basis, cfg)  # type: ignore[arg-type]


@st.cache_data(show_spinner=False, max_entries=32, ttl=60)
def _card(models_dir: str, model_name: str) -> dict[str, Any] | None:
    """The card of the model a session was recorded with, from the registry in use."""
    if not model_name:
        return None
    try:
        return read_card(model_name, Path(models_dir)).to_dict()
    except ModelError:
        return None


# ------------------------------------------------------------------------------------------
# Page sections
# ------------------------------------------------------------------------------------------


def _label(info: Any) -> str:
    date = (info.started_at or "")[:16].replace("T", " ")
    return f"{info.candidate or '(no name)'} - {date or 'no date'} - {info.session_id}"


def _confirm_key(session_id: str) -> str:
    # NOTE: a keyed widget keeps its value when its label changes, so one shared key would carry
    # a ticked "delete A" over to session B once B is picked; one key per session cannot.
    return f"an_delete_confirm:{session_id}"


def _on_delete(session_id: str, sessions_dir: Path) -> None:
    try:
        delete_session(session_id, sessions_dir)
    except SessionError as exc:
        st.session_state[MESSAGE_KEY] = ("error", str(exc))
        return
    st.session_state[MESSAGE_KEY] = ("success", f"Deleted session {session_id}.")
    selected = st.session_state.get(SELECT_KEY) or []
    st.session_state[SELECT_KEY] = [s for s in selected if s != session_id]
    st.session_state.pop(_confirm_key(session_id), None)


def sessions_section(sessions_dir: Path) -> list[LoadedSession]:
    """Session table, selection, uploads and deletion; returns the sessions that loaded."""
    st.subheader("Sessions")
    message = st.session_state.pop(MESSAGE_KEY, None)
    if message:
        (st.error if message[0] == "error" else st.success)(message[1])
    listed = True
    try:
        infos = list_sessions(sessions_dir)
    except SessionError as exc:  # e.g. EMOTION_SESSIONS_DIR names a file, not a folder
        st.error(f"Cannot list recorded sessions - {exc}. Uploads below still work.")
        infos, listed = [], False
    ok = [i for i in infos if i.error is None]
    broken = [i for i in infos if i.error is not None]
    if infos:
        table = session_table(infos)
        st.dataframe(table, hide_index=True, width="stretch")
    elif listed:
        st.info(
            f"No recorded sessions in {sessions_dir}. Record one on the Live page or upload "
            "a session CSV below."
        )
    for info in broken:
        st.error(f"Cannot load session {info.session_id}: {info.error}")

    by_id = {i.session_id: i for i in ok}
    # A session chosen elsewhere (Video page, or a ?session=ID link) is selected once.
    chosen = st.session_state.pop(ui_common.PRESELECT_KEY, None)
    preselect = chosen or st.query_params.get("session")
    if "session" in st.query_params:
        del st.query_params["session"]
    if preselect in by_id:
        st.session_state[SELECT_KEY] = [preselect]
    elif SELECT_KEY not in st.session_state:
        st.session_state[SELECT_KEY] = [ok[0].session_id] if ok else []
    else:
        st.session_state[SELECT_KEY] = [s for s in st.session_state[SELECT_KEY] if s in by_id]
    selected = st.multiselect(
        "Sessions to analyse",
        list(by_id),
        key=SELECT_KEY,
        format_func=lambda sid: _label(by_id[sid]),
    )
    uploads = st.file_uploader(
        f"...or upload session CSV files (frames.csv format, at most {ui_common.MAX_UPLOAD_MB} "
        "MB each)",
        type=["csv"],
        accept_multiple_files=True,
        max_upload_size=ui_common.MAX_UPLOAD_MB,
        key="an_uploads",
    )

    loaded, problems = collect(
        [by_id[sid] for sid in selected],
        [(up.name, up.getvalue()) for up in uploads or []],
        _load_folder,
        ui_common.MAX_UPLOAD_BYTES,
    )
    for problem in problems:
        st.error(problem)
    for item in loaded:  # rows left out while loading (a cut-off last line, a few bad rows)
        for note in item.session.warnings:
            st.warning(f"{ui_common.plain(item.name)}: {note}")

    if infos:
        with st.expander("Delete a session"):
            target = st.selectbox(
                "Session to delete",
                [i.session_id for i in infos],
                key="an_delete_target",
                format_func=lambda sid: _label(by_id[sid]) if sid in by_id else sid,
            )
            confirm = st.checkbox(
                f"Yes, permanently delete {target} (its frames and metadata)",
                key=_confirm_key(target),
            )
            st.button(
                "Delete session",
                key="an_delete",
                disabled=not confirm,
                on_click=_on_delete,
                args=(target, sessions_dir),
                type="primary",
            )
    return loaded


def detail_section(
    item: LoadedSession, rule: NervousnessRule, cfg: BootstrapConfig
) -> tuple[SessionStats, Any, tuple[float, float] | None, Any, int | None]:
    """One session: time range, timeline, distribution, verdict + model accuracy (and the
    face chosen, if any, for the report)."""
    frames = item.session.frames
    meta = item.session.meta
    full = _stats(item.key, frames, item.name, _cfg_key(cfg), None)
    face_id: int | None = None
    if full.faces_seen > 1:
        choice = st.selectbox(
            "Face",
            ["all faces", *[f.face_id for f in full.faces]],
            key=f"an_face_{item.key}",
            format_func=lambda f: f if isinstance(f, str) else f"face {f}",
        )
        face_id = None if isinstance(choice, str) else int(str(choice))

    t0, t1 = float(frames["t_s"].min()), float(frames["t_s"].max())
    slider: tuple[float, float] | None = None
    if t1 - t0 >= 1.0:
        slider = st.slider(
            "Time range (s) - or drag on the timeline to select",
            min_value=float(math.floor(t0)),
            max_value=float(math.floor(t1) + 1),
            value=(float(math.floor(t0)), float(math.floor(t1) + 1)),
            step=1.0,
            key=f"an_range_{item.key}",
        )

    tl = timeline(frames, step_s=1.0, smooth_s=3.0, face_id=face_id)
    st.markdown(
        f"**Timeline** (per-class probability, {tl.step_s:g} s steps, {tl.smooth_s:g} s rolling"
        " mean)"
    )
    event = st.altair_chart(
        timeline_chart(tl.long()),
        on_select="rerun",
        selection_mode="brush",
        key=f"an_tl_{item.key}",
        width="stretch",
    )
    try:
        brush = event.selection.get("brush", {}).get("t_s")  # type: ignore[union-attr]
    except AttributeError:
        brush = None
    t_range = resolve_range(t0, t1, slider, brush)
    if brushed := resolve_range(t0, t1, None, brush):  # the brush, which wins over the slider
        st.caption(
            f"Brushed range {brushed[0]:.1f}-{brushed[1]:.1f} s (clear the brush to use "
            "the slider)."
        )

    s = full if t_range is None else _stats(item.key, frames, item.name, _cfg_key(cfg), t_range)
    if t_range is not None:
        st.caption(f"Statistics below cover {t_range[0]:.1f}-{t_range[1]:.1f} s.")
    cols = st.columns(4)
    cols[0].metric("Duration", f"{s.duration_s:.1f} s")
    cols[1].metric("Frames", s.n_frames)
    cols[2].metric("Frames with no face", s.n_frames_no_face)
    cols[3].metric("Faces seen", s.faces_seen)

    dist = s.distribution_of(face_id)
    df = dist.to_frame()
    widened = (
        f", widened x{dist.widen:.2f} for having few blocks"
        if math.isfinite(dist.widen) and dist.widen > 1.005
        else ""
    )
    st.markdown(
        f"**Emotion distribution** ({dist.confidence * 100:.0f}% intervals from a circular block "
        f"bootstrap over time: {dist.block_s:.1f} s blocks, {dist.n_boot} replicates{widened})"
    )
    if dist.intervals_warning:
        st.warning(dist.intervals_warning)
    if dist.n_obs == 0:
        st.warning("No face in this range: nothing to show.")
    else:
        c1, c2 = st.columns(2)
        c1.altair_chart(distribution_ci_chart(df, "share", rule), width="stretch")
        c2.altair_chart(distribution_ci_chart(df, "mean_prob", rule), width="stretch")

    result = evaluate_distribution(rule, dist, s.duration_s)
    v_col, m_col = st.columns([3, 2])
    with v_col:
        ui_common.render_verdict(result)
        if result.confidence is not None and result.confidence > dist.confidence:
            st.caption(
                f"The verdict uses {result.confidence:.1%} intervals (Bonferroni-adjusted for "
                f"the rule's {len(rule.thresholds)} emotions); the charts show "
                f"{dist.confidence:.0%}."
            )
    card = _card(str(ui_common.models_dir()), str(meta.get("model_name") or ""))
    with m_col:
        name = meta.get("model_name") or "unknown"
        per_class = per_class_frame(card)
        if per_class is not None:
            acc = card.get("val_accuracy") if card else None
            acc_text = (
                f", validation accuracy {ui_common.accuracy_text(acc)}"
                if isinstance(acc, float)
                else ""
            )
            st.markdown(f"**How reliable is each label?** Model `{name}`{acc_text}, per class:")
            used = set(rule.emotions)
            per_class.insert(1, "in rule", per_class["class"].isin(used))
            st.dataframe(per_class, hide_index=True, width="stretch")
            st.caption(
                "recall = per-class accuracy (share of faces showing that expression that the "
                "model labels correctly); precision = how often the label is right when given. "
                "Measured on the validation split, not on this candidate."
            )
            st.caption(analysis_settings_text(meta, card))
        else:
            st.info(f"No per-class accuracy available for model '{name}' (model card missing).")

    if face_id is None and len(s.faces) > 1:
        st.markdown("**Per face** (share of its observations by top label, weighted by time)")
        st.dataframe(pd.DataFrame(per_face_table(rule, s)), hide_index=True, width="stretch")
    return s, result, t_range, (card, tl), face_id


def main() -> None:
    ui_common.page_nav()
    st.title("Session analysis")
    st.caption(
        "The nervousness verdict is a heuristic indicator from a facial-expression classifier - "
        "not a measurement of anxiety and not a hiring signal. See README.md, section "
        "'Responsible use'."
    )
    rule = ui_common.rule_sidebar()
    cfg = ui_common.stats_sidebar()
    sessions_dir = sessions_dir_default()
    st.sidebar.caption(f"Sessions folder: {sessions_dir}")

    loaded = sessions_section(sessions_dir)
    if not loaded:
        st.info("Select or upload a session to analyse it.")
        return

    # Verdicts for every loaded session (recomputed whenever the rule changes).
    entries = []
    for item in loaded:
        s_full = _stats(item.key, item.session.frames, item.name, _cfg_key(cfg), None)
        entries.append((item, s_full, evaluate_rule(rule, s_full)))
    st.subheader("Verdicts")
    st.dataframe(
        verdicts_frame([(i.name, s_, r) for i, s_, r in entries]), hide_index=True, width="stretch"
    )
    st.caption(rule.describe())

    st.subheader("Session detail")
    names = [item.name for item in loaded]
    if st.session_state.get(DETAIL_KEY) not in names:
        st.session_state[DETAIL_KEY] = names[0]
    detail_name = st.selectbox("Session", names, key=DETAIL_KEY)
    item = next(i for i in loaded if i.name == detail_name)
    s, result, t_range, (card, tl), face_id = detail_section(item, rule, cfg)

    comparison: Comparison | None = None
    if len(loaded) >= 2:
        st.subheader("Comparison")
        basis = st.radio(
            "Compare by",
            ["share", "mean_prob"],
            key="an_cmp_basis",
            horizontal=True,
            format_func=lambda b: BASIS_LABELS[b],
        )
        comparison = _compare(
            tuple(i.key for i in loaded),
            [i.session.frames for i in loaded],
            tuple(i.name for i in loaded),
            basis,
            _cfg_key(cfg),
        )
        st.altair_chart(comparison_chart(comparison), width="stretch")
        st.info(ui_common.plain(comparison.sentence))
        st.caption(
            f"Block permutation test: whole {comparison.block_s:.1f} s windows shuffled between "
            f"sessions, {comparison.n_perm} permutations; effect size = Jensen-Shannon distance "
            "(0 = identical, 1 = no overlap)."
        )
        if len(comparison.pairs) > 1:
            st.dataframe(pairs_frame(comparison), hide_index=True, width="stretch")

    st.subheader("Export")
    csv_text = summary_csv([(export_meta(i.session), s_, r) for i, s_, r in entries])
    card_obj: ModelCard | dict[str, Any] | None = card
    html_text = build_html_report(
        export_meta(item.session), s, result, rule, card_obj, tl, comparison, t_range, face_id
    )
    e1, e2 = st.columns(2)
    e1.download_button(
        "Summary CSV (all loaded sessions)",
        csv_text,
        file_name="emotion_summary.csv",
        mime="text/csv",
        key="an_dl_csv",
        on_click="ignore",
    )
    e2.download_button(
        f"HTML report ({ui_common.plain(item.name)}"
        f"{'' if face_id is None else f', face {face_id}'})",
        html_text,
        file_name=f"report_{item.session.info.session_id}.html".replace("/", "_"),
        mime="text/html",
        key="an_dl_html",
        on_click="ignore",
    )
    with st.expander("Responsible use"):
        st.write(RESPONSIBLE_USE)


main()
