"""The package is typed: it ships py.typed, and the extension's checked-in stubs (made by
`make stubs`) name everything the extension has."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import hetflow
from hetflow import _hetflow

PACKAGE = Path(hetflow.__file__).parent


def stub_names() -> Dict[str, Set[str]]:
    """Per class ("" for the module): the names the stub defines."""
    tree = ast.parse((PACKAGE / "_hetflow.pyi").read_text())
    names: Dict[str, Set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[""].add(node.name)
        if isinstance(node, ast.ClassDef):
            names[node.name] = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
    return names


def public(names: object) -> Set[str]:
    return {name for name in dir(names) if not name.startswith("_")}


def test_the_package_is_marked_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_the_stubs_name_every_function_class_and_method_of_the_extension() -> None:
    stubs = stub_names()
    assert public(_hetflow) <= stubs[""], "run `make stubs`: the extension has names its stubs lack"
    for name in public(_hetflow):
        member = getattr(_hetflow, name)
        if isinstance(member, type):
            missing = public(member) - stubs[name]
            assert not missing, f"run `make stubs`: _hetflow.{name} has {sorted(missing)}, its stub does not"
