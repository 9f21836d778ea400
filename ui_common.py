"""Shared Streamlit UI: the page list and the nervousness-rule sidebar used by the pages.

The current rule lives in ``st.session_state[RULE_KEY]`` as a dict (NervousnessRule.to_dict()),
so it survives page switches; the sidebar widgets (keys starting with ``rule_``) are rebuilt
from it whenever a page renders them. On first use the rule comes from the saved settings file
(emotion_core.settings), falling back to the built-in default.

Live page usage::

    rule = ui_common.rule_sidebar()
    result = evaluate_rule_on_counts(rule, counts, mean_probs, frames_with_face, elapsed_s)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from emotion_core import inference, registry
from emotion_core.classes import CLASSES
from emotion_core.nervousness import (
    DEFAULT_RULE,
    DISCLAIMER,
    LOGICS,
    MAX_MIN_DURATION_S,
    PRESETS,
    NervousnessResult,
    NervousnessRule,
    RuleError,
)
from emotion_core.sessions import BYTES_PER_MB
from emotion_core.settings import (
    AUTO_BLOCK_RANGE,
    BLOCK_S_RANGE,
    CONFIDENCE_LEVELS,
    N_BOOT_RANGE,
    Settings,
    SettingsError,
    load_settings_leniently,
    save_defaults,
    settings_path,
)
from emotion_core.stats import BASIS_LABELS, BootstrapConfig


def keep_keras_session() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    # NOTE: Streamlit 1.67 does it (script_runner._clean_problem_modules) whenever keras is
    # imported; in Keras 3 that is a full gc.collect() holding the GIL for ~0.4 s here. The
    # Video and Training pages poll in fragments every 1-2 s (each poll is a script run), so
    # the worker threads doing the real work (video analysis, the live stream) were starved.
    # The app keeps no per-run Keras state to clear: models are loaded once and cached.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = _no_cleanup


def _no_cleanup() -> None:
    """What runs after each script run instead of Streamlit's Keras/pyplot clean-up."""


keep_keras_session()

RULE_KEY = "nervousness_rule"
STATS_KEY = "analysis_stats_settings"
SETTINGS_ERROR_KEY = "settings_error"
CUSTOM = "custom"
W_PRESET = "rule_preset"
W_EMOTIONS = "rule_emotions"
W_LOGIC = "rule_logic"
W_BASIS = "rule_basis"
W_SUM = "rule_sum_threshold_pct"
W_MIN_DUR = "rule_min_duration_s"
W_THR_PREFIX = "rule_thr_pct_"
W_NBOOT = "stats_n_boot"
W_BLOCK = "stats_block_s"
W_CONF = "stats_confidence"
W_AUTO = "stats_auto_block_factor"
MAX_UPLOAD_MB = 20  # Streamlit's MB (sessions.BYTES_PER_MB), as file_uploader counts it
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * BYTES_PER_MB
# Shared by pages: the consent checkbox (Live, Video) and the session the Analysis page selects
# first when another page (Video) switches to it.
CONSENT_LABEL = "The candidate has been told and consented"
PRESELECT_KEY = "analysis_preselect"  # a session id, read (once) by pages/2_Analysis.py
VERDICT_ICONS = {
    "nervous": ":orange[nervous]",
    "not nervous": ":green[not nervous]",
    "inconclusive": ":gray[inconclusive]",
    "not enough data": ":gray[not enough data]",
}


# The sidebar's page list, in the order a session's work goes. Streamlit's own list is hidden
# (.streamlit/config.toml: client.showSidebarNavigation) because it names the home page after
# its file, "app", and sorts the others by file name.
PAGES = (
    ("app.py", "Home", "🙂"),
    ("pages/1_Live.py", "Live", "🎥"),
    ("pages/2_Analysis.py", "Analysis", "📊"),
    ("pages/4_Video.py", "Video", "🎬"),
    ("pages/3_Training.py", "Training", "🧠"),
)


def page_nav(settings_follow: bool = True) -> None:
    """Links to every page at the top of the sidebar, divided from the page's own settings when
    `settings_follow` (Home and Training have none); none when a page runs on its own (e.g.
    under AppTest), where the other pages are unknown to Streamlit."""
    slot = st.sidebar.empty()
    try:
        with slot.container():
            for path, label, icon in PAGES:
                st.page_link(path, label=label, icon=icon)
            if settings_follow:
                st.divider()
    except StreamlitAPIException:
        slot.empty()


def _saved_settings() -> Settings:
    """Settings from the file; remember what was wrong with it (a bad file: all defaults; a bad
    value: its default) for the sidebar's warning."""
    try:
        loaded = load_settings_leniently()
    except SettingsError as exc:
        st.session_state[SETTINGS_ERROR_KEY] = f"Saved settings ignored: {exc}. Using defaults."
        return Settings()
    if loaded.problems:
        st.session_state[SETTINGS_ERROR_KEY] = (
            f"Saved settings in {settings_path()}: " + "; ".join(loaded.problems) + "."
        )
    else:
        st.session_state.pop(SETTINGS_ERROR_KEY, None)
    return loaded.settings


def init_rule_state() -> None:
    """Put the saved default rule into session_state if no rule is there yet."""
    if RULE_KEY not in st.session_state:
        st.session_state[RULE_KEY] = _saved_settings().rule.to_dict()


def current_rule() -> NervousnessRule:
    """The rule in session_state (initialised from the settings file on first use)."""
    init_rule_state()
    try:
        return NervousnessRule.from_dict(st.session_state[RULE_KEY])
    except RuleError:
        st.session_state[RULE_KEY] = DEFAULT_RULE.to_dict()
        return DEFAULT_RULE


def set_rule(rule: NervousnessRule) -> None:
    """Make rule current (used by both pages)."""
    st.session_state[RULE_KEY] = rule.to_dict()


def _preset_of(rule: NervousnessRule) -> str:
    preset = PRESETS.get(rule.name)
    return rule.name if preset is not None and preset == rule else CUSTOM


def _seed_widget(key: str, value: Any) -> None:
    """Give a widget its starting value through session_state (only if it has none)."""
    if key not in st.session_state:
        st.session_state[key] = value


def _custom_rule_widgets(base: NervousnessRule) -> NervousnessRule | None:
    """Widgets for a custom rule, seeded from base; None (with an error shown) if invalid."""
    sb = st.sidebar
    _seed_widget(W_EMOTIONS, list(base.emotions))
    _seed_widget(W_LOGIC, base.logic)
    _seed_widget(W_BASIS, base.basis)
    _seed_widget(W_SUM, round(base.sum_threshold * 100, 1))
    _seed_widget(W_MIN_DUR, float(base.min_duration_s))
    emotions = sb.multiselect("Emotions", list(CLASSES), key=W_EMOTIONS)
    logic = sb.radio(
        "Logic",
        list(LOGICS),
        key=W_LOGIC,
        horizontal=True,
        help="any: one emotion over its threshold is enough; all: every emotion must be over; "
        "sum: the emotions' combined value must exceed one threshold.",
    )
    basis = sb.radio(
        "Basis",
        ["share", "mean_prob"],
        key=W_BASIS,
        format_func=lambda b: BASIS_LABELS[b],
    )
    pairs: list[tuple[str, float]] = []
    for emotion in emotions:
        try:
            start = base.threshold_for(emotion)
        except KeyError:
            start = 0.30
        key = W_THR_PREFIX + emotion
        _seed_widget(key, round(start * 100, 1))
        if logic != "sum":
            pct = sb.number_input(
                f"{emotion} threshold (%)", min_value=0.0, max_value=100.0, step=1.0, key=key
            )
            pairs.append((emotion, float(pct) / 100.0))
        else:
            pairs.append((emotion, float(st.session_state[key]) / 100.0))
    sum_pct = float(st.session_state[W_SUM])
    if logic == "sum":
        sum_pct = sb.number_input(
            "Combined threshold (%)", min_value=0.0, max_value=100.0, step=1.0, key=W_SUM
        )
    min_dur = sb.number_input(
        "Minimum duration before a verdict (s)",
        min_value=0.0,
        max_value=MAX_MIN_DURATION_S,
        step=1.0,
        key=W_MIN_DUR,
    )
    if not emotions:
        sb.error("Choose at least one emotion; the previous rule stays in force.")
        return None
    try:
        return NervousnessRule(
            name=CUSTOM,
            thresholds=tuple(pairs),
            logic=logic,  # type: ignore[arg-type]  # validated by NervousnessRule
            basis=basis,  # type: ignore[arg-type]
            sum_threshold=float(sum_pct) / 100.0,
            min_duration_s=float(min_dur),
            description="Custom rule set in the sidebar.",
        )
    except RuleError as exc:
        sb.error(f"Invalid rule: {exc}; the previous rule stays in force.")
        return None


def rule_sidebar(show_save: bool = True) -> NervousnessRule:
    """Render the rule controls in the sidebar and return the (possibly changed) current rule.

    Preset picker (seed, negative-affect, custom); custom shows emotions, logic, basis,
    thresholds and the minimum duration. "Save as default" writes the settings file.
    """
    current = current_rule()
    sb = st.sidebar
    sb.header("Nervousness rule")
    sb.caption(f"⚠️ {DISCLAIMER}")
    # NOTE: in a placeholder, so that a successful "Save as default" below (which replaces the
    # file the warning is about) can take it back in the same render.
    settings_warning = sb.empty()
    if SETTINGS_ERROR_KEY in st.session_state:
        settings_warning.warning(st.session_state[SETTINGS_ERROR_KEY])
    options = [*PRESETS, CUSTOM]
    _seed_widget(W_PRESET, _preset_of(current))
    choice = sb.selectbox(
        "Preset",
        options,
        key=W_PRESET,
        help="seed: the original app's rule; negative-affect: fear+sad+surprise+angry combined; "
        "custom: your own.",
    )
    if choice == CUSTOM:
        new_rule = _custom_rule_widgets(current)
        rule = new_rule if new_rule is not None else current
    else:
        rule = PRESETS[choice]
        # Forget custom widget values so "custom" starts from the preset next time.
        for key in [k for k in st.session_state if str(k).startswith(W_THR_PREFIX)]:
            del st.session_state[key]
        for key in (W_EMOTIONS, W_LOGIC, W_BASIS, W_SUM, W_MIN_DUR):
            st.session_state.pop(key, None)
    if rule.to_dict() != st.session_state.get(RULE_KEY):
        set_rule(rule)
    sb.caption(rule.describe())
    if rule.description and choice != CUSTOM:
        sb.caption(rule.description)
    if show_save and sb.button("Save as default", key="rule_save_default"):
        stats = st.session_state.get(STATS_KEY)  # set by stats_sidebar on pages that have it
        try:
            path = save_defaults(rule, stats if isinstance(stats, dict) else None)
        except SettingsError as exc:  # an invalid value or a failed write: nothing saved
            sb.error(f"Not saved as default: {exc}")
        else:
            st.session_state.pop(SETTINGS_ERROR_KEY, None)
            settings_warning.empty()
            sb.success(f"Saved as default in {path}")
    return rule


def stats_sidebar() -> BootstrapConfig:
    """Bootstrap settings (replicates, block length, interval level) in a sidebar expander."""
    saved = _saved_settings()
    _seed_widget(W_NBOOT, int(saved.n_boot))
    _seed_widget(W_BLOCK, float(saved.block_s))
    conf_options = list(CONFIDENCE_LEVELS)
    _seed_widget(W_CONF, saved.confidence)
    _seed_widget(W_AUTO, float(saved.auto_block_factor))
    with st.sidebar.expander("Statistics settings"):
        n_boot = st.number_input(
            "Bootstrap replicates / permutations",
            min_value=N_BOOT_RANGE[0],
            max_value=N_BOOT_RANGE[1],
            step=50,
            key=W_NBOOT,
        )
        block_s = st.number_input(
            "Block length (s)",
            min_value=BLOCK_S_RANGE[0],
            max_value=BLOCK_S_RANGE[1],
            step=0.5,
            key=W_BLOCK,
            help="Time windows kept intact when resampling; frames of video are strongly "
            "correlated, so resampling single frames would give falsely narrow intervals.",
        )
        confidence = st.select_slider("Interval level", options=conf_options, key=W_CONF)
        auto = st.number_input(
            "Lengthen blocks to N autocorrelation times (0 = off)",
            min_value=AUTO_BLOCK_RANGE[0],
            max_value=AUTO_BLOCK_RANGE[1],
            step=1.0,
            key=W_AUTO,
            help="Blocks at least this many integrated autocorrelation times of the data long, "
            "so neighbouring blocks are nearly independent and intervals/p-values are honest. "
            "Lower values give more blocks (more power) but can overstate certainty.",
        )
    values = {
        "n_boot": int(n_boot),
        "block_s": float(block_s),
        "confidence": float(confidence),
        "auto_block_factor": float(auto),
    }
    st.session_state[STATS_KEY] = values
    return BootstrapConfig(**values)  # type: ignore[arg-type]


def stored_statement(sessions_dir: Path, video: bool = False) -> str:
    """What a recorded session keeps, shown under the consent checkbox: the Live page's, or with
    `video` the Video page's (the file name too; the uploaded file is deleted)."""
    per = "per analysed frame" if video else "per frame"
    file_name = "the file name, " if video else ""
    never = (
        "**Never images or video:** the uploaded file is deleted once the analysis ends."
        if video
        else "**Never images or video.**"
    )
    return (
        f"**What is stored:** {per}, the emotion probabilities and the face box coordinates, "
        f"with timestamps, plus the candidate name, your notes, {file_name}the model and the "
        f"nervousness rule used. {never} Sessions are saved as files in `{sessions_dir}`."
    )


def render_verdict(result: NervousnessResult, container: Any = None) -> None:
    """Verdict, summary, reasons and the disclaimer (shared look for both pages)."""
    c = container if container is not None else st
    c.markdown(f"**Nervousness indicator (heuristic):** {VERDICT_ICONS[result.verdict]}")
    c.caption(result.summary)
    if result.reasons:
        c.markdown("\n".join(f"- {r.text}" for r in result.reasons))
    c.caption(f"⚠️ {result.disclaimer} See README.md, section 'Responsible use'.")


def models_dir() -> Path:
    """The models folder now (registry.models_dir: $EMOTION_MODELS_DIR read at call time, so
    tests and deployments can point elsewhere); the pages call this."""
    return registry.models_dir()


@st.cache_resource(show_spinner="Loading the emotion model...", max_entries=4)
def cached_classifier(models_path: str, name: str, version: float) -> inference.EmotionClassifier:
    """One classifier per (models dir, model, registry version), shared by every page: activating
    a new default model changes the key, so it is picked up without a restart."""
    return inference.load_classifier(name, Path(models_path))


MARKDOWN_SPECIALS = "\\`*_{}[]()#+-.!|$<>~"


def plain(text: str) -> str:
    """Text (e.g. with candidate names in it) shown as typed where Streamlit renders Markdown:
    its Markdown and LaTeX characters backslash-escaped."""
    return "".join("\\" + c if c in MARKDOWN_SPECIALS else c for c in text)


def accuracy_text(value: float | None, missing: str = "n/a") -> str:
    """A model's accuracy as the cards and README give it: two decimals (0.7155 -> "71.55%";
    one decimal would print 71.5%, since 0.7155 is stored as 0.71549999...)."""
    return missing if value is None else f"{value:.2%}"


def ms_text(ms: float) -> str:
    """A CPU ms-per-face figure as every page shows it in text (one decimal: 3.18 -> "3.2")."""
    return f"{ms:.1f}"


def model_sidebar(card: registry.ModelCard) -> None:
    """Which model is in use, how good and how fast it is (both from its card)."""
    sb = st.sidebar
    sb.header("Model")
    acc = accuracy_text(card.val_accuracy, "not measured")
    sb.markdown(f"**{card.name}** ({card.arch})  \nValidation accuracy: **{acc}**")
    if card.val_macro_f1 is not None:
        sb.caption(f"Macro F1 {card.val_macro_f1:.3f} on {card.validation_split}.")
    runtime, ms = inference.ms_per_face_in_use(card)  # what the app runs, not the card's best
    if ms is not None:
        sb.caption(f"{ms_text(ms)} ms per face on CPU ({runtime} runtime).")
    if card.date:
        sb.caption(f"Trained {card.date}.")


def model_choice(
    default: registry.ModelCard, key: str, disabled: bool = False
) -> registry.ModelCard:
    """A sidebar choice among the registered models (the default first selected); its card."""
    cards = {card.name: card for card in registry.list_models(models_dir())}
    cards.setdefault(default.name, default)
    names = sorted(cards)

    def label(name: str) -> str:
        card = cards[name]
        acc = accuracy_text(card.val_accuracy, "accuracy ?")
        ms = inference.ms_per_face_in_use(card)[1]
        speed = f", {ms_text(ms)} ms/face" if ms is not None else ""
        return f"{name} ({acc}{speed})" + (" - default" if name == default.name else "")

    name = st.sidebar.selectbox(
        "Model", names, index=names.index(default.name), format_func=label, key=key,
        disabled=disabled, help="Registered models with their validation accuracy and CPU speed.",
    )  # fmt: skip
    return cards[name]


def classifier_or_error(
    card: registry.ModelCard, version: float, hint: str = ""
) -> inference.EmotionClassifier | None:
    """The card's classifier (with the sidebar warning when its fast runtime failed), or None
    after an error saying why it could not be loaded (then `hint`, what to do about it)."""
    try:
        classifier = cached_classifier(str(models_dir()), card.name, version)
    except registry.ModelError as exc:
        st.error(f"The model {card.name} could not be loaded: {exc}{hint}")
        return None
    runtime_warning(classifier)
    return classifier


def runtime_warning(classifier: inference.EmotionClassifier) -> None:
    """Say so when the card's fast runtime could not be used (the Keras model runs instead)."""
    if classifier.runtime_problem:
        st.sidebar.warning(
            f"The fast runtime could not be loaded, so the slower Keras model runs instead: "
            f"{classifier.runtime_problem}"
        )


def default_model_or_stop(purpose: str) -> tuple[registry.ModelCard, float]:
    """The default model's card and the registry version; without a usable default model, an
    error saying what cannot be done (`purpose`) and how to get a model, then st.stop()."""
    try:
        mdir = models_dir()
        return registry.default_card(mdir), registry.registry_version(mdir)
    except registry.ModelError as exc:
        st.error(f"No emotion model is available, so {purpose}.\n\n{exc}")
        st.stop()
        raise  # st.stop() raises; this keeps type checkers sure nothing is returned
