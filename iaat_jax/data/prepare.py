"""Prepare a TFDS dataset once: python -m iaat_jax.prepare NAME --data_dir=DIR [--manual_dir=M].

NAME is a config dataset (cifar10, cifar100, imagenet2012) or cifar10_corrupted (all 95
corruption/severity sets). ImageNet needs ILSVRC2012_img_{train,val}.tar in --manual_dir.
"""

import argparse
import sys

import tensorflow_datasets as tfds

from iaat_jax.data.datasets import CIFAR10_CORRUPTIONS, DATASETS


def tfds_names(name: str) -> list[str]:
    """The TFDS builder names to prepare for `name`."""
    if name == "cifar10_corrupted":
        return [f"cifar10_corrupted/{c}_{s}" for c in CIFAR10_CORRUPTIONS for s in range(1, 6)]
    return [DATASETS[name].tfds_name]


def main(argv: list[str] | None = None) -> int:
    choices = sorted(DATASETS) + ["cifar10_corrupted"]
    parser = argparse.ArgumentParser(
        prog="python -m iaat_jax.prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("name", choices=choices)
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS_DATA_DIR)")
    parser.add_argument("--manual_dir", default=None, help="for imagenet2012: the two .tar files")
    args = parser.parse_args(argv)
    if DATASETS.get(args.name) and DATASETS[args.name].embedded:
        from iaat_jax.data.datasets import mnist5k  # noqa: F401  (registers the builder)
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    for name in tfds_names(args.name):
        print(f"preparing {name} ...", flush=True)
        try:
            builder = tfds.builder(name, data_dir=args.data_dir)
            builder.download_and_prepare(download_config=config)
        except Exception as error:  # e.g. ImageNet's tars missing from --manual_dir
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = lines[0] if lines else type(error).__name__
            print(f"error: preparing {name} failed: {reason}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
