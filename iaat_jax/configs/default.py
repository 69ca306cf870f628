"""Default: IAAT on MNIST-5k (the embedded real digits) with a small CNN, on any CPU.

Run:   python -m iaat_jax.main --config=configs/default.py --workdir=runs/default
Cost:  about 2 minutes on 2 CPU cores (README "Results of the default run"; 7 epochs of 50
       steps at batch 80, 2 of them warm-up; an IAAT step after warm-up costs about 2x a PGD-AT
       step on this CPU). Runs unchanged on 1, 2, 4 or 8 devices.
Expect: clean accuracy about 0.97 and PGD-10 robust accuracy about 0.75 at eps 0.3 in training's
        log; --mode=evaluate (AutoAttack, about 4 minutes here): about 0.63. The same run with
        --config.method=pgd: about 0.965 / 0.85, AutoAttack 0.81. Mean ± sd over 3 seeds in
        the README.
Variants are overrides, e.g. the fixed-radius baseline: --config.method=pgd"""

import ml_collections

placeholder = ml_collections.config_dict.placeholder  # a typed field whose default is None


def get_config() -> ml_collections.ConfigDict:
    """The default experiment; every other config starts from this one."""
    config = ml_collections.ConfigDict()
    # Data.
    config.dataset = "mnist5k"  # a key of iaat_jax.data.datasets.DATASETS
    config.data_dir = placeholder(str)  # TFDS data_dir; None: TFDS_DATA_DIR, ~/tensorflow_datasets
    config.cache = True  # keep decoded training images in memory (small datasets only)
    config.shuffle_buffer = 10_000  # examples in the tf.data shuffle buffer
    config.validation_examples = 0  # hold out the training split's last N to evaluate on (tuning)
    config.fake_data = False  # random batches with the dataset's shapes and ids (smoke runs, no TF)
    # Model.
    config.model = "small_cnn"  # a key of iaat_jax.models.MODELS
    config.half_precision = placeholder(bool)  # bfloat16 compute; None: on TPU/GPU, off on CPU
    # Method.
    config.method = "iaat"  # a METHODS name (method/registry.py): clean, pgd, trades, mart, ...
    config.epsilon = 0.3  # L-inf radius: PGD-AT's fixed radius, IAAT's warm-up radius, eval radius
    config.iaat_gamma = 0.075  # IAAT: probe step (reference ratio: 1.9/255 for epsilon 8/255)
    config.iaat_beta = 0.3  # IAAT: smoothing (reference 0.1 over 100 epochs; 0.3 adapts in 5)
    config.iaat_warmup_epochs = 2  # IAAT: epochs with radius = epsilon * clean_correct
    config.epsilon_ramp_epochs = 2  # PGD-AT's and IAAT warm-up's epsilon ramp up over these epochs
    config.epsilon_max = placeholder(float)  # optional cap on IAAT radii; None: no cap (reference)
    config.attack_steps = 10  # PGD steps of every training attack
    config.attack_step_min = 0.03  # PGD step size = max(eps / (steps / 2), attack_step_min)
    config.attack_batchnorm = "running"  # BatchNorm in clean check and attacks: 'global', 'local'
    config.attack_batchnorm_updates = False  # 'global'/'local': attack passes update running stats
    config.probe_steps = placeholder(int)  # IAAT: PGD steps per radius probe; None: attack_steps
    config.trades_beta = 1.0  # TRADES: weight of the KL term (authors: 1.0 MNIST, 6.0 CIFAR-10)
    config.mart_beta = 6.0  # MART: weight of the misclassification-weighted KL term (authors')
    config.pgd_clean_check = False  # PGD-AT: a clean pass per step for train_clean_accuracy (+3%)
    config.eval_attack_steps = 10  # PGD steps of the per-epoch robust evaluation
    config.attack_unroll = placeholder(bool)  # unroll PGD loops; None: on CPU only (faster there)
    # --mode=evaluate: the robustness sweep over test radii (eval.json).
    config.sweep_epsilons = ()  # test radii; empty: 9 radii from 0 to 2 * epsilon
    config.sweep_attack_steps = 20  # PGD steps of each sweep attack
    config.sweep_step_size = 0.0  # 0: the training rule max(eps / (steps / 2), attack_step_min)
    config.sweep_restarts = 1  # random restarts per attack; an example must survive all
    config.sweep_losses = ("ce", "margin")  # cross-entropy and CW margin; worst case over both
    # --mode=evaluate: the attack suite at the headline radii (iaat_jax.attacks.autoattack.SUITES).
    config.eval_suite = "autoattack"  # 'autoattack' (standard), 'autoattack_cpu', 'apgd'; '' none
    config.eval_suite_epsilons = ()  # radii of the suite; empty: (epsilon,)
    config.eval_corruptions = False  # also clean accuracy on cifar10_corrupted (cifar10 only)
    # Optimisation.
    config.num_epochs = 7  # training length in epochs (full passes over the training split)
    config.num_train_steps = -1  # if > 0, stop after this many steps (smoke runs)
    config.batch_size = 80  # global batch, split across all devices (80: any of 1, 2, 4, 8)
    config.eval_batch_size = 200  # global evaluation batch
    config.optimizer = "sgd"  # 'sgd' (momentum, coupled decay: the reference) or 'adamw'
    config.learning_rate = 0.05  # peak learning rate
    config.momentum = 0.9  # SGD momentum (sgd only)
    config.weight_decay = 5e-4  # sgd: coupled L2 (as PyTorch SGD); adamw: decoupled decay
    config.lr_warmup_epochs = 0  # linear warm-up of the learning rate from 0 (large batches)
    config.lr_schedule = "cosine"  # 'cosine', 'piecewise' or 'constant'
    config.lr_boundaries = (70, 90, 100)  # piecewise: epochs where the rate is x lr_decay
    config.lr_decay = 0.2  # piecewise: factor at each boundary
    config.seed = 0  # initialisation, data order and attack noise
    # Bookkeeping.
    config.log_every_steps = 10  # train metrics to console / TensorBoard / metrics.jsonl
    config.tracked_ids = (0, 1, 2, 3, 4, 5, 6, 7)  # example ids whose radius is logged each epoch
    config.checkpoints_to_keep = 2  # newest checkpoints kept in <workdir>/checkpoints
    config.checkpoint_every_steps = 0  # also save every N steps (0: at epoch ends only)
    return config
