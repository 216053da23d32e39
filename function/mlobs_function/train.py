"""Train a small classifier on synthetic images and save what the function loads.

``python -m mlobs_function.train --out DIR`` writes ``DIR/weights.pt`` (a ``state_dict``),
``DIR/labels.txt`` (one class per line) and ``DIR/function.env`` — the function's settings for
this model, which ``traffic --model-dir DIR`` reads and a shell can source. The default
``tiny_cnn`` at 64 px trains in a few seconds on two CPU cores; ``--arch`` takes any name the
function takes (``resnet18``…), so a bigger, slower model version goes through the same code.
The images are :mod:`mlobs_function.synthetic`'s coloured shapes, fed through the function's own
preprocessing, so serving sees exactly what training saw.

``--mislabel "labrador retriever=golden retriever:1.0"`` relabels that share of one class's training
images as another — a bad data update (here: the two retrievers merged by a label-mapping bug).
The model then calls labradors golden retrievers, which shifts the predicted class mix under
unchanged traffic; smaller fractions blur the two classes instead.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlobs_function import synthetic
from mlobs_function.config import (
    ENV_INPUT_SIZE,
    ENV_LABELS_PATH,
    ENV_MODEL_ARCH,
    ENV_MODEL_PATH,
    StartupError,
)
from mlobs_function.imaging import preprocess

WEIGHTS_FILE = "weights.pt"
LABELS_FILE = "labels.txt"
ENV_FILE = "function.env"


@dataclass(frozen=True)
class TrainResult:
    weights_path: Path
    labels_path: Path
    arch: str
    input_size: int
    holdout_accuracy: float
    seconds: float

    def env(self) -> dict[str, str]:
        """The function's settings for this model (add MODEL_VERSION yourself)."""
        return {ENV_MODEL_PATH: str(self.weights_path), ENV_LABELS_PATH: str(self.labels_path),
                ENV_MODEL_ARCH: self.arch, ENV_INPUT_SIZE: str(self.input_size)}  # fmt: skip


def parse_mislabel(text: str) -> tuple[str, str, float]:
    """``"SRC=DST:FRACTION"`` → ``(SRC, DST, FRACTION)``, both classes known, 0 < FRACTION ≤ 1."""
    source, sep, rest = text.partition("=")
    target, sep2, fraction_text = rest.rpartition(":")
    try:
        fraction = float(fraction_text)
    except ValueError:
        fraction = -1.0
    source, target = source.strip(), target.strip()
    if not sep or not sep2 or not 0 < fraction <= 1:
        raise ValueError(f"--mislabel expects SRC=DST:FRACTION with 0 < FRACTION <= 1, got {text!r}")
    for name in (source, target):
        if name not in synthetic.CLASSES:
            raise ValueError(f"unknown class {name!r}; classes: {', '.join(synthetic.CLASSES)}")
    return source, target, fraction


def make_dataset(per_class: int, input_size: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images (N, 3, S, S) and class indices; sizes vary as clients' uploads do."""
    images, targets = [], []
    for index, label in enumerate(synthetic.CLASSES):
        for _ in range(per_class):
            side = rng.randint(input_size, 2 * input_size)
            images.append(preprocess(synthetic.render(label, rng, side), input_size)[0])
            targets.append(index)
    return np.stack(images), np.array(targets, dtype=np.int64)


def train(
    out_dir: Path,
    *,
    arch: str = "tiny_cnn",
    input_size: int = 64,
    per_class: int = 48,
    epochs: int = 6,
    seed: int = 0,
    mislabel: tuple[str, str, float] | None = None,
) -> TrainResult:
    import torch  # imported here so `--help` stays instant

    from mlobs_function.model import build_architecture

    started = time.perf_counter()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    images, targets = make_dataset(per_class, input_size, rng)
    holdout_images, holdout_targets = make_dataset(max(4, per_class // 3), input_size, rng)
    if mislabel:
        source, target, fraction = mislabel
        src, dst = synthetic.CLASSES.index(source), synthetic.CLASSES.index(target)
        rows = np.flatnonzero(targets == src)
        chosen = rng.sample(list(rows), round(len(rows) * fraction))
        targets[chosen] = dst

    model = build_architecture(arch, len(synthetic.CLASSES))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(images), torch.from_numpy(targets)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(holdout_images)).argmax(dim=1).numpy()
    accuracy = float((predicted == holdout_targets).mean())

    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, labels_path = out_dir / WEIGHTS_FILE, out_dir / LABELS_FILE
    torch.save(model.state_dict(), weights_path)
    labels_path.write_text("".join(f"{label}\n" for label in synthetic.CLASSES), encoding="utf-8")
    result = TrainResult(weights_path.resolve(), labels_path.resolve(), arch, input_size, accuracy,
                         time.perf_counter() - started)  # fmt: skip
    (out_dir / ENV_FILE).write_text("".join(f"{k}={v}\n" for k, v in result.env().items()),
                                    encoding="utf-8")  # fmt: skip
    return result


def read_model_dir(model_dir: Path) -> dict[str, str]:
    """The function's settings for a directory ``train`` wrote (paths taken from where it is now)."""
    env = {ENV_MODEL_ARCH: "tiny_cnn", ENV_INPUT_SIZE: "64"}
    env_file = model_dir / ENV_FILE
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in (ENV_MODEL_ARCH, ENV_INPUT_SIZE):
                env[name.strip()] = value.strip()
    env[ENV_MODEL_PATH] = str(model_dir / WEIGHTS_FILE)
    env[ENV_LABELS_PATH] = str(model_dir / LABELS_FILE)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlobs_function.train",
        description="Train a small classifier on synthetic coloured shapes (offline, seconds).",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for weights.pt and labels.txt")
    parser.add_argument("--arch", default="tiny_cnn",
                        help="tiny_cnn or a torchvision classification model, e.g. resnet18")
    parser.add_argument("--input-size", type=int, default=64, help="model input side in pixels")
    parser.add_argument("--per-class", type=int, default=48, help="training images per class")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mislabel", metavar="SRC=DST:FRACTION",
                        help="relabel a share of one class's images as another (a bad data update)")
    args = parser.parse_args(argv)
    try:
        mislabel = parse_mislabel(args.mislabel) if args.mislabel else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.input_size < 16 or args.per_class < 1 or args.epochs < 1:
        parser.error("--input-size must be >= 16, --per-class and --epochs >= 1")
    try:
        result = train(args.out, arch=args.arch, input_size=args.input_size,
                       per_class=args.per_class, epochs=args.epochs, seed=args.seed,
                       mislabel=mislabel)  # fmt: skip
    except StartupError as exc:  # e.g. an unknown architecture name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {result.arch} at {result.input_size}px in {result.seconds:.1f}s; "
          f"holdout accuracy {result.holdout_accuracy:.1%}", file=sys.stderr)  # fmt: skip
    for name, value in result.env().items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
