"""Partial responses: Google's `fields` parameter, e.g. `jobs(id,currentState),nextPageToken`.

Parsed without recursion (a stack of open parentheses), and refused when it nests deeper than MAX_DEPTH
levels: a selection is never deeper than the answers it selects from, and a deep one must not cost the
server more than a shallow one.
"""

from __future__ import annotations

import re

from beamport.errors import invalid_argument

_TOKEN = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*|[(),])")

# Levels a selection may nest: parentheses and `/` steps together (`a/b(c)` is 3). Dataflow's answers nest
# about 10 levels deep (a job's steps' properties), free-form values (Structs) a few more.
MAX_DEPTH = 32

# A selection tree: {name: subtree}, where None selects the whole value.
Tree = dict


def _shown(text: str) -> str:
    return repr(text if len(text) <= 100 else text[:100] + "...")


def parse_fields(text: str) -> Tree:
    text = text.strip()
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise invalid_argument(f"Invalid field selection {_shown(text)} at position {pos}")
        tokens.append(match.group(1))
        pos = match.end()

    def broken(why: str = ""):
        return invalid_argument(f"Invalid field selection {_shown(text)}{': ' + why if why else ''}")

    root: Tree = {}
    # Open parentheses, innermost last: (the tree of the list inside, the tree it goes into, its path, depth).
    stack: list[tuple[Tree, Tree, list[str], int]] = []
    tree, depth = root, 0
    i, n = 0, len(tokens)
    while True:
        # An item: a path, then a parenthesised list or nothing. (At the top level, nothing at all: an empty
        # selection, or a trailing comma.)
        if i >= n and not stack:
            return root
        if i >= n or tokens[i] in "(),":
            raise broken()
        names = tokens[i].split("/")
        i += 1
        if depth + len(names) > MAX_DEPTH:
            raise broken(f"nested deeper than {MAX_DEPTH} levels")
        if i < n and tokens[i] == "(":
            i += 1
            stack.append(({}, tree, names, depth))
            tree, depth = stack[-1][0], depth + len(names)
            continue
        _insert(tree, names, None)
        # After an item: a comma (another item follows), a closing parenthesis, or the end.
        while True:
            if i < n and tokens[i] == ",":
                i += 1
                break
            if i < n and tokens[i] == ")":
                if not stack:
                    raise broken("unbalanced parentheses")
                inner, tree, names, depth = stack.pop()
                _insert(tree, names, inner)
                i += 1
                continue
            if i < n:
                raise broken()
            if stack:
                raise broken("unbalanced parentheses")
            return root


def _insert(tree: Tree, names: list[str], sub: Tree | None) -> None:
    """Add the selection `sub` (None: the whole value) at the path `names`, merged with what is there."""
    for name in names[:-1]:
        node = tree.get(name, {})
        if node is None:
            return  # already selected whole
        tree = tree.setdefault(name, node)
    head = names[-1]
    if head in tree and tree[head] is None:
        return  # already selected whole
    if sub is None or head not in tree:
        tree[head] = sub
        return
    # Both partial: merge, level by level (both trees are at most MAX_DEPTH deep).
    pending = [(tree[head], sub)]
    while pending:
        into, other = pending.pop()
        for key, value in other.items():
            if key in into and into[key] is None:
                continue
            if value is None or key not in into:
                into[key] = value
            else:
                pending.append((into[key], value))


def select(value, tree: Tree | None):
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [select(item, tree) for item in value]
    if isinstance(value, dict):
        return {key: select(value[key], sub) for key, sub in tree.items() if key in value}
    return value
