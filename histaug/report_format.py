"""Names and number formats of the report: metric titles, architecture and training-set labels
(HViTGAN Table 1's vocabulary), mean ± std cells, Markdown and LaTeX escaping."""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

import pandas as pd

from .config import head_generator
from .trainsets import parse_trainset, parse_variant

METRICS: tuple[str, ...] = ("accuracy", "auc", "sensitivity", "specificity")
METRIC_TITLES = {"accuracy": "Accuracy", "auc": "AUC", "sensitivity": "Sensitivity", "specificity": "Specificity"}
REQUIRED_METRIC_KEYS: tuple[str, ...] = ("arch", "variant", "seed", *METRICS)
MISSING_STD = "–"

ARCH_NAMES = {"resnet34": "ResNet34", "resnet50_cbam": "ResNet50-CBAM", "densenet169": "DenseNet169",
              "pixel_logreg": "Logistic regression (pixels)"}
_ARCH_TOKENS = {
    "resnet": "ResNet",
    "resnext": "ResNeXt",
    "densenet": "DenseNet",
    "efficientnet": "EfficientNet",
    "convnext": "ConvNeXt",
    "cbam": "CBAM",
    "vit": "ViT",
    "hvitgan": "HViTGAN",
    "vgg": "VGG",
    "cnn": "CNN",
    "mlp": "MLP",
    "gan": "GAN",
}

_DOWNSTREAM_FRONT = ["arch", "variant", "kind", "generator", "seed", *METRICS,
                     "best_epoch", "valid_auc", "n_real", "n_synthetic"]


# --------------------------------------------------------------------------- naming


def pretty_arch(arch: str) -> str:
    """Display name of an architecture key: ``resnet50_cbam`` -> ``ResNet50-CBAM``.

    Known keys use a fixed spelling; other keys are split on ``_``/``-`` and each part is
    spelled with a small vocabulary of network names (``hvitgan_head`` -> ``HViTGAN-Head``).
    """
    if arch in ARCH_NAMES:
        return ARCH_NAMES[arch]
    parts = []
    for token in re.split(r"[_\-\s]+", str(arch)):
        if not token:
            continue
        letters, digits, rest = re.fullmatch(r"([A-Za-z]*)(\d*)(.*)", token).groups()
        name = _ARCH_TOKENS.get(letters.lower(), letters[:1].upper() + letters[1:])
        parts.append(name + digits + rest)
    return "-".join(parts) or str(arch)


def arch_label(arch: str, generator_labels: Mapping[str, str] | None = None) -> str:
    """Display name of a downstream architecture; ``<gen>_head`` -> ``<generator label> Cls Head``."""
    gen = head_generator(str(arch))
    if gen:
        return f"{(generator_labels or {}).get(gen, gen)} Cls Head"
    return pretty_arch(arch)


def trainset_label(variant: str, generator_labels: Mapping[str, str] | None = None,
                   trainset_labels: Mapping[str, str] | None = None) -> str:
    """What goes inside ``+Aug(...)``: ``report.trainset_labels[variant]`` when set (``CP``, ``CP+SA``),
    else the generator's label with ``, truncated`` / ``, SA`` for truncated / selected images."""
    if trainset_labels and variant in trainset_labels:
        return str(trainset_labels[variant])
    ts = parse_trainset(variant)
    name = (generator_labels or {}).get(ts.generator, ts.generator)
    return name + {"normal": "", "truncated": ", truncated", "selected": ", SA"}[ts.source]


def variant_label(variant: str, generator_labels: Mapping[str, str] | None = None,
                  trainset_labels: Mapping[str, str] | None = None) -> str:
    """Short label of a training set, used in legends: ``real``, ``+Aug(CP)``, ``cgan only``."""
    kind, _ = parse_variant(variant)
    if kind == "real":
        return "real"
    text = trainset_label(variant, generator_labels, trainset_labels)
    return f"{text} only" if kind == "synthetic" else f"+Aug({text})"


def row_label(arch: str, variant: str, generator_labels: Mapping[str, str] | None = None,
              trainset_labels: Mapping[str, str] | None = None) -> str:
    """Table row name shaped like the HViTGAN paper's Table 1.

    ``ResNet34``, ``ResNet34+Aug(MedViTGAN)``, ``ResNet34+Aug(CP+SA)`` (with
    ``report.trainset_labels``), ``ResNet34+Aug(cgan, SA)``, ``HViTGAN Cls Head+Aug(CP)``,
    ``ResNet34 trained on cgan only``.
    """
    name = arch_label(arch, generator_labels)
    kind, _ = parse_variant(variant)
    if kind == "real":
        return name
    text = trainset_label(variant, generator_labels, trainset_labels)
    return f"{name} trained on {text} only" if kind == "synthetic" else f"{name}+Aug({text})"


# --------------------------------------------------------------------------- small helpers


def _clean(value):
    """None for missing values (None, NaN, pandas NA), the value otherwise."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _float(value) -> float:
    """The value as a float; NaN when missing."""
    value = _clean(value)
    return float("nan") if value is None else float(value)


def _ordered(preferred: Iterable | None, present: Iterable) -> list:
    """`preferred` items that are present, in that order, then the remaining present items sorted."""
    present = [p for p in dict.fromkeys(present) if _clean(p) is not None]
    head = [p for p in dict.fromkeys(preferred or []) if p in present]
    return head + sorted((p for p in present if p not in head), key=str)


def format_mean_std(mean: float, std: float, digits: int = 3, pm: str = " ± ", missing_std: str = MISSING_STD) -> str:
    """``0.881 ± 0.079``; a missing std (one seed) is shown as ``–``, a missing mean as ``n/a``."""
    mean, std = _float(mean), _float(std)
    if not math.isfinite(mean):
        return "n/a"
    std_text = f"{std:.{digits}f}" if math.isfinite(std) else missing_std
    return f"{mean:.{digits}f}{pm}{std_text}"


def _latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    replacements = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    }
    return "".join(replacements.get(ch, ch) for ch in str(text))


def markdown_grid(headers: Sequence[str], rows: Sequence[Sequence], align: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(value) -> str:
        return str(value).replace("|", r"\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_markdown_grid = markdown_grid  # the name older callers use
