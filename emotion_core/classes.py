"""The emotion classes in FER-2013's canonical order and the names people give them."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(CLASSES)

# Folder names seen in the wild, mapped to a canonical class (matched case-insensitively).
SYNONYMS: dict[str, str] = {
    "angry": "angry",
    "anger": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
}


def canonical_class(name: str) -> str | None:
    """Return the canonical class for a folder/label name, or None if it is not one of the 7."""
    return SYNONYMS.get(name.strip().lower())
