"""Parsing the workflow: no torch at parse time, `snakemake --lint` clean, one conda environment that
installs what pyproject.toml declares, and one table of generator-family metadata."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from histaug.utils import PipelineError
from models import families
from models.families import available_families, families_with_class_head, family_conditions

REPO = Path(__file__).resolve().parents[1]
TORCH_STACK = ("torch", "torchvision", "timm", "torch_fidelity")

# Runs Snakemake's command line in one interpreter with an import hook that records where each
# torch-stack module was first imported from, then prints what was recorded as JSON.
_PROBE = """
import json, sys, traceback
watched, first = set(json.loads(sys.argv[2])), {}

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name in watched and name not in first:
            first[name] = "".join(traceback.format_stack()[:-1])
        return None  # never loads anything itself

sys.meta_path.insert(0, Recorder())
from snakemake.cli import main
sys.argv = ["snakemake"] + json.loads(sys.argv[1])
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code
print("IMPORTED=" + json.dumps(first), file=sys.stderr)
sys.exit(code)
"""


def run_snakemake(*args: str, timeout: int = 120) -> tuple[subprocess.CompletedProcess, dict]:
    """`snakemake args` from the repository root; returns the process and {module: import stack}."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args)), json.dumps(TORCH_STACK)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    found = re.search(r"^IMPORTED=(.*)$", proc.stderr, flags=re.M)
    assert found, f"the probe did not finish:\n{proc.stderr[-3000:]}"
    return proc, json.loads(found.group(1))


def test_paper_dry_run_imports_no_torch(shared_patches_dir, tmp_path):
    proc, imported = run_snakemake("-n", "--cores", "1", "--configfile", "config/config.yaml",
                                   "--config", f"data_dir={shared_patches_dir}", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not imported, "parsing the workflow imported " + "\n".join(f"{m} from:\n{s}" for m, s in imported.items())
    jobs = re.search(r"^total\s+(\d+)\s*$", proc.stdout + proc.stderr, flags=re.M)
    assert jobs and int(jobs.group(1)) >= 200, "the paper DAG should plan every training run"
    assert "train_generator" in proc.stdout + proc.stderr


def test_the_probe_sees_torch_when_it_is_imported(tmp_path):
    """The import hook is what the test above relies on: a workflow that imports torch is caught."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(f'import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom models import build_generator\n\n'
                         'rule all:\n    output: "x"\n    shell: "touch {output}"\n')
    proc, imported = run_snakemake("-n", "--cores", "1", "-s", str(snakefile), "-d", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch" in imported and "models/registry.py" in imported["torch"]


def test_lint_is_clean(shared_patches_dir, tmp_path):
    proc, _ = run_snakemake("--lint", "--configfile", "config/demo.yaml",
                            "--config", f"data_dir={shared_patches_dir}", f"results_dir={tmp_path}")
    output = proc.stdout + proc.stderr
    lints = re.findall(r"^Lints for .*$|^    \* .*$", output, flags=re.M)
    assert proc.returncode == 0 and not lints, "snakemake --lint:\n" + "\n".join(lints or [output[-3000:]])
    assert "Congratulations, your workflow is in a good condition!" in output


def test_every_rule_runs_in_the_project_environment():
    """Each rule file defines its rules with `conda: HISTAUG_ENV`, which resolves to envs/histaug.yaml."""
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    env = re.search(r'^HISTAUG_ENV = "(.+)"$', common, flags=re.M)
    assert env and (REPO / "workflow" / "rules" / env.group(1)).resolve() == REPO / "envs" / "histaug.yaml"
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.findall(r"^\s*rule \w+:", text, flags=re.M)
        condas = re.findall(r"^\s*conda:\n\s*HISTAUG_ENV$", text, flags=re.M)
        assert len(condas) == len(rules), f"{smk.name}: {len(rules)} rules, {len(condas)} with conda: HISTAUG_ENV"


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_installs_the_pinned_dependencies_of_pyproject():
    """Snakemake copies an env file to .snakemake/conda/ before creating it, so the file names packages,
    never a path relative to itself; the workflow's own code is found from the workflow folder, and a
    job's script runs with the Snakemake that started it (so the env does not install its own)."""
    tomllib = pytest.importorskip("tomllib")
    declared = [d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                if _requirement_name(d) != "snakemake"]
    env = yaml.safe_load((REPO / "envs" / "histaug.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "pip" in env["dependencies"] and any(str(d).startswith("python") for d in env["dependencies"])
    assert not [p for p in pip if p.startswith("-") or "/" in p or p.startswith(".")], pip
    assert sorted(pip, key=_requirement_name) == sorted(declared, key=_requirement_name)
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pip)


# ------------------------------------------------------------------------- family metadata


def test_family_table_answers_without_building():
    assert set(available_families()) >= {"cgan", "cvae", "hvitgan", "medvitgan", "biggan", "attributegan"}
    assert families_with_class_head() == ["hvitgan", "medvitgan"]
    assert family_conditions("attributegan") == ("attributes",)
    assert family_conditions("cvae") == ("class", "attributes")
    with pytest.raises(PipelineError, match=r"generators\.g\.family='nope'.*expected one of"):
        families.family_info("nope", "g")


@pytest.mark.parametrize("info", families.BUILTIN, ids=lambda i: i.name)
def test_registry_builds_each_family_from_its_declared_module(info):
    from models.registry import get_family

    spec = get_family(info.name)
    assert spec.info is families.family_info(info.name)
    assert spec.builder.__module__ == info.module
    assert (spec.trainer, spec.class_head, spec.conditions) == (info.trainer, info.class_head, info.conditions)


def test_registration_cannot_contradict_the_table(monkeypatch):
    from models import registry

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    with pytest.raises(ValueError, match=r"'hvitgan' is registered with \{'class_head': False\}.*models/families.py"):
        registry.register_family("hvitgan", class_head=False)
    registry.register_family("plugin_vae", trainer="vae", class_head=True)(lambda cfg, k, name: None)
    assert "plugin_vae" in available_families() and "plugin_vae" in families_with_class_head()
    assert registry.get_family("plugin_vae").trainer == "vae"
    with pytest.raises(ValueError, match="trainer must be one of"):
        registry.register_family("plugin_bad", trainer="diffusion")


# ------------------------------------------------------------------------- attribute names at parse time


def test_attribute_names_come_from_the_annotation_header(tmp_path):
    """Read without pandas at parse time; the same names pandas finds in the header."""
    import pandas as pd

    from histaug.attribute_names import attribute_names

    path = tmp_path / "annotations.csv"
    path.write_text("\ufeffpath,nuclear_pleomorphism_level,\"cell_crowding_level\",freq_id\nslide1/a.png,1,2,0\n",
                    encoding="utf-8")
    expected = [c[: -len("_level")] for c in pd.read_csv(path, nrows=0).columns if c.endswith("_level")]
    cfg = {"source": "file", "file": {"path": str(path)}}
    assert attribute_names(cfg) == expected == ["nuclear_pleomorphism", "cell_crowding"]
    path.write_text("")
    with pytest.raises(PipelineError, match=r"attributes\.file\.path=.*empty.*_level"):
        attribute_names(cfg)
