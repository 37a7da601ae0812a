"""The build's wiring: version caps, the lock, the Makefile, CI and the README agree.

These read the files; they run neither make nor pip.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
UPPER = {"<", "<=", "==", "===", "~="}


def requirements() -> Iterator[tuple[str, Requirement]]:
    """Every requirement of pyproject.toml, with where it is listed."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for text in data["build-system"]["requires"]:
        yield "build-system", Requirement(text)
    for text in data["project"]["dependencies"]:
        yield "dependencies", Requirement(text)
    for extra, texts in data["project"]["optional-dependencies"].items():
        for text in texts:
            yield f"[{extra}]", Requirement(text)


def locked() -> dict[str, list[Version]]:
    """constraints.txt: each package's pinned versions (one per environment marker)."""
    pins: dict[str, list[Version]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (pin,) = requirement.specifier
            assert pin.operator == "==", line
            pins.setdefault(canonicalize_name(requirement.name), []).append(Version(pin.version))
    return pins


def test_every_requirement_is_capped_below_its_next_untested_major():
    uncapped = [
        f"{where}: {req}"
        for where, req in requirements()
        if not any(spec.operator in UPPER for spec in req.specifier)
    ]
    assert not uncapped, f"pyproject.toml: no upper bound on {uncapped}"


def test_the_lock_satisfies_every_requirement_and_each_cap_is_the_next_release_line():
    """The cap is the release line right after the locked one: `<10` over pytest 9.2.0,
    `<5.3` over Django 5.2.20, `<0.18` over ruff 0.17.6. A wider cap allows a major the
    suite never ran on; a narrower one would refuse the lock itself."""
    pins, wrong = locked(), []
    for where, req in requirements():
        if where == "build-system":  # built in pip's isolated environment, not in the lock
            continue
        versions = pins.get(canonicalize_name(req.name))
        if not versions:
            wrong.append(f"{where}: {req.name} is not in constraints.txt")
            continue
        for version in versions:
            if not req.specifier.contains(version, prereleases=True):
                wrong.append(f"{where}: {req} refuses the locked {version}")
            for spec in req.specifier:
                if spec.operator != "<":
                    continue
                cap = Version(spec.version).release
                line = version.release[: len(cap)]
                line += (0,) * (len(cap) - len(line))
                if (*line[:-1], line[-1] + 1) != cap:
                    wrong.append(f"{where}: {req} caps at {spec.version}, locked {version}")
    assert not wrong, "\n".join(wrong)


# -- Makefile, CI, README ---------------------------------------------------------------------


def make_rules() -> tuple[dict[str, str], dict[str, str]]:
    """The Makefile's ``NAME := value`` variables and each target's recipe (joined lines)."""
    variables: dict[str, str] = {}
    recipes: dict[str, str] = {}
    target = None
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("\t") and target:
            recipes[target] += line.strip() + "\n"
            continue
        assignment = re.match(r"^(\w+)\s*[:?]?=\s*(.*)$", line)
        rule = re.match(r"^([^\s:=#.][^\s:=]*)\s*:(?!=)", line)
        if assignment:
            variables[assignment[1]], target = assignment[2].strip(), None
        elif rule:
            target = rule[1]
            recipes[target] = ""
        else:
            target = None
    return variables, recipes


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), text)


def test_make_installs_the_lock_and_has_test_latest_and_a_uv_lock_target():
    variables, recipes = make_rules()
    stamp = recipes["$(STAMP)"]
    (install,) = [line for line in stamp.splitlines() if "pip install" in line and " -e " in line]
    assert "-c constraints.txt" in expand(install, variables), install
    assert {"test", "test-latest", "lock"} <= recipes.keys()
    latest = [line for line in recipes["test-latest"].splitlines() if "pip install" in line]
    assert latest and all("-c " not in line for line in latest), "test-latest must not pin"
    lock = expand(recipes["lock"], variables)
    assert "uv pip compile pyproject.toml" in lock and "-o constraints.txt" in lock, lock


def test_ci_runs_the_readme_s_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"^```sh\n(.*?)^```", readme, re.S | re.M)[1]
    (command,) = [
        line.split("#", 1)[0].strip()
        for line in first_block.splitlines()
        if line.startswith("make test")
    ]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line == command or line.startswith(command + " ") for line in ci), (command, ci)


def test_the_readme_s_tested_versions_are_the_lock_s():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Tested versions", 1)[1].split("`make test-latest`", 1)[0]
    not_packages = {"python", "postgresql", "redis", "rabbitmq"}  # Redis: the server
    aliases = {"redis-py": "redis"}
    pins, named = locked(), {}
    for name, version in re.findall(r"([A-Za-z][\w.-]*) (\d+(?:\.\d+)+)", section):
        if name.lower() not in not_packages:
            named[canonicalize_name(aliases.get(name.lower(), name))] = Version(version)
    assert len(named) >= 10, named
    wrong = {
        name: (said, pins.get(name)) for name, said in named.items() if [said] != pins.get(name)
    }
    assert not wrong, f"README's Tested versions vs constraints.txt: {wrong}"
