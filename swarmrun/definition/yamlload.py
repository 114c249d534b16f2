"""YAML as sweep files read it: safe, `1e-3` a float, duplicate keys refused.

Its own module so that PyYAML loads only where a sweep file or an override is parsed (a worker,
started once per replica, never does).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that reads `1e-3` as a float (as YAML 1.2 does) and rejects duplicate keys.

    libyaml's parser when PyYAML has it: the pure-Python one takes seconds on a few KB of deep
    nesting, and libyaml refuses more than 1,000 levels itself.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                keys.add(key)
        return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+\Z"),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
