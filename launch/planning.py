"""The plan of a sweep: grids of experiments (the paper's tables or a JSON file) crossed
with seeds, each seed of an experiment a run in its run folder

  <root>/<config stem>/<experiment name>/seed_<N>

e.g. ``runs/mnist/conv-vectorized-nonneg-gevb/seed_0`` (``grid.Experiment.name``, and
``workdir.seed_dir``: the folder the trainer gives a seed). A job, one process of the
trainer, runs either one seed of an experiment or all of them (packed: the trainer's
``--config.num_seeds``); the run folders are the same either way, so packed and
unpacked sweeps resume each other's runs.

Planning reads nothing from disk but the grid file; ``Job.check`` reads the config
file to check a job's config as the trainer would, and ``adopt_old_folders`` looks for
the folders older sweeps made.
"""

import dataclasses
import json
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gevb_jax import arch_spec, cli_config, config_check, grid
from gevb_jax import workdir as run_folder

# Config keys that every experiment sets itself; overrides may not.
RESERVED_KEYS = (
  "model.arch",
  "model.vectorized",
  "model.nonneg",
  "rule",
  "model.output_code",
  "seed",
  "num_seeds",
)


_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _check_list(name, values, valid):
  """Raises ValueError unless `values` lists distinct `valid` items."""
  choices = ", ".join(json.dumps(v) for v in valid)
  if not isinstance(values, (list, tuple)) or not values:
    raise ValueError(f"{name} must be a non-empty list of {choices}; got {values!r}")
  for value in values:
    if type(value) is not type(valid[0]) or value not in valid:
      raise ValueError(f"bad {name} value {value!r}; valid choices: {choices}")
  if len(set(values)) < len(values):
    raise ValueError(f"{name} lists a value twice: {values!r}")


def _check_archs(values):
  """Raises ValueError unless `values` lists distinct paper names or layer specs."""
  if not isinstance(values, (list, tuple)) or not values:
    raise ValueError(
      f"archs must be a non-empty list of {', '.join(map(json.dumps, grid.ARCHS))} "
      f"or layer specs; got {values!r}"
    )
  for value in values:
    try:
      arch_spec.check(value)
    except arch_spec.SpecError as err:
      raise ValueError(f"bad archs value: {err}") from None
  if len(set(values)) < len(values):
    raise ValueError(f"archs lists a value twice: {values!r}")


def _check_key(key):
  """Raises ValueError unless `key` is a config key that overrides may set."""
  if not _KEY.fullmatch(key):
    raise ValueError(f"bad config key {key!r}: expected a dotted name like model.width")
  if key in RESERVED_KEYS:
    raise ValueError(
      f"config key {key!r} is set per job by the grid's archs, kinds, nonneg, rules "
      "and output_codes, --seeds and --pack_seeds; "
      f"overrides may not set any of {', '.join(RESERVED_KEYS)}"
    )


def _kinds(values):
  """Grid-file kinds with the old short names ("vec", "conv") spelled out."""
  if isinstance(values, (list, tuple)):
    return tuple(
      grid.OLD_KIND_NAMES.get(v, v) if isinstance(v, str) else v for v in values
    )
  return values


@dataclasses.dataclass(frozen=True)
class Grid:
  """One config file crossed with archs x kinds x nonneg x rules (per kind) x output
  codes: the axes of ``grid.ALL_COLUMNS``, each defaulting to the paper's values.

  Kinds are "vectorized" and "conventional" (``grid.KINDS``); the old names "vec" and
  "conv" are read as those.
  """

  config: str
  archs: Sequence[str] = grid.ARCHS
  kinds: Sequence[str] = grid.KINDS
  nonneg: Sequence[bool] = (True, False)
  # Kinds missing here get the paper's rules, grid.PAPER_RULES[kind]; any of
  # grid.RULES[kind] may be listed.
  rules: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  output_codes: Sequence[str] = grid.OUTPUT_CODES[:1]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.config, str) or not self.config.endswith(".py"):
      raise ValueError(
        'config must name a .py config file, e.g. "configs/default.py"; '
        f"got {self.config!r}"
      )
    _check_archs(self.archs)
    object.__setattr__(self, "kinds", _kinds(self.kinds))
    _check_list("kinds", self.kinds, grid.KINDS)
    _check_list("nonneg", self.nonneg, (True, False))
    if not isinstance(self.rules, Mapping):
      raise ValueError(f"rules must map kinds to lists of rules; got {self.rules!r}")
    rules = {grid.OLD_KIND_NAMES.get(k, k): v for k, v in self.rules.items()}
    object.__setattr__(self, "rules", rules)
    for kind, kind_rules in rules.items():
      if kind not in self.kinds:
        raise ValueError(
          f"rules given for kind {kind!r}, which is not in kinds {list(self.kinds)}"
        )
      _check_list(f"rules for kind {kind!r}", kind_rules, grid.RULES[kind])
    _check_list("output_codes", self.output_codes, grid.OUTPUT_CODES)
    if not isinstance(self.overrides, Mapping):
      raise ValueError(
        f"overrides must map config keys to values; got {self.overrides!r}"
      )
    for key, value in self.overrides.items():
      _check_key(key)
      if not isinstance(value, (str, int, float)):
        raise ValueError(
          f"override {key!r} must be a string, number or boolean; got {value!r}"
        )

  def rules_for(self, kind):
    """The rules swept for networks of ``kind`` ("vectorized" or "conventional")."""
    return self.rules.get(kind, grid.PAPER_RULES[kind])


GRIDS = {
  "table1": Grid("configs/mnist.py"),  # Table 1: MNIST.
  "table2": Grid("configs/cifar.py"),  # Table 2: CIFAR-10.
}


def load_grid(name):
  """Returns the paper grid called `name`, or the one in JSON file `name`."""
  if name in GRIDS:
    return GRIDS[name]
  path = pathlib.Path(name)
  if not path.is_file():
    what = "grid file not found" if path.suffix == ".json" else "unknown grid"
    raise ValueError(
      f"{what}: {name!r}; valid choices: {', '.join(GRIDS)} or a grid .json file"
    )
  try:
    spec = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"grid file {name}: not valid JSON ({e})") from None
  if not isinstance(spec, dict) or "config" not in spec:
    raise ValueError(f'grid file {name}: expected a JSON object with a "config" key')
  keys = [field.name for field in dataclasses.fields(Grid)]
  for key in spec:
    if key not in keys:
      raise ValueError(
        f"grid file {name}: unknown key {key!r}; valid keys: {', '.join(keys)}"
      )
  try:
    return Grid(**spec)
  except ValueError as e:
    raise ValueError(f"grid file {name}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Job:
  """One process of the trainer: an experiment of the grid with its config, seeds and
  workdir.

  A job of one seed trains it in ``workdir``, its run folder. A job of several
  (packed) trains them in one process, ``--config.num_seeds``, each in its run folder
  ``workdir.seed_dir(workdir, seed)``.
  """

  experiment: grid.Experiment
  config: str
  seeds: range  # Contiguous, as --config.seed and --config.num_seeds name them.
  workdir: pathlib.Path
  overrides: tuple[tuple[str, str], ...] = ()

  @property
  def packed(self):
    return len(self.seeds) > 1

  @property
  def run_folders(self):
    """The run folder of every seed, in the order of ``seeds``."""
    folders = run_folder.seed_dirs(self.workdir, self.seeds[0], len(self.seeds))
    return [pathlib.Path(folder) for folder in folders]

  @property
  def seed_text(self):
    """``seed 3``, or ``seeds 0-4`` for a packed job."""
    if not self.packed:
      return f"seed {self.seeds[0]}"
    return f"seeds {self.seeds[0]}-{self.seeds[-1]}"

  @property
  def log(self):
    """Where the local backend appends the job's stdout and stderr: the run folder, or
    the experiment's folder above the run folders of a packed job."""
    return self.workdir / run_folder.LOG

  def unfinished(self):
    """The run folders without a summary (reads the disk)."""
    return [f for f in self.run_folders if not run_folder.finished(f)]

  def finished(self):
    """Whether every seed's run has written its summary (reads the disk)."""
    return not self.unfinished()

  def holders(self):
    """{run folder: PID} for the run folders another live process holds, asking each
    lock once (reads the disk)."""
    pids = {folder: run_folder.holder(folder) for folder in self.run_folders}
    return {folder: pid for folder, pid in pids.items() if pid}

  def config_args(self):
    """The trainer's ``--config`` flags of this job: its config file and fields."""
    e = self.experiment
    return [
      f"--config={self.config}",
      f"--config.model.arch={e.arch}",
      f"--config.model.vectorized={e.vectorized}",
      f"--config.model.nonneg={e.nonneg}",
      f"--config.rule={e.rule}",
      f"--config.model.output_code={e.output_code}",
      f"--config.seed={self.seeds[0]}",
      *([f"--config.num_seeds={len(self.seeds)}"] if self.packed else []),
      *(f"--config.{key}={value}" for key, value in self.overrides),
    ]

  def command(self, trainer_module="gevb_jax.main"):
    """The command line that trains (or resumes) this job."""
    config_file, *fields = self.config_args()
    return [
      sys.executable,
      "-m",
      trainer_module,
      config_file,
      f"--workdir={self.workdir}",
      *fields,
    ]

  def check(self):
    """Raises ValueError, naming the experiment and the flag or value, where the
    trainer would refuse this job's config: its own parsing of the flags
    (``cli_config``) and its own checks of the values (``config_check``), which need
    no data (reads the config file)."""
    try:
      config = cli_config.read(self.config_args())
      config_check.check_config(config.copy_and_resolve_references())
    except ValueError as err:
      raise ValueError(f"{self.experiment.name}: {err}") from None


def plan(sweep_grid, seeds, root, overrides=None, *, pack_seeds):
  """Lists the jobs of ``sweep_grid`` for seeds 0, ..., seeds - 1.

  Pure: reads nothing from disk; the same arguments give the same plan.

  Args:
    sweep_grid: the ``Grid`` to sweep.
    seeds: how many seeds to run every grid point with.
    root: directory under which every job gets its workdir.
    overrides: config overrides applied on top of ``sweep_grid.overrides``.
    pack_seeds: whether one job trains all the seeds of an experiment.

  Returns:
    With ``pack_seeds``, one ``Job`` per (arch, kind, nonneg, rule, output code);
    without, one per seed and those, all of seed 0 first.
  """
  merged = {**sweep_grid.overrides, **(overrides or {})}
  items = tuple((key, str(value)) for key, value in merged.items())
  dataset_dir = pathlib.Path(root) / pathlib.PurePath(sweep_grid.config).stem
  experiments = [
    grid.Experiment(arch, kind == "vectorized", nonneg, rule, code)
    for arch in sweep_grid.archs
    for kind in sweep_grid.kinds
    for nonneg in sweep_grid.nonneg
    for code in sweep_grid.output_codes
    for rule in sweep_grid.rules_for(kind)
  ]
  if pack_seeds:
    parts = [(range(seeds), e) for e in experiments]
  else:
    parts = [(range(s, s + 1), e) for s in range(seeds) for e in experiments]
  jobs = []
  for job_seeds, e in parts:
    workdir = dataset_dir / e.name
    if len(job_seeds) == 1:  # The trainer runs a single seed in its workdir itself.
      workdir = pathlib.Path(run_folder.seed_dir(workdir, job_seeds[0]))
    jobs.append(Job(e, sweep_grid.config, job_seeds, workdir, items))
  return jobs


def _folder_to_use(folder, experiment, seed):
  """The run folder ``folder`` of ``experiment`` and ``seed``, or where it does not
  exist, the first that does of the folders older sweeps gave the run:
  ``<experiment name>/seed<N>``, then under the experiment's name from before the
  kinds were spelled out (``fc-vec-nonneg-gevb/seed<N>``)."""
  experiment_dir = folder.parent
  candidates = [
    folder,
    experiment_dir / f"seed{seed}",
    experiment_dir.parent / experiment.old_name / f"seed{seed}",
  ]
  return next((f for f in candidates if f.exists()), folder)


def adopt_old_folders(jobs):
  """Jobs whose run folder does not exist but one an older sweep made for it does
  (``_folder_to_use``) keep running there, so that a sweep started then resumes
  instead of starting over. A packed job with any seed in an old folder becomes one
  job per seed, each in its folder. Reads the disk."""
  adopted = []
  for job in jobs:
    folders = [
      _folder_to_use(folder, job.experiment, seed)
      for seed, folder in zip(job.seeds, job.run_folders)
    ]
    if folders == job.run_folders:
      adopted.append(job)
    else:
      adopted += [
        dataclasses.replace(job, seeds=range(seed, seed + 1), workdir=folder)
        for seed, folder in zip(job.seeds, folders)
      ]
  return adopted


def parse_overrides(items):
  """Parses `--set key=value` items into a {key: value} dict."""
  overrides = {}
  for item in items:
    key, sep, value = item.partition("=")
    try:
      if not sep:
        raise ValueError("expected key=value, e.g. --set num_epochs=2")
      _check_key(key)
    except ValueError as e:
      raise ValueError(f"bad --set {item!r}: {e}") from None
    overrides[key] = value
  return overrides
