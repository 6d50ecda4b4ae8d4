"""A Modbus wallbox shown to a backend as an OCPP 1.6 charge point.

Sans-IO. A cFos Power Brain without OCPP is read and steered over Modbus
(L{cfosproxy.modbus.wallbox}); toward its backend this module plays the charge
point: BootNotification (vendor cFos, model Power Brain, serial from 8008),
Heartbeat, StatusNotification from the charging state, plug-in → Authorize
with the configured id tag → StartTransaction (meterStart from 8058) →
MeterValues → unplug → StopTransaction, and the backend's calls.

It stands where a wallbox's session stands in front of a
L{cfosproxy.core.gateway.Gateway}: its own CALLs go to C{gateway.answer()}, the
backend's CALLs come to L{ModbusChargePoint.send_call}. So an outage of the
backend, the queue on disk and the replay work exactly as for an OCPP
wallbox.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.core.interfaces import ICallTarget
from cfosproxy.ocpp.errors import ErrorCode, OcppError
from cfosproxy.ocpp.frames import Call, CallError, CallResult
from cfosproxy.ocpp.ids import new_unique_id
from cfosproxy.ocpp.schedules import Period, minimum, to_charging_schedule
from cfosproxy.ocpp.times import ocpp_time
from cfosproxy.modbus.powerbrain import OCPP_STATUS

CONNECTOR_ID = 1
DEFAULT_HEARTBEAT = 300
DEFAULT_SAMPLE_INTERVAL = 60

# Configuration keys the charge point reports; the first two can be changed.
WRITABLE_KEYS = ("HeartbeatInterval", "MeterValueSampleInterval")
FIXED_KEYS = {
    "NumberOfConnectors": "1",
    "AuthorizeRemoteTxRequests": "false",
    "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import",
    "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
    "ChargeProfileMaxStackLevel": "8",
    "ChargingScheduleAllowedChargingRateUnit": "Current",
}

PLUGGED = frozenset({"B", "C", "D"})


@implementer(ICallTarget)
class ModbusChargePoint:
    """The OCPP charge point of one Modbus device.

    @param device: the registry's L{cfosproxy.core.devices.Device}.
    @param gateway: the device's L{cfosproxy.core.gateway.Gateway}.
    @param clock: L{IReactorTime}.
    @param on_allowed_changed: called with no argument when whether the
        device may charge (a transaction, availability) changed, so that the
        manager writes the enable register again.
    @param backend_profiles: the L{BackendProfiles}, for GetCompositeSchedule.
    @param connector_id: the connector it reports as (a Power Brain has one).
    """

    _log = Logger()

    def __init__(
        self, device, gateway, clock, on_allowed_changed, backend_profiles=None,
        connector_id=CONNECTOR_ID,
    ):
        self.device = device
        self.connector_id = connector_id
        self._gateway = gateway
        self._clock = clock
        self._on_allowed_changed = on_allowed_changed
        self._backend_profiles = backend_profiles
        self.closed = True
        self.serial = None
        self.booted = False
        self.available = True
        self.transaction_id = None
        self.reading = None
        self._reported_status = None
        self._starting = False
        self._heartbeat_interval = DEFAULT_HEARTBEAT
        self._sample_interval = DEFAULT_SAMPLE_INTERVAL
        self._heartbeat_timer = None
        self._sample_timer = None
        self._boot_timer = None

    @property
    def allows_charging(self):
        """Whether OCPP lets the device charge: a running transaction on an
        operative connector."""
        return self.available and self.transaction_id is not None

    # -- the Modbus side -----------------------------------------------------

    def online(self, serial):
        """The Modbus device answers: boot toward the backend."""
        self.closed = False
        self.serial = serial
        self._gateway.chargepoint_online(self)
        self._boot()

    def backend_booted(self):
        """The gateway's backend accepted a boot (after an outage or a
        restart): report the current status to it."""
        if self.booted:
            self._report_status(force=True)

    def offline(self):
        """The Modbus device stopped answering."""
        self.closed = True
        self._cancel_timers()
        self._gateway.chargepoint_offline(self)

    def reading_changed(self, reading):
        """A new poll result: report state changes and start or stop the
        transaction as the car comes and goes."""
        before = self.reading
        self.reading = reading
        if self.booted:
            self._report_status()
        plugged = reading.state in PLUGGED
        if plugged and self.transaction_id is None and not self._starting and self.available:
            if before is None or before.state not in PLUGGED:
                self._start_transaction(remote_id_tag=None)
        elif not plugged and self.transaction_id is not None:
            self._stop_transaction("EVDisconnected")

    # -- calls to the backend -------------------------------------------------

    def _call(self, action, payload):
        """Send a CALL through the gateway; a Deferred of the result payload."""
        d = defer.maybeDeferred(
            self._gateway.answer, Call(new_unique_id(), action, payload)
        )
        d.addCallback(_payload)
        return d

    def _boot(self):
        payload = {"chargePointVendor": "cFos", "chargePointModel": "Power Brain"}
        if self.serial:
            payload["chargePointSerialNumber"] = self.serial[:25]
        d = self._call("BootNotification", payload)

        def booted(result):
            if self.closed:
                # Answered after the device went offline or the daemon
                # stopped: nothing to report, no heartbeat to keep.
                return
            self.booted = result.get("status") == "Accepted"
            interval = result.get("interval")
            if isinstance(interval, int) and interval > 0:
                self._heartbeat_interval = interval
            if self.booted:
                self._reported_status = None
                self._report_status()
                self._schedule_heartbeat()
            elif self._boot_timer is None:
                self._boot_timer = self._clock.callLater(max(10, interval or 60), self._boot_again)

        d.addCallbacks(booted, self._failed, errbackArgs=("BootNotification",))

    def _boot_again(self):
        self._boot_timer = None
        if not self.closed:
            self._boot()

    def _failed(self, failure, action):
        self._log.warn(
            "{name}: {action} failed: {error}",
            name=self.device.name,
            action=action,
            error=failure.getErrorMessage(),
        )

    def _status(self):
        if not self.available:
            return "Unavailable"
        if self.reading is None:
            return "Available"
        return OCPP_STATUS[self.reading.state]

    def _report_status(self, force=False):
        status = self._status()
        if status == self._reported_status and not force:
            return
        self._reported_status = status
        error = "OtherError" if status == "Faulted" else "NoError"
        self._call(
            "StatusNotification",
            {"connectorId": self.connector_id, "errorCode": error, "status": status},
        ).addErrback(self._failed, "StatusNotification")

    def _schedule_heartbeat(self):
        if self._heartbeat_timer is not None and self._heartbeat_timer.active():
            self._heartbeat_timer.cancel()
        self._heartbeat_timer = self._clock.callLater(self._heartbeat_interval, self._heartbeat)

    def _heartbeat(self):
        self._heartbeat_timer = None
        if self.closed:
            return
        self._call("Heartbeat", {}).addErrback(self._failed, "Heartbeat")
        self._schedule_heartbeat()

    # -- transactions ----------------------------------------------------------

    def _start_transaction(self, remote_id_tag):
        id_tag = remote_id_tag or self.device.config.id_tag
        if not id_tag:
            self._log.warn(
                "{name}: a car is plugged in, but no id_tag is configured", name=self.device.name
            )
            return
        self._starting = True
        # AuthorizeRemoteTxRequests is false: a remote start is authorized.
        d = defer.succeed({"idTagInfo": {"status": "Accepted"}}) if remote_id_tag else self._call(
            "Authorize", {"idTag": id_tag}
        )

        def authorized(result):
            status = result.get("idTagInfo", {}).get("status")
            if status != "Accepted":
                self._log.warn(
                    "{name}: id tag not accepted ({status}); the wallbox stays disabled",
                    name=self.device.name,
                    status=status,
                )
                return None
            return self._call(
                "StartTransaction",
                {
                    "connectorId": self.connector_id,
                    "idTag": id_tag,
                    "meterStart": self._energy(),
                    "timestamp": ocpp_time(self._clock.seconds()),
                },
            ).addCallback(started)

        def started(result):
            if result.get("idTagInfo", {}).get("status") != "Accepted":
                return
            self.transaction_id = result["transactionId"]
            self.device.transaction_id = self.transaction_id
            self.device.id_tag = id_tag
            self._schedule_sample()
            self._on_allowed_changed()

        def done(result):
            self._starting = False
            return result

        d.addCallback(authorized)
        d.addBoth(done)
        d.addErrback(self._failed, "starting a transaction")
        return d

    def _stop_transaction(self, reason):
        transaction_id, self.transaction_id = self.transaction_id, None
        self.device.transaction_id = None
        self.device.id_tag = None
        if self._sample_timer is not None and self._sample_timer.active():
            self._sample_timer.cancel()
        self._sample_timer = None
        self._on_allowed_changed()
        d = self._call(
            "StopTransaction",
            {
                "transactionId": transaction_id,
                "meterStop": self._energy(),
                "timestamp": ocpp_time(self._clock.seconds()),
                "reason": reason,
            },
        )
        d.addErrback(self._failed, "StopTransaction")
        return d

    def _energy(self):
        return int(self.reading.energy_wh) if self.reading is not None else 0

    def _schedule_sample(self):
        self._sample_timer = self._clock.callLater(self._sample_interval, self._sample)

    def _sample(self):
        self._sample_timer = None
        if self.transaction_id is None or self.closed:
            return
        self._send_meter_values()
        self._schedule_sample()

    def _send_meter_values(self):
        reading = self.reading
        if reading is None:
            return
        samples = [
            {"value": str(int(reading.energy_wh)), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": str(int(reading.power_w)), "measurand": "Power.Active.Import", "unit": "W"},
        ]
        for phase, amps in zip(("L1", "L2", "L3"), reading.currents):
            samples.append(
                {"value": "{:.1f}".format(amps), "measurand": "Current.Import", "unit": "A", "phase": phase}
            )
        payload = {
            "connectorId": self.connector_id,
            "meterValue": [{"timestamp": ocpp_time(self._clock.seconds()), "sampledValue": samples}],
        }
        if self.transaction_id is not None:
            payload["transactionId"] = self.transaction_id
        self._call("MeterValues", payload).addErrback(self._failed, "MeterValues")

    # -- calls from the backend (the gateway's "wallbox session" side) ------

    def send_call(self, call, timeout=None):
        """Answer a backend CALL; a Deferred of the CALLRESULT/CALLERROR
        (at once: the answer needs no round trip, so no C{timeout})."""
        handler = getattr(self, "_on_" + call.action, None)
        if handler is None:
            return defer.succeed(
                CallError(call.unique_id, ErrorCode.NotSupported, "{} is not supported".format(call.action))
            )
        try:
            payload = handler(call.payload)
        except OcppError as e:
            return defer.succeed(e.to_call_error(call.unique_id))
        return defer.succeed(CallResult(call.unique_id, payload))

    def _on_RemoteStartTransaction(self, payload):
        if self.transaction_id is not None or not self.available or self.reading is None or self.reading.state not in PLUGGED:
            return {"status": "Rejected"}
        self._start_transaction(remote_id_tag=payload["idTag"])
        return {"status": "Accepted"}

    def _on_RemoteStopTransaction(self, payload):
        if self.transaction_id is None or payload.get("transactionId") != self.transaction_id:
            return {"status": "Rejected"}
        self._stop_transaction("Remote")
        return {"status": "Accepted"}

    def _on_ChangeAvailability(self, payload):
        available = payload.get("type") == "Operative"
        if available != self.available:
            self.available = available
            self._on_allowed_changed()
            if self.booted:
                self._report_status()
        return {"status": "Accepted"}

    def _on_Reset(self, payload):
        # Soft or hard, the emulation boots again; a running transaction
        # ends first, as OCPP 1.6 asks of a reset.
        if self.transaction_id is not None:
            self._stop_transaction("SoftReset" if payload.get("type") == "Soft" else "HardReset")
        self._clock.callLater(0, self._boot)
        return {"status": "Accepted"}

    def _on_GetConfiguration(self, payload):
        values = dict(FIXED_KEYS)
        values["HeartbeatInterval"] = str(self._heartbeat_interval)
        values["MeterValueSampleInterval"] = str(self._sample_interval)
        asked = payload.get("key") or list(values)
        known = [k for k in asked if k in values]
        result = {
            "configurationKey": [
                {"key": k, "readonly": k not in WRITABLE_KEYS, "value": values[k]} for k in known
            ]
        }
        unknown = [k for k in asked if k not in values]
        if unknown:
            result["unknownKey"] = unknown
        return result

    def _on_ChangeConfiguration(self, payload):
        key, value = payload.get("key"), payload.get("value")
        if key in FIXED_KEYS:
            return {"status": "Rejected"}
        if key not in WRITABLE_KEYS:
            return {"status": "NotSupported"}
        try:
            seconds = int(value)
        except (TypeError, ValueError):
            return {"status": "Rejected"}
        if seconds <= 0:
            return {"status": "Rejected"}
        if key == "HeartbeatInterval":
            self._heartbeat_interval = seconds
            if self.booted:
                self._schedule_heartbeat()
        else:
            self._sample_interval = seconds
        return {"status": "Accepted"}

    def _on_TriggerMessage(self, payload):
        requested = payload.get("requestedMessage")
        triggers = {
            "BootNotification": self._boot,
            "Heartbeat": lambda: self._call("Heartbeat", {}).addErrback(self._failed, "Heartbeat"),
            "StatusNotification": lambda: self._report_status(force=True),
            "MeterValues": self._send_meter_values,
        }
        if requested not in triggers:
            return {"status": "NotImplemented"}
        self._clock.callLater(0, triggers[requested])
        return {"status": "Accepted"}

    def _on_GetCompositeSchedule(self, payload):
        duration = payload.get("duration", 0)
        now = self._clock.seconds()
        local = [Period(now, now + duration, self.device.grant)]
        backend = None
        if self._backend_profiles is not None:
            backend = self._backend_profiles.periods(self.device, now)
        periods = local if backend is None else minimum(backend, local)
        periods = [p for p in periods if p.start < now + duration]
        schedule = to_charging_schedule(periods, now, unlimited=self.device.grant)
        return {
            "status": "Accepted",
            "connectorId": payload.get("connectorId", self.connector_id),
            "scheduleStart": ocpp_time(now),
            "chargingSchedule": schedule,
        }

    def _cancel_timers(self):
        for timer in (self._heartbeat_timer, self._sample_timer, self._boot_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._heartbeat_timer = self._sample_timer = self._boot_timer = None

    def stop(self):
        """Cancel timers (the daemon stops); answers still on their way
        start none again."""
        self.closed = True
        self._cancel_timers()


def _payload(answer):
    """The payload of whatever the gateway answered."""
    if isinstance(answer, CallError):
        raise OcppError(answer.error_code, answer.error_description, answer.error_details)
    if isinstance(answer, CallResult):
        return answer.payload
    return answer
