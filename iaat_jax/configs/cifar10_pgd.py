"""The fixed-radius PGD-AT baseline of the IAAT paper on CIFAR-10 (Madry et al. at eps 8/255).

Run:     python -m iaat_jax.main --config=configs/cifar10_pgd.py --workdir=runs/cifar10_pgd \\
             --config.data_dir=DIR
Smoke:   add --config.fake_data=True --config.num_train_steps=2 --config.batch_size=8
Devices: as configs/cifar10.py.
Cost:    7.3e13 FLOPs a step at batch 256 (23 forward-equivalents per image), 200 epochs:
         3.4e18 FLOPs with the per-epoch check, 0.75x the IAAT run (an estimate from FLOPs:
         `launch/reproduce.sh cifar10 OUT --plan`, docs/reproduce.md). Other radii:
         --config.epsilon=E.
"""

import ml_collections

from iaat_jax.configs import cifar10


def get_config() -> ml_collections.ConfigDict:
    config = cifar10.get_config()
    config.method = "pgd"
    config.num_epochs = 200
    config.lr_boundaries = (60, 120, 160)
    return config
