"""Training page: check a dataset, launch a training run, watch it, evaluate it and make its
model the app's default.

Thin by design: emotion_core.jobs does the work. A run is a separate process whose state lives
in <models>/runs/<run_id>/ on disk (not in session_state), so reloading the page or opening it
in another tab reattaches to a running job.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` adds the root; AppTest and tools may not
    sys.path.insert(0, str(_ROOT))

import time
from typing import Any

import pandas as pd
import streamlit as st

import ui_common
from emotion_core import registry
from emotion_core.bench import retime_registered
from emotion_core.charts import confusion_chart, curves_chart, speed_accuracy_chart
from emotion_core.classes import CLASSES
from emotion_core.evaluate import EvalReport
from emotion_core.inference import ms_per_face_in_use
from emotion_core.jobs import (
    DatasetSummary,
    DeviceInfo,
    InterruptedActivation,
    JobError,
    RunInfo,
    RunProgress,
    TrainingJobRunner,
    arch_for_init_model,
    detect_device,
    resolve_data_path,
    suggest_model_name,
    summarize_runs,
    teacher_candidates,
    validate_dataset,
)
from emotion_core.registry import ModelCard, ModelError
from emotion_core.report import models_frame, speed_provenance
from emotion_core.train import TrainConfig

POLL_S = 2.0
DEFAULT_DATA = "../shared/data/fer2013"
RUN_KEY = "train_run"
PENDING_RUN_KEY = "train_pending_run"
FLASH_KEY = "train_flash"
SUMMARY_KEY = "train_dataset_summary"
CANCELLING = (
    "Cancelling: training stops after the current batch; the checkpoint of the last whole "
    "epoch is kept."
)
LIVE_BUDGET_MS = 5.0  # per face, the live path's target on a laptop CPU


def runner() -> TrainingJobRunner:
    """A runner on <models dir>/runs (cheap: all state is on disk)."""
    models = ui_common.models_dir()
    return TrainingJobRunner(models / "runs", models_dir=models)


@st.cache_resource(show_spinner="Loading the model zoo...")
def architectures() -> list[str]:
    """Trainable zoo architectures (the '-folded' forms are inference-only)."""
    from emotion_core.zoo import ARCHITECTURES

    return [name for name in ARCHITECTURES if not name.endswith("-folded")]


@st.cache_resource(show_spinner="Checking for a GPU...")
def device() -> DeviceInfo:
    """What the Keras backend sees (the training process sees the same)."""
    return detect_device()


def fmt_duration(seconds: float | None) -> str:
    """'1 h 05 min', '3 min 20 s', '45 s' or '?'."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def flash(kind: str, text: str, where: str = "top") -> None:
    """Show a message after the next rerun, at the show_flash(where) call: the page top, or
    beside a button far down the page (a message at the top would be out of view there)."""
    st.session_state[f"{FLASH_KEY}:{where}"] = (kind, text)


def show_flash(where: str = "top") -> None:
    kind, text = st.session_state.pop(f"{FLASH_KEY}:{where}", ("", ""))
    if text:
        getattr(st, kind)(text)


def show_curves(metrics: pd.DataFrame, hparams: dict[str, Any] | None = None) -> None:
    if metrics.empty:
        if (hparams or {}).get("recalibrated_on"):  # an emotion_core.soup run
            st.caption(
                "No training curves: this run trained no epochs; it averages other runs' "
                "weights or recalibrates batch norm (emotion_core.soup)."
            )
            return
        st.caption("Curves appear after the first epoch.")
        return
    left, right = st.columns(2)
    left.altair_chart(curves_chart(metrics, "loss"), width="stretch")
    right.altair_chart(curves_chart(metrics, "accuracy"), width="stretch")


# ---------------------------------------------------------------- dataset


def show_summary(summary: DatasetSummary) -> None:
    """Counts per class and split, then the problems."""
    for error in summary.errors:
        st.error(error)
    for warning in summary.warnings:
        st.warning(warning)
    if summary.counts:
        st.dataframe(summary.table(), width="stretch")
    if summary.ok:
        splits = ", ".join(f"{s}: {summary.total(s):,}" for s in summary.counts)
        st.success(f"Dataset OK ({splits} images).")


def check_dataset(text: str) -> DatasetSummary:
    """Validate now and remember the result for this path."""
    with st.spinner("Reading the dataset..."):
        summary = validate_dataset(text)
    st.session_state[SUMMARY_KEY] = (text.strip(), summary)
    return summary


def remembered_summary(text: str) -> DatasetSummary | None:
    saved = st.session_state.get(SUMMARY_KEY)
    if saved and saved[0] == text.strip():
        return saved[1]  # type: ignore[no-any-return]
    return None


# ---------------------------------------------------------------- a running job


@st.fragment(run_every=POLL_S)
def live_panel(run_id: str) -> None:
    """Progress, curves, log and Cancel of a running job (re-run every POLL_S seconds)."""
    jobs = runner()
    try:
        progress = jobs.read_progress(run_id)
    except JobError as exc:
        st.error(str(exc))
        return
    info = progress.info
    if not info.running:  # it just ended: redraw the whole page with the results
        st.rerun()
    if info.epochs:
        text = f"Epoch {info.epoch}/{info.epochs} · {info.progress:.0%}"
        text += f" · ETA {fmt_duration(info.eta_s)}" if info.eta_s is not None else ""
    else:
        text = info.message or "starting"
    st.progress(info.progress, text=text)
    if info.message:
        st.caption(info.message)
    show_curves(progress.metrics)
    with st.expander("Log (last lines)", expanded=False):
        st.code(progress.log_tail or "(no output yet)", language=None)
    if (info.path / "CANCEL").exists():
        st.info(CANCELLING)
    elif st.button("Cancel training", key="train_cancel", type="secondary"):
        try:
            jobs.cancel(run_id)
        except JobError as exc:
            st.error(str(exc))
        else:
            st.info(CANCELLING)


# ---------------------------------------------------------------- an ended job


def default_card() -> tuple[ModelCard | None, str]:
    """The current default model's card (its network file there), or None and why."""
    try:
        return registry.default_card(ui_common.models_dir()), ""
    except ModelError as exc:
        return None, str(exc)


def show_card(card: ModelCard) -> None:
    acc = ui_common.accuracy_text(card.val_accuracy, "—")
    f1 = f"{card.val_macro_f1:.3f}" if card.val_macro_f1 is not None else "—"
    c1, c2 = st.columns(2)
    c1.metric("Accuracy", acc)
    c2.metric("Macro-F1", f1)
    runtime, ms = ms_per_face_in_use(card)  # the runtime the app runs it on
    st.caption(
        f"**{card.name}** · {card.arch} · {card.params:,} parameters · {card.epochs} epochs"
        + (f" · {card.date}" if card.date else "")
        + (f" · {ui_common.ms_text(ms)} ms/face on CPU ({runtime})" if ms is not None else "")
    )
    if card.per_class:
        table = pd.DataFrame(card.per_class).T.reindex(list(card.classes))
        st.dataframe(table, width="stretch")


def show_evaluation(evaluation: EvalReport, recalibrated: bool = False) -> None:
    c1, c2 = st.columns(2)
    c1.metric("Accuracy", ui_common.accuracy_text(evaluation.accuracy))
    c2.metric("Macro-F1", f"{evaluation.macro_f1:.3f}")
    when = "batch norm recalibrated" if recalibrated else "before Activate recalibrates batch norm"
    st.caption(f"best.keras on {evaluation.n:,} validation images ({when})")
    per_class = evaluation.per_class_dict()
    if per_class:
        table = pd.DataFrame(per_class).T
        st.dataframe(table.reindex([c for c in CLASSES if c in table.index]), width="stretch")
    if evaluation.confusion_matrix:
        classes = list(evaluation.classes or CLASSES)
        matrix = [list(row) for row in evaluation.confusion_matrix]
        st.altair_chart(confusion_chart(matrix, classes), width="stretch")


def run_label(info: RunInfo) -> str:
    """Selectbox label: only what does not change while the page is open (widget labels can
    stay stale in the browser; the state is shown below instead)."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)) if info.started else ""
    return f"{info.run_id} ({info.arch or '?'}{', started ' + started if started else ''})"


def state_banner(info: RunInfo) -> None:
    head = f"Run **{info.run_id}** {info.state}"
    head += f" after {info.epoch}/{info.epochs} epochs." if info.epochs else "."
    if info.state == "finished":
        st.success(head)
    elif info.state == "failed":
        st.error(f"{head}\n\n{info.message}" if info.message else head)
    elif info.state == "interrupted":
        st.warning(f"{head}\n\n{info.message}")
    else:
        st.warning(head)


def ended_panel(progress: RunProgress, busy: RunInfo | None) -> None:
    """Results, comparison with the default model, Activate and Resume."""
    jobs = runner()
    info = progress.info
    state_banner(info)
    activating = jobs.activating(info.run_id)
    if info.resumable:
        force = True
        if activating:
            st.caption(f"Resume waits until this run's activation as **{activating}** has ended.")
        elif busy is not None:
            force = st.checkbox(
                f"Run {busy.run_id} is running: resume anyway (both jobs run slower)",
                key="train_resume_force",
            )
        disabled = bool(activating) or not force
        if st.button("Resume training", key="train_resume", disabled=disabled):
            try:
                handle = jobs.resume(info.run_id, force=busy is not None and force)
            except JobError as exc:
                st.error(str(exc))
            else:
                flash("success", f"Resumed run {handle.run_id} from its last checkpoint.")
                st.rerun()
    show_curves(progress.metrics, progress.hparams)
    left, right = st.columns(2)
    with left:
        st.markdown("#### This run (validation split)")
        if progress.evaluation:
            show_evaluation(
                progress.evaluation, bool((progress.hparams or {}).get("recalibrated_on"))
            )
        else:
            st.info("No evaluation (eval.json) for this run: it ended before evaluating.")
    with right:
        st.markdown("#### Current default model")
        card, why = default_card()
        if card is not None:
            show_card(card)
        else:
            st.info(f"No default model: {why}")
    with st.expander("Log (last lines)"):
        st.code(progress.log_tail or "(no output)", language=None)
    if not info.has_model:
        st.caption("No best.keras checkpoint: nothing to activate.")
        return
    st.markdown("#### Activate")
    st.caption(
        "Registers this run's best checkpoint (batch norm recalibrated on clean training faces "
        "and folded, temperature calibrated) under a new name and makes it the default model; "
        "the Live page switches to it. It runs in the background (a few minutes for a large "
        "network)."
    )
    if jobs.current_activation() is not None:
        st.caption("Another model is being activated (see the top of the page).")
        return
    # keyed per run: a keyed widget keeps its first value, whatever `value` says later
    name = st.text_input("Model name", value=suggest_model_name(info.run_id, jobs.models_dir),
                         key=activate_name_key(info.run_id),
                         help="Letters, digits, '_', '.', '-'; must not exist yet.")  # fmt: skip
    if st.button("Activate as default model", key="train_activate", type="primary"):
        try:
            jobs.start_activation(info.run_id, name.strip())
        except (ModelError, JobError) as exc:
            st.error(f"Not activated: {exc}. The default model is unchanged.")
        else:
            st.rerun()


@st.fragment(run_every=POLL_S)
def activation_panel() -> None:
    """The running activation's stage, or its outcome once it has ended.

    # NOTE: the job runs on a thread of this server process (emotion_core.jobs), so any tab
    # shows it; this fragment polls it and asks for one full rerun when it has ended.
    """
    jobs = runner()
    job = jobs.current_activation()
    if job is None:
        return
    view = job.view()
    if view.finished:
        jobs.forget_activation(job)
        if view.error:
            flash("error", view.error)
        elif view.card is not None:
            acc = ui_common.accuracy_text(view.card.val_accuracy, "?")
            flash("success", f"Model **{view.card.name}** (validation accuracy {acc}) is now "
                             "the default; the Live page uses it from now on.")  # fmt: skip
            st.session_state.pop(activate_name_key(view.run_id), None)  # a fresh suggestion
        st.rerun()
    stage = f"step {view.step} of {view.steps}: {view.stage}" if view.step else "starting"
    if view.detail:
        stage += f" ({view.detail})"
    st.progress(
        max(view.step - 1, 0) / view.steps,
        text=f"Activating run {view.run_id} as **{view.name}** - {stage}...",
    )
    st.caption(
        f"Running for {fmt_duration(view.elapsed_s)}. The default model changes only when "
        "every step has succeeded."
    )


def show_interrupted_activation(lost: InterruptedActivation | None) -> None:
    """Say once that an activation stopped with its server process, and what that left."""
    if lost is None:
        return
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(lost.started)) if lost.started else "?"
    if lost.registered:
        outcome = (
            f"It had registered **{lost.name}**; check in Registered models below which model "
            "is the default."
        )
    else:
        outcome = (
            "Nothing was registered and the default model is unchanged; activate run "
            f"{lost.run_id} again to publish it."
        )
        if lost.removed:
            outcome += f" Removed the half-written files: {', '.join(lost.removed)}."
    st.warning(
        f"The activation of run {lost.run_id} as **{lost.name}** (started {when}) stopped "
        f"with the server before it ended. {outcome}"
    )


def activate_name_key(run_id: str) -> str:
    """The widget key of the model name box for run_id's Activate."""
    return f"train_activate_name:{run_id}"


# ---------------------------------------------------------------- registered models


def retime_button(models: Path, cpu_busy: bool) -> None:
    """Time every registered model here and write the figures into their cards."""
    clicked = st.button(
        "Time all models on this machine",
        key="train_retime",
        disabled=cpu_busy,
        help="About half a minute: every model's single-face time in 5 interleaved rounds "
        "(`python -m emotion_core.bench models --update-cards`); the results replace the "
        "ms/face figures in the cards, so the column compares. Stop any live stream first: "
        "it shares the CPU.",
    )
    if cpu_busy:
        st.caption("Timing waits until no training run or activation is using the CPU.")
    show_flash("retime")  # after the rerun that redraws the table above with the new figures
    if not clicked:
        return
    with st.spinner("Timing every registered model..."):
        try:
            results, _ = retime_registered(models, rounds=5, repeats=100, update_cards=True)
        except (ModelError, OSError, ValueError) as exc:
            st.error(f"Could not time the models: {exc}")
            return
    timings = ", ".join(f"{r.name} {r.p50_ms:.2f}" for r in sorted(results, key=lambda r: r.p50_ms))
    text = f"Timed here (median ms per face): {timings}."
    if results.skipped:  # a model that does not load is left out; the others are still timed
        why = "; ".join(f"**{name}**: {reason}" for name, reason in results.skipped.items())
        text += f"\n\nNot timed (their cards keep their old figure): {why}"
    flash("warning" if results.skipped else "success", text, where="retime")
    st.rerun()


def show_card_problems(problems: list[str], default: str, models: Path) -> None:
    """A warning naming each model card the table leaves out, and why (the default's first)."""
    if not problems:
        return
    mark = f"{models / default}.json:" if default else None

    def line(problem: str) -> str:
        is_default = mark is not None and problem.startswith(mark)
        return f"- {problem}" + (" **(the default model's card)**" if is_default else "")

    ordered = sorted(problems, key=lambda p: not (mark and p.startswith(mark)))
    st.warning(
        f"{len(problems)} model card(s) in {models} cannot be used, so the table below leaves "
        "them out; fix or remove each file named here:\n\n" + "\n".join(map(line, ordered))
    )


def models_section(activating: bool, training: bool = False) -> None:
    """Every registered model side by side, and a way to make another one the default."""
    models = ui_common.models_dir()
    cards, problems = registry.scan_models(models)
    try:
        default = registry.default_model_name(models)
    except ModelError as exc:
        default = ""
        if cards:
            st.warning(f"No default model: {exc}")
    show_card_problems(problems, default, models)
    if not cards:
        st.info(f"No registered models in {models}. Train a run and activate it.")
        return
    frame = models_frame(cards, default)
    # NOTE: "percent" would drop trailing zeros (71.3% beside 71.55%): shown as percents, 2 places
    in_percent = {col: frame[col] * 100 for col in ("val_accuracy", "val_accuracy_tta")}
    st.dataframe(
        frame.assign(**in_percent),
        hide_index=True,
        width="stretch",
        column_config={
            "default": st.column_config.CheckboxColumn("default"),
            "params_m": st.column_config.NumberColumn("params (M)", format="%.2f"),
            "val_accuracy": st.column_config.NumberColumn("accuracy", format="%.2f%%"),
            "val_accuracy_tta": st.column_config.NumberColumn("flip TTA", format="%.2f%%"),
            "val_macro_f1": st.column_config.NumberColumn("macro-F1", format="%.3f"),
            "ece_after": st.column_config.NumberColumn("ECE", format="%.3f"),
            "ms_per_face": st.column_config.NumberColumn("ms/face", format="%.2f"),
        },
    )
    st.altair_chart(speed_accuracy_chart(frame, LIVE_BUDGET_MS), width="stretch")
    st.caption(
        "Accuracy and macro-F1 on each model's validation split (PublicTest for FER-2013), "
        "without and with flip test-time augmentation; ECE after temperature scaling; median "
        f"CPU time per face, {speed_provenance(cards)} (dashed: the live path's "
        f"{LIVE_BUDGET_MS:.0f} ms budget). The Live page runs the default without TTA."
    )
    retime_button(models, cpu_busy=activating or training)
    others = [name for name in frame["model"] if name != default]  # most accurate first
    if not others:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    choice = c1.selectbox("Make another registered model the default", others,
                          key="train_default_choice")  # fmt: skip
    if c2.button("Make default", key="train_make_default", disabled=activating):
        try:
            registry.set_default(choice, models, verify=True)  # its network loads, fits its card
        except (ModelError, OSError) as exc:  # e.g. a broken network file, a full disk
            st.error(f"The default model is unchanged: {exc}")
        else:
            flash("success", f"Model **{choice}** is now the default; the Live page uses it "
                             "from now on.", where="default")  # fmt: skip
            st.rerun()
    show_flash("default")
    if activating:
        st.caption("Wait for the activation to finish before changing the default.")


# ---------------------------------------------------------------- the new-run form


def new_run_form(busy: RunInfo | None) -> None:
    jobs = runner()
    default_data = DEFAULT_DATA if resolve_data_path(DEFAULT_DATA).exists() else ""
    data_text = st.text_input(
        "Dataset",
        value=default_data,
        key="train_data",
        placeholder="path to fer2013.csv(.gz), a class-folder root or an .npz pack",
        help="FER-2013 CSV (emotion,pixels,Usage), or folders <root>/train/<class>/*.png and "
        "<root>/val/<class>/*.png. Relative paths start at the repository root.",
    )
    if st.button("Check dataset", key="train_check"):
        check_dataset(data_text)
    summary = remembered_summary(data_text)
    if summary is not None:
        show_summary(summary)

    c1, c2, c3, c4 = st.columns(4)
    archs = architectures()
    arch = c1.selectbox("Architecture", archs, index=archs.index("fer-fast")
                        if "fer-fast" in archs else 0, key="train_arch")  # fmt: skip
    epochs = int(c2.number_input("Epochs", 1, 1000, 30, key="train_epochs"))
    batch = int(c3.selectbox("Batch size", [16, 32, 64, 128, 256], index=3, key="train_batch"))
    lr = float(c4.number_input("Learning rate", 1e-5, 1.0, 0.01, format="%.4f", key="train_lr"))
    c1, c2 = st.columns(2)
    augment = c1.checkbox("Augmentation (flip, rotate, shift, zoom, erase)", True,
                          key="train_augment")  # fmt: skip
    weighting = c2.checkbox("Class weighting (for unbalanced classes)", False,
                            key="train_class_weighting")  # fmt: skip
    start_from = st.radio("Start from", ["scratch", "a registered model (fine-tune)"],
                          horizontal=True, key="train_init")  # fmt: skip
    init_card: ModelCard | None = None
    if start_from != "scratch":
        cards = registry.list_models(ui_common.models_dir())
        if cards:
            names = [c.name for c in cards]
            chosen = st.selectbox("Model to fine-tune", names, key="train_init_model")
            init_card = cards[names.index(chosen)]
            st.caption(f"Fine-tuning keeps {init_card.name}'s architecture ({init_card.arch}); "
                       "a smaller learning rate (e.g. 0.001) usually works better.")  # fmt: skip
        else:
            st.info("No registered models to fine-tune yet.")
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        max_samples = int(a1.number_input("Max training images (0 = all)", 0, 10_000_000, 0,
                                          key="train_max_samples"))  # fmt: skip
        patience = int(a2.number_input("Early-stopping patience (epochs, 0 = off)", 0, 1000, 30,
                                       key="train_patience"))  # fmt: skip
        data_path = resolve_data_path(data_text) if data_text.strip() else None
        teachers = teacher_candidates(ui_common.models_dir(), data_path)
        teacher_label = st.selectbox(
            "Distil from a teacher (optional)", ["none", *teachers], key="train_teacher",
            help="A bigger, more accurate model (e.g. a vgg-m run trained on a GPU). Its "
            "probabilities on the training images are mixed into the targets; computing them "
            "takes a few minutes on CPU before the first epoch. With a FER-2013 CSV that has "
            "the FER+ votes beside it, the ten annotators' votes per face can be mixed in "
            "instead (weight 0.3 and temperature 1 worked best; measured in README).",
        )  # fmt: skip
        # NOTE: only a network (.keras) can run on each augmented view; votes are fixed targets.
        network = teacher_label in teachers and teachers[teacher_label].suffix == ".keras"
        live = st.checkbox(
            "Run the teacher on every augmented view (live distillation)", key="train_live",
            help="The teacher sees exactly the shifted, rotated, partly erased face the student "
            "sees, in every step, instead of giving fixed probabilities of the clean faces. "
            "Slower per step (a vgg-m40 student with a vgg-m40 teacher: ~5% on CPU); needs "
            "augmentation on (a registered model published without its augmentation layer "
            "gets a new one). Not for the FER+ votes, which belong to the face, not the view.",
            disabled=teacher_label in teachers and not network,
        )  # fmt: skip
        t1, t2 = st.columns(2)
        alpha = float(t1.number_input("Teacher weight (alpha)", 0.0, 1.0, 0.5, 0.1,
                                      key="train_distill_alpha"))  # fmt: skip
        temperature = float(t2.number_input("Teacher temperature", 0.5, 10.0, 2.0, 0.5,
                                            key="train_distill_temperature"))  # fmt: skip

    force = False
    if busy is not None:
        st.warning(f"Run **{busy.run_id}** is still running. One job at a time keeps both fast.")
        force = st.checkbox("Start another job anyway (both run slower)", key="train_force")
    if st.button("Start training", key="train_start", type="primary",
                 disabled=busy is not None and not force):  # fmt: skip
        if start_from != "scratch" and init_card is None:
            st.error("Choose a registered model to fine-tune, or start from scratch.")
            return
        if summary is None:
            summary = check_dataset(data_text)
            show_summary(summary)
        if not summary.ok:
            st.error("Training not started: fix the dataset problems above.")
            return
        init_path = (
            registry.model_path(init_card.name, ui_common.models_dir()) if init_card else None
        )
        config = TrainConfig(
            data=data_text.strip(),  # a relative path: from the project root (jobs.start)
            arch=arch_for_init_model(init_path, init_card.arch) if init_card and init_path
            else arch,
            epochs=epochs, batch_size=batch, learning_rate=lr, augment=augment,
            class_weighting=weighting, patience=patience, max_train_samples=max_samples,
            init_model=str(init_path) if init_path else "",
            teacher=str(teachers[teacher_label]) if teacher_label in teachers else "",
            distill_alpha=alpha, distill_temperature=temperature,
            live_teacher=live and network,
        )  # fmt: skip
        try:
            handle = jobs.start(config, force=force)
        except (JobError, ModelError) as exc:
            st.error(f"Training not started: {exc}")
            return
        st.session_state[PENDING_RUN_KEY] = handle.run_id
        flash("success", f"Started run **{handle.run_id}** (pid {handle.pid}).")
        st.rerun()


# ---------------------------------------------------------------- page


def main() -> None:
    ui_common.page_nav(settings_follow=False)
    st.title("Training")
    device_slot = st.empty()  # filled last: the first check imports TensorFlow (seconds)
    show_flash()
    jobs = runner()
    if jobs.current_activation() is not None:
        activation_panel()
    else:
        show_interrupted_activation(jobs.recover_interrupted_activation())
    runs = jobs.list_runs()
    busy = next((r for r in runs if r.running), None)

    st.subheader("Runs")
    if runs:
        by_id = {r.run_id: r for r in runs}
        pending = st.session_state.pop(PENDING_RUN_KEY, None)
        if pending in by_id:
            st.session_state[RUN_KEY] = pending
        if st.session_state.get(RUN_KEY) not in by_id:
            st.session_state[RUN_KEY] = (busy or runs[0]).run_id
        run_id = st.selectbox(
            "Run", list(by_id), key=RUN_KEY,
            format_func=lambda rid: run_label(by_id[rid]),
        )  # fmt: skip
        info = by_id[run_id]
        if info.running:
            live_panel(run_id)
        else:
            try:
                ended_panel(jobs.read_progress(run_id), busy)
            except JobError as exc:
                st.error(str(exc))
        with st.expander(f"All runs ({len(runs)}) in {jobs.runs_dir}"):
            st.dataframe(summarize_runs(runs), hide_index=True, width="stretch")
    else:
        st.info(f"No training runs yet in {jobs.runs_dir}. Start one below.")

    st.subheader("Registered models")
    models_section(activating=jobs.current_activation() is not None, training=busy is not None)

    st.subheader("New training run")
    new_run_form(busy)
    device_slot.caption(device().summary)


main()
