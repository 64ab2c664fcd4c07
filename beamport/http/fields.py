"""Partial responses: Google's `fields` parameter, e.g. `jobs(id,currentState),nextPageToken`."""

from __future__ import annotations

import re

from beamport.errors import invalid_argument

_TOKEN = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*|[(),])")

# A selection tree: {name: subtree}, where None selects the whole value.
Tree = dict


def parse_fields(text: str) -> Tree:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise invalid_argument(f"Invalid field selection {text!r} at position {pos}")
        tokens.append(match.group(1))
        pos = match.end()
    tree, rest = _parse_list(tokens, text)
    if rest:
        raise invalid_argument(f"Invalid field selection {text!r}: unbalanced parentheses")
    return tree


def _parse_list(tokens: list[str], text: str) -> tuple[Tree, list[str]]:
    tree: Tree = {}
    while tokens:
        path = tokens.pop(0)
        if path in "(),":
            raise invalid_argument(f"Invalid field selection {text!r}")
        sub = None
        if tokens and tokens[0] == "(":
            sub, tokens = _parse_list(tokens[1:], text)
            if not tokens or tokens[0] != ")":
                raise invalid_argument(f"Invalid field selection {text!r}: unbalanced parentheses")
            tokens = tokens[1:]
        _insert(tree, path.split("/"), sub)
        if tokens and tokens[0] == ",":
            tokens = tokens[1:]
            continue
        break
    return tree, tokens


def _insert(tree: Tree, names: list[str], sub: Tree | None) -> None:
    head, rest = names[0], names[1:]
    if head in tree and tree[head] is None:
        return  # already selected whole
    if not rest:
        if sub is None or head not in tree:
            tree[head] = sub
        else:
            for key, value in sub.items():
                _insert(tree[head], [key], value)
        return
    node = tree.setdefault(head, {})
    _insert(node, rest, sub)


def select(value, tree: Tree | None):
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [select(item, tree) for item in value]
    if isinstance(value, dict):
        return {key: select(value[key], sub) for key, sub in tree.items() if key in value}
    return value
