"""Turn the validated workflow config into a run plan: datasets, OFRecord parts, runs, checkpoints.

Everything the Snakemake rules need to know before any job runs (which checkpoints a run will
write, how many OFRecord parts a dataset gets, the `faceflow train --set` arguments) is decided
here, from the config alone.
"""
from __future__ import annotations

import math
import re
import shlex
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from faceflow.data.synth_layout import DEFAULT_IDENTITIES as SYNTH_IJB_IDENTITIES
from faceflow.data.synth_layout import IJB_DIR
from faceflow.data.synth_layout import check_arguments as check_synth_arguments
from faceflow.errors import ConfigError, FaceflowError
from faceflow.eval.ijb_names import TARGETS as IJB_TARGETS
from faceflow.export.model_files import model_format, model_inputs, mxnet_epoch
from faceflow.train.config import load_config as load_training_config
from faceflow.train.keys import KEY_BY_NAME, RUN_KEYS
from faceflow.train.rules import check_run
from faceflow.train.rules import total_steps as total_training_steps
from faceflow.workflow.resources import JobShape, Resource, default_mem_mb_per_process, job_shape

# `key.sub: message` of a training-config error
_KEYED_ERROR = re.compile(r"^([A-Za-z_]\w*)((?:\.[\w.-]+)?): (.*)$")
# training keys the run entry spells differently (max_steps -> steps, num_threads -> threads, ...)
_RENAMED = {name: run for run, name in RUN_KEYS.items() if run != name}
_RENAMED_WORD = re.compile(r"\b(?:" + "|".join(map(re.escape, _RENAMED)) + r")\b")


DATASET_SOURCES = ("synthetic", "url", "path", "ofrecord")  # the keys of a dataset entry that say where it comes from
VALIDATION_THREADS = 2  # CPU threads of a validation job (onnxruntime's, or OneFlow's on CUDA for the host side)


@dataclass(frozen=True)
class DatasetPlan:
    """Where a dataset comes from and how its OFRecord copy is split (ready-made OFRecord keeps its parts)."""

    name: str
    source: str  # one of DATASET_SOURCES
    settings: dict[str, Any]
    num_classes: int | None
    num_images: int | None
    benchmarks: tuple[str, ...]
    parts: int | None  # None for `ofrecord`: trained on as it is
    shuffle_seed: int

    @property
    def ready_made(self) -> bool:
        """True for OFRecord data used without conversion."""
        return self.source == "ofrecord"

    @property
    def ijb_identities(self) -> int:
        """`faceflow synth --ijb-identities` of a synthetic dataset (synth's default unless set; 0 for others)."""
        if self.source != "synthetic":
            return 0
        return int(self.settings["synthetic"].get("ijb_identities", SYNTH_IJB_IDENTITIES))

    @property
    def writes_ijb(self) -> bool:
        """True for a synthetic dataset whose `faceflow synth` job also writes ijb/IJBC and ijb/IJBB."""
        return self.source == "synthetic" and self.ijb_identities != 0

    def ijb_files(self) -> dict[str, str]:
        """Target -> path under the dataset folder of the IJB meta file (the pair list) its synth job writes."""
        if not self.writes_ijb:
            return {}
        return {target: f"{IJB_DIR}/{target}/meta/{files.pairs}" for target, files in IJB_TARGETS.items()}


@dataclass(frozen=True)
class RunPlan:
    """One training run: its merged training config and the checkpoints it will write."""

    name: str
    dataset: str
    base: str
    train_config: dict[str, Any]
    overrides: dict[str, Any]
    gpus: int
    threads: int
    device: str
    max_steps: int
    checkpoint_steps: tuple[int, ...]
    shape: JobShape  # what the train job asks the scheduler for (faceflow.workflow.resources)

    @property
    def nodes(self) -> int:
        """Nodes the run trains on (`gpus` processes each)."""
        return self.shape.nodes

    @property
    def world_size(self) -> int:
        """Processes taking part in training (one per GPU, or CPU processes, on every node)."""
        return self.gpus * self.nodes

    @property
    def gpu_resource(self) -> int:
        """GPUs the train job asks the scheduler for on each node (0 on CPU)."""
        return self.shape.gpus

    @property
    def master_port(self) -> int:
        """Rendezvous port of the run's processes, distinct per run so concurrent jobs on a node do not clash."""
        return 29500 + zlib.crc32(self.name.encode()) % 2000

    def resources(self, style: str) -> dict[str, Resource]:
        """The train job's Snakemake resources as the executor of `style` reads them (resources.STYLES)."""
        return self.shape.resources(style)

    @property
    def node_arguments(self) -> str:
        """`faceflow train` options of a multi-node run (node rank and master address from SLURM), else ''."""
        return f"--nnodes {self.nodes} --from-slurm" if self.nodes > 1 else ""

    @property
    def validation_mem_mb(self) -> int:
        """Memory of one of the run's validation jobs (one process)."""
        return self.shape.mem_mb // self.shape.processes

    def set_arguments(self, train_data: str) -> list[str]:
        """`--set KEY=VALUE` pairs for `faceflow train` (values in YAML flow syntax), sorted by key so that
        reordering a run entry's keys does not change the train job's parameters (and retrain)."""
        values = dict(self.overrides)
        values["train_data"] = train_data
        args: list[str] = []
        for key, value in sorted(values.items()):
            args += ["--set", f"{key}={_flow_yaml(value)}"]
        return args

    def set_argument_string(self, train_data: str) -> str:
        """`set_arguments` quoted for a shell command line."""
        return " ".join(shlex.quote(arg) for arg in self.set_arguments(train_data))


@dataclass(frozen=True)
class ValidationJob:
    """The validation job of one run or model, which scores each checkpoint on every benchmark in one call (so
    the CPU engine's ONNX export happens once per checkpoint): the device and engine `faceflow validate` gets,
    the GPUs the job asks the scheduler for and its CPU threads."""

    device: str  # cuda (a CUDA run: OneFlow on its GPU) | cpu | auto (models, runs with device: auto)
    engine: str
    shape: JobShape  # one process on one node: one GPU for a CUDA run, its threads, one process's memory

    @property
    def gpus(self) -> int:
        """GPUs the job asks for (1 for a CUDA run, else 0)."""
        return self.shape.gpus

    @property
    def threads(self) -> int:
        """CPU threads of the job."""
        return self.shape.cpus

    def resources(self, style: str) -> dict[str, Resource]:
        """The job's Snakemake resources as the executor of `style` reads them (resources.STYLES), spelled
        as the train job's are."""
        return self.shape.resources(style)

    def argument_string(self, benches: Mapping[str, str]) -> str:
        """`faceflow validate` options (quoted for a shell): `--bench NAME=PATH` each, device, engine, threads."""
        args = [arg for name, path in benches.items() for arg in ("--bench", f"{name}={path}")]
        args += ["--device", self.device, "--engine", self.engine, "--threads", str(self.threads)]
        return " ".join(shlex.quote(arg) for arg in args)


@dataclass(frozen=True)
class ModelPlan:
    """A published model put through validation, export and the report beside the runs, never trained:
    `faceflow import ... --as-run` makes it a run directory with one checkpoint, step 0."""

    name: str
    path: str
    format: str  # torch | onnx | mxnet (faceflow.export.model_files)
    network: str
    embedding_size: int | None
    dataset: str  # whose benchmark .bin files validate it

    def inputs(self) -> list[str]:
        """The model's files (the import job reruns when one changes)."""
        return model_inputs(self.path, self.format)

    def import_argument_string(self, out_dir: str) -> str:
        """`faceflow import` arguments (quoted for a shell) writing the run directory `out_dir`."""
        source = list(mxnet_epoch(self.path) or ()) if self.format == "mxnet" else [self.path]
        args = [self.format, *map(str, source), out_dir, "--as-run", "--network", self.network]
        if self.embedding_size is not None:
            args += ["--embedding-size", str(self.embedding_size)]
        return " ".join(shlex.quote(arg) for arg in args)


@dataclass(frozen=True)
class IJBPlan:
    """IJB evaluation of every run's and model's exported model: the targets, and where the benchmarks are:
    a folder of the user's (`path`) or the ijb/ a synthetic dataset's `faceflow synth` job writes (`dataset`)."""

    targets: tuple[str, ...] = ()
    path: str | None = None
    dataset: str | None = None
    batch_size: int = 128


@dataclass(frozen=True)
class WorkflowPlan:
    """Datasets, runs, validation and export settings of one workflow config."""

    datasets: dict[str, DatasetPlan]
    runs: dict[str, RunPlan]
    benchmarks: tuple[str, ...]
    val_batch_size: int
    export_formats: tuple[str, ...]
    export_checkpoint: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    models: dict[str, ModelPlan] = field(default_factory=dict)
    ijb: IJBPlan = field(default_factory=IJBPlan)
    val_device: str = "run"  # validation.device, one of resources.VALIDATION_DEVICES

    def used_datasets(self) -> list[str]:
        """Datasets a run trains on, a model is validated on or IJB reads (the only ones the workflow builds)."""
        names = {entry.dataset for entry in (*self.runs.values(), *self.models.values())}
        return sorted(names | ({self.ijb.dataset} if self.ijb.dataset and self.ijb.targets else set()))

    def evaluated(self) -> list[str]:
        """Names of everything validated, exported and reported: the runs, then the models."""
        return [*self.runs, *self.models]

    def dataset_of(self, name: str) -> str:
        """The dataset whose benchmarks validate run or model `name`."""
        return (self.runs.get(name) or self.models[name]).dataset

    def validation_mem_mb(self, name: str, device: str = "cpu") -> int:
        """Memory of a validation job of run or model `name` on `device`: one process of the run (a model's:
        one process's default there)."""
        run = self.runs.get(name)
        return run.validation_mem_mb if run is not None else default_mem_mb_per_process(device)

    def validation_steps(self, run: str) -> list[str]:
        """Zero-padded checkpoint steps of a run or model (the `{step}` wildcard values)."""
        if run in self.models:
            return [f"{0:06d}"]
        return [f"{step:06d}" for step in self.runs[run].checkpoint_steps]

    def validation_job(self, run: str) -> ValidationJob:
        """How the checkpoints of run or model `run` are validated (`validation.device`): by default a CUDA
        run's on one GPU, the rest on CPU (`auto`: CUDA only where the job finds a GPU) with the fastest
        engine; `cpu` or `cuda` puts every job there."""
        if self.val_device == "run":
            device = self.runs[run].device if run in self.runs else "auto"
        else:
            device = self.val_device
        shape = JobShape(nodes=1, processes=1, gpus=1 if device == "cuda" else 0, cpus=VALIDATION_THREADS,
                         mem_mb=self.validation_mem_mb(run, "cuda" if device == "cuda" else "cpu"))
        return ValidationJob(device=device, engine="auto", shape=shape)

    def export_bench(self) -> str | None:
        """The benchmark `best:<bench>` selects on, or None for `last`."""
        return self.export_checkpoint.split(":", 1)[1] if self.export_checkpoint.startswith("best:") else None


def dataset_size(name: str, entry: dict[str, Any]) -> tuple[int | None, int | None]:
    """(num_classes, num_images) of a dataset entry; synthetic sizes follow from its settings."""
    if "synthetic" in entry:
        synth = entry["synthetic"]
        return int(synth["classes"]), int(synth["classes"]) * int(synth["per_class"])
    return entry.get("num_classes"), entry.get("num_images")


def expected_checkpoint_steps(max_steps: int, checkpoint_every: int) -> tuple[int, ...]:
    """Steps at which training writes a checkpoint: every `checkpoint_every` steps and the last step."""
    steps = list(range(checkpoint_every, max_steps + 1, checkpoint_every))
    if not steps or steps[-1] != max_steps:
        steps.append(max_steps)
    return tuple(steps)


def ofrecord_parts(world_sizes: list[int], requested: int | None, key: str) -> int:
    """Parts count: a multiple of every world size reading the dataset (their lcm unless `parts` is set)."""
    need = math.lcm(*world_sizes) if world_sizes else 1
    if requested is None:
        return need
    if requested % need:
        raise ConfigError(f"{key}: {requested} parts is not a multiple of {need} (world sizes {sorted(set(world_sizes))})")
    return requested


def run_error(err: ConfigError, run: str, dataset: str) -> ConfigError:
    """A training-config error as the workflow user sees it: the key as the run entry spells it
    (`max_steps: ...` -> `runs.NAME.steps: ...`), or the dataset for the counts it supplies."""
    text = str(err)
    match = _KEYED_ERROR.match(text)
    if not match or match.group(1) not in KEY_BY_NAME:
        return ConfigError(f"runs.{run}: {text}")
    key, sub, message = match.groups()
    message = _RENAMED_WORD.sub(lambda m: _RENAMED[m.group(0)], message)
    entry = KEY_BY_NAME[key]
    if entry.run:
        return ConfigError(f"runs.{run}.{entry.run}{sub}: {message}")
    if key in ("num_classes", "num_images"):
        return ConfigError(f"datasets.{dataset}: {key}{sub}: {message}")
    return ConfigError(f"runs.{run}: {key}{sub}: {message} (set in its base config)")


def _flow_yaml(value: Any) -> str:
    """A value as one line of YAML flow syntax (what `--set key=value` parses)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _plan_run(name: str, entry: dict[str, Any], dataset: dict[str, Any]) -> RunPlan:
    key = f"runs.{name}"
    nodes = int(entry.get("nodes", 1))
    overrides: dict[str, Any] = {RUN_KEYS[run_key]: value for run_key, value in entry.items() if run_key in RUN_KEYS}
    num_classes, num_images = dataset_size(entry["dataset"], dataset)
    for count_key, value in (("num_classes", num_classes), ("num_images", num_images)):
        if value is None and "ofrecord" not in dataset:  # ready-made OFRecord: counted by faceflow train's check
            raise ConfigError(f"datasets.{entry['dataset']}.{count_key}: required by {key} (see config/README.md)")
        if value is not None:
            overrides[count_key] = value
    for length, other in (("max_steps", "epochs"), ("epochs", "max_steps")):
        if length in overrides and other not in overrides:  # the run's length replaces the base config's
            overrides[other] = None
    overrides["validate_every"] = 0
    try:
        merged = load_training_config(entry["base"], [f"{k}={_flow_yaml(v)}" for k, v in overrides.items()])
        gpus, device = int(merged["nproc_per_node"]), str(merged["device"])
        if device != "auto":  # `auto` is resolved, and its device rules checked, when training starts
            check_run(merged, gpus * nodes, device)
        max_steps = total_training_steps(merged, gpus * nodes)
    except ConfigError as err:
        raise run_error(err, name, entry["dataset"]) from None
    overrides.update(max_steps=max_steps, epochs=None)
    return RunPlan(
        name=name,
        dataset=entry["dataset"],
        base=entry["base"],
        train_config={**merged, **overrides},
        overrides=overrides,
        gpus=gpus,
        threads=int(merged["num_threads"]),
        device=device,
        max_steps=max_steps,
        checkpoint_steps=expected_checkpoint_steps(max_steps, int(merged["checkpoint_every"])),
        shape=job_shape(nodes, gpus, device, int(merged["num_threads"]), entry.get("mem_mb_per_process"),
                        entry.get("cpus_per_gpu")),
    )


def _plan_model(name: str, entry: dict[str, Any], datasets: dict[str, Any], runs: dict[str, RunPlan]) -> ModelPlan:
    key = f"models.{name}"
    if name in runs:
        raise ConfigError(f"{key}: {name!r} is also a run name; models and runs share results/runs/")
    dataset = entry.get("dataset")
    if dataset is None:
        if len(datasets) != 1:
            raise ConfigError(f"{key}.dataset: required when there is more than one dataset "
                              f"({', '.join(datasets)}): whose benchmarks validate the model")
        dataset = next(iter(datasets))
    if dataset not in datasets:
        raise ConfigError(f"{key}.dataset: unknown dataset {dataset!r} (datasets: {', '.join(datasets)})")
    path = str(entry["path"])
    found = model_format(path, f"{key}.path")
    wanted = entry.get("format", found)
    if found == "faceflow" or wanted != found:
        raise ConfigError(f"{key}.path: {path} is a {found} model" + (
            f", not {wanted}" if wanted != found else "; a faceflow checkpoint is validated with faceflow validate"))
    return ModelPlan(name, path, found, str(entry["network"]), entry.get("embedding_size"), dataset)


def _check_synth_settings(name: str, settings: dict[str, Any]) -> None:
    """`faceflow synth`'s own argument check, the error naming the config key (`--ijb-identities`: `ijb_identities`)."""
    try:
        check_synth_arguments(int(settings["classes"]), int(settings["per_class"]), int(settings["pairs"]),
                              int(settings.get("ijb_identities", SYNTH_IJB_IDENTITIES)))
    except FaceflowError as err:
        option, message = str(err).split(": ", 1)
        raise ConfigError(f"datasets.{name}.synthetic.{option.lstrip('-').replace('-', '_')}: {message}") from None


def _plan_ijb(entry: dict[str, Any], datasets: dict[str, DatasetPlan]) -> IJBPlan:
    """Targets and source of the IJB evaluation; the default source is the synthetic dataset writing IJB sets."""
    targets, batch_size = tuple(entry["targets"]), int(entry["batch_size"])
    if "path" in entry and "dataset" in entry:
        raise ConfigError("ijb: give path (a folder of IJB benchmarks) or dataset (a synthetic one), not both")
    if "path" in entry:
        return IJBPlan(targets, str(entry["path"]), None, batch_size)
    name = entry.get("dataset")
    if name is None:
        if not targets:
            return IJBPlan((), None, None, batch_size)
        writers = [plan.name for plan in datasets.values() if plan.writes_ijb]
        if not writers:
            raise ConfigError(f"ijb.path: required for targets {', '.join(targets)}: no synthetic dataset writes "
                              "an IJB set (datasets.NAME.synthetic.ijb_identities is 0 or there is none)")
        if len(writers) > 1:
            raise ConfigError(f"ijb.dataset: required when several synthetic datasets write IJB sets "
                              f"({', '.join(writers)}): whose ijb/ to evaluate on")
        name = writers[0]
    if name not in datasets:
        raise ConfigError(f"ijb.dataset: unknown dataset {name!r} (datasets: {', '.join(datasets)})")
    if not datasets[name].writes_ijb:
        reason = ("its ijb_identities is 0" if datasets[name].source == "synthetic"
                  else "only faceflow synth writes an IJB set; give ijb.path for a folder of yours")
        raise ConfigError(f"ijb.dataset: {name} writes no IJB set ({reason})")
    return IJBPlan(targets, None, name, batch_size)


def build_plan(config: dict[str, Any]) -> WorkflowPlan:
    """The plan of a validated, default-filled workflow config; ConfigError naming the key on conflicts."""
    datasets_cfg, runs_cfg = config["datasets"], config["runs"]
    benchmarks = tuple(config["validation"]["benchmarks"])
    runs: dict[str, RunPlan] = {}
    for name, entry in runs_cfg.items():
        if entry["dataset"] not in datasets_cfg:
            raise ConfigError(
                f"runs.{name}.dataset: unknown dataset {entry['dataset']!r} (datasets: {', '.join(datasets_cfg)})"
            )
        runs[name] = _plan_run(name, entry, datasets_cfg[entry["dataset"]])
    datasets: dict[str, DatasetPlan] = {}
    for name, entry in datasets_cfg.items():
        users = [run for run in runs.values() if run.dataset == name]
        shipped = tuple(entry["benchmarks"])
        missing = [bench for bench in benchmarks if bench not in shipped]
        if users and missing:
            raise ConfigError(
                f"validation.benchmarks: {', '.join(missing)} not in datasets.{name}.benchmarks "
                f"(used by run {users[0].name})"
            )
        source = next(kind for kind in DATASET_SOURCES if kind in entry)
        num_classes, num_images = dataset_size(name, entry)
        if source == "ofrecord" and "parts" in entry:
            raise ConfigError(f"datasets.{name}.parts: an ofrecord dataset is trained on as it is (its own parts)")
        if source == "synthetic":
            _check_synth_settings(name, entry["synthetic"])
        datasets[name] = DatasetPlan(
            name=name,
            source=source,
            settings=entry,
            num_classes=num_classes,
            num_images=num_images,
            benchmarks=shipped,
            parts=None if source == "ofrecord" else
            ofrecord_parts([run.world_size for run in users], entry.get("parts"), f"datasets.{name}.parts"),
            shuffle_seed=int(entry["shuffle_seed"]),
        )
    models = {name: _plan_model(name, entry, datasets_cfg, runs) for name, entry in config.get("models", {}).items()}
    for model in models.values():
        missing = [bench for bench in benchmarks if bench not in datasets_cfg[model.dataset]["benchmarks"]]
        if missing:
            raise ConfigError(f"validation.benchmarks: {', '.join(missing)} not in datasets.{model.dataset}.benchmarks "
                              f"(validates model {model.name})")
    export = config.get("export", {})
    plan = WorkflowPlan(
        datasets=datasets,
        runs=runs,
        benchmarks=benchmarks,
        val_batch_size=int(config["validation"]["batch_size"]),
        val_device=str(config["validation"]["device"]),
        export_formats=tuple(export.get("formats", ("onnx", "mxnet"))),
        export_checkpoint=str(export.get("checkpoint", "last")),
        config=config,
        models=models,
        ijb=_plan_ijb(config["ijb"], datasets),
    )
    bench = plan.export_bench()
    if bench is not None and bench not in benchmarks:
        raise ConfigError(f"export.checkpoint: best:{bench} needs {bench} in validation.benchmarks")
    return plan
