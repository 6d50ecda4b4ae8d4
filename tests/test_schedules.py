"""Charging profiles resolved to absolute time (cfosproxy.ocpp.schedules)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfosproxy.ocpp.frames import Call, CallResult
from cfosproxy.ocpp.schedules import (
    ChargingProfile,
    Period,
    composite,
    limit_at,
    minimum,
    parse_ocpp_time,
    stack,
    to_charging_schedule,
)
from cfosproxy.ocpp.schemas import validate_call, validate_result
from cfosproxy.ocpp.times import ocpp_time

T0 = parse_ocpp_time("2024-03-01T00:00:00Z")  # a Friday
HOUR = 3600
DAY = 24 * HOUR


def profile(
    periods,
    *,
    purpose="TxDefaultProfile",
    kind="Absolute",
    stack_level=0,
    start=T0,
    unit="A",
    duration=None,
    recurrency=None,
    valid_from=None,
    valid_to=None,
    transaction_id=None,
    profile_id=1,
    **options,
):
    """A ChargingProfile parsed from the OCPP JSON these arguments describe.

    ``periods`` are (startPeriod, limit) or (startPeriod, limit, numberPhases).
    """
    schedule = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})}
            for p in periods
        ],
    }
    if start is not None:
        schedule["startSchedule"] = ocpp_time(start)
    if duration is not None:
        schedule["duration"] = duration
    data = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    for key, value in [
        ("recurrencyKind", recurrency),
        ("validFrom", valid_from),
        ("validTo", valid_to),
        ("transactionId", transaction_id),
    ]:
        if value is not None:
            data[key] = ocpp_time(value) if key.startswith("valid") else value
    return ChargingProfile.from_json(data, **options)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("2024-03-01T00:00:00Z", T0),
        ("2024-03-01T00:00:00.250Z", T0 + 0.25),
        ("2024-03-01T01:30:00+01:30", T0),
        ("2024-02-29T22:00:00.5-02:00", T0 + 0.5),
        ("2024-03-01t00:00:00z", T0),
        ("2024-02-29T23:59:60Z", T0),
    ],
)
def test_parse_ocpp_time_reads_rfc3339(text, seconds):
    """OCPP dateTimes with Z or an offset, with or without fractions, give POSIX seconds."""
    assert parse_ocpp_time(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    ["", "2024-03-01", "2024-03-01T00:00:00", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z",
     "2024-03-01T00:00:00+24:00", "2024-03-01T00:00:00Z junk", "yesterday", None, 1709251200,
     "\u0662024-03-01T00:00:00Z"],
)
def test_parse_ocpp_time_refuses_junk(text):
    """Anything that is not a full RFC 3339 date-time with a zone is a ValueError."""
    with pytest.raises(ValueError):
        parse_ocpp_time(text)


def test_absolute_profile_periods():
    """An Absolute profile's periods start at startSchedule + startPeriod; the
    last one lasts to the end of the window."""
    p = profile([(0, 16), (600, 10), (1800, 6.5)], start=T0 + 100)
    assert p.periods_between(T0, T0 + HOUR, transaction_start=None) == [
        Period(T0 + 100, T0 + 700, 16),
        Period(T0 + 700, T0 + 1900, 10),
        Period(T0 + 1900, T0 + HOUR, 6.5),
    ]
    # A window in the middle is cut at both ends.
    assert p.periods_between(T0 + 800, T0 + 1000, transaction_start=None) == [
        Period(T0 + 800, T0 + 1000, 10)
    ]


def test_relative_profile_follows_the_transaction():
    """A Relative profile is not in force without a transaction and counts
    its periods from the transaction's start."""
    p = profile([(0, 6), (900, 16)], kind="Relative", start=None)
    assert p.periods_between(T0, T0 + HOUR, transaction_start=None) == []
    assert p.periods_between(T0, T0 + HOUR, transaction_start=T0 + 600) == [
        Period(T0 + 600, T0 + 1500, 6),
        Period(T0 + 1500, T0 + HOUR, 16),
    ]


def test_recurring_daily_across_midnight():
    """A daily profile starting at 20:00 keeps its night limit past midnight
    and repeats every day; the run from the day before shows at the window start."""
    p = profile(
        [(0, 8), (6 * HOUR, 16)], kind="Recurring", recurrency="Daily", start=T0 + 20 * HOUR
    )
    day2 = T0 + DAY
    assert p.periods_between(day2 + 18 * HOUR, day2 + 28 * HOUR, transaction_start=None) == [
        Period(day2 + 18 * HOUR, day2 + 20 * HOUR, 16),
        Period(day2 + 20 * HOUR, day2 + 26 * HOUR, 8),
        Period(day2 + 26 * HOUR, day2 + 28 * HOUR, 16),
    ]
    # Before startSchedule the recurrence has not begun.
    assert p.periods_between(T0, T0 + 20 * HOUR, transaction_start=None) == []


def test_recurring_weekly():
    """A weekly profile from a Monday limits weekdays and frees the weekend,
    week after week."""
    monday = T0 + 3 * DAY
    p = profile([(0, 6), (5 * DAY, 32)], kind="Recurring", recurrency="Weekly", start=monday)
    friday_noon = monday + 11 * DAY + 12 * HOUR
    assert p.periods_between(friday_noon, friday_noon + 4 * DAY, transaction_start=None) == [
        Period(friday_noon, monday + 12 * DAY, 6),
        Period(monday + 12 * DAY, monday + 14 * DAY, 32),
        Period(monday + 14 * DAY, friday_noon + 4 * DAY, 6),
    ]


def test_recurring_duration_leaves_the_rest_of_the_day_free():
    """A daily profile with a duration limits only that part of each day."""
    p = profile([(0, 10)], kind="Recurring", recurrency="Daily", start=T0 + 22 * HOUR,
                duration=8 * HOUR)
    assert p.periods_between(T0 + DAY, T0 + 2 * DAY, transaction_start=None) == [
        Period(T0 + DAY, T0 + DAY + 6 * HOUR, 10),
        Period(T0 + DAY + 22 * HOUR, T0 + 2 * DAY, 10),
    ]


def test_valid_from_and_valid_to_cut_the_schedule():
    """Outside validFrom … validTo a profile is not in force."""
    p = profile([(0, 10), (150, 12)], valid_from=T0 + 100, valid_to=T0 + 200)
    assert p.periods_between(T0, T0 + 300, transaction_start=None) == [
        Period(T0 + 100, T0 + 150, 10),
        Period(T0 + 150, T0 + 200, 12),
    ]


def test_duration_ends_the_schedule():
    """After its duration a schedule sets no limit; its last period ends there."""
    p = profile([(0, 10), (100, 16)], duration=150)
    assert p.periods_between(T0, T0 + 300, transaction_start=None) == [
        Period(T0, T0 + 100, 10),
        Period(T0 + 100, T0 + 150, 16),
    ]


def test_higher_stack_level_wins_where_it_is_in_force():
    """A higher stackLevel that covers only part of the window wins there; the
    lower profile shows through before and after it."""
    low = profile([(0, 16)], stack_level=0, profile_id=1)
    high = profile([(0, 6)], stack_level=1, start=T0 + 100, duration=100, profile_id=2)
    expected = [
        Period(T0, T0 + 100, 16),
        Period(T0 + 100, T0 + 200, 6),
        Period(T0 + 200, T0 + 300, 16),
    ]
    assert stack([low, high], T0, T0 + 300) == expected
    assert stack([high, low], T0, T0 + 300) == expected


def test_tx_profile_overrides_default_only_for_its_transaction():
    """A TxProfile for transaction 7 replaces the TxDefaultProfile during
    transaction 7, but not during another one or without a transaction."""
    default = profile([(0, 16)], purpose="TxDefaultProfile", stack_level=5)
    tx = profile([(0, 10)], purpose="TxProfile", transaction_id=7, start=T0 + 100)
    window = (T0, T0 + 300)
    assert composite([default, tx], *window, transaction_id=7, transaction_start=T0 + 50) == [
        Period(T0, T0 + 100, 16),
        Period(T0 + 100, T0 + 300, 10),
    ]
    assert composite([default, tx], *window, transaction_id=8) == [Period(T0, T0 + 300, 16)]
    assert composite([default, tx], *window) == [Period(T0, T0 + 300, 16)]
    # The same profiles grouped by purpose give the same answer.
    by_purpose = {"TxDefaultProfile": [default], "TxProfile": [tx]}
    assert composite(by_purpose, *window, transaction_id=7) == composite(
        [default, tx], *window, transaction_id=7
    )


def test_charge_point_max_profile_caps():
    """The ChargePointMaxProfile caps the transaction's limit, and limits on
    its own where no other profile is in force."""
    cap = profile([(0, 12)], purpose="ChargePointMaxProfile")
    default = profile([(0, 16), (100, 6)], purpose="TxDefaultProfile", duration=200)
    assert composite([cap, default], T0, T0 + 300) == [
        Period(T0, T0 + 100, 12),
        Period(T0 + 100, T0 + 200, 6),
        Period(T0 + 200, T0 + 300, 12),
    ]


def test_minimum_of_backend_and_local_schedules():
    """Per period the lower of the backend's limit and the local grant wins:
    10 A against 16 A gives 10, 32 A against 16 A gives 16; boundaries of
    either schedule split the result, equal neighbours merge."""
    backend = [Period(T0 + 50, T0 + 100, 10), Period(T0 + 100, T0 + 300, 32)]
    local = [Period(T0, T0 + 150, 16), Period(T0 + 150, None, 20)]
    expected = [
        Period(T0, T0 + 50, 16),
        Period(T0 + 50, T0 + 100, 10),
        Period(T0 + 100, T0 + 150, 16),
        Period(T0 + 150, None, 20),
    ]
    assert minimum(backend, local) == expected
    assert minimum(local, backend) == expected
    assert limit_at(expected, T0 + 75) == 10
    assert limit_at(expected, T0 - 1) is None


def test_watts_are_converted_to_amperes():
    """A schedule in W becomes amperes per phase: W / (volts × numberPhases),
    three phases when numberPhases is absent."""
    p = profile([(0, 11040), (100, 7360, 1)], unit="W")
    assert p.periods_between(T0, T0 + 200, transaction_start=None) == [
        Period(T0, T0 + 100, 16.0),
        Period(T0 + 100, T0 + 200, 32.0, 1),
    ]
    p = profile([(0, 7200)], unit="W", volts_per_phase=240.0)
    assert limit_at(p.periods_between(T0, T0 + 1, transaction_start=None), T0) == 10.0
    with pytest.raises(ValueError, match="voltage"):
        profile([(0, 11040)], unit="W", volts_per_phase=None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"chargingProfilePurpose": "SiteMaxProfile"}, "chargingProfilePurpose"),
        ({"chargingProfileKind": "Sometimes"}, "chargingProfileKind"),
        ({"chargingProfileKind": "Recurring"}, "recurrencyKind"),
        ({"chargingProfileKind": "Recurring", "recurrencyKind": "Monthly"}, "recurrencyKind"),
        ({"stackLevel": -1}, "stackLevel"),
        ({"validFrom": "soon"}, "validFrom"),
        ({"chargingSchedule": None}, "chargingSchedule"),
    ],
)
def test_from_json_refuses_profiles_it_cannot_use(change, message):
    """Unknown purposes or kinds and incomplete profiles are ValueErrors that name the field."""
    data = {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}],
        },
    }
    ChargingProfile.from_json(data)  # the unchanged profile is fine
    with pytest.raises(ValueError, match=message):
        ChargingProfile.from_json({**data, **change})


@pytest.mark.parametrize(
    "periods, message",
    [
        ([], "non-empty"),
        ([{"startPeriod": 0, "limit": 10}, {"startPeriod": 0, "limit": 6}], "increase"),
        ([{"startPeriod": 0}], "limit"),
        ([{"startPeriod": 0, "limit": -1}], "negative"),
        ([{"startPeriod": 0, "limit": "10"}], "number"),
    ],
)
def test_from_json_refuses_bad_periods(periods, message):
    """Periods must exist, carry a number as limit, and start in order."""
    data = {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": periods},
    }
    with pytest.raises(ValueError, match=message):
        ChargingProfile.from_json(data)


def test_to_charging_schedule_round_trips_through_set_charging_profile():
    """A schedule built from periods passes the SetChargingProfile and
    GetCompositeSchedule schemas and, parsed back, gives the same periods."""
    periods = [Period(T0, T0 + 600, 10.0), Period(T0 + 600, T0 + 1800, 16.5, 1)]
    schedule = to_charging_schedule(periods, T0)
    assert schedule == {
        "startSchedule": "2024-03-01T00:00:00.000Z",
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 10.0},
            {"startPeriod": 600, "limit": 16.5, "numberPhases": 1},
        ],
        "duration": 1800,
    }
    payload = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1952001,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        },
    }
    wire = json.loads(Call("1", "SetChargingProfile", payload).to_text())
    validate_call(Call(wire[1], wire[2], wire[3]))
    validate_result(
        "GetCompositeSchedule",
        CallResult("2", {"status": "Accepted", "connectorId": 1,
                         "scheduleStart": ocpp_time(T0), "chargingSchedule": schedule}),
    )
    back = ChargingProfile.from_json(wire[3]["csChargingProfiles"])
    assert back.periods_between(T0, T0 + 2 * HOUR, transaction_start=None) == periods


def test_to_charging_schedule_limits_and_units():
    """Limits are rounded down to one decimal (never above the computed one);
    in W they are multiplied back by volts × phases."""
    schedule = to_charging_schedule([Period(T0, None, 15.96)], T0)
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 15.9}]
    assert "duration" not in schedule
    schedule = to_charging_schedule([Period(T0, None, 16.0)], T0, "W")
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 11040.0}]


def test_to_charging_schedule_stretches_without_a_limit():
    """A stretch without a limit before the first limit moves startSchedule;
    between limits it needs the caller's ``unlimited`` value."""
    periods = [Period(T0 + 60, T0 + 120, 10), Period(T0 + 180, None, 6)]
    with pytest.raises(ValueError, match="unlimited"):
        to_charging_schedule(periods, T0)
    later = to_charging_schedule(periods[:1], T0)
    assert later["startSchedule"] == ocpp_time(T0 + 60)
    assert later["duration"] == 60
    filled = to_charging_schedule(periods, T0, unlimited=32)
    assert filled["startSchedule"] == ocpp_time(T0)
    assert filled["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32},
        {"startPeriod": 60, "limit": 10},
        {"startPeriod": 120, "limit": 32},
        {"startPeriod": 180, "limit": 6},
    ]
    with pytest.raises(ValueError, match="no limit"):
        to_charging_schedule([], T0)


# --- properties --------------------------------------------------------------

LIMITS = st.integers(0, 640).map(lambda n: n / 10)


@st.composite
def period_lists(draw):
    """Sorted, non-overlapping periods with gaps, None limits and maybe an open end."""
    cuts = sorted(draw(st.sets(st.integers(0, 1000), max_size=9)))
    periods = []
    for begin, finish in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            periods.append(Period(T0 + begin, T0 + finish, draw(st.none() | LIMITS)))
    if cuts and draw(st.booleans()):
        periods.append(Period(T0 + cuts[-1], None, draw(LIMITS)))
    return periods


MOMENTS = st.lists(
    st.integers(-10, 1010).map(lambda s: T0 + s) | st.floats(T0 - 10, T0 + 1010), min_size=1,
    max_size=20,
)


def _upto(limit):
    return float("inf") if limit is None else limit


@given(period_lists(), period_lists(), MOMENTS)
def test_minimum_is_the_pointwise_minimum(a, b, moments):
    """At every moment minimum(a, b) has the lower limit of a and b (no limit = infinite)."""
    both = minimum(a, b)
    for moment in moments:
        expected = min(_upto(limit_at(a, moment)), _upto(limit_at(b, moment)))
        assert _upto(limit_at(both, moment)) == expected


@st.composite
def profiles(draw):
    """A few random profiles of every purpose and kind around T0."""
    found = []
    for number in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["Absolute", "Relative", "Recurring"]))
        offsets = sorted(draw(st.sets(st.integers(1, 2 * DAY), max_size=3)))
        data = {
            "chargingProfileId": number,
            "stackLevel": draw(st.integers(0, 3)),
            "chargingProfilePurpose": draw(
                st.sampled_from(["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"])
            ),
            "chargingProfileKind": kind,
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": offset, "limit": draw(LIMITS)} for offset in [0, *offsets]
                ],
            },
        }
        if kind != "Relative":
            start = T0 + draw(st.integers(-DAY, DAY))
            data["chargingSchedule"]["startSchedule"] = ocpp_time(start)
        if kind == "Recurring":
            data["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
        if draw(st.booleans()):
            data["chargingSchedule"]["duration"] = draw(st.integers(1, 3 * DAY))
        if draw(st.booleans()):
            data["validTo"] = ocpp_time(T0 + draw(st.integers(-DAY, 3 * DAY)))
        if draw(st.booleans()):
            data["transactionId"] = draw(st.integers(1, 3))
        found.append(ChargingProfile.from_json(data))
    return found


@given(
    profiles(),
    st.none() | st.integers(1, 3),
    st.none() | st.integers(0, DAY).map(lambda s: T0 + s),
    st.lists(st.integers(0, 2 * DAY - 1).map(lambda s: T0 + s), min_size=1, max_size=30),
)
def test_composite_never_exceeds_the_charge_point_maximum(found, transaction_id, started, moments):
    """Wherever a ChargePointMaxProfile is in force, the composite limit is at
    most its limit."""
    window = (T0, T0 + 2 * DAY)
    result = composite(found, *window, transaction_id=transaction_id, transaction_start=started)
    caps = stack([p for p in found if p.purpose == "ChargePointMaxProfile"], *window,
                 transaction_start=started)
    for moment in moments:
        assert _upto(limit_at(result, moment)) <= _upto(limit_at(caps, moment))
