"""IAAT on ImageNet (imagenet2012) with ResNet-50.

Run:     python -m iaat_jax.main --config=configs/imagenet.py --workdir=gs://BUCKET/iaat_in \\
             --config.data_dir=gs://BUCKET/tfds --multihost      (on every host of a pod)
         launch/tpu_pod.py runs it on a Cloud TPU VM pod slice.
Smoke:   add --config.fake_data=True --config.num_train_steps=2 --config.batch_size=8
Devices: a TPU pod slice (v4-32 or larger) or 8+ GPUs; bf16; batch 1024 over any device count
         that divides it.
Choices: eps 4/255 is the most common L-inf radius for ImageNet adversarial training (Free-AT,
         Fast-AT, the `robustness` library's ImageNet models); training attacks are PGD-3 (step
         max(eps / 1.5, 1/255)), as ImageNet AT usually uses few steps to keep the cost down.
         gamma 1/255 keeps the reference's ratio gamma / eps (1.9 / 8). Evaluation is PGD-10 at
         4/255. Schedule: 30 epochs, cosine, 2 epochs of linear warm-up for the large batch.
         Attack BatchNorm 'local': each chip normalises its own slice of the batch, as the
         authors' nn.DataParallel does on several GPUs, so the attack passes issue no
         collective (docs/pod_step.md counts them); 'global' would average every layer's
         statistics over the pod in every attack iteration.
Cost:    ResNet-50 forward is 8.0 GFLOPs per image at 224x224 (XLA cost analysis). An IAAT step
         after warm-up is about 33 forward-equivalents per image (clean check, two PGD-3 probes,
         PGD-3 training attack, update): about 9e18 FLOPs for 30 epochs, roughly 3x a 90-epoch
         standard ResNet-50 run. That is an estimate, not a measurement.
"""

import ml_collections

from iaat_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset = "imagenet2012"
    config.model = "resnet50"
    config.cache = False  # 150 GB of JPEGs: stream from disk / GCS
    config.shuffle_buffer = 16_384
    config.method = "iaat"
    config.epsilon = 4 / 255
    config.iaat_gamma = 1 / 255
    config.iaat_beta = 0.1
    config.iaat_warmup_epochs = 5
    config.attack_steps = 3
    # train-mode attacks as the authors' code runs them, each device on its own batch (their
    # nn.DataParallel's statistics): no collective in the attack passes of a pod's step
    config.attack_batchnorm = "local"
    config.attack_batchnorm_updates = True
    config.epsilon_ramp_epochs = 0
    config.attack_step_min = 1 / 255
    config.eval_attack_steps = 10
    config.num_epochs = 30
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.learning_rate = 0.4  # 0.1 per 256 images
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.lr_warmup_epochs = 2
    config.lr_schedule = "cosine"
    config.log_every_steps = 100
    config.checkpoint_every_steps = 250  # an epoch is 1,251 steps: lose at most ~20 min to a kill
    config.tracked_ids = (0, 1, 2, 3, 4, 5, 6, 7)
    return config
