"""A trained run as a product: `load(workdir)` and the exported prediction function.

`load` needs only the workdir (local or gs://): the run's config.json and a checkpoint; no
dataset. `export` writes `predict.jax_exported`, the prediction function with its weights baked
in, serialized by `jax.export` (StableHLO, the batch dimension symbolic), which anyone loads
without iaat_jax:

    from jax import export
    predict = export.deserialize(open("predict.jax_exported", "rb").read())
    logits = predict.call(images)  # float32 [B, H, W, C] in [0, 1]

It is serialized with its VJP, so its gradient is there too: `python -m iaat_jax.robustness
--exported=PATH` runs AutoAttack on it.
"""

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from iaat_jax import models
from iaat_jax.data.datasets import DATASETS
from iaat_jax.errors import ConfigError
from iaat_jax.run import experiment, files
from iaat_jax.run import workdir as workdir_lib
from iaat_jax.run.checkpoint import Checkpointer

EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")


@dataclasses.dataclass
class Classifier:
    """A trained run's model and weights; `predict(images) -> logits`."""

    config: ml_collections.ConfigDict
    model: nn.Module
    variables: dict[str, Any]  # params and batch_stats
    step: int
    epsilon_table: np.ndarray  # [N_train]: the radius of training example id i at index i
    image_shape: tuple[int, ...]

    @property
    def ids(self) -> np.ndarray:
        """The example ids the table is indexed by (TFDS positions in the training split)."""
        return np.arange(len(self.epsilon_table))

    def logits(self, variables: dict[str, Any], images: jax.Array) -> jax.Array:
        """The model in inference mode (running BatchNorm statistics), float32 logits."""
        out = self.model.apply(variables, images.astype(jnp.float32), train=False)
        return out.astype(jnp.float32)

    def __post_init__(self):
        self._jitted_logits = jax.jit(self.logits)

    def predict(self, images) -> np.ndarray:
        """Logits [B, classes] for images [B, H, W, C], any batch size: floats in [0, 1], or
        uint8 (0-255, divided by 255 here). Floats outside [0, 1] raise ValueError."""
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images of shape {images.shape} do not fit this model: pass "
                f"[batch, {', '.join(map(str, self.image_shape))}] in [0, 1]"
            )
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255)
        images = images.astype(np.float32)
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"images hold values in [{images.min():g}, {images.max():g}]; the model takes "
                "[0, 1]: divide 0-255 images by 255 (or pass them as uint8)"
            )
        return np.asarray(self._jitted_logits(self.variables, images))


def load(workdir: str, step: int | None = None) -> Classifier:
    """The classifier trained in `workdir` at checkpoint `step` (None: the newest one).

    ConfigError (one line) if the workdir holds no run or no such checkpoint. Import it as
    `from iaat_jax.trained import load`: the package itself imports none of its modules."""
    if not files.exists(workdir_lib.config_path(workdir)):
        raise ConfigError(
            f"{workdir} holds no training run (no config.json): pass the directory a run was "
            "trained in (its --workdir)"
        )
    config = workdir_lib.saved_config(workdir)
    spec = DATASETS[config.dataset]
    model = models.create_model(config.model, spec.num_classes, experiment.compute_dtype(config))
    template = experiment.create_train_state(
        model,
        config,
        spec.image_shape,
        jax.random.key(0),
        experiment.learning_rate_schedule(config, steps_per_epoch=1),
    )
    path = workdir if files.is_url(workdir) else epath.Path(workdir).absolute()
    checkpoints = Checkpointer(path, max_to_keep=None)
    try:
        restored = checkpoints.restore(template, num_train=None, step=step)
    finally:
        checkpoints.close()
    state, table, _, _ = restored
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return Classifier(config, model, variables, int(state.step), table, tuple(spec.image_shape))


def load_test_split(dataset: str = "mnist5k", data_dir: str | None = None, with_ids=False):
    """A dataset's test split as arrays, in the order evaluation reads it: images float32
    [N, H, W, C] in [0, 1] and labels int [N] (`with_ids`: and each example's id [N], which
    keys its noise in evaluation). Reads TFDS (TensorFlow needed): the embedded default is built
    on first use; others are prepared once (python -m iaat_jax.prepare)."""
    from iaat_jax.configs import default
    from iaat_jax.data import input_pipeline

    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    config = default.get_config()
    config.dataset, config.data_dir = dataset, data_dir
    batches = list(input_pipeline.create_data_source(config).eval_batches())
    keep = np.concatenate([batch["mask"] for batch in batches]) > 0
    images = np.concatenate([batch["image"] for batch in batches])[keep]
    labels = np.concatenate([batch["label"] for batch in batches])[keep]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255)
    if with_ids:
        return images, labels, np.concatenate([batch["id"] for batch in batches])[keep]
    return images, labels


def export_saved_model(classifier: Classifier, out: str) -> str | None:
    """OUT/saved_model/ for TF Serving (jax2tf, batch dimension unknown), where TensorFlow is
    installed; None where it is not."""
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError:
        return None
    variables = jax.device_get(classifier.variables)
    converted = jax2tf.convert(
        lambda images: classifier.logits(variables, images), polymorphic_shapes=["(batch, ...)"]
    )
    module = tf.Module()
    module.predict = tf.function(
        converted,
        input_signature=[tf.TensorSpec([None, *classifier.image_shape], tf.float32, "images")],
        autograph=False,
    )
    path = files.join(out, "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.predict})
    return path


def export(classifier: Classifier, out: str) -> str:
    """Write OUT/predict.jax_exported (and OUT/export.json describing it); return its path."""
    variables = jax.device_get(classifier.variables)

    def predict(images):
        return classifier.logits(variables, images)

    (batch,) = jax.export.symbolic_shape("batch")
    exported = jax.export.export(jax.jit(predict), platforms=EXPORT_PLATFORMS)(
        jax.ShapeDtypeStruct((batch, *classifier.image_shape), jnp.float32)
    )
    files.makedirs(out)
    path = files.join(out, "predict.jax_exported")
    # with its VJP, so that gradient attacks can run on it (python -m iaat_jax.robustness)
    files.write_bytes(path, bytes(exported.serialize(vjp_order=1)))
    config = classifier.config
    description = {
        "input": f"float32 [batch, {', '.join(map(str, classifier.image_shape))}] in [0, 1]",
        "output": f"float32 logits [batch, {DATASETS[config.dataset].num_classes}]",
        "platforms": list(exported.platforms),
        "dataset": config.dataset,
        "model": config.model,
        "method": config.method,
        "epsilon": config.epsilon,
        "step": classifier.step,
    }
    files.write_text(files.join(out, "export.json"), json.dumps(description, indent=2) + "\n")
    return path
