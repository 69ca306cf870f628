"""The README and docs/ point at commands, flags, config fields and files that exist."""

import pathlib
import re
import subprocess
import sys

import pytest
from conftest import REPO, cli_env, load_config

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MODULES = ("main", "benchmark", "report", "prepare", "robustness")


def commands(text: str):
    """(program, its arguments) of every `python -m iaat_jax.X ...` or `python launch/X`."""
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    pattern = r"python3? (?:-m iaat_jax\.(\w+)|(launch/\w+\.py))([^`\n|]*)"
    for module, script, rest in re.findall(pattern, text):
        yield module or script, rest.split()


def all_commands():
    return [(page, *c) for page in PAGES for c in commands(page.read_text())]


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    """Each program's own list of flags (--helpfull for absl, --help for argparse)."""
    texts = {}
    for module in MODULES:
        command = [sys.executable, "-m", f"iaat_jax.{module}", "--helpfull"]
        if module in ("report", "prepare", "robustness"):
            command[-1] = "--help"
        result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True)
        texts[module] = result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "launch/tpu_pod.py", "--help"], cwd=REPO, capture_output=True, text=True
    )
    texts["launch/tpu_pod.py"] = result.stdout
    return texts


def test_the_pages_show_commands_of_every_program():
    programs = {program for _, program, _ in all_commands()}
    assert {"main", "benchmark", "report", "prepare", "robustness", "launch/tpu_pod.py"} <= programs


def test_every_flag_and_config_field_in_a_command_exists(help_texts):
    fields = set()
    for name in ("default", "cifar10", "cifar10_pgd", "cifar100", "imagenet"):
        fields |= set(load_config(name).keys())
    wrong = []
    for page, program, arguments in all_commands():
        for argument in arguments:
            if not argument.startswith("--") or argument == "--":
                continue
            name = argument[2:].split("=")[0].strip("[]").rstrip("]")
            if name.startswith("config."):
                field = name.split(".")[1]
                if field.isupper() or field in fields:  # NAME, FIELD: placeholders
                    continue
                wrong.append(f"{page.name}: {program} --config.{field}")
            elif not re.search(rf"--(\[no\])?{re.escape(name)}\b", help_texts[program]):
                wrong.append(f"{page.name}: {program} --{name}")
    assert not wrong, wrong


def test_every_file_a_page_names_or_links_exists_and_is_not_ignored():
    """Every link, and every repository path a page names (configs/, launch/, iaat_jax/,
    tests/, docs/; files and folders), is in the repository, and .gitignore keeps none of them
    out of it (the regime study's runs were lost that way)."""
    missing, named = [], set()
    for page in PAGES:
        text = page.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)\)", text):
            if "://" not in link:
                path = (page.parent / link).resolve()
                named.add(path)
                if not path.exists():
                    missing.append(f"{page.name}: link {link}")
        pattern = r"(?<![\w/.~-])((?:configs|launch|iaat_jax|tests|docs)/[\w/.-]*[\w/])"
        for path in re.findall(pattern, text):
            if path.endswith("/") or "." in path.rsplit("/", 1)[-1]:  # a folder or a file
                named.add((REPO / path).resolve())  # configs/ is a link to iaat_jax/configs/
                if not (REPO / path).exists():
                    missing.append(f"{page.name}: {path}")
    assert not missing, missing
    inside = sorted(str(p.relative_to(REPO)) for p in named if p.is_relative_to(REPO))
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", *inside], cwd=REPO, capture_output=True, text=True
    )
    assert check.returncode in (0, 1), check.stderr  # 1: none ignored; 128: git failed
    assert not check.stdout.split(), f"named by the docs, ignored by .gitignore: {check.stdout}"


def test_the_readme_is_a_guide_not_a_notebook():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    assert pathlib.Path(REPO / "configs").resolve() == (REPO / "iaat_jax" / "configs").resolve()
