"""Train, evaluate or export an IAAT run (or PGD-AT, TRADES, clean training).

  python -m iaat_jax.main --config=configs/default.py --workdir=DIR [--config.NAME=VALUE ...]
      train in DIR, resuming from its newest checkpoint (e.g. --config.method=pgd)
  python -m iaat_jax.main --mode=evaluate --workdir=DIR [--step=N] [--config.eval_suite=apgd]
      AutoAttack and a PGD sweep of DIR's newest checkpoint: DIR/eval.json, DIR/MODEL_CARD.md
  python -m iaat_jax.main --mode=export --workdir=DIR [--out=OUT]
      the prediction function, for use without iaat_jax: OUT/predict.jax_exported
  python -m iaat_jax.report DIR [DIR ...] --out=OUT
      figures and a table over runs (python -m iaat_jax.report --help)

Config fields: docs/config_fields.md. Pods and GPUs: docs/launch.md. All flags: --helpfull.
This file holds flags, distributed initialisation and hand-off only; the logic lives in
importable modules so Colab and tests call `train.train_and_evaluate(config, workdir)`.
"""

import os
import re
import sys

# TensorFlow (tf.data only) stays quiet: no C++ INFO/WARNING lines, no oneDNN notice; its
# oneDNN kernels matter for float maths, which tf.data here does not do
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from iaat_jax.errors import CheckpointError, ConfigError, NonFiniteError, TrainingStopped
from iaat_jax.evaluation import evaluate
from iaat_jax.run import files, metrics_log, train
from iaat_jax.run import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the epsilon table.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "export"],
    "train: train, resuming from the workdir; evaluate: PGD sweep and attack suite (AutoAttack) "
    "of a checkpoint, with the run's own config unless --config is given; export: the "
    "prediction function of a checkpoint, for use without iaat_jax (jax.export, SavedModel).",
)
flags.DEFINE_integer(
    "step", None, "With --mode=evaluate or export: the checkpoint's step (default: newest)."
)
flags.DEFINE_string("out", None, "With --mode=export: output directory (default: WORKDIR/export).")
flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (Cloud TPU pods, multi-node GPU)."
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --multihost: host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS, or detected).",
)
flags.DEFINE_integer(
    "num_processes",
    None,
    "With --multihost: number of processes (default: $JAX_NUM_PROCESSES, or detected).",
)
flags.DEFINE_integer(
    "process_id", None, "With --multihost: this process's index (default: $JAX_PROCESS_ID)."
)
flags.DEFINE_enum(
    "require_platform",
    None,
    ["tpu", "gpu", "cpu"],
    "Stop with one line (exit 2) unless JAX's devices are of this platform: the launchers pass "
    "it so that a missing TPU runtime or CUDA plugin never trains on the CPU unnoticed.",
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file; override fields with --config.NAME=VALUE.",
    lock_config=True,
)
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    metrics_log.quiet_libraries()
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.multihost:  # unset flags come from the environment or are detected (TPU, SLURM)
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=_flag_or_environment(FLAGS.num_processes, "JAX_NUM_PROCESSES"),
            process_id=_flag_or_environment(FLAGS.process_id, "JAX_PROCESS_ID"),
        )
    if FLAGS.require_platform:
        _require_platform(FLAGS.require_platform)
    logging.info(
        "%s: %d devices (%s) on %d hosts; this is host %d with %d of them.",
        FLAGS.mode,
        jax.device_count(),
        jax.devices()[0].device_kind,
        jax.process_count(),
        jax.process_index(),
        jax.local_device_count(),
    )
    try:
        if FLAGS.mode == "train":
            if FLAGS.config is None:
                raise ConfigError("training needs --config=FILE (e.g. configs/default.py)")
            if (step := train.finished_at(FLAGS.config, FLAGS.workdir)) is not None:
                print(
                    f"the run in {FLAGS.workdir} is already complete (step {step}): nothing to "
                    f"train; evaluate it with python -m iaat_jax.main --mode=evaluate "
                    f"--workdir={FLAGS.workdir}"
                )
                return
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif FLAGS.mode == "export":
            _export(FLAGS.workdir, FLAGS.step, FLAGS.out or files.join(FLAGS.workdir, "export"))
        else:
            evaluate.evaluate_run(FLAGS.config, FLAGS.workdir, FLAGS.step)
    except ConfigError as error:  # the user's input: nothing was written
        _fail(error, 2)
    except TrainingStopped as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(0)
    except (NonFiniteError, CheckpointError) as error:  # the run's: the last checkpoint is intact
        _fail(error, 1)


def _flag_or_environment(value: int | None, variable: str) -> int | None:
    """A process-count or index flag, else the environment's (as JAX reads its own
    JAX_COORDINATOR_ADDRESS), else None: detected by JAX on TPU pods and SLURM."""
    if value is not None or not os.environ.get(variable):
        return value
    try:
        return int(os.environ[variable])
    except ValueError:
        _fail(f"{variable}={os.environ[variable]!r} is not a whole number: fix or unset it", 2)


def _require_platform(platform: str) -> None:
    """Stop (exit 2, one line) unless JAX's devices are `platform`'s."""
    found = sorted({device.platform for device in jax.devices()})
    if found != [platform]:
        fixes = {
            "tpu": "run on a TPU VM with jax[tpu] installed (launch/tpu_pod.py does both)",
            "gpu": "install the CUDA plugin (launch/gpu.sh --setup) or pass --allow_cpu to gpu.sh",
            "cpu": "unset JAX_PLATFORMS or set it to cpu",
        }
        _fail(f"JAX sees {' and '.join(found)} devices, not {platform}: {fixes[platform]}", 2)


def _export(workdir: str, step: int | None, out: str) -> None:
    from iaat_jax import trained

    classifier = trained.load(workdir, step)
    written = [trained.export(classifier, out), trained.export_saved_model(classifier, out)]
    for path in filter(None, written):
        logging.info("Exported checkpoint %d of %s to %s", classifier.step, workdir, path)


def _fail(error: BaseException, status: int) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(status)


def with_saved_config(argv: list[str]) -> list[str]:
    """`argv`, where it evaluates a --workdir without --config, given the workdir's saved
    config as its --config (iaat_jax/run/workdir.py:DIR), so --config.NAME overrides still apply."""

    def value(name):
        for index, arg in enumerate(argv):
            if arg.startswith(f"--{name}="):
                return arg.split("=", 1)[1]
            if arg == f"--{name}" and index + 1 < len(argv):
                return argv[index + 1]
        return None

    if value("mode") != "evaluate" or value("config") is not None or value("workdir") is None:
        return argv
    # before the overrides, which absl reads only after their config
    return [argv[0], f"--config={workdir_lib.__file__}:{value('workdir')}", *argv[1:]]


def usage() -> str:
    """--help and -h: what the command does, one example per mode, and this file's flags."""
    return f"{__doc__.split(chr(10) + 'This file')[0]}\n{FLAGS.main_module_help()}\n"


def flag_error(error: Exception) -> str:
    """One line for a bad flag or config field: what is wrong and where to look."""
    chain, cause = [], error
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in reversed(chain):  # the innermost of ours names the problem and its fix
        if isinstance(cause, ConfigError):
            return str(cause)
    key_error = next((c for c in reversed(chain) if isinstance(c, KeyError)), None)
    if key_error is not None:  # the innermost names the field alone; an outer one suggests
        name = str(key_error.args[0]).strip("'\"")
        suggestion = re.search(r'Did you mean \\?"(\w+)\\?"', str(error))
        hint = f" (did you mean {suggestion.group(1)}?)" if suggestion else ""
        return f"unknown config field {name}{hint}: the fields are in docs/config_fields.md"
    message = str(error).strip().splitlines()
    reason = message[-1].strip() if message else type(error).__name__
    if "--config." in str(error):
        return f"{reason}: the fields and their types are in docs/config_fields.md"
    if isinstance(error, flags.Error):
        return f"{reason} (python -m iaat_jax.main --help lists the flags)"
    return f"the config could not be loaded: {reason}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with -h/--help printing the usage (exit 0), and a missing or broken
    config file, an unknown field or a value of the wrong type turned into one line and exit
    status 2 instead of a traceback."""
    if any(arg in ("-h", "--help", "-help", "--helpshort") for arg in argv[1:]):
        print(usage())
        sys.exit(0)
    # ml_collections reads the --config.NAME overrides from sys.argv itself: rename them there
    argv = sys.argv[:] = workdir_lib.with_current_flag_names(argv)
    try:
        remaining = FLAGS(with_saved_config(argv))
        if FLAGS.config is not None:
            FLAGS.config.to_dict()  # a config file that failed to load raises on first use
        return remaining
    except Exception as error:  # absl's flags.Error, or raised while loading --config=FILE
        _fail(flag_error(error), 2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
