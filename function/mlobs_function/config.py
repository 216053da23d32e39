"""The function's settings, read once from its environment (stack.yml sets them in OpenFaaS).

Nothing here imports torch, so a missing model file or a typo in a setting is reported before the
slow import — one structured line, then a non-zero exit (see :mod:`mlobs_function.handler`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Environment variable names (the function's public contract with stack.yml).
ENV_MODEL_PATH = "MODEL_PATH"
ENV_MODEL_ARCH = "MODEL_ARCH"
ENV_LABELS_PATH = "LABELS_PATH"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_INPUT_SIZE = "MODEL_INPUT_SIZE"
ENV_DEVICE = "MODEL_DEVICE"
ENV_MAX_BODY_BYTES = "MAX_BODY_BYTES"
ENV_MAX_PIXELS = "MAX_IMAGE_PIXELS"
ENV_TORCH_THREADS = "TORCH_NUM_THREADS"

DEFAULT_ARCH = "resnet18"
DEFAULT_INPUT_SIZE = 224
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Far below Pillow's own bomb limit: a 40 MP image already costs ~120 MB once decoded to RGB.
DEFAULT_MAX_PIXELS = 40_000_000
DEVICES = ("auto", "cpu", "cuda")
UNKNOWN_VERSION = "unknown"


class StartupError(Exception):
    """The function cannot start. ``str()`` is a one-line message for operators, never a client."""

    @property
    def error_type(self) -> str:
        return type(self).__name__


class ConfigInvalid(StartupError):
    """A missing or malformed setting."""


class ModelFileNotFound(StartupError):
    """MODEL_PATH or LABELS_PATH names no readable file."""


class LabelsInvalid(StartupError):
    """The labels file is empty, has duplicates, or does not match the model's outputs."""


class UnknownArchitecture(StartupError):
    """MODEL_ARCH names no architecture this function can build."""


class ModelFileUnreadable(StartupError):
    """The weights file is not a state dict torch can load (truncated, wrong format)."""


class WeightsMismatch(StartupError):
    """The weights do not fit the architecture built for the labels."""


class ModelWarmupFailed(StartupError):
    """The loaded model failed on a dummy input of the configured size."""


class DeviceUnavailable(StartupError):
    """MODEL_DEVICE=cuda was asked for on a machine without CUDA."""


@dataclass(frozen=True)
class FunctionConfig:
    model_path: Path
    labels_path: Path
    model_arch: str = DEFAULT_ARCH
    model_version: str = UNKNOWN_VERSION
    input_size: int = DEFAULT_INPUT_SIZE
    device: str = "auto"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    torch_threads: int | None = None
    top_k: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FunctionConfig:
        """Settings from ``env`` (default ``os.environ``); raises a :class:`StartupError`."""
        env = os.environ if env is None else env
        model_path = _required_path(env, ENV_MODEL_PATH)
        labels_path = _required_path(env, ENV_LABELS_PATH)
        device = (env.get(ENV_DEVICE) or "auto").strip().lower()
        if device not in DEVICES:
            raise ConfigInvalid(f"{ENV_DEVICE} must be one of {', '.join(DEVICES)}, got {device!r}")
        threads = env.get(ENV_TORCH_THREADS, "").strip()
        return cls(
            model_path=model_path,
            labels_path=labels_path,
            model_arch=(env.get(ENV_MODEL_ARCH) or DEFAULT_ARCH).strip(),
            model_version=(env.get(ENV_MODEL_VERSION) or UNKNOWN_VERSION).strip(),
            input_size=_positive_int(env, ENV_INPUT_SIZE, DEFAULT_INPUT_SIZE),
            device=device,
            max_body_bytes=_positive_int(env, ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
            max_pixels=_positive_int(env, ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS),
            torch_threads=_positive_int(env, ENV_TORCH_THREADS, 1) if threads else None,
        )

    def check_files(self) -> None:
        """Fail fast, before torch is imported, when a file the model needs is missing."""
        for name, path in ((ENV_MODEL_PATH, self.model_path), (ENV_LABELS_PATH, self.labels_path)):
            if not path.is_file():
                raise ModelFileNotFound(f"{name} {str(path)!r} is not a readable file")


def _required_path(env: Mapping[str, str], name: str) -> Path:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigInvalid(f"{name} is not set: point it at a local file (nothing is downloaded)")
    return Path(value)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigInvalid(f"{name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise ConfigInvalid(f"{name} must be at least 1, got {value}")
    return value
