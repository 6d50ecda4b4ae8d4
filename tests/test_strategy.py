"""How limits go to one OCPP wallbox (DESIGN §8), without I/O: what a
GetConfiguration answer says (L{WallboxFacts}), the ways to try for each
configuration and answer (L{ways}, L{probes}), the ladder of refusals
(L{LimitStrategy}), what a limit in W counts for (L{cfosproxy.site.watts}),
and the payloads of the manager's profiles (L{cfosproxy.ocpp.profiles})."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfosproxy.config import config_from_string
from cfosproxy.ocpp import profiles
from cfosproxy.ocpp.profiles import (
    MANAGER_PROFILE_ID_BASE,
    MANAGER_STACK_LEVEL,
    MANAGER_TX_PROFILE_ID_BASE,
    clear_manager_profile,
    fit_periods,
    in_watts,
    manager_profile,
)
from cfosproxy.ocpp.times import ocpp_time
from cfosproxy.site import strategy as strategy_module
from cfosproxy.site.strategy import (
    DEFAULT_PROFILE,
    PROBED_KEYS,
    TRANSACTION_PROFILE,
    LimitStrategy,
    WallboxFacts,
    Way,
    probes,
    ways,
)
from cfosproxy.site.watts import IN_AMPERES, SentAs, counted_current, limit_within

# 2023-11-14 22:13:20 UTC
NOW = 1_700_000_000.0


def wallbox(**keys):
    """The L{cfosproxy.config.WallboxConfig} of one OCPP wallbox with
    C{keys} (charging_profile, stack_level, rate_unit, voltage) as an
    operator writes them."""
    text = "[manager]\nmax_current = 32\n[wallbox:garage]\ntype = ocpp\naddress = CB-1\n"
    text += "".join("{} = {}\n".format(key, value) for key, value in keys.items())
    (config,) = config_from_string(text).wallboxes
    return config


def configuration(**values):
    """A GetConfiguration answer holding C{values} by key."""
    return {
        "configurationKey": [
            {"key": key, "readonly": True, "value": value} for key, value in values.items()
        ]
    }


def facts(stack=None, units=None):
    """What a wallbox said: its ChargeProfileMaxStackLevel and units."""
    return WallboxFacts(
        max_stack_level=stack, rate_units=frozenset(units) if units is not None else None
    )


# -- what a wallbox says of itself ---------------------------------------------


def test_the_probed_keys_are_the_four_of_the_design():
    """GetConfiguration asks for the four keys DESIGN §8 names."""
    assert set(PROBED_KEYS) == {
        "ChargeProfileMaxStackLevel",
        "ChargingScheduleAllowedChargingRateUnit",
        "ChargingScheduleMaxPeriods",
        "MaxChargingProfilesInstalled",
    }


def test_an_answer_with_every_key_reads():
    """Each of the four keys is read; keys not asked for are ignored."""
    read = WallboxFacts.from_configuration(
        configuration(
            ChargeProfileMaxStackLevel="3",
            ChargingScheduleAllowedChargingRateUnit="Current,Power",
            ChargingScheduleMaxPeriods="24",
            MaxChargingProfilesInstalled="8",
            HeartbeatInterval="300",
        )
    )
    assert read == WallboxFacts(
        max_stack_level=3, rate_units=frozenset({"A", "W"}), max_periods=24, max_profiles=8
    )
    assert read.as_json() == {
        "max_stack_level": 3,
        "rate_units": ["A", "W"],
        "max_periods": 24,
        "max_profiles": 8,
    }


@pytest.mark.parametrize(
    "said, units",
    [
        ("Current", {"A"}),
        ("Power", {"W"}),
        ("Power,Current", {"A", "W"}),
        ("Current;Power", {"A", "W"}),
        (" power , CURRENT ", {"A", "W"}),
        ("Power,Watts", {"W"}),
    ],
)
def test_the_units_a_wallbox_allows(said, units):
    """ChargingScheduleAllowedChargingRateUnit is a list of Current and
    Power, separated by commas (or semicolons), in any case; names that are
    neither are ignored."""
    read = WallboxFacts.from_configuration(
        configuration(ChargingScheduleAllowedChargingRateUnit=said)
    )
    assert read.rate_units == frozenset(units)


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"configurationKey": []},
        {"configurationKey": None, "unknownKey": list(PROBED_KEYS)},
        configuration(
            ChargeProfileMaxStackLevel="-1",
            ChargingScheduleAllowedChargingRateUnit="Amps",
            ChargingScheduleMaxPeriods="0",
            MaxChargingProfilesInstalled="many",
        ),
        configuration(
            ChargeProfileMaxStackLevel="2.5",
            ChargingScheduleAllowedChargingRateUnit="",
            ChargingScheduleMaxPeriods="-3",
            MaxChargingProfilesInstalled="",
        ),
        {
            "configurationKey": [
                {"key": "ChargeProfileMaxStackLevel", "readonly": True},
                {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": 5},
                "MaxChargingProfilesInstalled",
            ]
        },
    ],
    ids=["empty", "no-keys", "all-unknown", "nonsense", "more-nonsense", "no-values"],
)
def test_what_does_not_read_is_left_out(answer):
    """Keys missing, without a value, with a value that is not a string or
    not a count (a stack level below 0, 0 periods or profiles, no known
    unit) leave the facts at None: the defaults are used for them."""
    assert WallboxFacts.from_configuration(answer) == WallboxFacts()
    assert WallboxFacts.from_configuration(answer).as_json() == {
        "max_stack_level": None,
        "rate_units": None,
        "max_periods": None,
        "max_profiles": None,
    }


@pytest.mark.parametrize("keys", [5, True, 2.5])
def test_a_key_list_that_is_no_list_reads_as_nothing(keys):
    """A GetConfiguration answer whose configurationKey is no list says
    nothing that reads: the defaults, as for a wallbox that said nothing."""
    assert WallboxFacts.from_configuration({"configurationKey": keys}) == WallboxFacts()


def test_stack_level_zero_is_a_fact():
    """ChargeProfileMaxStackLevel 0 is a value (the wallbox takes level 0
    only), not a missing one."""
    read = WallboxFacts.from_configuration(configuration(ChargeProfileMaxStackLevel="0"))
    assert read.max_stack_level == 0


# -- the ways to try -------------------------------------------------------------


def test_without_facts_every_way_is_tried_best_first():
    """All auto and nothing said: TxDefaultProfile before TxProfile, A
    before W, the manager's stack level before 0."""
    level = MANAGER_STACK_LEVEL
    assert ways(wallbox(), None) == [
        Way(DEFAULT_PROFILE, level, "A"),
        Way(DEFAULT_PROFILE, 0, "A"),
        Way(DEFAULT_PROFILE, level, "W"),
        Way(DEFAULT_PROFILE, 0, "W"),
        Way(TRANSACTION_PROFILE, level, "A"),
        Way(TRANSACTION_PROFILE, 0, "A"),
        Way(TRANSACTION_PROFILE, level, "W"),
        Way(TRANSACTION_PROFILE, 0, "W"),
    ]
    assert ways(wallbox(), WallboxFacts()) == ways(wallbox(), None)


@pytest.mark.parametrize(
    "manager_level, reported, levels",
    [
        (1, None, [1, 0]),
        (1, 0, [0]),
        (1, 1, [1, 0]),
        (1, 3, [1, 0]),
        (5, 3, [3, 0]),
        (5, 8, [5, 0]),
        (5, 0, [0]),
        (0, 4, [0]),
    ],
)
def test_stack_level_capped_by_what_the_wallbox_reports(
    monkeypatch, manager_level, reported, levels
):
    """stack_level = auto: the manager's stack level, never above the
    wallbox's ChargeProfileMaxStackLevel, and 0 after it (some wallboxes
    refuse levels they report)."""
    monkeypatch.setattr(strategy_module, "MANAGER_STACK_LEVEL", manager_level)
    found = ways(wallbox(rate_unit="A", charging_profile="TxDefaultProfile"), facts(reported))
    assert [way.stack_level for way in found] == levels


@pytest.mark.parametrize(
    "units, tried",
    [
        (None, ["A", "W"]),
        ({"A"}, ["A"]),
        ({"W"}, ["W"]),
        ({"A", "W"}, ["A"]),
    ],
    ids=["unknown", "current-only", "power-only", "both"],
)
def test_rate_unit_auto(units, tried):
    """rate_unit = auto: A unless the wallbox allows only Power; when it did
    not say, W after A."""
    found = ways(wallbox(charging_profile="TxDefaultProfile", stack_level=0), facts(0, units))
    assert [way.rate_unit for way in found] == tried


def test_every_key_explicit_gives_one_way_whatever_the_wallbox_says():
    """All three keys given: that one way, even when the wallbox reports
    something else, and it is not asked."""
    settings = wallbox(charging_profile="TxProfile", rate_unit="W", stack_level=2)
    expected = [Way(TRANSACTION_PROFILE, 2, "W")]
    assert ways(settings, None) == expected
    assert ways(settings, facts(0, {"A"})) == expected
    assert probes(settings) is False


@pytest.mark.parametrize(
    "keys, said, expected",
    [
        (
            {"charging_profile": "TxProfile"},
            facts(0, {"A"}),
            [Way(TRANSACTION_PROFILE, 0, "A")],
        ),
        (
            {"rate_unit": "A"},
            facts(0, {"W"}),
            [Way(DEFAULT_PROFILE, 0, "A"), Way(TRANSACTION_PROFILE, 0, "A")],
        ),
        (
            {"stack_level": 0},
            facts(3, {"A"}),
            [Way(DEFAULT_PROFILE, 0, "A"), Way(TRANSACTION_PROFILE, 0, "A")],
        ),
        (
            {"stack_level": 7},
            facts(0, {"A"}),
            [Way(DEFAULT_PROFILE, 7, "A"), Way(TRANSACTION_PROFILE, 7, "A")],
        ),
        (
            {"charging_profile": "TxDefaultProfile", "rate_unit": "W"},
            None,
            [Way(DEFAULT_PROFILE, MANAGER_STACK_LEVEL, "W"), Way(DEFAULT_PROFILE, 0, "W")],
        ),
    ],
    ids=["profile", "unit", "level-below", "level-above", "profile-and-unit"],
)
def test_an_explicit_key_is_the_only_value_tried(keys, said, expected):
    """Each key given is used as given, whatever the wallbox said; the
    others stay auto."""
    assert ways(wallbox(**keys), said) == expected


@pytest.mark.parametrize(
    "profile, unit, level",
    list(itertools.product(["auto", "TxDefaultProfile"], ["auto", "W"], ["auto", "0"])),
)
def test_probes_unless_every_key_is_explicit(profile, unit, level):
    """The wallbox is asked for its configuration unless all three keys
    are given."""
    settings = wallbox(charging_profile=profile, rate_unit=unit, stack_level=level)
    everything_given = "auto" not in (profile, unit, level)
    assert probes(settings) is not everything_given


# -- the strategy ------------------------------------------------------------------


def test_a_new_strategy_starts_with_the_defaults():
    """Before the wallbox said anything: the first default way, ready,
    nothing refused, the default limit unknown."""
    strategy = LimitStrategy(wallbox())
    assert strategy.way == Way(DEFAULT_PROFILE, MANAGER_STACK_LEVEL, "A")
    assert (strategy.state, strategy.source) == ("ready", "defaults")
    assert strategy.default_limit is None
    assert strategy.last_refusal is None
    assert not strategy.in_watts and not strategy.needs_transaction


def test_a_configured_strategy_says_so():
    """Every key explicit: the source is the configuration, before and
    after anything the wallbox says."""
    strategy = LimitStrategy(wallbox(charging_profile="TxProfile", rate_unit="W", stack_level=0))
    assert strategy.source == "configuration"
    strategy.learn(facts(3, {"A"}))
    assert strategy.source == "configuration"
    assert strategy.way == Way(TRANSACTION_PROFILE, 0, "W")
    assert strategy.in_watts and strategy.needs_transaction


def test_learning_starts_again_from_the_first_way_that_fits():
    """What the wallbox said replaces the ways and goes back to the first;
    the state is ready again after probing."""
    strategy = LimitStrategy(wallbox())
    strategy.refused(strategy.way, "Rejected", NOW)
    strategy.probing()
    assert strategy.state == "probing"
    strategy.learn(facts(0, {"W"}))
    assert strategy.way == Way(DEFAULT_PROFILE, 0, "W")
    assert (strategy.state, strategy.source) == ("ready", "wallbox")
    assert strategy.as_json()["wallbox"]["rate_units"] == ["W"]
    strategy.learn(None)
    assert strategy.source == "defaults"
    assert strategy.way == Way(DEFAULT_PROFILE, MANAGER_STACK_LEVEL, "A")


def test_a_refused_default_profile_moves_on_to_a_transaction_profile():
    """A wallbox that takes level 0 in A only and rejects TxDefaultProfile:
    after the refusal, a TxProfile; it holds no default limit."""
    strategy = LimitStrategy(wallbox())
    strategy.learn(facts(0, {"A"}))
    first = strategy.way
    assert first == Way(DEFAULT_PROFILE, 0, "A")
    following = strategy.refused(first, "SetChargingProfile answered Rejected", NOW)
    assert following == Way(TRANSACTION_PROFILE, 0, "A")
    assert strategy.way == following and strategy.needs_transaction
    assert strategy.default_limit is False
    assert strategy.state == "ready"
    assert strategy.last_refusal.as_json() == {
        "at": NOW,
        "way": "TxDefaultProfile, stack level 0, A",
        "reason": "SetChargingProfile answered Rejected",
    }


def test_the_default_limit_is_given_up_only_after_every_default_way():
    """Without facts there are four TxDefaultProfile ways: the default
    limit is unknown until the last of them was refused."""
    strategy = LimitStrategy(wallbox())
    for _ in range(3):
        assert strategy.refused(strategy.way, "Rejected", NOW).purpose == DEFAULT_PROFILE
        assert strategy.default_limit is None
    assert strategy.refused(strategy.way, "Rejected", NOW).purpose == TRANSACTION_PROFILE
    assert strategy.default_limit is False


def test_an_accepted_default_profile_means_a_default_limit():
    """A TxDefaultProfile taken: the wallbox holds a default limit; a
    TxProfile taken says nothing of it."""
    strategy = LimitStrategy(wallbox(charging_profile="TxProfile"))
    strategy.accepted(Way(TRANSACTION_PROFILE, 1, "A"))
    assert strategy.default_limit is None
    strategy.accepted(Way(DEFAULT_PROFILE, 1, "A"))
    assert strategy.default_limit is True


def test_way_for_without_a_transaction():
    """A TxDefaultProfile goes out whether a transaction runs or not; a
    TxProfile strategy sends its default's way without one (until that is
    refused: then nothing)."""
    default = LimitStrategy(wallbox())
    assert default.way_for(False) == default.way_for(True) == default.way

    tx_only = LimitStrategy(wallbox(charging_profile="TxProfile", rate_unit="W", stack_level=0))
    assert tx_only.way_for(True) == Way(TRANSACTION_PROFILE, 0, "W")
    assert tx_only.way_for(False) == Way(DEFAULT_PROFILE, 0, "W")


def test_a_refused_default_of_a_transaction_strategy_means_no_default():
    """charging_profile = TxProfile, no transaction: the default's way is
    refused; nothing is sent without a transaction any more, and the
    TxProfile way stays."""
    strategy = LimitStrategy(wallbox(charging_profile="TxProfile", stack_level=0))
    sent = strategy.way_for(False)
    assert strategy.refused(sent, "Rejected", NOW) is None
    assert strategy.default_limit is False
    assert strategy.state == "ready"
    assert strategy.way_for(False) is None
    assert strategy.way_for(True) == Way(TRANSACTION_PROFILE, 0, "A")


def test_every_way_refused_then_again_from_the_first():
    """Once the last way was refused the strategy is refused and shows it;
    the next limit starts from the first way, and one accepted makes it
    ready."""
    strategy = LimitStrategy(wallbox())
    strategy.learn(facts(0, {"A"}))
    first = strategy.way
    assert strategy.refused(first, "Rejected", NOW) is not None
    assert strategy.refused(strategy.way, "NotSupported", NOW + 1) is None
    assert strategy.state == "refused"
    assert strategy.way == first
    shown = strategy.as_json()
    assert shown["state"] == "refused"
    assert shown["last_refusal"] == {
        "at": NOW + 1,
        "way": "TxProfile, stack level 0, A",
        "reason": "NotSupported",
    }
    strategy.accepted(strategy.way_for(True))
    assert strategy.state == "ready"


def test_a_refused_way_from_before_learning_does_not_end_the_default():
    """A TxDefaultProfile sent before the wallbox's answer was learnt, and
    refused after it: the default ways that fit the answer are still to
    try, and the default limit is not given up."""
    strategy = LimitStrategy(wallbox())
    sent = strategy.way
    assert sent == Way(DEFAULT_PROFILE, MANAGER_STACK_LEVEL, "A")
    strategy.learn(facts(0, {"A"}))
    following = strategy.refused(sent, "SetChargingProfile answered Rejected", NOW)
    assert following is not None and following.purpose == DEFAULT_PROFILE
    assert strategy.default_limit is not False


def test_the_status_shows_the_way_and_the_voltage_in_watts_only():
    """The status API shows the way; the voltage only when limits go in W."""
    strategy = LimitStrategy(wallbox(voltage=120))
    assert strategy.as_json() == {
        "state": "ready",
        "purpose": DEFAULT_PROFILE,
        "stack_level": MANAGER_STACK_LEVEL,
        "rate_unit": "A",
        "voltage": None,
        "default_limit": None,
        "source": "defaults",
        "wallbox": None,
        "last_refusal": None,
    }
    strategy.learn(facts(0, {"W"}))
    shown = strategy.as_json()
    assert (shown["rate_unit"], shown["voltage"]) == ("W", 120.0)
    assert shown["wallbox"] == {
        "max_stack_level": 0,
        "rate_units": ["W"],
        "max_periods": None,
        "max_profiles": None,
    }


# -- what a limit in W counts for --------------------------------------------------


@pytest.mark.parametrize("phases_now, known", [(1, False), (3, False), (1, True), (3, True)])
def test_a_limit_in_amperes_counts_as_it_is(phases_now, known):
    """A limit sent in A holds each phase to it, whatever the phases."""
    assert counted_current(10.0, IN_AMPERES, phases_now, known, 16.0) == 10.0


@pytest.mark.parametrize(
    "amps, sent, phases_now, known, counted",
    [
        # Phases unknown: one phase of the car could draw the whole power.
        (4.0, SentAs("W", 3), 3, False, 12.0),
        (10.0, SentAs("W", 3), 3, False, 16.0),
        (10.0, SentAs("W", 1), 1, False, 10.0),
        # Phases known: the power is shared over them.
        (10.0, SentAs("W", 3), 3, True, 10.0),
        (10.0, SentAs("W", 3), 2, True, 15.0),
        (10.0, SentAs("W", 3), 1, True, 16.0),
        (4.0, SentAs("W", 3), 1, True, 12.0),
        (6.0, SentAs("W", 2), 0, True, 12.0),
    ],
)
def test_a_limit_in_watts_counts_per_phase(amps, sent, phases_now, known, counted):
    """W = A x phases sent; counted on each phase at the smaller of the
    whole power's amperes and max_current until the phases are known, then
    shared over the phases counted now."""
    assert counted_current(amps, sent, phases_now, known, 16.0) == counted


@pytest.mark.parametrize(
    "room, unit, phases_now, known, limit",
    [
        (9.0, "A", 3, False, 9.0),
        (9.0, "W", 3, True, 9.0),
        (16.0, "W", 3, False, 16.0),
        (20.0, "W", 3, False, 20.0),
        (9.0, "W", 3, False, 3.0),
        (10.0, "W", 3, False, 3.3),
        (10.0, "W", 1, False, 10.0),
        (10.0, "W", 0, False, 10.0),
    ],
)
def test_the_limit_within_the_room(room, unit, phases_now, known, limit):
    """Within C{room} amperes per phase: the room itself, except in W
    with the phases unknown and below max_current, where the whole power
    may land on one phase (rounded down to 0.1 A)."""
    assert limit_within(room, unit, phases_now, known, 16.0) == pytest.approx(limit)


@given(
    room=st.floats(min_value=0, max_value=64, allow_nan=False),
    phases_now=st.integers(min_value=1, max_value=3),
    known=st.booleans(),
    max_current=st.floats(min_value=6, max_value=63, allow_nan=False),
)
def test_a_limit_within_the_room_never_counts_for_more(room, phases_now, known, max_current):
    """Sent in W with the phases counted now, the limit counts for no
    more than the room; and 0.1 A more would count for more (unless the
    device's max_current caps it anyway)."""
    sent = SentAs("W", phases_now)
    limit = limit_within(room, "W", phases_now, known, max_current)
    assert counted_current(limit, sent, phases_now, known, max_current) <= room + 1e-6
    if counted_current(limit + 0.1, sent, phases_now, known, max_current) < max_current:
        assert counted_current(limit + 0.1, sent, phases_now, known, max_current) > room - 1e-6


# -- the manager's profiles ----------------------------------------------------------


def test_a_default_profile_in_amperes():
    """The TxDefaultProfile payload: the manager's id for the connector,
    the stack level given, one period of the limit with one decimal, no
    transaction."""
    payload = manager_profile(2, 10.04, NOW, stack_level=0)
    assert payload == {
        "connectorId": 2,
        "csChargingProfiles": {
            "chargingProfileId": MANAGER_PROFILE_ID_BASE + 2,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "startSchedule": ocpp_time(NOW),
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}],
            },
        },
    }
    assert manager_profile(1, 6, NOW)["csChargingProfiles"]["stackLevel"] == MANAGER_STACK_LEVEL


def test_a_transaction_profile_names_its_transaction():
    """A TxProfile has its own id range and the running transaction's id."""
    profile = manager_profile(1, 8.0, NOW, purpose="TxProfile", stack_level=3, transaction_id=42)[
        "csChargingProfiles"
    ]
    assert profile["chargingProfileId"] == MANAGER_TX_PROFILE_ID_BASE + 1
    assert profile["chargingProfilePurpose"] == "TxProfile"
    assert profile["stackLevel"] == 3
    assert profile["transactionId"] == 42


def test_a_transaction_profile_without_a_transaction_is_an_error():
    """A TxProfile cannot be written without the transaction's id."""
    with pytest.raises(ValueError, match="transaction"):
        manager_profile(1, 8.0, NOW, purpose="TxProfile")


def test_a_schedule_given_goes_as_it_is():
    """A whole chargingSchedule (in W, combined with a backend's) replaces
    the one period in A."""
    schedule = {
        "startSchedule": ocpp_time(NOW),
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6900.0}],
    }
    payload = manager_profile(1, 10.0, NOW, schedule)
    assert payload["csChargingProfiles"]["chargingSchedule"] == schedule


def test_a_schedule_in_watts():
    """Each limit times the watts per ampere, rounded down to 0.1 W; the
    rest of the schedule (and the schedule given) unchanged."""
    schedule = {
        "startSchedule": ocpp_time(NOW),
        "chargingRateUnit": "A",
        "duration": 3600,
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 10.0},
            {"startPeriod": 600, "limit": 6.1, "numberPhases": 1},
            {"startPeriod": 1200, "limit": 7.77},
        ],
    }
    watts = in_watts(schedule, 230.0 * 3)
    assert watts == {
        "startSchedule": ocpp_time(NOW),
        "chargingRateUnit": "W",
        "duration": 3600,
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 6900.0},
            {"startPeriod": 600, "limit": 4209.0, "numberPhases": 1},
            {"startPeriod": 1200, "limit": 5361.3},
        ],
    }
    assert schedule["chargingRateUnit"] == "A"
    assert schedule["chargingSchedulePeriod"][0]["limit"] == 10.0


@given(
    amps=st.floats(min_value=0, max_value=80, allow_nan=False),
    volts=st.floats(min_value=100, max_value=480, allow_nan=False),
    phases=st.integers(min_value=1, max_value=3),
)
def test_watts_never_allow_more_than_the_amperes(amps, volts, phases):
    """Rounded down: the power never allows more than the amperes did
    (beyond float noise), and never 0.1 W less."""
    schedule = {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]}
    (period,) = in_watts(schedule, volts * phases)["chargingSchedulePeriod"]
    exact = amps * volts * phases
    assert exact - 0.1 - 1e-6 <= period["limit"] <= exact + 1e-6


def schedule_of(*limits):
    """A chargingSchedule of one period per limit, ten minutes apart."""
    return {
        "startSchedule": ocpp_time(NOW),
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": 600 * n, "limit": limit} for n, limit in enumerate(limits)
        ],
    }


def test_a_schedule_that_fits_is_left_alone():
    """No more periods than the wallbox takes: the same schedule."""
    schedule = schedule_of(10.0, 16.0)
    assert fit_periods(schedule, 2) is schedule
    assert fit_periods(schedule, 24) is schedule


@pytest.mark.parametrize(
    "limits, max_periods, kept",
    [
        ((10.0, 16.0, 8.0, 12.0), 2, [10.0, 8.0]),
        ((10.0, 16.0, 8.0, 12.0), 3, [10.0, 16.0, 8.0]),
        ((10.0, 6.0, 16.0, 12.0), 3, [10.0, 6.0, 12.0]),
        ((16.0, 6.0, 10.0), 1, [6.0]),
        ((6.0, 16.0, 10.0), 1, [6.0]),
    ],
)
def test_too_many_periods_keep_the_least_limit_of_the_tail(limits, max_periods, kept):
    """Cut to C{max_periods}: the periods before the last kept are as they
    were; the last kept holds the least limit from its start on, so the
    schedule never allows more than the one given."""
    schedule = schedule_of(*limits)
    fitted = fit_periods(schedule, max_periods)
    assert [p["limit"] for p in fitted["chargingSchedulePeriod"]] == kept
    assert [p["startPeriod"] for p in fitted["chargingSchedulePeriod"]] == [
        600 * n for n in range(len(kept))
    ]
    assert fitted["startSchedule"] == schedule["startSchedule"]
    assert [p["limit"] for p in schedule["chargingSchedulePeriod"]] == list(limits)


@given(
    limits=st.lists(st.floats(min_value=0, max_value=32, allow_nan=False), min_size=1, max_size=8),
    max_periods=st.integers(min_value=1, max_value=8),
)
def test_a_fitted_schedule_never_allows_more(limits, max_periods):
    """At every period's start, the fitted schedule's limit is no more
    than the given one's."""
    schedule = schedule_of(*limits)
    fitted = fit_periods(schedule, max_periods)["chargingSchedulePeriod"]
    assert len(fitted) <= max_periods

    def limit_at(periods, second):
        return [p["limit"] for p in periods if p["startPeriod"] <= second][-1]

    for period in schedule["chargingSchedulePeriod"]:
        second = period["startPeriod"]
        assert limit_at(fitted, second) <= period["limit"]


@pytest.mark.parametrize(
    "purpose, base",
    [("TxDefaultProfile", MANAGER_PROFILE_ID_BASE), ("TxProfile", MANAGER_TX_PROFILE_ID_BASE)],
)
def test_clearing_names_the_profile_of_its_purpose(purpose, base):
    """ClearChargingProfile by the manager's id of that purpose only."""
    assert clear_manager_profile(3, purpose) == {"id": base + 3}
    assert profiles.manager_profile_id(3, purpose) == base + 3


def test_the_id_ranges_do_not_overlap():
    """The ids of the two purposes stay apart for every connector."""
    defaults = {profiles.manager_profile_id(c) for c in range(100)}
    transactions = {profiles.manager_profile_id(c, "TxProfile") for c in range(100)}
    assert not defaults & transactions
    assert clear_manager_profile(1) == {"id": MANAGER_PROFILE_ID_BASE + 1}
    assert len(defaults | transactions) == 200
