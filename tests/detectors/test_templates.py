"""Message templates: mining, stable ids, bounded memory, and the templates detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.templates as templates_module
from app import keyed, templates
from app.baselines import BaselineView
from app.detectors.base import ScoringContext
from app.detectors.templates import TemplateDetector
from app.events import EventBatch
from app.local import AnomalyDetector
from app.schemas.events import LEVEL_SCORES, Level, LogEvent
from app.templates import NO_TEMPLATE, TemplateMiner, TemplateStore
from app.windows import WindowView
from tests.conftest import make_settings
from tests.test_store_equivalence import state_of


def test_parameters_do_not_split_a_template() -> None:
    miner = TemplateMiner()
    first = miner.add("user 42 logged in from 10.0.0.1")
    second = miner.add("user 7 logged in from 10.0.0.9")
    other = miner.add("disk quota exceeded on volume 3")
    assert first == second != other
    assert miner.text(first) == "user <*> logged in from <*>"


def test_differing_words_merge_into_a_wildcard() -> None:
    miner = TemplateMiner(similarity=0.5)
    a = miner.add("connection to cache closed by peer")
    b = miner.add("connection to db closed by peer")
    assert a == b
    assert miner.text(a) == "connection to <*> closed by peer"


def test_empty_message_has_no_template() -> None:
    assert TemplateMiner().add("   ") == NO_TEMPLATE


def test_memory_is_bounded_and_ids_are_never_reused() -> None:
    miner = TemplateMiner(max_templates=3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    ids = [miner.add(f"{word} event happened") for word in words]
    assert len(set(ids)) == 6
    assert len(miner) == 3
    assert miner.evictions == 3
    # The evicted shape comes back with a new id: an id never changes meaning.
    again = miner.add("alpha event happened")
    assert again not in ids


def test_miner_round_trips_through_arrays() -> None:
    miner = TemplateMiner()
    for message in ("a 1 b", "a 2 b", "open file x", "close file 9", "open file y"):
        miner.add(message)
    restored = TemplateMiner.from_arrays(miner.to_arrays("t_"), "t_")
    assert restored.to_arrays("t_")["t_text"].tolist() == miner.to_arrays("t_")["t_text"].tolist()
    assert restored.add("a 3 b") == miner.add("a 3 b")
    assert restored.next_id == miner.next_id


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="ab1 ", min_size=0, max_size=12), max_size=40))
def test_template_ids_depend_only_on_the_message_sequence(messages: list[str]) -> None:
    first, second = TemplateMiner(max_templates=5), TemplateMiner(max_templates=5)
    assert [first.add(m) for m in messages] == [second.add(m) for m in messages]
    assert len(first) <= 5


def _context(
    store: TemplateStore, services: list[str], messages: list[str], times: list[float]
) -> ScoringContext:
    n = len(services)
    view = store.observe(services, messages)
    batch = EventBatch(
        services, [Level.INFO] * n, np.zeros(n), np.full(n, np.nan), np.asarray(times)
    )
    nan = np.full(n, np.nan)
    baseline = BaselineView(nan, nan, np.zeros(n, np.int64), np.zeros(n, np.bool_), nan)
    zeros = np.zeros(n, np.int64)
    window = WindowView(
        zeros, zeros, np.zeros(n), nan, np.ones(n, np.bool_), zeros, zeros, zeros, np.full(n, 10.0)
    )
    return ScoringContext(batch, np.zeros((n, 3)), baseline, window, templates=view)


def _normal_traffic(store: TemplateStore, count: int) -> None:
    messages = [
        f"served request {i} in {i % 50} ms" if i % 3 else f"cache hit key {i}"
        for i in range(count)
    ]
    store.observe(["api"] * count, messages)


def test_a_new_template_is_rare_for_a_service_that_has_a_stable_vocabulary() -> None:
    store = TemplateStore()
    _normal_traffic(store, 500)
    detector = TemplateDetector(5000, 0.5, 50.0)
    context = _context(
        store,
        ["api", "api"],
        ["cache hit key 77", "disk quota exceeded on volume 7"],
        [500.0, 501.0],
    )
    rarity = detector.rarity(context).rarity
    assert rarity[0] > 0.1
    assert rarity[1] < 0.01
    # A new service has no vocabulary yet: its first messages are not novel to anyone.
    fresh = detector.rarity(_context(store, ["new"], ["disk quota exceeded"], [502.0])).rarity
    assert fresh[0] == 1.0


def test_a_surge_of_a_known_but_uncommon_template_is_flagged() -> None:
    # 1% of a service's lines, then 30 in a row: a surge however slowly or fast they came.
    store = TemplateStore(surge_halflife_messages=20.0)
    messages = ["served request"] * 990 + ["retrying upstream call"] * 10
    rng = np.random.default_rng(1)
    rng.shuffle(messages)
    store.observe(["api"] * 1000, messages)
    flood = ["retrying upstream call"] * 30
    view = store.observe(["api"] * 30, flood)
    assert view.surge_rarity[-1] < 1e-6
    assert view.novelty_rarity[-1] == 1.0


async def test_a_novel_message_with_normal_latency_is_flagged_and_explained(
    tmp_path: Path,
) -> None:
    detector = AnomalyDetector(make_settings(tmp_path))
    rng = np.random.default_rng(3)
    start = 1_795_000_000.0
    events = [
        LogEvent.model_validate(
            {
                "service": "api",
                "level": "INFO",
                "message": f"GET /items/{i} 200" if i % 2 else f"user {i} authenticated",
                "latency_ms": float(50 * np.exp(0.2 * rng.standard_normal())),
                "timestamp": f"{np.datetime64(int(start + i), 's')}Z",
            }
        )
        for i in range(4000)
    ]
    results = detector.predict_batch(events)
    # Good-Turing: after n messages with no one-off template, a new one has probability about
    # 1/n, so thousands of messages are needed before a new template alone is alarm-rare.
    assert sum(r["is_anomaly"] for r in results) <= 4
    odd = detector.predict(
        {
            "service": "api",
            "level": "INFO",
            "message": "schema migration rolled back on shard 4",
            "latency_ms": 50.0,
            "timestamp": f"{np.datetime64(int(start + 4001), 's')}Z",
        }
    )
    assert odd["is_anomaly"]
    assert odd["methods"]["templates"]["is_anomaly"]
    assert not odd["methods"]["isolation_forest"]["is_anomaly"]
    assert "never seen before in this service" in odd["explanation"]


def test_the_miner_counts_messages_and_one_off_templates_system_wide() -> None:
    miner = TemplateMiner(max_templates=2)
    assert miner.observe("disk full on volume 1") == (0, True)
    assert miner.observe("disk full on volume 2") == (0, False)
    assert miner.observe("user logged in") == (1, True)
    assert (miner.messages, miner.singletons) == (3, 1)
    assert miner.novelty() == (1 + 1) / (3 + 2)
    miner.add("cache warmed")  # evicts the two-message template, adds a one-off
    assert (miner.messages, miner.singletons) == (4, 2)
    restored = TemplateMiner.from_arrays(miner.to_arrays(""), "")
    assert (restored.messages, restored.singletons) == (2, 2)


def test_a_template_new_to_a_service_is_judged_by_the_whole_systems_history() -> None:
    # A service with 100 lines of its own cannot call a new template rarer than ~1 in 100, but
    # when 3,000 lines from every service held no new template, one is about 1 in 3,000.
    store = TemplateStore()
    _normal_traffic(store, 3000)
    store.observe(["young"] * 100, [f"job {i} done" for i in range(100)])
    view = store.observe(["young", "young"], ["segfault in worker 3", "cache hit key 9"])
    assert view.novelty_rarity[0] > 0.005
    assert view.system_rarity[0] < 1e-3
    assert view.system_rarity[1] == 1.0  # common elsewhere: only the service's history judges
    # New to this service, seen once elsewhere (the only one-off): Good-Turing's (1 + 1) for
    # templates never mined plus its own one message, over the 3,132 messages mined + 2; that
    # system rate is the prior of the service's (no one-offs in 30 lines), weighted 1,000 lines.
    store.observe(["other"] * 30, [f"job {i} done" for i in range(30)])
    again = store.observe(["other"], ["segfault in worker 5"])
    assert again.novelty_rarity[0] > 0.01
    system = (1 + 1 + 1) / (3132 + 2)
    assert again.system_rarity[0] == pytest.approx((0 + 1000 * system) / (30 + 1000))


def test_the_surge_test_judges_warnings_and_errors_but_not_info_lines() -> None:
    messages = ["served request"] * 990 + ["retrying upstream call"] * 10
    np.random.default_rng(1).shuffle(messages)
    flood = ["retrying upstream call"] * 30
    surges = {}
    for level in (Level.INFO, Level.WARN):
        store = TemplateStore(surge_halflife_messages=20.0)
        store.observe(["api"] * 1000, messages, [0.0] * 1000)
        score = float(LEVEL_SCORES[level])
        surges[level] = store.observe(["api"] * 30, flood, [score] * 30).surge_rarity[-1]
    assert surges[Level.INFO] == 1.0
    assert surges[Level.WARN] < 1e-6


async def test_a_novelty_after_an_incident_is_still_flagged(tmp_path: Path) -> None:
    # A warning flood makes the template method alarm for a while; it must not teach the
    # service that the method's rare findings are common (the online recalibration would), so a
    # never-seen template later is still flagged.
    detector = AnomalyDetector(make_settings(tmp_path))
    rng = np.random.default_rng(5)
    start = 1_795_000_000.0

    def event(i: int, level: str, message: str) -> dict[str, object]:
        return {
            "service": "api",
            "level": level,
            "message": message,
            "latency_ms": float(50 * np.exp(0.2 * rng.standard_normal())),
            "timestamp": f"{np.datetime64(int(start + i), 's')}Z",
        }

    events = [event(i, "INFO", f"GET /items/{i} 200") for i in range(3000)]
    events += [
        event(3000 + i, "WARN", f"pool at {90 + i % 10}% capacity")
        if i % 2
        else event(3000 + i, "INFO", f"GET /items/{i} 200")
        for i in range(200)
    ]
    events += [event(3200 + i, "INFO", f"GET /items/{i} 200") for i in range(1000)]
    results = detector.predict_batch(events)
    assert sum(r["methods"]["templates"]["is_anomaly"] for r in results[3000:3200]) > 20
    odd = detector.predict(event(4300, "INFO", "schema migration rolled back on shard 4"))
    assert odd["methods"]["templates"]["is_anomaly"]


async def test_a_template_rare_everywhere_is_explained_as_such(tmp_path: Path) -> None:
    detector = AnomalyDetector(make_settings(tmp_path))
    start = 1_795_000_000.0
    events = [
        {
            "service": "api" if i % 10 else "young",
            "level": "INFO",
            "message": f"GET /items/{i} 200",
            "latency_ms": 50.0 + i % 7,
            "timestamp": f"{np.datetime64(int(start + i), 's')}Z",
        }
        for i in range(6000)
    ]
    detector.predict_batch(events)
    odd = detector.predict(
        {
            "service": "young",
            "level": "INFO",
            "message": "segfault in worker 3: core dumped",
            "latency_ms": 52.0,
            "timestamp": f"{np.datetime64(int(start + 6001), 's')}Z",
        }
    )
    assert odd["methods"]["templates"]["is_anomaly"]
    # (0 one-offs + 1,000 * 1/6,002 for the system) / (600 + 1,000) lines: 1 in 9,603.
    expected = "never seen before in this service (600 messages seen; 1 in 9,603 judged with "
    assert expected in odd["explanation"]


def test_a_message_naming_its_own_service_shares_the_template_of_other_services() -> None:
    store = TemplateStore()
    view = store.observe(
        ["auth", "checkout", "auth"],
        [
            "auth: upstream 10.0.0.1 returned 503",
            "checkout: upstream 10.0.0.2 returned 503",
            "authenticated auth-proxy user",
        ],
    )
    assert view.template_id[0] == view.template_id[1]
    # Only the whole word is the service's name: "authenticated" and "auth-proxy" stay.
    assert store.miner.text(int(view.template_id[2])) == "authenticated auth-proxy user"


def test_the_surge_level_is_a_setting_that_takes_level_aliases(tmp_path: Path) -> None:
    default = AnomalyDetector(make_settings(tmp_path / "a"))
    assert default.engine.templates.surge_min_level_score == LEVEL_SCORES[Level.WARN]
    every = AnomalyDetector(make_settings(tmp_path / "b", template_surge_min_level="info"))
    assert every.engine.templates.surge_min_level_score == LEVEL_SCORES[Level.INFO]
    fatal = AnomalyDetector(make_settings(tmp_path / "c", template_surge_min_level="FATAL"))
    assert fatal.engine.templates.surge_min_level_score == LEVEL_SCORES[Level.CRITICAL]


def test_a_service_that_keeps_logging_new_templates_is_judged_by_its_own_habit() -> None:
    store = TemplateStore()
    _normal_traffic(store, 20_000)
    # A free-text service: a never-seen template every 20 lines or so.
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    noisy = [
        f"{words[k % 8]}{words[(k // 8) % 8]}{words[k // 64]} mode" if i % 20 == 0 else "tick"
        for i, k in ((i, i // 20) for i in range(2000))
    ]
    store.observe(["noisy"] * len(noisy), noisy)
    view = store.observe(["noisy"], ["zuluyankeexray mode"])
    assert view.novelty_rarity[0] > 0.02
    assert view.system_rarity[0] > 0.02


def test_a_template_that_habitually_bursts_is_judged_by_its_habit() -> None:
    # A retry loop: now and then a run of 15 warnings among ordinary lines.
    store = TemplateStore(surge_halflife_messages=20.0)
    quiet = ["served request"] * 400
    burst = ["retrying upstream call"] * 15
    store.observe(["api"] * 400, quiet, [0.0] * 400)
    first = store.observe(["api"] * 15, burst, [1.0] * 15).surge_rarity.min()
    for _ in range(4):
        store.observe(["api"] * 400, quiet, [0.0] * 400)
        later = store.observe(["api"] * 15, burst, [1.0] * 15).surge_rarity
    assert first < 1e-8
    # Four surges got over before the fifth: at least 4 in the ~2,000 lines before it.
    state = store.get("api")
    assert state is not None
    assert state.episodes == {store.miner.find("retrying upstream call"): 4}
    assert later.min() >= 4 / (state.messages + 15)
    assert later.min() > 1e-3


@pytest.mark.parametrize("cache_size", [2, 8192])
def test_the_token_cache_changes_no_result(
    monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    # The same message from two services: the cache must key on the service, whose name is
    # masked only in its own messages. Size 2 also exercises clearing a full cache.
    services = ["auth", "checkout", "auth", "checkout", "api"] * 30
    messages = [
        "auth: upstream 10.0.0.1 returned 503" if i % 4 else f"cache hit key {i % 7}"
        for i in range(len(services))
    ]
    views = []
    for size in (0, cache_size):  # 0: every message split afresh, as without the cache
        monkeypatch.setattr(templates_module, "TOKEN_CACHE_SIZE", size)
        store = TemplateStore()
        views.append(
            [
                store.observe(services[:75], messages[:75]),
                store.observe(services[75:], messages[75:]),
            ]
        )
    for fresh, cached in zip(views[0], views[1], strict=True):
        for field in fresh._fields:
            np.testing.assert_array_equal(getattr(fresh, field), getattr(cached, field))
    auth_first = views[1][0].template_id
    assert auth_first[1] != auth_first[2]  # "auth: ..." from checkout is not auth's own template


def test_plain_python_kernels_match_the_compiled_ones() -> None:
    """The kernels' sources run as plain Python (a numpy-only install) give the same views and
    state as the compiled kernels: surges, rescaling, counters dropped, services evicted."""
    table: dict[str, Any] = {
        name: getattr(keyed, f"{name}_python") for name in ("probe", "find", "put", "drop")
    }
    table.update(rehash=keyed.rehash_python)
    in_templates: dict[str, Any] = {
        "find": keyed.find_python, "put": keyed.put_python, "drop_key": keyed.drop_python,
        "take": keyed.take_python, "give": keyed.give_python,
        "link_last": keyed.link_last_python, "unlink": keyed.unlink_python,
        "least_counted": keyed.least_counted_python,
        "_reset_row": templates._reset_row_python, "_observe": templates._observe_kernel,
        "_known_columns": templates._known_columns_python,
        "_gammainc": templates._gammainc_python,
    }  # fmt: skip
    rng = np.random.default_rng(4)
    shapes = ["disk quota exceeded", "user login ok", "retry upstream", "cache miss", "gc pause"]
    compiled = TemplateStore(3, 0.5, 0.5, 4)
    python = TemplateStore(3, 0.5, 0.5, 4)
    for size in rng.integers(1, 200, 10):
        services = [f"s{k}" for k in rng.integers(0, 5, size)]
        messages = [f"{shapes[k]} {k * 7}" for k in rng.integers(0, 5, size)]
        levels = rng.choice([0.0, 1.0, 2.0], size).tolist()
        expected = compiled.observe(services, messages, levels)
        with patch.multiple(keyed, **table), patch.multiple(templates, **in_templates):
            got = python.observe(services, messages, levels)
        for a, b in zip(expected, got, strict=True):
            assert a.tobytes() == b.tobytes()
    assert list(compiled) == list(python)
    assert [state_of(compiled.get(s)) for s in compiled] == [
        state_of(python.get(s)) for s in python
    ]
