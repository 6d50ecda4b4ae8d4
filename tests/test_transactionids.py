"""Local transaction ids and offline authorization, alone, on a real store
file."""

from twisted.internet import task

from cfosproxy.core.offlineauth import OfflineAuthorization
from cfosproxy.core.transactionids import LOCAL_TRANSACTION_IDS, TransactionIds
from cfosproxy.ocpp.frames import Call, CallError, CallResult
from cfosproxy.store import Store


class Message:
    """A queued StartTransaction as the store gives it back."""

    def __init__(self, message_id, local_id, action="StartTransaction"):
        self.id = message_id
        self.local_transaction_id = local_id
        self.action = action


def test_a_local_start_is_mapped_both_ways(tmp_path):
    """A StartTransaction answered locally gets an id above
    LOCAL_TRANSACTION_IDS; once the backend's answer gives its id, later
    messages carry the backend's id and a RemoteStopTransaction the local
    one. Messages of unmapped or foreign ids stay the very same object
    (byte for byte)."""
    store = Store(str(tmp_path / "s.sqlite"))
    ids = TransactionIds(lambda: store, "CB-1", "CB-1")
    payload = {"transactionId": 7}
    local_id = ids.start_locally(payload)
    assert local_id == payload["transactionId"] == LOCAL_TRANSACTION_IDS + 7
    meter_values = Call("m1", "MeterValues", {"connectorId": 1, "transactionId": local_id})
    assert ids.to_backend(meter_values) is meter_values
    ids.learn(Message(1, local_id), CallResult("s1", {"transactionId": 4711}))
    assert ids.to_backend(meter_values).payload["transactionId"] == 4711
    stop = Call("r1", "RemoteStopTransaction", {"transactionId": 4711})
    assert ids.to_local(stop).payload["transactionId"] == local_id
    other = Call("r2", "RemoteStopTransaction", {"transactionId": 99})
    assert ids.to_local(other) is other
    store.close()


def test_a_transaction_profile_of_the_backend_names_the_local_id(tmp_path):
    """A backend's SetChargingProfile with a TxProfile for a transaction the
    wallbox knows by its local id reaches it with that id; a profile
    without a transaction, or for an unmapped one, stays the same object."""
    store = Store(str(tmp_path / "s.sqlite"))
    ids = TransactionIds(lambda: store, "CB-1", "CB-1")
    payload = {"transactionId": 7}
    local_id = ids.start_locally(payload)
    ids.learn(Message(1, local_id), CallResult("s1", {"transactionId": 4711}))
    profile = {"chargingProfileId": 5, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Absolute", "transactionId": 4711, "chargingSchedule": {}}
    call = Call("p1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
    mapped = ids.to_local(call)
    assert mapped.payload["csChargingProfiles"]["transactionId"] == local_id
    assert call.payload["csChargingProfiles"]["transactionId"] == 4711
    default = {k: v for k, v in profile.items() if k != "transactionId"}
    for unmapped in (
        Call("p2", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": default}),
        Call("p3", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {**profile, "transactionId": 99}}),
        Call("p4", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": "junk"}),
    ):
        assert ids.to_local(unmapped) is unmapped
    store.close()


def test_a_refused_start_maps_nothing(tmp_path):
    """A CALLERROR to a StartTransaction, or the answer to another message,
    leaves the local id unmapped."""
    store = Store(str(tmp_path / "s.sqlite"))
    ids = TransactionIds(lambda: store, "CB-1", "CB-1")
    local_id = ids.start_locally({"transactionId": 1})
    ids.learn(Message(1, local_id), CallError("s1", "InternalError", "", {}))
    ids.learn(Message(2, local_id, "MeterValues"), CallResult("m1", {"transactionId": 5}))
    assert store.backend_transaction_id("CB-1", local_id) is None
    store.close()


def test_offline_authorization_remembers_what_the_backend_said(tmp_path):
    """With offline_authorize = cache, a tag the backend accepted is
    accepted while it is away, until its expiry date; refused answers and
    other tags are Invalid."""
    store = Store(str(tmp_path / "s.sqlite"))
    clock = task.Clock()
    clock.advance(1_795_428_000)  # 2026-11-23T10:00Z
    offline = OfflineAuthorization(lambda: store, "CB-1", clock, "cache")
    authorize = Call("a1", "Authorize", {"idTag": "TAG1"})
    offline.remember(
        authorize,
        CallResult("a1", {"idTagInfo": {"status": "Accepted", "expiryDate": "2026-11-23T11:00:00Z"}}),
    )
    offline.remember(Call("a2", "Authorize", {"idTag": "TAG2"}), CallError("a2", "GenericError", "", {}))
    assert offline.id_tag_info("TAG1")["status"] == "Accepted"
    assert offline.id_tag_info("TAG2") == {"status": "Invalid"}
    clock.advance(3601)
    assert offline.id_tag_info("TAG1") == {"status": "Invalid"}
    assert OfflineAuthorization(lambda: store, "CB-1", clock, "accept").id_tag_info("X") == {"status": "Accepted"}
    assert OfflineAuthorization(lambda: store, "CB-1", clock, "reject").id_tag_info("TAG1") == {"status": "Invalid"}
    store.close()
