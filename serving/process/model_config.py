"""The models the server starts with, and the supervisor's watch of ``--model_config_file``.

At start the supervisor reads the config file (or turns the single-model flags into a one-model
config) and writes it as the first generation of the desired models (``serving.core.control``)
before any worker starts; a config file that does not parse stops the start (exit status 2), as
TF Serving's does. Every ``--model_config_file_poll_wait_seconds`` it reads the file again: a
changed file that parses becomes the next generation (every worker applies it; models unloaded
through the V2 API are served again, since the operator's file says what to serve); one that
does not is refused with one error log line per distinct content, and the models serving keep
serving.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from contract import model_config
from contract.errors import InvalidArgument
from contract.types import ModelEntry
from serving.core.control import DesiredModels, ModelStore
from serving.settings import Settings

logger = logging.getLogger(__name__)


def initial_models(settings: Settings) -> tuple[list[ModelEntry], str]:
    """The models to serve at start and where they came from; InvalidArgument if unreadable."""
    if settings.model_config_file:
        return model_config.read_file(settings.model_config_file), settings.model_config_file
    entry = ModelEntry(settings.model_name, str(Path(settings.model_base_path).resolve()),
                       settings.model_version_policy, settings.version_label_map)
    return [entry], "--model_name/--model_base_path"


class ConfigFileWatcher:
    """Re-reads ``--model_config_file`` on its poll period and publishes a changed one."""

    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.path = Path(settings.model_config_file) if settings.model_config_file else None
        self.period = settings.model_config_file_poll_wait_seconds
        self.store = store
        self._seen = self._text()  # the text the first generation came from
        self._next = time.monotonic() + self.period

    def _text(self) -> str | None:
        try:
            return self.path.read_text() if self.path is not None else None
        except (OSError, UnicodeDecodeError):
            return None

    def poll(self) -> None:
        """Called often; reads the file once per period and applies a changed one."""
        if self.path is None or self.period <= 0 or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.period
        text = self._text()
        if text is None or text == self._seen:
            return
        self._seen = text
        try:
            models = model_config.parse_text(text, self.path.resolve().parent)
        except InvalidArgument as exc:
            serving = ", ".join(self.store.read().names()) or "none"
            logger.error("refused the changed model config file %s: %s; still serving: %s",
                         self.path, exc.message, serving)
            return

        def replace(current: DesiredModels) -> tuple[list[ModelEntry], frozenset[str], str]:
            return models, frozenset(), f"config file {self.path}"

        try:
            self.store.update(replace)
        except Exception:  # the supervisor must outlive any surprise here; the next change retries
            logger.exception("could not publish the changed model config file %s", self.path)
