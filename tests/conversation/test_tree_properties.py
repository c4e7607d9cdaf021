"""Random sequences of appends and forks keep the tree's invariants, on both backends."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, exchanges

import convstore

# An operation: ("append", branch index, exchange) or ("fork", branch index, position in that branch's path).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 5), exchanges),
        st.tuples(st.just("fork"), st.integers(0, 5), st.integers(0, 40)),
    ),
    min_size=1,
    max_size=12,
)


def check_invariants(store: convstore.Store, conv: convstore.Conversation, expected: dict[str, list]) -> None:
    tree = conv.tree()
    by_id = {node.id: node for node in tree.nodes}
    assert {b.name for b in tree.branches} == set(expected)
    for branch in tree.branches:
        view = store.conversation(conv.id, branch.name)
        nodes = view.nodes()
        # Every history is a root-to-head path with consecutive depths...
        assert [n.depth for n in nodes] == list(range(len(nodes)))
        assert (nodes[0].parent_id if nodes else None) is None
        assert all(child.parent_id == parent.id for parent, child in itertools.pairwise(nodes))
        assert (nodes[-1].id if nodes else None) == branch.head_id
        # ...whose steps are exactly what was appended along it.
        assert view.history() == [n.data for n in nodes] == expected[branch.name]
        # Running totals add up along the path.
        total = 0
        for node in nodes:
            total += node.token_count
            assert node.total_tokens == total
        # The tree agrees with the path.
        assert all(by_id[n.id].parent_id == n.parent_id for n in nodes)
    # Every node's parent exists in the same conversation, one level up.
    for node in tree.nodes:
        if node.parent_id is not None:
            assert by_id[node.parent_id].depth == node.depth - 1


@settings(max_examples=examples(30))
@given(ops=operations)
def test_appends_and_forks_keep_the_tree_invariants(store, ops):
    conv = store.create_conversation()
    expected: dict[str, list] = {"main": []}
    paths: dict[str, list[str]] = {"main": []}  # node ids along each branch
    for op in ops:
        names = sorted(expected)
        name = names[op[1] % len(names)]
        view = store.conversation(conv.id, name)
        if op[0] == "append":
            nodes = view.append(op[2])
            expected[name] = expected[name] + list(op[2])
            paths[name] = paths[name] + [n.id for n in nodes]
        else:
            path = paths[name]
            new = f"b{len(expected)}"
            if path:
                cut = op[2] % len(path)
                fork = view.fork(at=path[cut], branch=new)
                expected[new] = expected[name][: cut + 1]
                paths[new] = path[: cut + 1]
            else:
                fork = view.fork(branch=new)
                expected[new], paths[new] = [], []
            # A fork shares its prefix with its source: the same node ids, not copies.
            assert [n.id for n in fork.nodes()] == paths[new]
    check_invariants(store, conv, expected)
    steps_written = sum(len(op[2]) for op in ops if op[0] == "append")
    assert len(conv.tree().nodes) == steps_written
