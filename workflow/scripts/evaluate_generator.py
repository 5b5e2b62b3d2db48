"""Rule evaluate_generator: FID/KID (Inception and real-data classifier feature spaces), selection counts, and
for GANs with a class head that head's test metrics as the GAN trained it (no fine-tuning)."""
from histaug.classify import load_classifier, penultimate_features
from histaug.fid import fid_infinity, generation_metrics, load_features
from histaug.inception import InceptionFeatures, extract_features
from histaug.io import read_images
from histaug.labels import load_labelled
from histaug.metrics import classification_metrics
from histaug.rulekit import run_rule
from histaug.selectors import load_selector
from histaug.generator_checkpoint import checkpoint_step
from histaug.utils import PipelineError, cap_images, get_device, read_json, write_json


def main(smk, log):
    ev, compute = smk.params.evaluation, smk.params.compute
    device = get_device(compute)
    x_all, _ = read_images(smk.input.samples)
    # attribute-conditioned generators have no selective augmentation (no `selected` input)
    x_sel = read_images(smk.input.selected)[0] if hasattr(smk.input, "selected") else x_all[:0]
    cap = int(ev.get("max_images", 10000))
    x = cap_images(x_all, cap, seed=0)
    (real_inception, real_meta), precision = load_features(smk.input.real_inception), ev.get("inception_precision", "fp32")
    if real_meta.get("inception_precision", "fp32") != precision:
        raise PipelineError(f"{smk.input.real_inception} holds {real_meta.get('inception_precision', 'fp32')} Inception "
                            f"features but config evaluation.inception_precision is {precision}; rerun with "
                            "`--forcerun real_features` so both sides use the same network precision")
    real = {"inception": real_inception, "classifier": load_features(smk.input.real_classifier)[0]}
    kid = dict(kid_subset_size=int(ev.get("kid_subset_size", 1000)), kid_subsets=int(ev.get("kid_subsets", 100)), seed=0)
    bs = int(ev.get("batch_size", 64))
    status = read_json(smk.input.inception)
    fs = ev["feature_space"]
    out = {"generator": smk.wildcards.gen, "family": smk.params.gen_cfg["family"],
           "image_size": int(smk.params.gen_cfg["image_size"]), "n_generated": len(x_all),
           "n_selected": len(x_sel) if hasattr(smk.input, "selected") else None,
           "lambda": float(smk.params.selection["lambda"]) if smk.params.selector else None,
           "tau": float(smk.params.sampling["tau"]) if smk.params.selector else None,
           "selector": smk.params.selector, "condition": smk.params.gen_cfg.get("condition", "class"), **checkpoint_step(smk.input.checkpoint),
           "real_split": ev["real_split"], "n_real": None, "inception_status": status["status"],
           "inception_precision": precision,
           "fid": None, "kid_mean": None, "kid_std": None,
           "feature_space": f"{fs['arch']} real-data classifier (seed {fs['seed']})"}
    if status["status"] == "ok":
        net = InceptionFeatures(status["weights"], device, sha256=status["sha256"],
                                channels_last=bool(compute.get("channels_last")), precision=precision)
        fake = extract_features(net, x, bs, desc="inception (generated)")
        m = generation_metrics(real["inception"], fake, **kid)
        out.update(fid=m["fid"], kid_mean=m["kid_mean"], kid_std=m["kid_std"], n_real=m["n_real"],
                   n_fid=m["n_generated"])
        inf = fid_infinity(real["inception"], fake, min_n=int(ev.get("fid_infinity_min", 500)))
        out["fid_inf"] = inf["fid_inf"] if inf else None
        if inf:
            log.info("FID∞ %.2f from FID at N = %s: %s", inf["fid_inf"], inf["n"], [round(f, 2) for f in inf["fid"]])
        if ev.get("fid_selected", True) and len(x_sel) >= 2:
            ms = generation_metrics(real["inception"], extract_features(net, x_sel, bs, desc="inception (selected)"), **kid)
            out.update(fid_selected=ms["fid"], kid_selected_mean=ms["kid_mean"])
    model, cmeta = load_classifier(smk.input.classifier, device=device)
    fm = generation_metrics(real["classifier"], penultimate_features(model, cmeta, x, batch_size=bs), **kid)
    out.update(feature_fid=fm["fid"], feature_kid_mean=fm["kid_mean"], feature_kid_std=fm["kid_std"])
    if smk.params.has_head:
        xt, yt = load_labelled(smk.input.test, smk.input.labels, "test")
        prob = load_selector("head", smk.input.checkpoint, compute)(xt)
        out["head_test"] = classification_metrics(yt, prob)
        log.info("class head as trained by the GAN, on the real test split: %s", out["head_test"])
    write_json(out, smk.output[0])
    log.info("%s", out)


run_rule(snakemake, main)  # noqa: F821
