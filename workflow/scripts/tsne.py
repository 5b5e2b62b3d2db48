"""Rule tsne: t-SNE panels of generated image sets per loss scenario (HViTGAN Fig. 3) and separation scores."""
from histaug.embedding import feature_extractor, parse_panels, write_tsne
from histaug.provenance import of_rule
from histaug.rulekit import run_rule
from histaug.utils import get_device, read_json


def main(smk, log):
    settings = smk.params.settings
    kind = settings["features"]
    extract = feature_extractor(kind, classifier=smk.input.features if kind == "classifier" else None,
                                inception_status=smk.input.features if kind == "inception" else None,
                                device=get_device(smk.params.compute), batch_size=int(smk.params.batch_size))
    class_names = read_json(smk.input.labels_meta)["class_names"]
    out = smk.output
    write_tsne(parse_panels(smk.params.panels), list(smk.input.samples), extract, class_names, settings,
               out.figure, out.scores, out.coordinates, out.scores_md, log, prov=of_rule(smk))


run_rule(snakemake, main)  # noqa: F821
