"""IAAT on CIFAR-100: configs/cifar10.py with 100 classes (the paper uses the same settings).

Run:     python -m iaat_jax.main --config=configs/cifar100.py --workdir=runs/cifar100 \\
             --config.data_dir=DIR
Smoke:   add --config.fake_data=True --config.num_train_steps=2 --config.batch_size=8
Devices: as configs/cifar10.py.
Cost:    as configs/cifar10.py (about 6e18 FLOPs, an estimate; the 100-class head adds nothing
         noticeable). PGD-AT baseline: --config.method=pgd --config.num_epochs=200
         --config.lr_boundaries="(60,120,160)".
"""

import ml_collections

from iaat_jax.configs import cifar10


def get_config() -> ml_collections.ConfigDict:
    config = cifar10.get_config()
    config.dataset = "cifar100"
    return config
