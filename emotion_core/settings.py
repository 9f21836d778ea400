"""Saved analysis defaults: the nervousness rule and the bootstrap settings.

The file is JSON at $EMOTION_SETTINGS_FILE if set, else <project>/config/settings.json::

    {"format_version": 1, "rule": {...NervousnessRule.to_dict()...},
     "n_boot": 1000, "block_s": 2.0, "confidence": 0.95, "auto_block_factor": 6.0}

A missing file means defaults; an unreadable or invalid one raises SettingsError naming the
file. The UI reads it with `load_settings_leniently`, which keeps the valid values of a file
and resets each invalid one to its default, saying which.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emotion_core.fileio import JsonFileError, atomic_write_json, load_json_object
from emotion_core.nervousness import DEFAULT_RULE, NervousnessRule, RuleError
from emotion_core.registry import PROJECT_ROOT
from emotion_core.stats import BootstrapConfig

SETTINGS_FORMAT_VERSION = 1
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "config" / "settings.json"


class SettingsError(Exception):
    """The settings file cannot be read or holds invalid values (message names the file)."""


# What the sidebar offers, and so what a saved file may hold (a value outside would be reset
# silently by the widget).
N_BOOT_RANGE = (50, 10_000)
BLOCK_S_RANGE = (0.1, 60.0)
AUTO_BLOCK_RANGE = (0.0, 20.0)
CONFIDENCE_LEVELS = (0.8, 0.9, 0.95, 0.99)


def settings_path() -> Path:
    """Where settings live now ($EMOTION_SETTINGS_FILE is read at call time)."""
    env = os.environ.get("EMOTION_SETTINGS_FILE")
    return Path(env).expanduser() if env else DEFAULT_SETTINGS_FILE


@dataclass(frozen=True)
class Settings:
    """Analysis defaults: rule, bootstrap replicates, minimum block length (s), interval level
    and the automatic block lengthening factor (0 = off; see stats.BootstrapConfig)."""

    rule: NervousnessRule = field(default=DEFAULT_RULE)
    n_boot: int = 1000
    block_s: float = 2.0
    confidence: float = 0.95
    auto_block_factor: float = 6.0

    def __post_init__(self) -> None:
        for name, (lo, hi) in (
            ("n_boot", N_BOOT_RANGE),
            ("block_s", BLOCK_S_RANGE),
            ("auto_block_factor", AUTO_BLOCK_RANGE),
        ):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        if self.confidence not in CONFIDENCE_LEVELS:
            levels = ", ".join(f"{c:g}" for c in CONFIDENCE_LEVELS)
            raise ValueError(f"confidence must be one of {levels}, got {self.confidence!r}")
        self.bootstrap_config()  # and BootstrapConfig's own checks

    def bootstrap_config(self, seed: int = 0) -> BootstrapConfig:
        """The BootstrapConfig these settings describe."""
        return BootstrapConfig(
            n_boot=int(self.n_boot),
            block_s=float(self.block_s),
            confidence=float(self.confidence),
            seed=seed,
            auto_block_factor=float(self.auto_block_factor),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format_version": SETTINGS_FORMAT_VERSION,
            "rule": self.rule.to_dict(),
            "n_boot": int(self.n_boot),
            "block_s": float(self.block_s),
            "confidence": float(self.confidence),
            "auto_block_factor": float(self.auto_block_factor),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Settings:
        """Inverse of to_dict; missing keys take defaults; ValueError/RuleError if invalid."""
        if not isinstance(data, Mapping):
            raise TypeError("settings must be a JSON object")
        base = Settings()
        rule = NervousnessRule.from_dict(data["rule"]) if "rule" in data else base.rule
        return Settings(
            rule=rule,
            n_boot=int(data.get("n_boot", base.n_boot)),
            block_s=float(data.get("block_s", base.block_s)),
            confidence=float(data.get("confidence", base.confidence)),
            auto_block_factor=float(data.get("auto_block_factor", base.auto_block_factor)),
        )


_FIELDS = ("rule", "n_boot", "block_s", "confidence", "auto_block_factor")
_VALUE_ERRORS = (RuleError, ValueError, TypeError, KeyError, OverflowError, RecursionError)


def load_settings(path: Path | None = None) -> Settings:
    """Read settings; defaults when the file does not exist; SettingsError when it is bad."""
    path = Path(path) if path is not None else settings_path()
    data = _read_settings_file(path)
    if data is None:
        return Settings()
    try:
        return Settings.from_dict(data)
    except _VALUE_ERRORS as exc:
        raise SettingsError(f"{path}: invalid settings ({exc})") from exc


def _read_settings_file(path: Path) -> dict[str, Any] | None:
    """The settings file's JSON object; None when there is no file; SettingsError naming the
    file when it cannot be read, is not valid JSON (or UTF-8) or is not a JSON object."""
    try:
        return load_json_object(path)
    except JsonFileError as err:
        if err.reason == "missing":
            return None
        if err.reason == "unreadable":
            raise SettingsError(f"{path}: cannot read settings ({err.detail})") from err
        if err.reason == "invalid":
            raise SettingsError(f"{path}: settings are not valid JSON ({err.detail})") from err
        raise SettingsError(f"{path}: invalid settings (settings must be a JSON object)") from err


@dataclass(frozen=True)
class LoadedSettings:
    """Settings as read leniently, with one message per saved value that was reset."""

    settings: Settings
    problems: tuple[str, ...] = ()


def load_settings_leniently(path: Path | None = None) -> LoadedSettings:
    """Read settings, keeping each valid value and resetting each invalid one to its default
    (named in `problems`); SettingsError only when the file cannot be read or is not a JSON
    object."""
    path = Path(path) if path is not None else settings_path()
    data = _read_settings_file(path)  # read once: the per-value pass below reuses it
    if data is None:
        return LoadedSettings(Settings())
    try:
        return LoadedSettings(Settings.from_dict(data))
    except _VALUE_ERRORS:
        pass  # keep what is valid, below
    kept: dict[str, Any] = {}
    problems = []
    for key in _FIELDS:
        if key not in data:
            continue
        try:
            Settings.from_dict({key: data[key]})
        except _VALUE_ERRORS as exc:
            problems.append(f"{key} reset to its default ({exc})")
        else:
            kept[key] = data[key]
    return LoadedSettings(Settings.from_dict(kept), tuple(problems))


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write settings atomically (temp file + rename); returns the path written."""
    path = Path(path) if path is not None else settings_path()
    try:
        atomic_write_json(path, settings.to_dict())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot write settings ({exc})") from exc
    return path


def load_default_rule(path: Path | None = None) -> NervousnessRule:
    """The saved default rule (the built-in default when nothing is saved)."""
    return load_settings(path).rule


def save_defaults(
    rule: NervousnessRule, stats: Mapping[str, Any] | None = None, path: Path | None = None
) -> Path:
    """Save rule (and the statistics settings in `stats`, e.g. {"n_boot": 500}) as the defaults,
    keeping the other saved valid settings (defaults for the rest); returns the path written.
    SettingsError naming the file for an invalid value or a failed write (nothing written)."""
    path = Path(path) if path is not None else settings_path()
    try:
        current = load_settings_leniently(path).settings
    except SettingsError:
        current = Settings()
    try:
        new = replace(current, rule=rule, **dict(stats or {}))
    except (ValueError, TypeError) as exc:  # a value out of range, or an unknown setting
        raise SettingsError(f"{path}: settings not saved, invalid value ({exc})") from exc
    return save_settings(new, path)


def save_default_rule(rule: NervousnessRule, path: Path | None = None) -> Path:
    """Save rule as the default, keeping the other saved valid settings (defaults for the rest)."""
    return save_defaults(rule, None, path)
