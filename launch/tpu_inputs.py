"""What launch/tpu_pod.py knows before it touches a slice: a slice's generation, host count
and runtime image, the tree it ships, and whether the config's data can be read there."""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIME_IMAGES = {  # Cloud TPU runtime versions for JAX (cloud.google.com/tpu/docs/runtimes)
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5e": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}


def generation_and_count(accelerator_type: str) -> tuple[str, int]:
    match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)", accelerator_type)
    if not match:
        print(
            f"error: unknown --accelerator_type={accelerator_type}: use e.g. v4-32, v5p-64, "
            "v5litepod-16 or v6e-16",
            file=sys.stderr,
        )
        sys.exit(2)
    return match.group(1), int(match.group(2))


def workers_of(accelerator_type: str) -> int:
    """Number of TPU VM hosts of a slice. v2/v3/v4/v5p names count TensorCores, 8 per host
    (v4/v5p: 4 chips of 2 cores); v5e/v6e names count chips: one host up to 8, else 4 per host."""
    kind, count = generation_and_count(accelerator_type)
    if kind in ("v5litepod", "v5e", "v6e"):
        return 1 if count <= 8 else count // 4
    return max(count // 8, 1)


def working_tree(repo: Path) -> str:
    """A git tree of the working tree as it is: tracked and untracked files, not ignored ones
    (a temporary index; no ref changes). Uncommitted changes are named in a warning."""
    git = ["git", "-C", str(repo)]
    changed = subprocess.run(
        [*git, "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        subprocess.run([*git, "add", "-A"], env=env, check=True, capture_output=True)
        tree = subprocess.run(
            [*git, "write-tree"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
    if changed:
        names = ", ".join(line[3:] for line in changed[:5]) + (", ..." if len(changed) > 5 else "")
        print(
            f"warning: shipping the working tree as it is, {len(changed)} files differ from "
            f"HEAD: {names}",
            file=sys.stderr,
        )
    return tree


def dataset_problem(args: argparse.Namespace, repo: Path) -> str | None:
    """Why the config's data cannot be read on the slice, if it cannot: a dataset that is not
    embedded needs --config.data_dir, a gs:// one on a real slice. None: fine or not checked."""
    overrides = dict(
        o[len("--config.") :].split("=", 1) for o in args.overrides if o.startswith("--config.")
    )
    try:
        sys.path.insert(0, str(repo))
        spec = importlib.util.spec_from_file_location("launched_config", repo / args.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
        from iaat_jax.data.datasets import DATASETS
    except ImportError as error:
        print(f"warning: the config's data_dir was not checked ({error})", file=sys.stderr)
        return None
    finally:
        sys.path.remove(str(repo))
    dataset = overrides.get("dataset", config.dataset)
    data_dir = overrides.get("data_dir", config.data_dir) or ""
    fake = overrides.get("fake_data", str(config.fake_data)).lower() in ("true", "1")
    spec = DATASETS.get(dataset)
    if spec is None or spec.embedded or fake:
        return None  # an unknown dataset is the trainer's one-line error
    if not data_dir:
        return (
            f"the dataset {dataset} is not embedded: prepare it once (python -m iaat_jax.prepare "
            f"{dataset} --data_dir=gs://BUCKET/tensorflow_datasets) and pass "
            "-- --config.data_dir=gs://BUCKET/tensorflow_datasets"
        )
    if not data_dir.startswith("gs://") and not args.rehearsal:
        return f"--config.data_dir={data_dir} is not a gs:// path that every worker can reach"
    return None
