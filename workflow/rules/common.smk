# Shared set-up: validate config/config.yaml against the schema, build the run plan, path helpers.
# Every decision lives in faceflow.workflow; the functions here only turn the plan into paths.
import os
import re

from snakemake import __version__ as snakemake_version

from faceflow.data.synth_layout import IJB_DIR as SYNTH_IJB_DIR
from faceflow.eval.benchmark_names import benchmark_pattern
from faceflow.workflow.resources import RESOURCE_NAMES, resource_style
from faceflow.workflow.session import job_shell_prefix, load_plan

PLAN = load_plan(
    workflow.basedir,
    config,
    source=" + ".join(map(str, workflow.configfiles)) or "config",
)


def uses_conda():
    """Whether jobs run in their conda environment (--use-conda; Snakemake 8+ calls it a deployment method)."""
    settings = getattr(workflow, "deployment_settings", None)
    if settings is not None:
        return any(method.name == "CONDA" for method in settings.deployment_method)
    return bool(getattr(workflow, "use_conda", False))


# every job runs `faceflow` from .venv (Python 3.10, OneFlow), whatever Python runs Snakemake itself
shell.prefix(job_shell_prefix(workflow.basedir, uses_conda()).replace("{", "{{").replace("}", "}}"))


def _job_resource(name, resources_of):
    """A rule's resource `name` (faceflow.workflow.resources.RESOURCE_NAMES): `resources_of(wildcards, style)`
    spelled for this Snakemake and its executor (None: the job does not ask for it)."""
    def value(wildcards):
        plugin = getattr(workflow, "executor_plugin", None)
        style = resource_style(snakemake_version, plugin.name if plugin is not None else None)
        return resources_of(wildcards, style)[name]

    return value


def train_resource(name):
    """The train rule's resource `name` of a run."""
    return _job_resource(name, lambda wildcards, style: PLAN.runs[wildcards.run].resources(style))


def validation_resource(name):
    """The validation rule's resource `name` of a run or model."""
    return _job_resource(name, lambda wildcards, style: PLAN.validation_job(wildcards.run).resources(style))


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    run="[A-Za-z0-9_.-]+",
    step="[0-9]+",
    bench=benchmark_pattern(),


def name_pattern(names):
    """A wildcard constraint matching exactly `names` (one that matches nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


TRAINED_RUNS = name_pattern(PLAN.runs)
IMPORTED_MODELS = name_pattern(PLAN.models)
IJB_TARGET_NAMES = name_pattern(PLAN.ijb.targets)


def dataset_files(name):
    """Files of resources/datasets/NAME/ the workflow reads (training data and shipped .bin files)."""
    files = ["train.rec", "train.idx", "property"]
    files += [f"{bench}.bin" for bench in PLAN.datasets[name].benchmarks]
    return [f"resources/datasets/{name}/{file}" for file in files]


def synth_files(name):
    """Files of resources/datasets/NAME/ a synthetic dataset's `faceflow synth` job writes (with ijb/ meta files)."""
    ijb = PLAN.datasets[name].ijb_files().values()
    return dataset_files(name) + [f"resources/datasets/{name}/{file}" for file in ijb]


def ofrecord_dirs(name):
    """Folders of resources/datasets/NAME/ of a ready-made OFRecord dataset: train/ and one per benchmark."""
    return [f"resources/datasets/{name}/{folder}" for folder in ["train", *PLAN.datasets[name].benchmarks]]


def archive_caps(settings):
    """`faceflow download` options of a dataset's archive caps (keys max_unpacked_bytes, max_members)."""
    return [f"--{key.replace('_', '-')}={settings[key]}" for key in ("max_unpacked_bytes", "max_members")
            if key in settings]


def datasets_from(source):
    """Plans of the datasets some run uses whose source is `source` (faceflow.workflow.plan.DATASET_SOURCES)."""
    return [
        PLAN.datasets[name]
        for name in PLAN.used_datasets()
        if PLAN.datasets[name].source == source
    ]


def run_train_data(wildcards):
    """The OFRecord training directory of a run's dataset (converted, or ready-made as it is)."""
    dataset = PLAN.runs[wildcards.run].dataset
    if PLAN.datasets[dataset].ready_made:
        return f"resources/datasets/{dataset}/train"
    return f"results/ofrecord/{dataset}/train"


def checkpoints_dir(wildcards):
    """A run's checkpoint directory: read by validation and export, never a declared output (see train.smk)."""
    return f"results/runs/{wildcards.run}/checkpoints"


def run_bench_data(wildcards):
    """{bench: OFRecord validation folder} of every validated benchmark of the dataset of a run or model
    (converted, or ready-made as it is)."""
    dataset = PLAN.dataset_of(wildcards.run)
    root = f"resources/datasets/{dataset}" if PLAN.datasets[dataset].ready_made else f"results/ofrecord/{dataset}/val"
    return {bench: f"{root}/{bench}" for bench in PLAN.benchmarks}


def validation_results():
    """results/runs/{run}/validation/step_NNNNNN/{bench}.json for every run and model, checkpoint and benchmark."""
    return [
        f"results/runs/{run}/validation/step_{step}/{bench}.json"
        for run in PLAN.evaluated()
        for step in PLAN.validation_steps(run)
        for bench in PLAN.benchmarks
    ]


def export_files():
    """Export file patterns (with {run}) for the configured formats."""
    files = ["results/runs/{run}/export/export.json"]
    if "onnx" in PLAN.export_formats:
        files.append("results/runs/{run}/export/model.onnx")
    if "mxnet" in PLAN.export_formats:
        files.append("results/runs/{run}/export/mxnet/model-symbol.json")
        files.append("results/runs/{run}/export/mxnet/model-0000.params")
    return files


def export_outputs():
    """Export files of every run and model."""
    return expand(export_files(), run=PLAN.evaluated())


def export_inputs(wildcards):
    """Inputs of a run's export: its training manifest, and the validation results `best:` chooses by."""
    inputs = {"manifest": f"results/runs/{wildcards.run}/train.json"}
    bench = PLAN.export_bench()
    if bench is not None:
        inputs["validation"] = [
            f"results/runs/{wildcards.run}/validation/step_{step}/{bench}.json"
            for step in PLAN.validation_steps(wildcards.run)
        ]
    return inputs


def manifests():
    """The train.json of every run and model (a model's is written by its import job)."""
    return expand("results/runs/{run}/train.json", run=PLAN.evaluated())


def ijb_results():
    """results/runs/{run}/ijb/{target}.json for every run and model and IJB target (none without targets)."""
    return expand("results/runs/{run}/ijb/{target}.json", run=PLAN.evaluated(), target=PLAN.ijb.targets)


def ijb_dir():
    """The folder `faceflow ijb` reads: ijb.path, or the ijb/ that the synthetic dataset's synth job writes."""
    return PLAN.ijb.path or f"resources/datasets/{PLAN.ijb.dataset}/{SYNTH_IJB_DIR}"


def ijb_inputs(wildcards):
    """Inputs of a run's IJB job: its export record (export_model's choice of checkpoint) and, for the
    synthetic set, the target's meta file its synth job writes."""
    inputs = {"export": f"results/runs/{wildcards.run}/export/export.json"}
    if PLAN.ijb.dataset is not None:
        file = PLAN.datasets[PLAN.ijb.dataset].ijb_files()[wildcards.target]
        inputs["meta"] = f"resources/datasets/{PLAN.ijb.dataset}/{file}"
    return inputs


def report_outputs():
    """The report files."""
    return [
        "results/report/accuracy.csv",
        "results/report/report.md",
        "results/report/report.html",
    ]
