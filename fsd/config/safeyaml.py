"""YAML read with bounds: a document, or a value built from one, of at most so many nodes."""

from __future__ import annotations

from typing import Any

import yaml

from fsd.config.errors import ConfigError

# Nodes a config may hold once its aliases are expanded: the recipe's whole config is ~200.
MAX_CONFIG_NODES = 20_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader; :func:`safe_yaml` counts the composed document's nodes, aliases
    expanded, before anything is constructed (a billion-laughs config stops at the count)."""


def _count_nodes(node: yaml.Node | None, limit: int, what: str) -> None:
    stack, seen = [node], 0
    while stack:
        n = stack.pop()
        if n is None:
            continue
        seen += 1
        if seen > limit:
            raise ConfigError(f"{what} holds more than {limit:,} values once its YAML aliases "
                              "are expanded: refusing it")
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))


def safe_yaml(text: str, what: str, limit: int = MAX_CONFIG_NODES) -> Any:
    """``yaml.safe_load`` that refuses a document of more than ``limit`` nodes with its
    aliases expanded, and turns YAML errors into a short ConfigError."""
    loader = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        _count_nodes(node, limit, what)
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = str(getattr(exc, "problem", "") or type(exc).__name__)[:80]
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{what} nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def bounded(data: Any, what: str, limit: int = MAX_CONFIG_NODES) -> None:
    """Refuse a value of more than ``limit`` items (shared references counted each time)."""
    stack, seen = [data], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(f"{what} holds more than {limit:,} values: refusing it")
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
