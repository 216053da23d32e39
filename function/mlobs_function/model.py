"""Architectures by name, loading local weights, and top-k prediction.

An architecture is built with random initialisation — torchvision's ``get_model(name,
weights=None)`` or a local one such as ``tiny_cnn`` — and the weights file (a ``state_dict``
saved with ``torch.save``) is loaded into it with ``weights_only=True``, so nothing is ever
downloaded and a weights file cannot run code. The tiny model and resnet18 take the same path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlobs_function.config import (
    DeviceUnavailable,
    FunctionConfig,
    LabelsInvalid,
    ModelFileUnreadable,
    ModelWarmupFailed,
    UnknownArchitecture,
    WeightsMismatch,
)

_MAX_DETAIL = 300


class ModelOutputInvalid(RuntimeError):
    """The model answered with the wrong shape or non-finite numbers."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Three stride-2 conv blocks, global pooling and a linear head (~25k parameters at width 16).

    Small enough to train on synthetic images in seconds on two CPU cores; any input size works.
    """

    def __init__(self, num_classes: int = 1000, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# Local architectures, looked up before torchvision's. Each takes ``num_classes``, as torchvision's do.
LOCAL_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"tiny_cnn": TinyCNN}


def architecture_names() -> list[str]:
    from torchvision import models

    return sorted([*LOCAL_ARCHITECTURES, *models.list_models(module=models)])


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised classifier for ``num_classes`` classes; never downloads weights."""
    if name in LOCAL_ARCHITECTURES:
        return LOCAL_ARCHITECTURES[name](num_classes=num_classes)
    from torchvision import models  # only torchvision architectures pay for this import

    # module=models keeps to image classifiers (not detection or segmentation heads).
    if name not in models.list_models(module=models):
        raise UnknownArchitecture(
            f"MODEL_ARCH {name!r} is neither a local architecture ({', '.join(LOCAL_ARCHITECTURES)}) "
            "nor a torchvision classification model (e.g. resnet18, mobilenet_v3_small)"
        )
    return models.get_model(name, weights=None, num_classes=num_classes)


def read_labels(path) -> list[str]:
    """One class name per line, in output order (blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsInvalid(f"cannot read LABELS_PATH {str(path)!r}: {_detail(exc)}") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise LabelsInvalid(f"LABELS_PATH {str(path)!r} holds no labels")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise LabelsInvalid(f"LABELS_PATH {str(path)!r} repeats {', '.join(duplicates)}")
    return labels


def select_device(preference: str) -> torch.device:
    """``auto``: CUDA when this machine has it, else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceUnavailable("MODEL_DEVICE=cuda but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class Classifier:
    model: nn.Module
    labels: list[str]
    device: torch.device
    input_size: int
    top_k: int = 5

    def predict(self, batch: np.ndarray) -> list[tuple[str, float]]:
        """Top-k ``(label, probability)`` for a batch of one preprocessed image."""
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, len(self.labels)):
                raise ModelOutputInvalid(f"expected logits of shape (1, {len(self.labels)})")
            probs = torch.softmax(logits.float(), dim=1)[0]
            top = torch.topk(probs, min(self.top_k, len(self.labels)))
        values, indices = top.values.tolist(), top.indices.tolist()
        if not all(math.isfinite(v) for v in values):
            raise ModelOutputInvalid("the model produced non-finite probabilities")
        return [(self.labels[i], v) for i, v in zip(indices, values, strict=True)]


def load_classifier(config: FunctionConfig) -> Classifier:
    """Build, load, move to the device and warm up; raises a StartupError subclass."""
    config.check_files()
    labels = read_labels(config.labels_path)
    device = select_device(config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    model = build_architecture(config.model_arch, len(labels))
    try:
        state = torch.load(config.model_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle that is more than tensors
        raise ModelFileUnreadable(
            f"MODEL_PATH {str(config.model_path)!r} is not a loadable state dict: {_detail(exc)}"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileUnreadable(
            f"MODEL_PATH {str(config.model_path)!r} holds a {type(state).__name__}, "
            "not a state dict of tensors (save model.state_dict())"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatch(
            f"the weights in {str(config.model_path)!r} do not fit {config.model_arch} with "
            f"{len(labels)} classes: {_detail(exc)}"
        ) from None
    model.eval().to(device)
    classifier = Classifier(model, labels, device, config.input_size, config.top_k)
    try:  # the first call pays one-off costs; a broken model or input size shows here, not later
        classifier.predict(np.zeros((1, 3, config.input_size, config.input_size), np.float32))
    except Exception as exc:
        raise ModelWarmupFailed(
            f"{config.model_arch} failed on a {config.input_size}px input: {_detail(exc)}"
        ) from None
    return classifier


def _detail(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"
