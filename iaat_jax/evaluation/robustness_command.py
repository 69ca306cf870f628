"""What `python -m iaat_jax.robustness` reads and writes: its flags, an exported artifact (or a
run's workdir), a TFDS dataset's test split (or an .npz), and the result in eval.json's schema.
The command itself is iaat_jax/robustness.py's `main`; docs/evaluating_any_model.md says how
its noise is keyed against `--mode=evaluate`."""

import argparse
import struct
from collections.abc import Callable

import jax
import numpy as np

from iaat_jax.attacks.autoattack import SUITES


def eval_json(result, dataset: str | None, split: str | None, model: str) -> dict:
    """The result in eval.json's schema (without the PGD sweep `--mode=evaluate` adds)."""
    radii = np.unique(result.epsilon)
    if len(radii) != 1:
        raise ValueError("eval.json holds one radius per suite: give one epsilon")
    epsilon = float(radii[0])
    names = [a["name"] for a in result.attacks]
    return {
        "num_examples": len(result.clean),
        "clean_accuracy": result.clean_accuracy,
        "worst_case": [
            {
                "epsilon": epsilon,
                "robust_accuracy": result.robust_accuracy,
                "attacks": sorted(names),
                "restarts": 1,
            }
        ],
        "autoattack": [
            {
                "suite": result.suite,
                "epsilon": epsilon,
                "robust_accuracy": result.robust_accuracy,
                "attacks": result.attacks,
            }
        ],
        "checks": result.checks,
        "robustbench": dict(result.robustbench, dataset=dataset, split=split),
        "dataset": dataset,
        "split": split,
        "model": model,
        "seconds": result.seconds,
    }


def load_exported(path: str) -> Callable:
    """The `call` of a `jax.export` artifact, refused in one line if it cannot be attacked."""
    from iaat_jax.run import files

    try:
        exported = jax.export.deserialize(bytearray(files.read_bytes(path)))
    except (ValueError, TypeError, IndexError, struct.error) as error:
        raise ValueError(
            f"{path} is not a jax.export artifact ({type(error).__name__}): pass the "
            "predict.jax_exported that --mode=export wrote"
        ) from error
    if not exported.has_vjp():
        raise ValueError(
            f"{path} was serialized without its VJP, so no gradient attack can run on it: "
            "re-export it with this version (python -m iaat_jax.main --mode=export "
            "--workdir=RUN), or serialize(vjp_order=1) yourself"
        )
    return exported.call


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iaat_jax.robustness",
        description="AutoAttack on a model without its training code: an exported artifact "
        "(or a run's workdir) on a TFDS dataset's test split (or an .npz of images and labels).",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--exported",
        help="a predict.jax_exported (python -m iaat_jax.main "
        "--mode=export writes one with its VJP)",
    )
    model.add_argument("--workdir", help="a training run: its newest checkpoint")
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--dataset",
        help="mnist5k, cifar10, ... (default with --workdir: the "
        "run's); its test split, read with TFDS",
    )
    data.add_argument(
        "--npz",
        help="an .npz holding images [N, H, W, C] (float in [0, 1] or uint8) and labels [N]",
    )
    parser.add_argument("--split", default="test", help="the split of --dataset (test only)")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    parser.add_argument("--epsilon", type=float, required=True, help="the L-inf radius")
    parser.add_argument("--suite", default="autoattack", choices=tuple(SUITES))
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--num_examples", type=int, default=None, help="the first N only")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the noise's seed (default: the run's with --workdir, keyed as --mode=evaluate "
        "keys its first suite radius; else 0)",
    )
    parser.add_argument("--out", default=None, help="write the result here in eval.json's schema")
    return parser


def data(args, run_dataset: str | None):
    """(images, labels, ids or None, dataset name, split) as the arguments ask."""
    if args.npz:
        arrays = np.load(args.npz)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError(f"{args.npz} is not an .npz: np.savez(FILE, images=..., labels=...)")
        with arrays:
            missing = {"images", "labels"} - set(arrays.files)
            if missing:
                raise ValueError(f"{args.npz} lacks {', '.join(sorted(missing))}: save both arrays")
            images, labels = arrays["images"], arrays["labels"]
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255)
        return images, labels, None, None, None
    dataset = args.dataset or run_dataset
    if dataset is None:
        raise ValueError("no data: pass --dataset=NAME (its test split) or --npz=FILE")
    if args.split != "test":
        raise ValueError(f"--split={args.split}: only the test split is read here; use --npz")
    from iaat_jax.data.datasets import DATASETS
    from iaat_jax.trained import load_test_split  # TFDS, only where a dataset is read

    # an unknown name: load_test_split's ConfigError, one line
    images, labels, ids = load_test_split(dataset, args.data_dir, with_ids=True)
    return images, labels, ids, dataset, DATASETS[dataset].eval_split
