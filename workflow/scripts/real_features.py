"""Rule real_features: Inception and classifier features of one real split, computed once and reused."""
import numpy as np

from histaug.classify import load_classifier, penultimate_features
from histaug.fid import save_features
from histaug.inception import InceptionFeatures, extract_features
from histaug.io import read_images, resize_images
from histaug.rulekit import run_rule
from histaug.utils import get_device, read_json


def main(smk, log):
    ev, compute = smk.params.evaluation, smk.params.compute
    size = int(smk.wildcards.size)
    device = get_device(compute)
    x, _ = read_images(smk.input.images)
    cap = int(ev.get("max_images", 10000))
    if len(x) > cap:
        x = x[np.sort(np.random.default_rng(0).choice(len(x), cap, replace=False))]
    x = resize_images(x, size)
    precision = ev.get("inception_precision", "fp32")
    meta = {"split": smk.wildcards.split, "size": size, "n": len(x), "inception_precision": precision}
    bs = int(ev.get("batch_size", 64))
    status = read_json(smk.input.inception)
    if status["status"] == "ok":
        net = InceptionFeatures(status["weights"], device, sha256=status["sha256"],
                                channels_last=bool(compute.get("channels_last")), precision=precision)
        inception = extract_features(net, x, bs, desc="inception (real)")
    else:  # FID/KID will be n/a; an empty array keeps the file structure
        inception = np.zeros((0, 2048))
    save_features(smk.output.inception, inception, {**meta, "inception_status": status["status"]})
    model, cmeta = load_classifier(smk.input.classifier, device=device)
    classifier = penultimate_features(model, cmeta, x, batch_size=bs)
    save_features(smk.output.classifier, classifier, {**meta, "classifier": smk.input.classifier})
    log.info("real %s at %dpx: inception %s, classifier %s", smk.wildcards.split, size, inception.shape, classifier.shape)


run_rule(snakemake, main)  # noqa: F821
