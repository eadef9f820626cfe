"""The paper's training recipe (Appendix I) as the base of every config file."""

import ml_collections
from ml_collections import config_dict


def base_config():
  """Adam(3e-4), batch 128, up to 190 epochs, evaluation every 10, stop at zero
  train error; FC VNN, nonnegative, GEVB. Config files set ``data`` and may
  change anything else."""
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict()
  config.data.source = "digits"  # one of data.SOURCES
  config.data.name = "digits"  # in reports; the dataset for download and tfds
  config.data.path = ""  # idx directory or CIFAR archive/directory
  # download (one of download.ARCHIVES): fetched once, checked against its SHA-256.
  config.data.cache_dir = ""  # "": $GEVB_JAX_DATA, else ~/.cache/gevb_jax
  config.data.mirror = ""  # base URL laid out like the cache (<mirror>/
  # mnist/...); "": $GEVB_JAX_MIRROR, else origin
  config.data.data_dir = ""  # TFDS data_dir

  config.model = ml_collections.ConfigDict()
  config.model.arch = "fc"  # one of grid.ARCHS, or a layer spec (arch_spec)
  config.model.vectorized = True  # VNN (K = num_classes) or conventional (K = 1)
  config.model.nonneg = True  # weights of layers l > 1 kept >= 0
  config.model.widths = config_dict.placeholder(tuple)  # None: the arch's own
  # Outputs per class code: "onehot" (K = C, the paper's) or "binary" (ceil(log2 C)).
  config.model.output_code = "onehot"
  # ON/OFF input pairs of a conventional nonnegative conv/LC net's dense layer after the
  # flatten: "released" (the authors' (C, H, W) order) or "channels" (ON/OFF channels,
  # as before issue 20). Other nets pair channels either way.
  config.model.flatten_pairing = "released"

  config.rule = "gevb"  # one of grid.RULES[kind] for the network's kind
  config.seed = 0
  config.num_seeds = 1  # > 1: seeds seed, ..., seed + num_seeds - 1 in one program
  config.num_epochs = 190
  config.eval_every = 10
  config.batch_size = 128
  # Evaluations all checkpoint; between them, at most one every checkpoint_every_s.
  config.checkpoint_every_s = 60.0  # 0: every epoch
  # Training steps per compiled call (a stop signal acts between calls); 0: a whole
  # epoch; None: as many as take seconds_per_call, timed at the start of the run.
  config.steps_per_call = config_dict.placeholder(int)
  config.seconds_per_call = 2.0
  config.eval_batch_size = 1000  # at most; smaller if memory_budget_mb says so
  # Activations of one evaluation/alignment batch; None: 512 on a CPU, 1/8 of a GPU's
  # memory (config_check.activation_budget).
  config.memory_budget_mb = config_dict.placeholder(int)
  config.learning_rate = 3e-4
  # Kolen-Pollack ("kp") only: decoupled weight decay (AdamW's) of every weight and of
  # the backward kernels, which makes them converge to the weights (Akrout et al. 2019).
  config.kp_weight_decay = 0.1
  config.stop_at_zero_train_error = True

  config.metrics = ml_collections.ConfigDict()
  config.metrics.alignment = True  # angles vs the gradient at every evaluation
  config.metrics.alignment_examples = 128  # the first training examples, stored order
  config.metrics.cluster_quality = False  # t-SNE of the conv/LC representations
  config.metrics.tsne_examples = 10000  # first training examples; 0: all (the paper)
  config.metrics.tsne_iters = 5000

  config.progress = True  # tqdm bar (only on a TTY)
  config.overwrite = False  # start over in a workdir of another config
  return config
