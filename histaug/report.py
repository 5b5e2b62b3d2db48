"""The report of one pipeline run: report.md and the files it links, from the files the other rules write.

Everything here is a pure function of files the other rules write:

* downstream ``metrics.json`` files (one per architecture, training-set variant and seed) are
  collected into a per-seed table and summarised as mean ± sample standard deviation over seeds,
  with rows named like Table 1 of the HViTGAN paper ("ResNet34", "ResNet34+Aug(cgan)", ...);
* ``generation.json`` files (one per generator) become the generation-quality table;
* sample files, ``predictions.csv`` files and the summary become figures;
* :func:`write_report` writes all of it, plus a ``report.md`` that ties it together.

The parts live by concern: names and formats in :mod:`histaug.report_format`, tables in
:mod:`histaug.report_tables`, figures in :mod:`histaug.report_figures`; this module assembles
report.md and writes everything (atomically).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from .per_class import per_class_runs, summarize_per_class
from .report_figures import (
    _order_predictions,
    group_prediction_files,
    plot_metric_bars,
    plot_roc_curves,
    plot_sample_grid,
    plot_training_curves,
)
from .report_format import MISSING_STD, _clean, _latex_escape, arch_label, row_label
from .report_tables import (
    collect_downstream,
    collect_generation,
    generation_to_markdown,
    heads_to_markdown,
    per_class_to_markdown,
    row_flags,
    summarize_downstream,
    to_latex_table,
    to_markdown_table,
)
from .provenance import write_stamped, write_table
from .utils import get_logger


def _context_list(context: Mapping, key: str) -> list:
    value = context.get(key) or []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _trainset_glossary(context: Mapping) -> list[str]:
    """One bullet per configured label (``report.trainset_labels``): what ``+Aug(CP)`` etc. stand for."""
    labels = dict(context.get("trainset_labels") or {})
    used = [t for t in _context_list(context, "trainsets") if t in labels]
    if not used:
        return []
    return ["- Labels of this run: " + "; ".join(f"`+Aug({labels[t]})` = training set `{t}`" for t in used) + "."]


def _report_markdown(context: Mapping, summary: pd.DataFrame, generation: pd.DataFrame,
                     sample_figures: Mapping[str, Mapping[str, str]], digits: int,
                     tsne: Mapping[str, str] | None = None, per_class_md: str | None = None) -> str:
    """Text of report.md; figure and table links are relative to the report's folder.

    `tsne` (optional): {"figure", "scores", "coordinates": relative links, "table": markdown, "intro": text}.
    """
    class_names = list(context.get("class_names") or ["class 0", "class 1"])
    positive = class_names[1] if len(class_names) > 1 else "class 1"
    negative = class_names[0] if class_names else "class 0"
    label_source = context.get("label_source", "data")
    label_note = (context.get("label_note") or "").strip()
    seeds = _context_list(context, "seeds")
    archs = _context_list(context, "architectures")
    title = context.get("config_name") or "pipeline run"

    out = [f"# Synthetic augmentation report: {title}", ""]

    out += ["## Dataset and labels", ""]
    if label_source == "derived":
        out += [
            "> **The class labels in this run are derived from the pixels, not ground truth.**",
            f"> {label_note or 'Labels were computed from the images themselves.'}",
            f"> Every number below measures how well the classifiers separate *{negative}* from "
            f"*{positive}* as defined by that rule; none of them is a diagnostic (e.g. tumour detection) result.",
            "",
        ]
    out += [
        f"- Dataset: {context.get('dataset', 'unknown')}",
        f"- Images: {context.get('n_train_subset', '?')} training (the limited-data subset), "
        f"{context.get('n_valid', '?')} validation, {context.get('n_test', '?')} test",
        "- Classes: " + ", ".join(f"{i} = {name}" for i, name in enumerate(class_names)),
        f"- Label source: {label_source}",
    ]
    if label_source != "derived" and label_note:
        out.append(f"- Note: {label_note}")
    out.append("")

    out += ["## Generation quality", ""]
    out.append(generation_to_markdown(generation))
    if not generation.empty:
        settings = []
        for name, fmt in (("lambda", "λ = {}"), ("tau", "τ = {}"), ("real_split", "real reference split: {}")):
            values = [v for v in dict.fromkeys(generation[name]) if _clean(v) is not None]
            if values:
                settings.append(fmt.format(", ".join(str(v) for v in values)))
        spaces = [v for v in dict.fromkeys(generation["feature_space"]) if _clean(v) is not None]
        if settings:
            out.append("Selection and reference: " + "; ".join(settings) + ".")
        if spaces:
            out.append(f"Feature FID/KID are computed in the feature space of the {'; '.join(spaces)}.")
        out.append("")
    out.append("Files: [generation.csv](tables/generation.csv), [generation.md](tables/generation.md)")
    out.append("")
    heads = heads_to_markdown(generation, digits)
    if heads:
        out += ["### Class heads as the GAN trained them", "",
                "The discriminator's classification head of each GAN that has one, applied to the real test split "
                "without fine-tuning (the `Cls Head` rows of the downstream table fine-tune it per seed):", "", heads]

    out += ["## Downstream classification", ""]
    out.append("Metrics on the real test split, mean ± sample standard deviation over seeds; "
               "the best mean per column within each architecture is in bold.")
    out.append("")
    out.append(to_markdown_table(summary, digits))
    out.append("Files: [downstream_summary.csv](tables/downstream_summary.csv), "
               "[downstream_summary.tex](tables/downstream_summary.tex), "
               "[downstream_summary.md](tables/downstream_summary.md), "
               "[per-seed results: downstream.csv](tables/downstream.csv)")
    out.append("")
    flags = row_flags(summary, digits)
    if (flags != "").any():
        out += ["**Flagged rows** (⚠ in the table): " + "; ".join(
            f"{r} ({f})" for r, f in zip(summary["row"], flags) if f) + ". A degenerate classifier predicts one class for "
            "the whole test split; a row below the pixel baseline learned less than a logistic regression on "
            "8 x 8 pixel colours.", ""]
    for section in context.get("downstream_sections") or []:
        out += [section, ""]
    if per_class_md:
        out += ["### Per class (one-vs-rest)", "",
                f"With {len(class_names)} classes, Sensitivity and Specificity above are the unweighted means over "
                "the classes of each class's one-vs-rest recall and specificity, and AUC is the macro one-vs-rest "
                "AUC. Per class:", "", per_class_md,
                "Files: [downstream_per_class.csv](tables/downstream_per_class.csv), "
                "[downstream_per_class.md](tables/downstream_per_class.md)", ""]

    out += ["## Figures", ""]
    for gen, figs in sample_figures.items():
        out += [f"### Samples from {gen}", ""]
        if "generated" in figs:
            out += ["Generated images, plain normal latents (first per class):", "",
                    f"![{gen}: generated samples]({figs['generated']})", ""]
        if "selected" in figs:
            out += ["Images kept by selective augmentation (truncated latents, confidence ≥ λ):", "",
                    f"![{gen}: selected samples]({figs['selected']})", ""]
    out += [
        "### ROC curves",
        "",
        "Thin lines: one seed each; thick lines: the average over seeds (legend: AUC mean ± std, n seeds).",
        "",
        "![ROC curves on the real test split](figures/roc_curves.png)",
        "",
        "### AUC by training set",
        "",
        "![AUC mean ± std per model and training set](figures/auc_bars.png)",
        "",
    ]
    if context.get("has_training_curves"):
        out += ["### Generator training", "",
                "Losses per logged step; for generators with model selection also the FID against the validation "
                "split (right axis) and the step whose networks the checkpoint holds (dotted line).", "",
                "![Generator training curves](figures/generator_training.png)", ""]

    for section in context.get("extra_sections") or []:
        out += [section, ""]

    if tsne:
        out += ["## Loss scenarios (t-SNE)", "", tsne["intro"], "",
                f"![t-SNE of generated images per loss scenario]({tsne['figure']})", "", tsne["table"],
                f"Files: [tsne_scores.csv]({tsne['scores']}), [tsne_coordinates.csv]({tsne['coordinates']})", ""]

    out += [
        "## How to read the tables",
        "",
        "- Row names follow Table 1 of the HViTGAN paper: `ResNet34` is trained on the real training "
        "subset only; `ResNet34+Aug(G)` on the real subset plus generator G's images from plain normal "
        "latents (selective augmentation off); `+Aug(G, truncated)` with truncated latents (τ); "
        "`+Aug(G, SA)` with selective augmentation: truncated latents and only the images the selector "
        "classifies as their intended class with confidence ≥ λ; `ResNet34 trained on G only` on "
        "generated images alone (a check of how much class information the images carry). "
        "`G Cls Head` is the classification head of generator G's discriminator, fine-tuned as a "
        "classifier from its GAN-trained weights on the same training sets.",
        *_trainset_glossary(context),
        (f"- Every classifier is evaluated on the same real test split. Sensitivity is the recall of "
         f"class 1 ({positive}), specificity the recall of class 0 ({negative}); AUC uses the "
         f"predicted probability of {positive}." if len(class_names) <= 2 else
         f"- Every classifier is evaluated on the same real test split. With {len(class_names)} classes the "
         "predicted class is the most probable one; Sensitivity and Specificity are macro averages of the "
         "per-class one-vs-rest values and AUC is the macro one-vs-rest AUC (per-class table above)."),
        "- `0.881 ± 0.079` is the mean over seeds ± the sample standard deviation (ddof = 1). "
        f"`{MISSING_STD}` in place of the std means only one seed finished. The Seeds column gives the count.",
        "- Bold marks the best mean in a column within one architecture block (ties at the shown precision are all bold).",
        "- FID and KID (lower is better) compare generated images with real images of the reference split "
        "in Inception-v3 feature space; `n/a: …` says why they could not be computed. Feature FID/KID use the "
        "features of a classifier trained on real data instead, which is closer to what the downstream task sees.",
        "- Selection rate is the share of generated images kept by selective augmentation.",
        "",
    ]

    out += ["## Settings", ""]
    out.append(f"- Configuration: {context.get('config_name', 'unknown')}")
    if archs:
        gl = dict(context.get("generator_labels") or {})
        out.append("- Architectures: " + ", ".join(f"{arch_label(a, gl)} (`{a}`)" for a in archs))
    if seeds:
        out.append("- Seeds: " + ", ".join(str(s) for s in seeds))
    if not generation.empty:
        gens = [f"{g} ({f})" if _clean(f) is not None else str(g)
                for g, f in zip(generation["generator"], generation["family"])]
        out.append("- Generators: " + ", ".join(gens))
    for key in sorted(set(context) - {"label_source", "label_note", "class_names", "dataset", "n_train_subset",
                                      "n_valid", "n_test", "config_name", "architectures", "seeds", "generators",
                                      "generator_labels", "trainset_labels", "trainsets", "has_training_curves",
                                      "extra_sections", "downstream_sections", "provenance"}):
        out.append(f"- {key}: {context[key]}")
    if seeds:
        short = summary[summary["n_seeds"] < len(seeds)]
        if len(short) and len(short) == len(summary) and short["n_seeds"].nunique() == 1:
            out += ["", f"Every row has {int(short['n_seeds'].iloc[0])} of the {len(seeds)} configured seeds."]
        elif len(short):
            out += ["", f"Rows with fewer than the {len(seeds)} configured seeds:"]
            for n, rows in short.groupby("n_seeds", sort=True)["row"]:
                out.append(f"- {int(n)} of {len(seeds)} seeds: " + ", ".join(rows))
    out.append("")
    return "\n".join(out)


def _gains_and_synthetic(downstream: pd.DataFrame, summary: pd.DataFrame, names: Mapping, digits: int, record,
                         prov: Mapping | None = None) -> list[str]:
    """Write tables/augmentation_gain.{csv,md,tex} and tables/synthetic_only.{csv,md}; return their report sections."""
    from .gains import gains_latex, gains_markdown, gains_sentences, paired_gains

    def label(arch, variant):
        return row_label(arch, variant, **names)

    augmented = downstream[~downstream["kind"].isin(["synthetic"])]
    gains = paired_gains(augmented)
    if len(gains) and {"arch", "variant"} <= set(summary.columns):  # the downstream table's row order
        rank = {key: i for i, key in enumerate(zip(summary["arch"], summary["variant"]))}
        order = [rank.get(key, len(rank)) for key in zip(gains["arch"], gains["trainset"])]
        gains = gains.assign(_rank=order).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
    write_table(gains, record("tables/augmentation_gain.csv"), prov)
    md = gains_markdown(gains, label, digits) if len(gains) else "_No augmented training sets in this run._\n"
    write_stamped(md, record("tables/augmentation_gain.md"), prov)
    write_stamped(gains_latex(gains, label, "Per-seed gain over the real-only row of the same architecture "
                           "(mean and 95% t-interval over paired seeds)", digits), record("tables/augmentation_gain.tex"), prov)
    sections = ["### Augmentation gain (paired over seeds)", "",
                "Each augmented training set against the real-only row of the same architecture, seed by seed (same "
                "seed, same real data order): the mean per-seed difference and its 95% t-interval over the seeds. Bold: "
                "the interval excludes zero.", "", md, gains_sentences(gains, label, digits), "",
                "Files: [augmentation_gain.csv](tables/augmentation_gain.csv), "
                "[augmentation_gain.tex](tables/augmentation_gain.tex)"]
    synthetic = summary[(summary["kind"] == "synthetic") | ((summary["kind"] == "real")
                        & summary["arch"].isin(summary.loc[summary["kind"] == "synthetic", "arch"]))]
    write_table(synthetic, record("tables/synthetic_only.csv"), prov)
    syn_md = to_markdown_table(synthetic, digits) if len(synthetic) else "_No synthetic-only training sets in this run._\n"
    write_stamped(syn_md, record("tables/synthetic_only.md"), prov)
    if (summary["kind"] == "synthetic").any():
        sections += ["", "### Trained on synthetic images only", "",
                     "The slides' protocol: classifiers trained on generated images alone and tested on the real test "
                     "split, next to the same architecture trained on the real subset.", "", syn_md,
                     "Files: [synthetic_only.csv](tables/synthetic_only.csv)"]
    return ["\n".join(sections)]


def write_report(
    out_dir: str | Path,
    metrics_files: Iterable[str | Path],
    prediction_files,
    generation_files: Iterable[str | Path],
    sample_files: Mapping[str, Mapping[str, str | Path]],
    context: Mapping,
    per_class: int | None = None,
    digits: int = 3,
    tsne: Mapping[str, str | Path] | None = None,
    histories: Mapping[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Write every table, figure and ``report.md`` under `out_dir`; return {relative name: path}.

    `histories` (generator -> ``history.csv``) adds the generator training-curve figure.

    `prediction_files` is either arch -> {variant: [predictions.csv]} or a flat list of
    ``.../{arch}/{variant}/seed{n}/predictions.csv`` paths. `sample_files` maps generator ->
    {"generated": normal.h5, "selected": selected.h5}. `per_class` (images per class in sample grids)
    defaults to ``context["grid_per_class"]`` or 8. `tsne` (optional, rule ``tsne``) gives the files
    {"figure", "scores", "coordinates"} of the t-SNE panels; report.md then has a "Loss scenarios (t-SNE)" section.
    """
    log = get_logger()
    out_dir = Path(out_dir)
    prov = context.get("provenance")  # commit, config hash, date on every table and report.md
    class_names = list(context.get("class_names") or ["class 0", "class 1"])
    per_class = int(per_class or context.get("grid_per_class") or 8)
    written: dict[str, Path] = {}

    def record(rel: str) -> Path:
        path = out_dir / rel
        written[rel] = path
        return path

    configured_order = _context_list(context, "generators") or list(sample_files)
    generation = collect_generation(generation_files, configured_order)
    names = {"generator_labels": dict(context.get("generator_labels") or {}),
             "trainset_labels": dict(context.get("trainset_labels") or {})}

    downstream = collect_downstream(metrics_files)
    summary = summarize_downstream(downstream, _context_list(context, "architectures"),
                                   _context_list(context, "trainsets"), digits, **names)
    log.info("report: %d downstream runs in %d rows, %d generators", len(downstream), len(summary), len(generation))

    write_table(downstream, record("tables/downstream.csv"), prov)
    write_table(summary, record("tables/downstream_summary.csv"), prov)
    write_stamped(to_markdown_table(summary, digits), record("tables/downstream_summary.md"), prov)
    caption = ("Downstream classification on the real test split of "
               f"{_latex_escape(context.get('dataset', 'the dataset'))} "
               r"(mean $\pm$ sample standard deviation over seeds; best per architecture in bold).")
    if context.get("label_source") == "derived":
        caption += " Labels are derived from pixels, not ground truth."
    write_stamped(to_latex_table(summary, caption=caption, label="tab:downstream", digits=digits),
               record("tables/downstream_summary.tex"), prov)
    write_table(generation, record("tables/generation.csv"), prov)
    write_stamped(generation_to_markdown(generation), record("tables/generation.md"), prov)
    sections = _gains_and_synthetic(downstream, summary, names, digits, record, prov)
    class_table = summarize_per_class(per_class_runs(downstream, class_names), summary)
    write_table(class_table, record("tables/downstream_per_class.csv"), prov)
    write_stamped(per_class_to_markdown(class_table, digits), record("tables/downstream_per_class.md"), prov)

    gen_info = {row["generator"]: row for _, row in generation.iterrows()}
    sample_figures: dict[str, dict[str, str]] = {}
    for gen, files in sample_files.items():
        info = gen_info.get(gen)
        figs: dict[str, str] = {}
        if files.get("generated"):
            rel = f"figures/samples_{gen}.png"
            n = "" if info is None or _clean(info["n_generated"]) is None else f", {int(info['n_generated'])} generated"
            plot_sample_grid(files["generated"], record(rel), per_class, class_names, f"{gen}: generated samples{n}")
            figs["generated"] = rel
        if files.get("selected"):
            rel = f"figures/selected_{gen}.png"
            detail = ""
            if info is not None and _clean(info["lambda"]) is not None:
                detail = f" (confidence ≥ {info['lambda']})"
            plot_sample_grid(files["selected"], record(rel), per_class, class_names, f"{gen}: selected samples{detail}")
            figs["selected"] = rel
        sample_figures[gen] = figs

    predictions = _order_predictions(group_prediction_files(prediction_files), summary)
    plot_roc_curves(predictions, record("figures/roc_curves.png"), "ROC curves on the real test split", **names)
    plot_metric_bars(summary, record("figures/auc_bars.png"), "auc", "Test AUC per model and training set")
    if histories:
        plot_training_curves(histories, record("figures/generator_training.png"), "Generator training")

    tsne_section = None
    if tsne:
        from .embedding import report_section

        tsne_section = report_section(tsne, out_dir)
    context = {**context, "has_training_curves": bool(histories)}
    per_class_md = per_class_to_markdown(class_table, digits) if len(class_names) > 2 else None
    context = {**context, "downstream_sections": sections}
    write_stamped(_report_markdown(context, summary, generation, sample_figures, digits, tsne_section, per_class_md),
               record("report.md"), prov)
    return written
