"""The annotator's settings on disk, so that the next napari session starts where this one ended.

One JSON file, ``annotator.json``, in the user's configuration folder (``platformdirs``:
``~/.config/napari-segdiff`` on Linux, ``~/Library/Application Support/napari-segdiff`` on macOS,
``%LOCALAPPDATA%\\napari-segdiff`` on Windows). The environment variable
``NAPARI_SEGDIFF_CONFIG_DIR`` points it elsewhere (tests, shared machines, screenshots).

Qt-free. Reading never fails: a missing file gives the defaults, a corrupt one is kept aside as
``annotator.json.bad`` (never overwritten unseen) and the defaults are used, a bad value keeps
its default; every problem comes back as a message for the user. Writing is atomic.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from segdiff_core.checkpoint import atomic_write

from napari_segdiff._settings import AnnotatorSettings

__all__ = ["CONFIG_DIR_ENV", "SETTINGS_FILE", "SettingsStore", "default_config_dir"]

CONFIG_DIR_ENV = "NAPARI_SEGDIFF_CONFIG_DIR"
SETTINGS_FILE = "annotator.json"
FORMAT = "napari-segdiff-settings"
VERSION = 1


def default_config_dir() -> Path:
    """``$NAPARI_SEGDIFF_CONFIG_DIR`` if set, else the platform's user configuration folder."""
    override = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-segdiff", appauthor=False))


class SettingsStore:
    """Loads and saves :class:`AnnotatorSettings` as ``<folder>/annotator.json``."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.path = Path(folder if folder is not None else default_config_dir()) / SETTINGS_FILE

    def load(self) -> tuple[AnnotatorSettings, list[str]]:
        """The saved settings (defaults where nothing usable is saved) and the problems met."""
        if not self.path.is_file():
            return AnnotatorSettings(), []
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError("not a napari-segdiff settings file")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            kept = self._keep_aside()
            where = f"; the file was kept as {kept}" if kept else ""
            return AnnotatorSettings(), [f"saved settings {self.path} are unreadable ({exc}); using the defaults{where}"]
        settings, problems = AnnotatorSettings.from_dict(payload.get("settings"))
        return settings, [f"saved setting ignored: {p}" for p in problems]

    def save(self, settings: AnnotatorSettings) -> str | None:
        """Write ``settings`` atomically; returns None, or a message if the file cannot be written."""
        text = json.dumps({"format": FORMAT, "version": VERSION, "settings": settings.to_dict()}, indent=2)
        try:
            atomic_write(self.path, text + "\n")
        except OSError as exc:
            return f"cannot save the settings to {self.path}: {exc}"
        return None

    def _keep_aside(self) -> Path | None:
        bad = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, bad)
        except OSError:
            return None
        return bad
