"""The `STALE_DOCTOR_*` settings: from the Flask config, else the environment, else a default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .causes import CAUSES

MODES = ("log", "raise", "collect")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A STALE_DOCTOR_* setting the doctor cannot use; raised at init_app, never later."""


@dataclass(frozen=True)
class Allow:
    """One allowlist entry: `cause`, `cause@endpoint`, `*@endpoint`, `cause#Model` or `*#Model`."""

    cause: str  # a cause name or "*"
    endpoint: str | None = None
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Allow":
        text = text.strip()
        cause, model = (text.split("#", 1) + [None])[:2] if "#" in text else (text, None)
        cause, endpoint = (cause.split("@", 1) + [None])[:2] if "@" in cause else (cause, None)
        cause = cause or "*"
        if cause != "*" and cause not in CAUSES:
            raise ConfigError(f"STALE_DOCTOR_ALLOW: unknown cause {cause!r} in {text!r}; known: {', '.join(CAUSES)}")
        return cls(cause, endpoint or None, model or None)

    def matches(self, cause: str, endpoint: str | None, models: tuple[str, ...]) -> bool:
        if self.cause not in ("*", cause):
            return False
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        if self.model is not None and self.model not in models:
            return False
        return True


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    mode: str = "log"
    file: str | None = None
    logger: str = "stale_doctor"
    transaction_max_seconds: float = 30.0
    job_max_seconds: float = 30.0
    allow: tuple[Allow, ...] = ()
    app_packages: tuple[str, ...] = ()
    probe: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def allowed(self, cause: str, endpoint: str | None, models: tuple[str, ...]) -> bool:
        return any(entry.matches(cause, endpoint, models) for entry in self.allow)


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    return os.environ.get(key)


def _bool(key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"{key} must be true or false, not {value!r}")


def _seconds(key: str, value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"{key} must be more than 0 seconds, not {value!r}")
    return seconds


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def load(config: Mapping[str, Any], import_name: str) -> Settings:
    """Settings for one app; every problem is a ConfigError naming the key."""
    mode = str(_lookup(config, "STALE_DOCTOR_MODE") or "log").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"STALE_DOCTOR_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    packages = _names(_lookup(config, "STALE_DOCTOR_APP_PACKAGES")) or (import_name.split(".")[0],)
    return Settings(
        enabled=_bool("STALE_DOCTOR_ENABLED", _lookup(config, "STALE_DOCTOR_ENABLED"), True),
        mode=mode,
        file=str(_lookup(config, "STALE_DOCTOR_FILE") or "") or None,
        logger=str(_lookup(config, "STALE_DOCTOR_LOGGER") or "stale_doctor"),
        transaction_max_seconds=_seconds("STALE_DOCTOR_TRANSACTION_MAX_SECONDS",
                                         _lookup(config, "STALE_DOCTOR_TRANSACTION_MAX_SECONDS"), 30.0),
        job_max_seconds=_seconds("STALE_DOCTOR_JOB_MAX_SECONDS", _lookup(config, "STALE_DOCTOR_JOB_MAX_SECONDS"), 30.0),
        allow=tuple(Allow.parse(item) for item in _names(_lookup(config, "STALE_DOCTOR_ALLOW"))),
        app_packages=packages,
        probe=_bool("STALE_DOCTOR_PROBE", _lookup(config, "STALE_DOCTOR_PROBE"), False),
    )
