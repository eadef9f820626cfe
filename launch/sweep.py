r"""Sweeps the paper's experiment grid over local GPUs or a SLURM cluster.

Every experiment is one run of the training CLI,

  python -m gevb_jax.main --config=<config> --workdir=<workdir> \
      --config.model.arch=<arch> --config.model.vectorized=<bool> \
      --config.model.nonneg=<bool> --config.rule=<rule> --config.seed=<seed> \
      [--config.<key>=<value> ...]

in its own stable workdir

  <root>/<dataset>/<arch>-<vec|conv>-<nonneg|mixed>-<rule>/seed<N>

where <dataset> is the config file's stem (mnist, cifar, ...). A run is
finished once its workdir holds summary.json; running an unfinished one again
resumes it from its latest checkpoint. All state lives in the workdirs, so a
stopped sweep is resumed by running the same command again: finished runs are
skipped and the others rerun.

Examples (from the repository root):

  # Table 1 (MNIST), 5 seeds, 2 runs at a time on each of 4 GPUs; plan first.
  python -m launch.sweep --grid=table1 --seeds=5 --root=runs \
      --gpus=0,1,2,3 --runs_per_gpu=2 --dry-run
  # Tables 1 and 2 as one SLURM job array.
  python -m launch.sweep --grid=table1,table2 --seeds=5 --root=runs \
      --backend=slurm --slurm_partition=gpu --submit
  # A short offline sweep on the CPU.
  python -m launch.sweep --grid=launch/grids/digits.json --seeds=2 \
      --root=/tmp/digits --gpus=cpu --runs_per_gpu=4 --set num_epochs=1

Grids. `table1` (MNIST, configs/mnist.py) and `table2` (CIFAR-10,
configs/cifar.py) hold the paper's 24 experiments per seed: arch {fc, conv, lc}
x {vectorized, conventional} x {nonnegative, mixed-sign} x 2 rules (vectorized
nets: gevb, bp; conventional nets: dfa, bp). Any other --grid value names a
JSON file holding one object with these keys:

  config     string (required)  config file, relative to where the sweep runs,
                                e.g. "configs/default.py"
  archs      list of strings    subset of "fc", "conv", "lc" (default: all)
  kinds      list of strings    subset of "vec" (vectorized) and "conv"
                                (conventional) (default: both)
  nonneg     list of booleans   subset of true, false (default: both)
  rules      object             kind -> list of rules, e.g. {"vec": ["gevb"]};
                                "vec" admits gevb, bp and "conv" admits dfa, bp
                                (default: both rules of every kind)
  overrides  object             config key -> string, number or boolean,
                                passed as --config.<key>=<value>

e.g. {"config": "configs/default.py", "archs": ["fc"],
"overrides": {"num_epochs": 2}}. `--set key=value` adds overrides on top.

Backends. `local` runs every experiment as its own subprocess pinned to one GPU
by CUDA_VISIBLE_DEVICES: the unfinished experiments are dealt round-robin over
--gpus, and each GPU runs --runs_per_gpu of its queue at a time (`--gpus=cpu`
or empty: CPU only, --runs_per_gpu runs at a time). A run's output is appended
to <workdir>/log.txt. Ctrl-C stops the sweep together with its runs, which
share its process group. `slurm` writes <root>/sweep_tasks.txt (one command per
unfinished experiment) and <root>/sweep.sbatch, a job array whose task i runs
line i + 1; --submit hands it to sbatch. Do not rewrite the task file while an
array of the same root is still queued.
"""

import collections
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging

from gevb_jax.models import ARCHS

# Network kind (vectorized or conventional) -> the learning rules it admits.
RULES = {'vec': ('gevb', 'bp'), 'conv': ('dfa', 'bp')}
CPU = 'cpu'
# Config keys that every experiment sets itself; overrides may not.
RESERVED_KEYS = ('model.arch', 'model.vectorized', 'model.nonneg', 'rule',
                 'seed')
_KEY = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)*')

flags.DEFINE_list(
    'grid', None,
    "'table1' (MNIST), 'table2' (CIFAR-10) or a grid JSON file; "
    'comma-separate several to sweep them together.')
flags.DEFINE_integer('seeds', 5, 'Runs seeds 0, ..., seeds - 1.',
                     lower_bound=1)
flags.DEFINE_string('root', None, 'Directory that holds all the workdirs.')
flags.DEFINE_string(
    'gpus', CPU,
    "Comma-separated GPU ids for --backend=local; 'cpu' or empty: CPU only.")
flags.DEFINE_integer(
    'runs_per_gpu', 1, 'Concurrent runs per GPU (in all, for CPU only).',
    lower_bound=1)
flags.DEFINE_bool('dry-run', False, 'Print the plan and run nothing.')
flags.DEFINE_enum('backend', 'local', ['local', 'slurm'], 'Where to run.')
flags.DEFINE_bool('submit', False, 'With --backend=slurm: sbatch the script.')
flags.DEFINE_multi_string(
    'set', [], 'Config override key=value, e.g. num_epochs=2; repeatable.')
flags.DEFINE_string('trainer_module', 'gevb_jax.main',
                    'Module that `python -m` runs for each experiment.')
flags.DEFINE_string('slurm_partition', '',
                    "SLURM partition (default: the cluster's).")
flags.DEFINE_string('slurm_time', '24:00:00', 'SLURM time limit per run.')
flags.DEFINE_integer('slurm_cpus', 8, 'SLURM CPUs per run.', lower_bound=1)
flags.DEFINE_integer('slurm_max_parallel', 32,
                     'Most SLURM array tasks running at once.', lower_bound=1)
flags.mark_flags_as_required(['grid', 'root'])

FLAGS = flags.FLAGS


def _check_list(name: str, values: Any, valid: Sequence[Any]) -> None:
  """Raises ValueError unless `values` lists distinct `valid` items."""
  choices = ', '.join(json.dumps(v) for v in valid)
  if not isinstance(values, (list, tuple)) or not values:
    raise ValueError(
        f'{name} must be a non-empty list of {choices}; got {values!r}')
  for value in values:
    if type(value) is not type(valid[0]) or value not in valid:
      raise ValueError(f'bad {name} value {value!r}; valid choices: {choices}')
  if len(set(values)) < len(values):
    raise ValueError(f'{name} lists a value twice: {values!r}')


def _check_key(key: str) -> None:
  """Raises ValueError unless `key` is a config key that overrides may set."""
  if not _KEY.fullmatch(key):
    raise ValueError(
        f'bad config key {key!r}: expected a dotted name like model.width')
  if key in RESERVED_KEYS:
    raise ValueError(
        f'config key {key!r} is set per experiment by the grid and --seeds; '
        f'overrides may not set any of {", ".join(RESERVED_KEYS)}')


@dataclasses.dataclass(frozen=True)
class Grid:
  """One config file crossed with archs x kinds x nonneg x rules (per kind)."""
  config: str
  archs: Sequence[str] = ARCHS
  kinds: Sequence[str] = tuple(RULES)
  nonneg: Sequence[bool] = (True, False)
  # Kinds missing here get all the rules they admit, RULES[kind].
  rules: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.config, str) or not self.config.endswith('.py'):
      raise ValueError(
          'config must name a .py config file, e.g. "configs/default.py"; '
          f'got {self.config!r}')
    _check_list('archs', self.archs, ARCHS)
    _check_list('kinds', self.kinds, tuple(RULES))
    _check_list('nonneg', self.nonneg, (True, False))
    if not isinstance(self.rules, Mapping):
      raise ValueError(
          f'rules must map kinds to lists of rules; got {self.rules!r}')
    for kind, rules in self.rules.items():
      if kind not in self.kinds:
        raise ValueError(f'rules given for kind {kind!r}, which is not in '
                         f'kinds {list(self.kinds)}')
      _check_list(f'rules for kind {kind!r}', rules, RULES[kind])
    if not isinstance(self.overrides, Mapping):
      raise ValueError(
          f'overrides must map config keys to values; got {self.overrides!r}')
    for key, value in self.overrides.items():
      _check_key(key)
      if not isinstance(value, (str, int, float)):
        raise ValueError(f'override {key!r} must be a string, number or '
                         f'boolean; got {value!r}')

  def rules_for(self, kind: str) -> Sequence[str]:
    """The rules swept for networks of `kind` ('vec' or 'conv')."""
    return self.rules.get(kind, RULES[kind])


GRIDS = {
    'table1': Grid('configs/mnist.py'),  # Table 1: MNIST.
    'table2': Grid('configs/cifar.py'),  # Table 2: CIFAR-10.
}


def load_grid(name: str) -> Grid:
  """Returns the paper grid called `name`, or the one in JSON file `name`."""
  if name in GRIDS:
    return GRIDS[name]
  path = pathlib.Path(name)
  if not path.is_file():
    what = 'grid file not found' if path.suffix == '.json' else 'unknown grid'
    raise ValueError(f'{what}: {name!r}; valid choices: '
                     f'{", ".join(GRIDS)} or a grid .json file')
  try:
    spec = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'grid file {name}: not valid JSON ({e})') from None
  if not isinstance(spec, dict) or 'config' not in spec:
    raise ValueError(
        f'grid file {name}: expected a JSON object with a "config" key')
  keys = [field.name for field in dataclasses.fields(Grid)]
  for key in spec:
    if key not in keys:
      raise ValueError(f'grid file {name}: unknown key {key!r}; '
                       f'valid keys: {", ".join(keys)}')
  try:
    return Grid(**spec)
  except ValueError as e:
    raise ValueError(f'grid file {name}: {e}') from None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One training run: a point of the grid with its seed and workdir."""
  config: str
  arch: str
  vectorized: bool
  nonneg: bool
  rule: str
  seed: int
  workdir: pathlib.Path
  overrides: tuple[tuple[str, str], ...] = ()

  @property
  def log(self) -> pathlib.Path:
    """Where the local backend appends the run's stdout and stderr."""
    return self.workdir / 'log.txt'

  def finished(self) -> bool:
    """Whether the run has written its summary.json (reads the disk)."""
    return (self.workdir / 'summary.json').exists()

  def command(self, trainer_module: str = 'gevb_jax.main') -> list[str]:
    """The command line that trains (or resumes) this experiment."""
    return [
        sys.executable, '-m', trainer_module,
        f'--config={self.config}',
        f'--workdir={self.workdir}',
        f'--config.model.arch={self.arch}',
        f'--config.model.vectorized={self.vectorized}',
        f'--config.model.nonneg={self.nonneg}',
        f'--config.rule={self.rule}',
        f'--config.seed={self.seed}',
        *(f'--config.{key}={value}' for key, value in self.overrides),
    ]


def plan(
    grid: Grid,
    seeds: int,
    root: str | os.PathLike[str],
    overrides: Mapping[str, str] | None = None,
) -> list[Experiment]:
  """Lists the experiments of `grid` for seeds 0, ..., seeds - 1.

  Pure: reads nothing from disk; the same arguments give the same plan.

  Args:
    grid: the grid to sweep.
    seeds: how many seeds to run every grid point with.
    root: directory under which every experiment gets its workdir.
    overrides: config overrides applied on top of `grid.overrides`.

  Returns:
    One Experiment per (seed, arch, kind, nonneg, rule), all of seed 0 first.
  """
  merged = {**grid.overrides, **(overrides or {})}
  items = tuple((key, str(value)) for key, value in merged.items())
  dataset_dir = pathlib.Path(root) / pathlib.PurePath(grid.config).stem
  return [
      Experiment(
          config=grid.config,
          arch=arch,
          vectorized=kind == 'vec',
          nonneg=nonneg,
          rule=rule,
          seed=seed,
          workdir=(dataset_dir /
                   f'{arch}-{kind}-{"nonneg" if nonneg else "mixed"}-{rule}' /
                   f'seed{seed}'),
          overrides=items,
      )
      for seed in range(seeds)
      for arch in grid.archs
      for kind in grid.kinds
      for nonneg in grid.nonneg
      for rule in grid.rules_for(kind)
  ]


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
  """Parses `--set key=value` items into a {key: value} dict."""
  overrides = {}
  for item in items:
    key, sep, value = item.partition('=')
    try:
      if not sep:
        raise ValueError('expected key=value, e.g. --set num_epochs=2')
      _check_key(key)
    except ValueError as e:
      raise ValueError(f'bad --set {item!r}: {e}') from None
    overrides[key] = value
  return overrides


def parse_gpus(text: str) -> list[str]:
  """Parses --gpus ('0,1,3'; 'cpu' or '' for CPU only) into devices."""
  if text.strip() in ('', CPU):
    return [CPU]
  ids = [part.strip() for part in text.split(',')]
  if (not all(re.fullmatch(r'[0-9]+', i) for i in ids)
      or len(set(ids)) < len(ids)):
    raise ValueError(
        f'bad --gpus={text!r}: expected distinct GPU ids like 0,1,3, '
        "or 'cpu' (or empty) for CPU only")
  return ids


def device_env(device: str, runs_per_device: int) -> dict[str, str]:
  """Environment variables that pin a run to `device` (a GPU id or 'cpu')."""
  if device == CPU:
    return {'CUDA_VISIBLE_DEVICES': '', 'JAX_PLATFORMS': 'cpu'}
  env = {'CUDA_VISIBLE_DEVICES': device}
  if runs_per_device > 1:
    # JAX preallocates 75% of a GPU's memory; let the runs sharing it fit.
    env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{0.9 / runs_per_device:.2f}'
  return env


def run_one(experiment: Experiment, device: str, runs_per_device: int,
            trainer_module: str) -> int:
  """Runs `experiment` on `device` to its end; returns the exit code.

  The command and its output are appended to the experiment's log.
  """
  experiment.workdir.mkdir(parents=True, exist_ok=True)
  command = experiment.command(trainer_module)
  env = device_env(device, runs_per_device)
  pinning = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())
  with experiment.log.open('a') as log:
    log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} '
              f'{pinning} {shlex.join(command)}\n')
    log.flush()
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, **env},
        check=False).returncode


def run_local(
    assignments: Sequence[tuple[Experiment, str]],
    runs_per_device: int,
    trainer_module: str,
) -> dict[Experiment, int]:
  """Runs (experiment, device) pairs, `runs_per_device` at a time per device.

  Every device has its own queue, a thread pool of `runs_per_device` workers
  that each wait on one experiment's subprocess at a time.

  Returns:
    The exit code of every experiment.
  """
  pools = {
      device: concurrent.futures.ThreadPoolExecutor(
          runs_per_device, thread_name_prefix=f'sweep-{device}')
      for device in dict.fromkeys(device for _, device in assignments)
  }
  codes = {}
  try:
    futures = {
        pools[device].submit(run_one, experiment, device, runs_per_device,
                             trainer_module): experiment
        for experiment, device in assignments
    }
    for future in concurrent.futures.as_completed(futures):
      experiment = futures[future]
      codes[experiment] = future.result()
      logging.info('[%d/%d] exit code %d: %s', len(codes), len(futures),
                   codes[experiment], experiment.workdir)
  finally:
    for pool in pools.values():  # After Ctrl-C, start nothing new.
      pool.shutdown(cancel_futures=True)
  return codes


def sbatch_script(
    num_tasks: int,
    tasks_file: pathlib.Path,
    log_dir: pathlib.Path,
    *,
    cwd: str,
    partition: str,
    time_limit: str,
    cpus: int,
    max_parallel: int,
) -> str:
  """A SLURM job array whose task i runs, in `cwd`, line i + 1 of tasks_file."""
  directives = [
      '--job-name=gevb-sweep',
      f'--array=0-{num_tasks - 1}%{max_parallel}',
      '--gres=gpu:1',
      f'--cpus-per-task={cpus}',
      f'--time={time_limit}',
      f'--output={log_dir}/%A_%a.out',
      *([f'--partition={partition}'] if partition else []),
  ]
  return '\n'.join([
      '#!/bin/bash',
      *(f'#SBATCH {directive}' for directive in directives),
      'set -euo pipefail',
      f'cd {shlex.quote(cwd)}',
      'task=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" '
      f'{shlex.quote(str(tasks_file))})',
      'eval "exec ${task}"',
  ]) + '\n'


def write_slurm(pending: Sequence[Experiment], root: str | os.PathLike[str],
                trainer_module: str, **sbatch_options: Any) -> pathlib.Path:
  """Writes <root>/sweep_tasks.txt and <root>/sweep.sbatch for `pending`.

  Args:
    pending: the experiments to run, one array task each.
    root: the sweep's root directory.
    trainer_module: module that `python -m` runs for each experiment.
    **sbatch_options: `partition`, `time_limit`, `cpus` and `max_parallel`
      of `sbatch_script`.

  Returns:
    The path of the script.
  """
  root = pathlib.Path(root).absolute()
  log_dir = root / 'slurm_logs'
  log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create it.
  tasks_file = root / 'sweep_tasks.txt'
  tasks_file.write_text(''.join(
      shlex.join(e.command(trainer_module)) + '\n' for e in pending))
  script = root / 'sweep.sbatch'
  script.write_text(sbatch_script(len(pending), tasks_file, log_dir,
                                  cwd=os.getcwd(), **sbatch_options))
  return script


def experiments_from_flags() -> list[Experiment]:
  """Plans the experiments that --grid, --seeds, --root and --set ask for."""
  grids = [load_grid(name) for name in FLAGS.grid]
  for grid in grids:
    if not os.path.isfile(grid.config):
      raise ValueError(
          f'config file {grid.config!r} not found from {os.getcwd()}; '
          'run the sweep from the repository root')
  overrides = parse_overrides(FLAGS.set)
  experiments = [e for grid in grids
                 for e in plan(grid, FLAGS.seeds, FLAGS.root, overrides)]
  counts = collections.Counter(e.workdir for e in experiments)
  repeated = [workdir for workdir, count in counts.items() if count > 1]
  if repeated:
    raise ValueError(
        f'--grid={",".join(FLAGS.grid)} plans {repeated[0]} more than once')
  return experiments


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  try:
    experiments = experiments_from_flags()
    devices = parse_gpus(FLAGS.gpus)
    if FLAGS.submit and FLAGS.backend != 'slurm':
      raise ValueError('--submit needs --backend=slurm')
  except ValueError as e:
    sys.exit(f'sweep: {e}')

  pending = [e for e in experiments if not e.finished()]
  assignments = [(e, devices[i % len(devices)]) for i, e in enumerate(pending)]
  if FLAGS['dry-run'].value:
    if FLAGS.backend == 'slurm':
      slots = {e: f'array{i}' for i, e in enumerate(pending)}
    else:
      slots = {e: d if d == CPU else f'gpu{d}' for e, d in assignments}
    for e in experiments:
      print(f'{"pending" if e in slots else "done":7}  '
            f'{slots.get(e, "-"):8}  '
            f'{shlex.join(e.command(FLAGS.trainer_module))}')
    print(f'{len(experiments)} experiments: {len(pending)} pending, '
          f'{len(experiments) - len(pending)} done')
    return 0
  if not pending:
    print(f'All {len(experiments)} experiments are done; nothing to run.')
    return 0

  if FLAGS.backend == 'slurm':
    script = write_slurm(
        pending, FLAGS.root, FLAGS.trainer_module,
        partition=FLAGS.slurm_partition, time_limit=FLAGS.slurm_time,
        cpus=FLAGS.slurm_cpus, max_parallel=FLAGS.slurm_max_parallel)
    print(f'Wrote {script} for {len(pending)} pending experiments '
          f'({len(experiments) - len(pending)} done).')
    if not FLAGS.submit:
      return 0
    if shutil.which('sbatch') is None:
      sys.exit('sweep: --submit needs `sbatch` on PATH and found none; '
               f'submit {script} from a SLURM login node')
    return subprocess.run(['sbatch', str(script)], check=False).returncode

  logging.info('Running %d of %d experiments on %s, %d at a time each.',
               len(pending), len(experiments), ','.join(devices),
               FLAGS.runs_per_gpu)
  codes = run_local(assignments, FLAGS.runs_per_gpu, FLAGS.trainer_module)
  failed = [e for e in pending if codes[e] != 0 or not e.finished()]
  print(f'{len(pending) - len(failed)} done, {len(failed)} failed, '
        f'{len(experiments) - len(pending)} skipped (already done).')
  for e in failed:
    reason = (f'exit code {codes[e]}' if codes[e]
              else 'exit code 0 but no summary.json')
    print(f'FAILED  {e.log}  ({reason})')
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main)
