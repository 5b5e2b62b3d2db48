"""t-SNE of generated images per loss scenario (HViTGAN Fig. 3) and a separation score per panel.

HViTGAN's Fig. 3 shows seven t-SNE graphs of generated images, one per loss scenario ((a) no
weighting ... (g) our weighting with CP+SA), and §3.3 reads them as "image separation": how well
the images generated for the two classes fall apart. Here a *panel* is one configured image set
(``report.tsne``: ``{samples: hvitgan.selected, label: "(g) CP+SA"}``), i.e. one
``samples/<G>/<source>.h5`` file, and for each panel:

1. up to ``points_per_panel`` images are drawn, class-balanced (the same number per intended
   class, as far as a class has images) and seeded, so every panel is drawn the same way;
2. their features are taken from one fixed network for all panels: the penultimate layer of the
   real-data classifier ``evaluation.feature_space`` (``features: classifier``) or the FID
   Inception pool layer (``features: inception``);
3. the **separation scores** are computed in that feature space, not on the t-SNE map, so they do
   not depend on t-SNE's randomness or its distortions: the silhouette score of the intended class
   labels (``sklearn.metrics.silhouette_score``, Euclidean; about 0 when the classes overlap, up to
   1 when they form separate clusters) and the k-NN class agreement (share of each image's k nearest
   neighbours, itself excluded, that were generated for the same class; 0.5 is chance for two
   balanced classes);
4. the features are reduced to at most 50 principal components and embedded in 2-d with
   ``sklearn.manifold.TSNE`` (``random_state = seed``, PCA initialisation).

``embedding: separate`` (the default) runs one t-SNE per panel, which is what the paper's panels
are: independent graphs whose axes mean nothing across panels, compared by how clearly the colours
separate. ``embedding: joint`` runs one t-SNE on the images of all panels together, so all panels
share one map (positions are comparable; each panel still shows only its own points). Either way
the scores are the quantity to compare.

The figure is drawn on matplotlib's Agg canvas (no pyplot), like every figure of :mod:`histaug.report`.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .trainsets import parse_trainset
from .utils import PipelineError, get_logger

CONFIG_KEY = "report.tsne"
SETTINGS_KEY = "report.tsne_settings"
#: Defaults of ``report.tsne_settings``.
TSNE_DEFAULTS = {
    "points_per_panel": 1000,   # images per panel, split evenly over the classes
    "perplexity": 30.0,         # t-SNE perplexity; lowered to (n - 1) / 3 for small panels
    "features": "classifier",   # classifier (evaluation.feature_space) | inception (FID Inception pool)
    "embedding": "separate",    # separate (one t-SNE per panel, like Fig. 3) | joint (one shared map)
    "neighbours": 10,           # k of the k-NN class agreement
    "seed": 0,                  # subsample and t-SNE random_state
}
FEATURES = ("classifier", "inception")
EMBEDDINGS = ("separate", "joint")
PCA_COMPONENTS = 50
MIN_TSNE_POINTS = 5  # fewer images than this: the panel is shown empty, with its count

SCORE_COLUMNS = ["panel", "label", "samples", "file", "n_available", "n_points", "n_per_class", "silhouette",
                 "knn_agreement", "neighbours", "features", "embedding", "perplexity", "seed"]
COORD_COLUMNS = ["panel", "label", "samples", "class", "class_name", "index", "x", "y"]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Panel:
    """One configured t-SNE panel: a generator's image set and its display label."""

    samples: str   # G | G.truncated | G.selected
    label: str
    generator: str
    source: str    # normal | truncated | selected

    def samples_file(self, results_dir: str) -> str:
        return parse_trainset(self.samples).samples_file(results_dir)


def parse_panels(entries, run_generators: Sequence[str] | None = None, key: str = CONFIG_KEY) -> list[Panel]:
    """Panels of ``report.tsne`` (a list of ``{samples, label}``); empty/None = no figure.

    ``samples`` names a generator's image set as in ``downstream.trainsets`` without the real images:
    ``G`` (plain latents, ``normal.h5``), ``G.truncated`` or ``G.selected``. With `run_generators`,
    G must be one of them. Errors name ``report.tsne[i].samples``.
    """
    panels = []
    for i, entry in enumerate(entries or []):
        where = f"{key}[{i}].samples"
        name = entry.get("samples") if isinstance(entry, Mapping) else entry
        expected = "expected G, G.truncated or G.selected, with G a generator name from run_generators"
        try:
            ts = parse_trainset(str(name))
        except PipelineError:
            raise PipelineError(f"config {where}={name!r}: {expected}") from None
        if ts.with_real or ts.generator is None:
            raise PipelineError(f"config {where}={name!r}: {expected} (a panel shows generated images only)")
        if run_generators is not None and ts.generator not in run_generators:
            raise PipelineError(f"config {where}={name!r}: generator {ts.generator!r} is not in run_generators "
                                f"{list(run_generators)}; add it there, remove the panel, or set `report.tsne: []` "
                                "to switch the t-SNE figure off")
        label = entry.get("label") if isinstance(entry, Mapping) else None
        panels.append(Panel(str(name), str(label or name), ts.generator, ts.source))
    return panels


def tsne_settings(settings: Mapping | None) -> dict:
    """``report.tsne_settings`` over :data:`TSNE_DEFAULTS`, checked."""
    out = {**TSNE_DEFAULTS, **dict(settings or {})}
    if out["features"] not in FEATURES:
        raise PipelineError(f"config {SETTINGS_KEY}.features={out['features']!r}: choose one of {list(FEATURES)}")
    if out["embedding"] not in EMBEDDINGS:
        raise PipelineError(f"config {SETTINGS_KEY}.embedding={out['embedding']!r}: choose one of {list(EMBEDDINGS)}")
    out["points_per_panel"], out["neighbours"], out["seed"] = int(out["points_per_panel"]), int(out["neighbours"]), int(out["seed"])
    out["perplexity"] = float(out["perplexity"])
    return out


# --------------------------------------------------------------------------- sampling and scores


def balanced_subsample(labels: np.ndarray, n: int, num_classes: int = 2, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `n` rows: ``n // C`` per class (C = `num_classes`, or more when the
    labels hold more classes), all of a class's rows when it has fewer. Same labels and seed, same rows."""
    labels = np.asarray(labels).reshape(-1)
    classes = sorted(set(range(int(num_classes))) | {int(c) for c in np.unique(labels)})
    per_class = max(int(n) // max(len(classes), 1), 1)
    rng = np.random.default_rng(int(seed))
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        chosen.append(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score of `labels` in `features` (Euclidean); NaN when undefined (one class, too few points)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if not 2 <= k <= len(labels) - 1:
        return float("nan")
    return float(silhouette_score(np.asarray(features, np.float64), labels, metric="euclidean"))


def knn_agreement(features: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest neighbours (Euclidean, itself excluded) with its own label.

    NaN with fewer than two classes or two points; k is lowered to n - 1 for small sets.
    """
    from sklearn.neighbors import NearestNeighbors

    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    n = len(labels)
    if n < 2 or len(np.unique(labels)) < 2:
        return float("nan")
    k = min(int(k), n - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # duplicates may push a point out of its own list: drop the farthest
    neighbours = idx[~is_self].reshape(n, k)
    return float((labels[neighbours] == labels[:, None]).mean())


def separation_scores(features: np.ndarray, labels: np.ndarray, k: int = 10) -> dict:
    """``{"silhouette", "knn_agreement"}`` of the class labels in feature space."""
    return {"silhouette": silhouette(features, labels), "knn_agreement": knn_agreement(features, labels, k)}


def effective_perplexity(perplexity: float, n: int) -> float:
    """`perplexity`, lowered to (n - 1) / 3 when the set is small (t-SNE needs perplexity < n)."""
    return float(min(float(perplexity), max(1.0, (n - 1) / 3)))


def tsne_embed(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE of `features` after PCA to at most 50 components; fixed random_state."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float64)
    n = len(x)
    if n < MIN_TSNE_POINTS:
        raise PipelineError(f"t-SNE needs at least {MIN_TSNE_POINTS} images, got {n}")
    dims = min(PCA_COMPONENTS, n, x.shape[1])
    if dims < x.shape[1]:
        x = PCA(n_components=dims, svd_solver="full").fit_transform(x)
    tsne = TSNE(n_components=2, perplexity=effective_perplexity(perplexity, n), init="pca",
                learning_rate="auto", random_state=int(seed))
    return tsne.fit_transform(x).astype(np.float64)


# --------------------------------------------------------------------------- features


def feature_extractor(kind: str, *, classifier: str | Path | None = None, inception_status: str | Path | None = None,
                      device="cpu", batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """A function uint8 (N, H, W, 3) images -> (N, D) features.

    ``classifier``: penultimate features of the classifier file `classifier` (a ``model.pt``);
    ``inception``: FID Inception pool features, with the weights named by `inception_status`
    (``metrics/inception.json``); a status other than ``ok`` is an error, not a fallback.
    """
    if kind == "classifier":
        from .classify import load_classifier, penultimate_features

        model, meta = load_classifier(classifier, device=device)
        return lambda x: penultimate_features(model, meta, x, batch_size=batch_size).astype(np.float64)
    if kind == "inception":
        from .inception import extract_features, inception_from_status
        from .utils import read_json

        net = inception_from_status(
            read_json(inception_status), f"{SETTINGS_KEY}.features='inception' ({inception_status})",
            f"set {SETTINGS_KEY}.features: classifier, or make the weights available (evaluation.inception, rule "
            "inception_weights) and rerun", device)
        return lambda x: extract_features(net, x, batch_size, desc="inception (t-SNE)")
    raise PipelineError(f"config {SETTINGS_KEY}.features={kind!r}: choose one of {list(FEATURES)}")


# --------------------------------------------------------------------------- the panels


def compute_tsne(panels: Sequence[Panel], sample_files: Sequence[str | Path], extract: Callable[[np.ndarray], np.ndarray],
                 class_names: Sequence[str], settings: Mapping | None = None, log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores (one row per panel, :data:`SCORE_COLUMNS`) and t-SNE coordinates (one row per image,
    :data:`COORD_COLUMNS`) of the panels; `sample_files[i]` is panel i's image file."""
    from .io import read_images, read_labels

    log = log or get_logger()
    s = tsne_settings(settings)
    if len(panels) != len(sample_files):
        raise PipelineError(f"{len(panels)} t-SNE panels but {len(sample_files)} sample files")
    names = list(class_names)
    data = []
    for i, (panel, path) in enumerate(zip(panels, sample_files)):
        y_all = read_labels(path)
        idx = balanced_subsample(y_all, s["points_per_panel"], len(names), s["seed"])
        x, y = read_images(path, indices=idx) if len(idx) else (None, y_all[:0])
        feats = np.asarray(extract(x), np.float64) if len(idx) else np.zeros((0, 1))
        scores = separation_scores(feats, y, s["neighbours"])
        counts = "/".join(str(int((y == c).sum())) for c in range(len(names)))
        log.info("t-SNE panel %d %s (%s): %d of %d images (%s per class), silhouette %.4f, %d-NN agreement %.4f",
                 i + 1, panel.label, path, len(idx), len(y_all), counts, scores["silhouette"], s["neighbours"],
                 scores["knn_agreement"])
        data.append(dict(panel=i + 1, label=panel.label, samples=panel.samples, file=str(path), n_available=len(y_all),
                         n_points=len(idx), n_per_class=counts, **scores, index=idx, y=y, feats=feats))

    coords = [np.full((d["n_points"], 2), np.nan) for d in data]
    perplexity = [float("nan")] * len(data)
    if s["embedding"] == "separate":
        for i, d in enumerate(data):
            if d["n_points"] >= MIN_TSNE_POINTS:
                coords[i] = tsne_embed(d["feats"], s["perplexity"], s["seed"])
                perplexity[i] = effective_perplexity(s["perplexity"], d["n_points"])
    else:
        usable = [i for i, d in enumerate(data) if d["n_points"] > 0]
        total = sum(data[i]["n_points"] for i in usable)
        if total >= MIN_TSNE_POINTS:
            joint = tsne_embed(np.concatenate([data[i]["feats"] for i in usable]), s["perplexity"], s["seed"])
            bounds = np.cumsum([0] + [data[i]["n_points"] for i in usable])
            for j, i in enumerate(usable):
                coords[i] = joint[bounds[j]:bounds[j + 1]]
                perplexity[i] = effective_perplexity(s["perplexity"], total)

    score_rows, coord_frames = [], []
    for d, xy, perp in zip(data, coords, perplexity):
        score_rows.append({**{k: d[k] for k in SCORE_COLUMNS if k in d}, "neighbours": s["neighbours"],
                           "features": s["features"], "embedding": s["embedding"], "perplexity": perp, "seed": s["seed"]})
        if d["n_points"] and np.isfinite(xy).all():
            coord_frames.append(pd.DataFrame({
                "panel": d["panel"], "label": d["label"], "samples": d["samples"], "class": d["y"].astype(int),
                "class_name": [names[c] if 0 <= c < len(names) else f"class {c}" for c in d["y"]],
                "index": d["index"], "x": xy[:, 0], "y": xy[:, 1]}))
    scores = pd.DataFrame(score_rows, columns=SCORE_COLUMNS)
    coordinates = pd.concat(coord_frames, ignore_index=True) if coord_frames else pd.DataFrame(columns=COORD_COLUMNS)
    return scores, coordinates[COORD_COLUMNS]


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value is not None and math.isfinite(float(value)) else "n/a"


def panel_title(row) -> str:
    """``(d) ours`` over ``silhouette 0.123 · 10-NN 0.870 · n = 1000``."""
    return (f"{row['label']}\nsilhouette {_fmt(row['silhouette'])} · {int(row['neighbours'])}-NN "
            f"{_fmt(row['knn_agreement'])} · n = {int(row['n_points'])}")


def draw_tsne_figure(scores: pd.DataFrame, coordinates: pd.DataFrame, class_names: Sequence[str],
                     title: str | None = None, ncols: int = 4):
    """One axes per panel (row of `scores`), points coloured by intended class, one legend; returns the Figure."""
    import matplotlib
    from matplotlib.lines import Line2D

    from .report_figures import _new_figure

    n = max(len(scores), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    title_lines = textwrap.wrap(title, width=int(3.2 * ncols * 11)) if title else []
    legend_in, title_in = 0.6, (0.15 + 0.22 * len(title_lines) if title_lines else 0.0)
    height = 3.5 * nrows + legend_in + title_in
    fig = _new_figure(3.2 * ncols, height, dpi=110)
    colours = matplotlib.colormaps["tab10"]
    classes = sorted(set(range(len(class_names))) | {int(c) for c in coordinates["class"]})

    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else f"class {c}"

    for i, (_, row) in enumerate(scores.iterrows()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        pts = coordinates[coordinates["panel"] == row["panel"]]
        for c in classes:
            sel = pts[pts["class"] == c]
            if len(sel):
                ax.scatter(sel["x"], sel["y"], s=float(np.clip(3000 / max(len(pts), 1), 4, 14)), alpha=0.7, color=colours(c % 10), linewidths=0, rasterized=True)
        if not len(pts):
            ax.text(0.5, 0.5, f"too few images to embed\n({int(row['n_points'])})", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_box_aspect(1)
        ax.set_title(panel_title(row), fontsize=8.5)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours(c % 10), label=name(c)) for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False,
               title="intended class", title_fontsize=9)
    if title_lines:
        fig.suptitle("\n".join(title_lines), fontsize=10)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1 - title_in / height))
    return fig


def figure_title(scores: pd.DataFrame) -> str:
    feats = {"classifier": "real-data classifier features", "inception": "Inception features"}
    kind = scores["features"].iloc[0] if len(scores) else "classifier"
    how = "one t-SNE per panel" if (scores["embedding"].iloc[0] if len(scores) else "separate") == "separate" else "one joint t-SNE"
    return f"t-SNE of generated images per loss scenario ({feats.get(kind, kind)}; {how})"


def scores_to_markdown(scores: pd.DataFrame, digits: int = 3) -> str:
    """The scores as a markdown table; the best silhouette and k-NN agreement are in bold."""
    from .report_format import _markdown_grid

    k = int(scores["neighbours"].iloc[0]) if len(scores) else TSNE_DEFAULTS["neighbours"]
    best = {c: np.nanmax(scores[c].to_numpy(float)) if scores[c].notna().any() else None
            for c in ("silhouette", "knn_agreement")}

    def cell(row, col):
        text = _fmt(row[col], digits)
        return f"**{text}**" if best[col] is not None and text == _fmt(best[col], digits) else text

    rows = [[row["label"], f"`{row['samples']}`", f"{int(row['n_points'])} of {int(row['n_available'])}",
             row["n_per_class"], cell(row, "silhouette"), cell(row, "knn_agreement")] for _, row in scores.iterrows()]
    n_classes = len(str(scores["n_per_class"].iloc[0]).split("/")) if len(scores) else 2
    per_class = "Per class (" + "/".join(str(c) for c in range(n_classes)) + ")"
    return _markdown_grid(["Panel", "Images", "Points", per_class, "Silhouette", f"{k}-NN agreement"], rows,
                          ["---", "---", "---:", "---:", ":---:", ":---:"])


def write_tsne(panels: Sequence[Panel], sample_files: Sequence[str | Path], extract: Callable[[np.ndarray], np.ndarray],
               class_names: Sequence[str], settings: Mapping | None, out_png: str | Path, out_scores: str | Path,
               out_coordinates: str | Path, out_scores_md: str | Path | None = None, log=None,
               prov: Mapping | None = None) -> dict:
    """Compute the panels and write the figure, the scores (CSV, optional markdown) and the coordinates.

    Returns ``{"scores", "coordinates", "n_axes", "paths"}``.
    """
    from .provenance import stamp_frame, write_stamped
    from .report_figures import _save_figure
    from .utils import write_csv

    if not panels:
        raise PipelineError(f"config {CONFIG_KEY} is empty: there is no t-SNE panel to draw")
    scores, coordinates = compute_tsne(panels, sample_files, extract, class_names, settings, log)
    fig = draw_tsne_figure(scores, coordinates, list(class_names), figure_title(scores))
    paths = {"figure": _save_figure(fig, out_png), "scores": Path(out_scores), "coordinates": Path(out_coordinates)}
    write_csv(stamp_frame(scores, prov), out_scores, float_format="%.6g")
    write_csv(stamp_frame(coordinates, prov), out_coordinates, float_format="%.6g")
    if out_scores_md:
        write_stamped(scores_to_markdown(scores), out_scores_md, prov)
        paths["scores_md"] = Path(out_scores_md)
    return {"scores": scores, "coordinates": coordinates, "n_axes": len(fig.axes), "paths": paths}


def report_section(files: Mapping[str, str | Path], report_dir: str | Path) -> dict:
    """What report.md's "Loss scenarios (t-SNE)" section needs, from the files of the rule ``tsne``
    ({"figure", "scores", "coordinates"}): links relative to `report_dir`, the scores table, an intro."""
    import os

    for key in ("figure", "scores", "coordinates"):
        if not files.get(key) or not Path(files[key]).exists():
            raise PipelineError(f"t-SNE {key} file {files.get(key)!r} not found (did the rule tsne run?)")
    scores = pd.read_csv(files["scores"])
    links = {k: Path(os.path.relpath(files[k], report_dir)).as_posix() for k in ("figure", "scores", "coordinates")}
    feats = {"classifier": "the real-data classifier's penultimate layer, `evaluation.feature_space`",
             "inception": "the FID Inception pool layer"}
    kind = str(scores["features"].iloc[0]) if len(scores) else "classifier"
    separate = (str(scores["embedding"].iloc[0]) if len(scores) else "separate") == "separate"
    k = int(scores["neighbours"].iloc[0]) if len(scores) else TSNE_DEFAULTS["neighbours"]
    intro = (
        "HViTGAN Fig. 3: the generated images of each configured set (`report.tsne`), class-balanced and seeded, "
        + ("embedded with one t-SNE per panel (axes are not comparable between panels)" if separate
           else "embedded with one t-SNE of all panels together (one shared map)")
        + "; colours are the class each image was generated for. The scores are computed in feature space "
        f"({feats.get(kind, kind)}), not on the map, so they do not depend on t-SNE's randomness: the silhouette "
        "score of the intended classes (about 0 when the classes overlap, up to 1 for separate clusters) and the "
        f"{k}-NN agreement (share of each image's {k} nearest neighbours generated for the same class; 1 / number "
        "of classes is chance). Higher is better separated; the best value per column is in bold; `n/a` = too few "
        "images or a single class.")
    return {**links, "table": scores_to_markdown(scores), "intro": intro}
