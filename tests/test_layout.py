"""The codebase's shape: imports point one way (no cycles), training never imports plotting,
and every module of iaat_jax has a test file of its own."""

import ast
import subprocess
import sys

import pytest
from conftest import REPO

PACKAGE = REPO / "iaat_jax"


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path) -> set[str]:
    """Every iaat_jax module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "iaat_jax"}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in internal_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    assert "iaat_jax.evaluation.evaluate" in graph["iaat_jax.run.train"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def reachable_from(prefix: str) -> set[str]:
    """Every module that the modules under `prefix` import, directly or not."""
    graph = import_graph()
    todo = [name for name in graph if name == prefix or name.startswith(prefix + ".")]
    reachable = set()
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    return reachable


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        # data in knows nothing of what is done with it
        ("iaat_jax.data", ("iaat_jax.method", "iaat_jax.attacks", "iaat_jax.run.train")),
        # attacks know a classifier, not how it was trained
        ("iaat_jax.attacks", ("iaat_jax.method", "iaat_jax.evaluation", "iaat_jax.run.train")),
        ("iaat_jax.method.epsilon", ("iaat_jax.method.step", "iaat_jax.run.train")),
        ("iaat_jax.evaluation", ("iaat_jax.run.train", "iaat_jax.main")),  # never trains
        ("iaat_jax.analysis.runs", ("iaat_jax.run.train", "iaat_jax.evaluation", "iaat_jax.main")),
        # nothing that trains or evaluates reads the analysis of runs
        ("iaat_jax.main", ("iaat_jax.analysis",)),
        ("iaat_jax.benchmark", ("iaat_jax.analysis",)),
        ("iaat_jax.trained", ("iaat_jax.analysis",)),
    ],
)
def test_dependencies_point_down(folder, forbidden):
    reached = reachable_from(folder)
    assert reached, folder
    wrong = sorted(m for m in reached if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not wrong, f"{folder} imports {wrong}"


def test_training_and_evaluation_never_import_plotting():
    code = (
        "import sys, iaat_jax.main, iaat_jax.run.train, iaat_jax.evaluation.evaluate; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
        "or m in ('iaat_jax.analysis.figures', 'iaat_jax.analysis.report')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


WHOLE_PACKAGES = ("configs", "models", "datasets")  # tested as a whole: test_<package>.py
COMMAND_NAMES = ("report.py", "prepare.py")  # a command's name kept over a moved module


def test_tests_mirror_the_package():
    """iaat_jax/FOLDER/NAME.py has tests/FOLDER/test_NAME.py; a package tested as a whole has
    test_<package>.py where the package sits; names are unique (pytest imports them by name)."""
    expected = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        whole = next((p for p in relative.parents if p.name in WHOLE_PACKAGES), None)
        if whole is not None:
            expected.add(whole.parent / f"test_{whole.name}.py")
        elif path.name != "__init__.py" and str(relative) not in COMMAND_NAMES:
            expected.add(relative.parent / f"test_{path.stem}.py")
    missing = sorted(str(t) for t in expected if not (REPO / "tests" / t).exists())
    assert not missing, f"modules without their tests/ file: {missing}"
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test files share a name"
    for name in COMMAND_NAMES:  # two lines that hand the command to its module
        assert len((PACKAGE / name).read_text().split("import")) == 3


@pytest.mark.slow  # builds the package twice with pip, about 20 s
def test_the_package_installs_with_its_configs_inside_and_keeps_the_runtimes_jax(tmp_path):
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "iaat_jax", source / "iaat_jax", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # into this environment (which has jax) with no index to fetch from: only the package
    # itself is installed, every dependency is already satisfied, jax included
    result = subprocess.run(
        [*pip, "install", "--dry-run", "--no-index", "--no-build-isolation", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "Would install iaat-jax-0.1.0"
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheel_dir, source],
        check=True,
        timeout=300,
    )
    wheel = zipfile.ZipFile(next(wheel_dir.glob("*.whl")))
    names = set(wheel.namelist())
    for module in ("default", "imagenet", "cifar10", "cifar100", "cifar10_pgd"):
        assert f"iaat_jax/configs/{module}.py" in names
    assert "iaat_jax/models/wide_resnet.py" in names
    # no top-level package but iaat_jax: nothing to clash with another project's `configs`
    assert {name.split("/")[0] for name in names if "dist-info" not in name} == {"iaat_jax"}
    metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for package in ("jax", "flax", "optax", "orbax-checkpoint", "ml-collections"):
        line = next(
            r for r in requires if r.split()[1].replace("_", "-").startswith(package + ">=")
        )
        assert "==" not in line  # lower bounds, never pins
