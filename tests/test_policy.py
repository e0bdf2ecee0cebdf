"""Tests of the reply policy (chatling/policy.py): when the bot speaks, and to whom."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.core.settings import ReplySettings
from chatling.policy import MAX_PENDING, Decision, PolicyState, ReplyPolicy, quiet_jitter

SETTINGS = ReplySettings(
    bot_name="chatling",
    burst_messages=8,
    burst_window_s=10.0,
    quiet_interval_s=45.0,
    quiet_jitter_s=15.0,
    global_cooldown_s=8.0,
    user_cooldown_s=30.0,
)


def msg(offset: float, text: str = "hello", user: str = "viewer", **kw) -> ChatMessage:
    return ChatMessage(offset=offset, user=user, text=text, **kw)


def feed(state: PolicyState, *messages: ChatMessage) -> PolicyState:
    for m in messages:
        state = state.with_chat(m)
    return state


@pytest.fixture
def policy() -> ReplyPolicy:
    return ReplyPolicy(SETTINGS, rng_seed=1)


@pytest.mark.parametrize(
    "text",
    ["hey chatling what's up", "CHATLING!!", "@chatling hi", "what do you think, Chatling?",
     "chatling", "lol @ChatLing"],
)  # fmt: skip
def test_addressed_by_name_or_mention(policy: ReplyPolicy, text: str) -> None:
    m = msg(10.0, text, user="bob")
    state = feed(policy.initial_state(0.0), m)
    d = policy.decide(state, 10.5)
    assert d.speak and d.trigger == "addressed" and d.target == m
    assert d.reason == "addressed:bob"


@pytest.mark.parametrize(
    "text", ["chatlings are cute", "notchatling here", "chat ling", "chatling_fan said hi",
             "email me at x@chatling"],
)  # fmt: skip
def test_name_inside_other_words_is_not_addressing(policy: ReplyPolicy, text: str) -> None:
    state = feed(policy.initial_state(0.0), msg(10.0, text))
    assert policy.decide(state, 10.5).trigger != "addressed"


def test_bot_messages_never_trigger(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0)
    bots = [
        msg(1.0 + i * 0.1, "chatling chatling", user="nightbot", is_bot=True) for i in range(20)
    ]
    bots.append(msg(3.0, "hi @chatling", user="chatling"))  # our own login, is_bot unset
    after = feed(state, *bots)
    assert after == state
    assert not policy.decide(after, 4.0).speak


def test_newest_unanswered_addressing_message_is_the_target(policy: ReplyPolicy) -> None:
    a = msg(10.0, "chatling hi", user="ann")
    b = msg(11.0, "chatling what game is this", user="bob")
    state = feed(policy.initial_state(0.0), a, msg(11.5, "unrelated"), b)
    d = policy.decide(state, 12.0)
    assert d.target == b
    state = state.started(12.0, d.target).finished(13.0, d.target)
    d = policy.decide(state, 13.0 + SETTINGS.global_cooldown_s)
    assert d.target == a  # ann is still waiting; bob is answered
    state = state.started(21.0, a).finished(22.0, a)
    assert policy.decide(state, 40.0).trigger != "addressed"


def test_answering_a_user_consumes_their_older_messages(policy: ReplyPolicy) -> None:
    first = msg(1.0, "chatling??", user="bob")
    second = msg(2.0, "chatling answer me", user="bob")
    state = feed(policy.initial_state(0.0), first, second)
    state = state.started(3.0, second)
    assert state.pending == ()


def test_never_while_generating(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0).started(5.0)
    state = feed(state, *[msg(6.0 + i * 0.1, "chatling " * 3, user=f"u{i}") for i in range(20)])
    d = policy.decide(state, 100.0)
    assert not d.speak and d.reason == "generating" and d.wake_at is None


def test_global_cooldown_after_any_reply(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0).started(10.0).finished(12.0)
    state = state.with_chat(msg(13.0, "chatling hello", user="ann"))
    d = policy.decide(state, 12.0 + SETTINGS.global_cooldown_s - 0.01)
    assert not d.speak and d.reason == "global_cooldown"
    assert d.wake_at == pytest.approx(12.0 + SETTINGS.global_cooldown_s)
    assert policy.decide(state, d.wake_at).trigger == "addressed"


def test_user_cooldown_for_addressed_replies(policy: ReplyPolicy) -> None:
    first = msg(10.0, "chatling hi", user="Bob")
    state = feed(policy.initial_state(0.0), first)
    state = state.started(10.5, first).finished(11.0, answered=first)
    again = msg(20.0, "chatling again", user="bob")
    state = state.with_chat(again)
    d = policy.decide(state, 20.5)
    assert not d.speak and d.reason == "user_cooldown"
    assert d.wake_at == pytest.approx(11.0 + SETTINGS.user_cooldown_s)
    # Another viewer is not held back by bob's cooldown.
    other = msg(21.0, "@chatling hey", user="ann")
    assert policy.decide(state.with_chat(other), 21.5).target == other
    # Once the cooldown is over, bob's message is answered.
    d = policy.decide(state, 11.0 + SETTINGS.user_cooldown_s)
    assert d.speak and d.target == again


def test_stale_addressing_messages_are_not_answered() -> None:
    policy = ReplyPolicy(SETTINGS, rng_seed=1, addressed_max_age_s=20.0)
    state = feed(policy.initial_state(0.0), msg(5.0, "chatling hi"))
    assert policy.decide(state, 24.0).trigger == "addressed"
    assert policy.decide(state, 26.0).trigger != "addressed"


def test_burst_needs_enough_messages_in_the_window(policy: ReplyPolicy) -> None:
    start = policy.initial_state(0.0)
    seven = feed(start, *[msg(20.0 + i, f"m{i}") for i in range(7)])
    assert not policy.decide(seven, 27.0).speak
    eight = seven.with_chat(msg(27.0, "m7"))
    d = policy.decide(eight, 27.0)
    assert d.speak and d.trigger == "burst" and d.target is None and d.reason == "burst:8/8"
    # The same eight messages spread over more than the window are no burst.
    spread = feed(start, *[msg(20.0 + i * 1.5, f"m{i}") for i in range(8)])
    assert not policy.decide(spread, 30.5).speak
    # Bot messages do not count towards a burst.
    bots = feed(seven, msg(27.0, "!uptime", user="nightbot", is_bot=True))
    assert not policy.decide(bots, 27.0).speak


def test_burst_counts_only_messages_after_the_last_reply_began() -> None:
    policy = ReplyPolicy(SETTINGS.model_copy(update={"global_cooldown_s": 2.0}), rng_seed=1)
    state = feed(policy.initial_state(0.0), *[msg(30.0 + i * 0.5, "pog") for i in range(8)])
    assert policy.decide(state, 34.0).trigger == "burst"
    state = state.started(34.0).finished(34.5)
    # The same eight messages are still inside the window, but already reacted to.
    assert policy.decide(state, 36.5).trigger is None
    state = feed(state, *[msg(36.5 + i * 0.1, "pog") for i in range(7)])
    assert policy.decide(state, 37.5).trigger is None
    state = state.with_chat(msg(37.6, "pog"))
    assert policy.decide(state, 37.6).trigger == "burst"


def test_quiet_trigger_fires_after_interval_plus_jitter(policy: ReplyPolicy) -> None:
    state = policy.initial_state(100.0)
    deadline = policy.quiet_deadline(state)
    lo = 100.0 + SETTINGS.quiet_interval_s - SETTINGS.quiet_jitter_s
    hi = 100.0 + SETTINGS.quiet_interval_s + SETTINGS.quiet_jitter_s
    assert lo <= deadline <= hi
    d = policy.decide(state, deadline - 0.01)
    assert not d.speak and d.reason == "waiting" and d.wake_at == pytest.approx(deadline)
    d = policy.decide(state, deadline)
    assert d.speak and d.trigger == "quiet" and d.target is None


def test_quiet_interval_restarts_after_each_reply(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0).started(50.0).finished(52.0)
    assert policy.decide(state, 60.0).trigger is None
    assert (
        policy.quiet_deadline(state) >= 52.0 + SETTINGS.quiet_interval_s - SETTINGS.quiet_jitter_s
    )


def test_jitter_is_deterministic_per_seed_and_varies_per_reply() -> None:
    def deadlines(seed: int) -> list[float]:
        p = ReplyPolicy(SETTINGS, rng_seed=seed)
        state = p.initial_state(0.0)
        out = []
        for i in range(20):
            out.append(p.quiet_deadline(state) - state.quiet_since)
            state = state.started(100.0 * i).finished(100.0 * i + 1)
        return out

    a, b, c = deadlines(3), deadlines(3), deadlines(4)
    assert a == b
    assert a != c
    assert len({round(x, 6) for x in a}) > 15
    assert all(30.0 <= x <= 60.0 for x in a + c)
    assert quiet_jitter(3, 0, 0.0) == 0.0


def test_decide_is_pure(policy: ReplyPolicy) -> None:
    state = feed(
        policy.initial_state(0.0), *[msg(float(i), "chatling hi", user=f"u{i}") for i in range(5)]
    )
    before = dataclasses.astuple(state)
    assert policy.decide(state, 5.0) == policy.decide(state, 5.0)
    assert dataclasses.astuple(state) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.generating = True  # type: ignore[misc]


def test_priority_addressed_before_burst_before_quiet(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0)
    state = feed(state, *[msg(60.0 + i * 0.2, "hype") for i in range(10)])
    assert policy.decide(state, 62.0).trigger == "burst"  # also past the quiet deadline
    target = msg(62.0, "chatling is this real", user="zed")
    assert policy.decide(state.with_chat(target), 62.0).target == target


def test_state_stays_bounded_over_a_long_stream(policy: ReplyPolicy) -> None:
    state = policy.initial_state(0.0)
    t = 0.0
    for i in range(20_000):
        t += 0.05
        text = "chatling hi" if i % 3 == 0 else "lol"
        state = state.with_chat(msg(t, text, user=f"user{i % 97}"))
        if i % 50 == 0:
            d = policy.decide(state, t)
            if d.speak:
                state = state.started(t, d.target).finished(t + 0.5, d.target)
    assert len(state.recent) <= max(2 * SETTINGS.burst_messages, 16)
    assert len(state.pending) <= MAX_PENDING
    assert len(state.user_replied) <= SETTINGS.user_cooldown_s / SETTINGS.global_cooldown_s + 1


def test_invalid_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="BOT_NAME"):
        ReplyPolicy(SETTINGS.model_copy(update={"bot_name": " "}))
    with pytest.raises(ConfigError, match="BURST"):
        ReplyPolicy(SETTINGS.model_copy(update={"burst_messages": 0}))


def test_replaying_a_real_chat_log_keeps_every_rule() -> None:
    """Northernlion's real chat, with the bot named after the streamer so that
    real viewers address it; each reply takes 1.5 s to generate."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chat"
    path = path / "northernlion-1087079172.json"
    if not path.exists():
        pytest.skip(f"shared chat log not found: {path}")
    comments = json.loads(path.read_text("utf-8"))["comments"]
    messages = sorted(
        (
            msg(float(c["content_offset_seconds"]), c["message"]["body"], c["commenter"]["name"])
            for c in comments
        ),
        key=lambda m: m.offset,
    )
    settings = SETTINGS.model_copy(update={"bot_name": "Northernlion"})
    policy = ReplyPolicy(settings, rng_seed=42)
    state = policy.initial_state(messages[0].offset)
    replies: list[tuple[float, Decision]] = []
    busy_until = None
    for m in messages:
        if busy_until is not None and m.offset >= busy_until:
            answered = replies[-1][1].target
            state = state.finished(busy_until, answered)
            busy_until = None
        state = state.with_chat(m)
        d = policy.decide(state, m.offset)
        if d.speak:
            replies.append((m.offset, d))
            state = state.started(m.offset, d.target)
            busy_until = m.offset + 1.5
    triggers = {d.trigger for _, d in replies}
    assert triggers == {"addressed", "burst", "quiet"}
    starts = [t for t, _ in replies]
    assert all(b - a >= 1.5 + settings.global_cooldown_s for a, b in itertools.pairwise(starts))
    last_to: dict[str, float] = {}
    for t, d in replies:
        if d.trigger == "addressed":
            assert d.target is not None and state.addresses_bot(d.target)
            user = d.target.user.casefold()
            assert t - last_to.get(user, -1e9) >= settings.user_cooldown_s
            last_to[user] = t
