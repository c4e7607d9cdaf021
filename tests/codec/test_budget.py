"""Token budgets: the window's invariants under hypothesis, calibration, pinning, compaction, policies."""

from __future__ import annotations

import itertools

import pytest
from conftest import user
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from convstore import BudgetExceededError, TokenBudget
from convstore.budget import HeuristicCounter, MediaCosts
from convstore.budget._window import Calibration, choose_window

MODEL = "gemini-3-flash-preview"
COUNTER = HeuristicCounter()

words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=300)


@st.composite
def exchanges(draw: st.DrawFn) -> list[list[dict]]:
    """A conversation's exchanges: plain turns, turns with thoughts and media, function-call chains."""
    out: list[list[dict]] = []
    for index in range(draw(st.integers(1, 9))):
        kind = draw(st.sampled_from(["plain", "thought", "media", "call"]))
        question = user(draw(words))
        if kind == "media":
            question["content"].append({"type": "image", "mime_type": "image/png", "data": "iVBORw0KGgo="})
        answer = {"type": "model_output", "content": [{"type": "text", "text": draw(words)}]}
        summary = [{"type": "text", "text": "hm"}]
        thought = {"type": "thought", "signature": f"sig-{index}", "summary": summary}
        if kind == "call":
            call = {"type": "function_call", "id": f"c{index}", "name": "f", "arguments": {"q": draw(words)}}
            out.append([question, thought, call])
            result = {"type": "function_result", "call_id": f"c{index}", "name": "f", "result": draw(words)}
            out.append([result, {"type": "thought", "signature": f"sig-{index}b"}, answer])
        else:
            out.append([question, *([thought] if kind != "plain" else []), answer])
    return out


def cost(steps: list[dict]) -> int:
    return sum(COUNTER.count_step(step) for step in steps)


def check_window(window: list[dict], written: list[list[dict]], budget: TokenBudget, *, pinned: bool) -> None:
    history = [step for exchange in written for step in exchange]
    assert cost(window) <= budget.max_input_tokens - budget.reserve_output_tokens
    rest = window
    if pinned and history and window != history:
        assert window[: len(written[0])] == written[0]
        rest = window[len(written[0]) :]
    if not rest:
        return
    # A suffix of the history (possibly after the pinned first exchange)...
    assert history[len(history) - len(rest) :] == rest
    # ...that starts where an exchange starts, with a user's input: never inside an exchange.
    boundaries = []
    position = 0
    for exchange in written:
        boundaries.append((position, exchange[0]["type"]))
        position += len(exchange)
    assert (len(history) - len(rest), "user_input") in boundaries


@settings(max_examples=examples(40))
@given(
    written=exchanges(),
    limit=st.integers(20, 700),
    policy=st.sampled_from(["stable", "sliding"]),
    pinned=st.booleans(),
)
def test_budgeted_history_keeps_every_invariant(store, written, limit, policy, pinned):
    conv = store.create_conversation()
    for exchange in written:
        conv.append(exchange)
    budget = TokenBudget(max_input_tokens=limit, policy=policy, pin_first_exchange=pinned)
    history = [step for exchange in written for step in exchange]
    starts = [i for i, e in enumerate(written) if e[0]["type"] == "user_input"]
    newest_group = [s for e in written[starts[-1] :] for s in e]
    try:
        window = conv.history(budget=budget)
    except BudgetExceededError as exc:
        # Raised only when the newest exchange that may start a window cannot fit.
        needed = cost(newest_group) + (cost(written[0]) if pinned and starts[-1] != 0 else 0)
        assert needed > limit
        assert exc.max_input_tokens == limit  # noqa: PT017 -- hypothesis decides whether it raises
        return
    check_window(window, written, budget, pinned=pinned)
    assert newest_group == window[len(window) - len(newest_group) :]
    if policy == "sliding" and not pinned:
        # As much as fits: the next earlier start would not.
        kept_from = len(history) - len(window)
        earlier = [sum(len(e) for e in written[:i]) for i in starts]
        earlier = [p for p in earlier if p < kept_from]
        if earlier:
            assert cost(history[earlier[-1] :]) > limit


@settings(max_examples=examples(25))
@given(written=exchanges(), limit=st.integers(60, 900))
def test_request_windows_fit_with_the_new_input_and_settings(store, written, limit):
    conv = store.create_conversation(model=MODEL, system_instruction="Be brief and kind.")
    for exchange in written:
        conv.append(exchange)
    budget = TokenBudget(max_input_tokens=limit, policy="sliding")
    try:
        body = conv.request("one more question", budget=budget)
    except BudgetExceededError:
        return
    sent = body["input"]
    assert sent[-1] == user("one more question")
    fixed = COUNTER.count_text("Be brief and kind.")
    assert cost(sent) + fixed <= limit
    check_window(sent[:-1], written, budget, pinned=False)


def test_the_newest_exchange_alone_too_big_raises_with_numbers(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("x" * 4000), {"type": "model_output", "content": []}])
    with pytest.raises(BudgetExceededError) as raised:
        conv.history(budget=TokenBudget(max_input_tokens=100))
    assert raised.value.max_input_tokens == 100
    assert raised.value.needed_tokens is not None
    assert raised.value.needed_tokens > 1000
    # A new user question may still go alone: the history can be left out entirely.
    assert conv.request("short", budget=TokenBudget(max_input_tokens=100))["input"] == [user("short")]
    with pytest.raises(BudgetExceededError):
        conv.request("y" * 4000, budget=TokenBudget(max_input_tokens=100))


def test_an_input_that_alone_exceeds_the_budget_says_by_how_much(store):
    conv = store.create_conversation(model=MODEL)
    conv.append([user("hello"), {"type": "model_output", "content": []}])
    text = "y" * 4000
    limit = 300
    with pytest.raises(BudgetExceededError) as raised:
        conv.request(text, budget=TokenBudget(max_input_tokens=limit, reserve_output_tokens=50))
    # The history is not to blame: the new input and the reserve are already over the budget.
    assert raised.value.needed_tokens is None
    assert raised.value.over_by == COUNTER.count_step(user(text)) + 50 - limit
    assert f"exceed it by {raised.value.over_by}" in str(raised.value)
    assert text not in str(raised.value)


def test_function_results_bring_their_calls(store):
    conv = store.create_conversation(model=MODEL)
    for i in range(5):
        conv.append([user(f"old question {i} " * 20), {"type": "model_output", "content": []}])
    conv.append(
        [user("weather?"), {"type": "function_call", "id": "c1", "name": "get_weather", "arguments": {}}]
    )
    result = {"type": "function_result", "call_id": "c1", "name": "get_weather", "result": "rain"}
    body = conv.request([result], budget=TokenBudget(max_input_tokens=60, policy="sliding"))
    assert body["input"] == [
        user("weather?"),
        {"type": "function_call", "id": "c1", "name": "get_weather", "arguments": {}},
        result,
    ]


def test_pinned_first_exchange_survives_any_cut(store):
    conv = store.create_conversation()
    first = [user("Always answer in French."), {"type": "model_output", "content": []}]
    conv.append(first)
    for i in range(30):
        conv.append([user(f"question {i} " * 10), {"type": "model_output", "content": []}])
    window = conv.history(budget=TokenBudget(max_input_tokens=150, pin_first_exchange=True))
    assert window[:2] == first
    assert window[-2] == user("question 29 " * 10)
    assert len(window) < 62


def test_stable_policy_keeps_the_prefix_for_many_turns(store):
    counts = {}
    for policy in ("stable", "sliding"):
        conv = store.create_conversation()
        budget = TokenBudget(max_input_tokens=400, policy=policy)
        firsts = []
        for i in range(60):
            conv.append([user(f"turn {i} " * 8), {"type": "model_output", "content": []}])
            firsts.append(conv.history(budget=budget)[0])
        counts[policy] = sum(a == b for a, b in itertools.pairwise(firsts))
    assert counts["stable"] > counts["sliding"] + 20


def test_compaction_summarises_once_and_is_reused(store):
    calls: list[int] = []

    def summarise(dropped: list[dict]) -> list[dict]:
        calls.append(len(dropped))
        return [user(f"Summary of {len(dropped)} earlier steps."), {"type": "model_output", "content": []}]

    conv = store.create_conversation()
    for i in range(20):
        conv.append([user(f"question {i} " * 10), {"type": "model_output", "content": []}])
    budget = TokenBudget(max_input_tokens=300, compact=summarise, summary_tokens=40)
    first = conv.history(budget=budget)
    assert first[0]["content"][0]["text"].startswith("Summary of ")
    assert len(calls) == 1
    dropped = calls[0]
    assert first[0] == user(f"Summary of {dropped} earlier steps.")
    assert len(first) - 2 + dropped == 40  # the summary stands for exactly what was cut
    again = conv.history(budget=budget)
    assert again == first
    assert len(calls) == 1  # stored and reused, not summarised again
    # A fork through the same cut point reuses it too; the full history is untouched.
    fork = conv.fork(branch="other")
    assert fork.history(budget=budget) == first
    assert len(fork.history()) == 40
    assert len(calls) == 1


def test_calibration_from_reported_usage_converges(store, client):
    """The emulator tokenizes differently from the estimator; measured/estimated of the last turn predicts
    the next turn's real input closely, and budgets scale by it."""
    conv = store.create_conversation(model=MODEL, system_instruction="Be brief.")
    budget = TokenBudget(max_input_tokens=100_000)
    raw_errors, calibrated_errors = [], []
    previous = None
    for i in range(8):
        conv.send(f"question number {i} " * 30, client=client, budget=budget)
        exchange = conv.exchanges()[-1]
        assert exchange.input_tokens is not None
        assert exchange.estimated_input_tokens is not None
        raw_error = abs(exchange.estimated_input_tokens - exchange.input_tokens) / exchange.input_tokens
        raw_errors.append(raw_error)
        if previous is not None:
            factor = previous.input_tokens / previous.estimated_input_tokens
            predicted = exchange.estimated_input_tokens * factor
            calibrated_errors.append(abs(predicted - exchange.input_tokens) / exchange.input_tokens)
        previous = exchange
    assert max(raw_errors) > 0.1  # the estimator alone is off...
    assert max(calibrated_errors[2:]) < 0.03  # ...calibrated, the prediction converges to the reported usage
    # And the window honours the calibrated cost: a budget just above the measured input keeps everything,
    # one well below it cuts.
    last = conv.exchanges()[-1]
    full = len(conv.history())
    assert len(conv.history(budget=TokenBudget(max_input_tokens=int(last.input_tokens * 1.5)))) == full
    assert len(conv.history(budget=TokenBudget(max_input_tokens=int(last.input_tokens * 0.5)))) < full


class Overcounting(HeuristicCounter):
    """Four times the heuristic: the measured usage then calibrates budgets down to a quarter."""

    def count_text(self, text: str) -> int:
        return 4 * super().count_text(text)

    def count_step(self, step: dict) -> int:
        return 4 * super().count_step(step)


def test_a_calibration_below_one_reads_further_up_the_branch(make_store, client):
    """An estimator that overcounts four times: the first walk reads what the estimate keeps, the
    calibration (measured / estimated, about a third) lets about three times as much in, and the window
    reads on to it: exactly the window the choice makes over the whole branch."""
    store = make_store(counter=Overcounting())
    conv = store.create_conversation(model=MODEL)
    for i in range(40):
        conv.send(f"question number {i} " * 60, client=client)
    last = conv.exchanges()[-1]
    factor = Calibration.from_measurements(last.input_tokens, last.estimated_input_tokens)
    assert factor.factor < 0.5
    budget = TokenBudget(max_input_tokens=12_000, policy="sliding")
    nodes = conv.nodes()
    plain = choose_window(nodes, budget=budget, available=12_000, require_history=True)
    available = factor.to_estimate(12_000)
    calibrated = choose_window(nodes, budget=budget, available=available, require_history=True)
    assert plain.start is not None
    assert calibrated.start is not None
    assert 0 < calibrated.start < plain.start  # the calibration keeps more, not everything
    assert conv.history(budget=budget) == [node.data for node in nodes[calibrated.start :]]
    # A fork at the head has the same path, window and calibration.
    assert conv.fork().history(budget=budget) == [node.data for node in nodes[calibrated.start :]]


def test_sentencepiece_counter_counts_with_a_model_trained_here(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(400))
    )
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tiny"), vocab_size=60, model_type="bpe", minloglevel=2
    )
    from convstore import SentencePieceCounter  # noqa: PLC0415

    counter = SentencePieceCounter(str(tmp_path / "tiny.model"))
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "tiny.model"))
    text = "the lazy dog jumps"
    assert counter.count_text(text) == len(processor.encode(text))
    image = {"type": "image", "data": "AAAA"}
    step = {"type": "user_input", "content": [{"type": "text", "text": text}, image]}
    # Text by the model, the image at its documented flat cost, plus the step's framing.
    assert counter.count_step(step) == 4 + len(processor.encode(text)) + 258
    thought = {"type": "thought", "signature": "x" * 500}
    assert counter.count_step(thought) == 4  # signatures are replayed, not read as text


def test_heuristic_counter_prices_media_per_item_not_by_base64_length():
    small = {"type": "user_input", "content": [{"type": "image", "data": "A" * 10}]}
    large = {"type": "user_input", "content": [{"type": "image", "data": "A" * 1_000_000}]}
    assert COUNTER.count_step(small) == COUNTER.count_step(large) == 4 + 258
    clip = {"type": "audio", "uri": "gs://b/a.mp3", "mime_type": "audio/mp3"}
    audio = {"type": "user_input", "content": [clip]}
    assert COUNTER.count_step(audio) == 4 + 32 * 60
    cheap = HeuristicCounter(media=MediaCosts(audio=320))
    assert cheap.count_step(audio) == 4 + 320


def test_heuristic_counter_counts_an_unknown_field_whose_type_is_not_a_string():
    """Unknown fields hold any JSON, a ``"type"`` that is a list included (found by hypothesis)."""
    assert HeuristicCounter().count_step({"type": "user_input", "x_future": {"type": []}}) >= 0
