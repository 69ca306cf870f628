"""TRADES (Zhang et al., ICML 2019) on CIFAR-10 beside the IAAT paper's runs: the same model,
batch, BatchNorm mode and radius 8/255 as configs/cifar10.py, TRADES's own objective and
schedule (its train_trades_cifar10.py: beta 6, 80 epochs, SGD 0.1 x0.1 at epoch 75, weight
decay 2e-4; its batch of 128 is kept at the paper configs' 256).

Run:     python -m iaat_jax.main --config=configs/cifar10_trades.py \\
             --workdir=runs/cifar10_trades --config.data_dir=DIR
Smoke:   add --config.fake_data=True --config.num_train_steps=2 --config.batch_size=8
Devices: as configs/cifar10.py.
Cost:    8.6e13 FLOPs a step at batch 256 (1.17x PGD-AT's: the KL attack and a clean pass),
         80 epochs: 1.6e18 FLOPs with the per-epoch check (an estimate from FLOPs:
         `launch/reproduce.sh cifar10 OUT --plan`, docs/reproduce.md).
"""

import ml_collections

from iaat_jax.configs import cifar10


def get_config() -> ml_collections.ConfigDict:
    config = cifar10.get_config()
    config.method = "trades"
    config.trades_beta = 6.0
    config.num_epochs = 80
    config.lr_boundaries = (75,)
    config.lr_decay = 0.1
    config.weight_decay = 2e-4
    return config
