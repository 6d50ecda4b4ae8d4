"""The admin shell: a Python prompt (Twisted's manhole) over SSH.

Modelled on Twisted's own C{twisted.conch.manhole_tap}, with two changes
that matter for a daemon next to a wallbox: logins are by SSH public key only
(the keys in one OpenSSH C{authorized_keys} file; there are no passwords),
and the host key is an Ed25519 key kept in C{state_dir}, so that clients see
the same host after a restart.

Bind it to localhost (C{[manhole] listen = tcp:19522:interface=127.0.0.1}):
whoever logs in runs Python inside the daemon.
"""

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.error import ValidPublicKey
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.logger import Logger
from zope.interface import implementer

from cfosproxy.ws.certs import write_private_key
from cfosproxy.config import ConfigError
from cfosproxy.services import ListeningService

HOST_KEY_FILE = "manhole-host-key"
"""The SSH host key's file name in C{state_dir}."""

_log = Logger()


class ManholeConfigError(ConfigError):
    """The admin shell cannot be set up as configured (e.g. an unreadable
    C{authorized_keys} file).  A L{ConfigError}, so it is reported like any
    other mistake in the configuration."""


def manhole_service(*, listen, authorized_keys, state_dir, namespace, where="[manhole] listen"):
    """Build the SSH admin shell as a service.

    @param listen: a server endpoint string, e.g.
        C{"tcp:19522:interface=127.0.0.1"}.  The service fails to start
        (rather than running without a listener) when the port is taken.
    @param authorized_keys: an OpenSSH C{authorized_keys} file.  A client
        logs in with any of its keys under I{any} user name; the user name
        is only logged.  The file is read again at every login, so a key
        removed from it is refused without a restart.
    @param state_dir: where the host key is kept (C{manhole-host-key}, mode
        0600); it is generated on first start and reused afterwards.
    @param namespace: the shell's variables, see L{admin_namespace}.  Each
        session starts with its own copy.
    @param where: the setting C{listen} comes from, for a port that cannot
        be listened on.
    @raise ManholeConfigError: C{authorized_keys} cannot be read.
    @return: an L{twisted.application.service.IService}.
    """
    keydb = AuthorizedKeysFile(authorized_keys)
    keydb.check()
    realm = manhole_ssh.TerminalRealm()
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(
        manhole.ColoredManhole, dict(namespace)
    )
    factory = manhole_ssh.ConchFactory(portal.Portal(realm, [_LoggingKeyChecker(keydb)]))
    host_key = ensure_host_key(state_dir)
    # ConchFactory keeps its keys in class attributes: give this one its own.
    factory.publicKeys = {host_key.sshType(): host_key.public()}
    factory.privateKeys = {host_key.sshType(): host_key}
    return ListeningService(listen, factory, where)


def admin_namespace(*, registry, manager, hub):
    """The variables of the admin shell.

    - C{devices()}: every device as the status API shows it (a list of dicts).
    - C{disable(name)} / C{enable(name)}: switch a managed device off or on,
      as L{cfosproxy.site.manager.LoadManager.set_enabled} does; the shell prints
      the result when the returned Deferred fires.
    - C{send(cbid, action, payload)}: send an OCPP CALL to a connected
      wallbox, e.g. C{send("CB-0001", "TriggerMessage", {"requestedMessage":
      "StatusNotification"})}; a Deferred of the CALLRESULT payload.
    - C{registry}, C{manager}, C{hub}: the objects themselves.
    """

    def devices():
        """Every device as a dict, as the status API shows it."""
        return [device.as_json() for device in registry]

    def disable(name):
        """Deactivate device C{name}; a Deferred firing with the device."""
        return manager.set_enabled(name, False)

    def enable(name):
        """Activate device C{name}; a Deferred firing with the device."""
        return manager.set_enabled(name, True)

    def send(cbid, action, payload):
        """Send an OCPP CALL to wallbox C{cbid}; a Deferred of the result."""
        try:
            session = hub.sessions[cbid]
        except KeyError:
            connected = ", ".join(sorted(hub.sessions)) or "none"
            raise KeyError(
                f"no wallbox {cbid!r} is connected (connected: {connected})"
            ) from None
        return session.call(action, payload)

    return {
        "devices": devices,
        "disable": disable,
        "enable": enable,
        "send": send,
        "registry": registry,
        "manager": manager,
        "hub": hub,
    }


def ensure_host_key(state_dir):
    """Return the manhole's SSH host key, generating it on first use.

    The key is an Ed25519 key in C{state_dir/manhole-host-key} (PKCS#8 PEM,
    mode 0600).  C{state_dir} is created with mode 0700 if needed.

    @rtype: L{twisted.conch.ssh.keys.Key}
    """
    path = os.path.join(state_dir, HOST_KEY_FILE)
    try:
        with open(path, "rb") as f:
            return keys.Key(serialization.load_pem_private_key(f.read(), password=None))
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(path, key)
    host_key = keys.Key(key)
    _log.info(
        "Generated the manhole SSH host key in {path} ({fingerprint})",
        path=path,
        fingerprint=_fingerprint(host_key),
    )
    return host_key


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The public keys in one OpenSSH C{authorized_keys} file, for any user.

    Lines that are not keys are logged and skipped (as OpenSSH does); the
    options in front of a key (C{from=...}, C{command=...}) are not supported.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def check(self):
        """Read the file once now, so that a mistake shows at start.

        @raise ManholeConfigError: the file cannot be read.
        @return: the number of keys in the file.
        """
        try:
            count = len(self._read())
        except OSError as e:
            raise ManholeConfigError(
                None,
                "manhole",
                "authorized_keys",
                f"cannot read {self.path}: {e.strerror or e}",
            ) from e
        if not count:
            _log.warn("{path} holds no keys: nobody can log in to the manhole", path=self.path)
        return count

    def getAuthorizedKeys(self, username):
        """The keys that may log in; the same for every C{username}."""
        try:
            return self._read()
        except OSError as e:
            _log.error("Cannot read {path}: {error}", path=self.path, error=e)
            return []

    def _read(self):
        with open(self.path, "rb") as f:
            return list(readAuthorizedKeyFile(f))


class _LoggingKeyChecker(SSHPublicKeyChecker):
    """An L{SSHPublicKeyChecker} that logs every login and every refusal."""

    def requestAvatarId(self, credentials):
        d = super().requestAvatarId(credentials)
        d.addCallbacks(
            self._logged_in,
            self._refused,
            callbackArgs=(credentials,),
            errbackArgs=(credentials,),
        )
        return d

    def _logged_in(self, avatar_id, credentials):
        _log.info(
            "Manhole login by {user!r} with key {fingerprint}",
            user=_user(credentials),
            fingerprint=_blob_fingerprint(credentials.blob),
        )
        return avatar_id

    def _refused(self, failure, credentials):
        # A client first asks whether a key would do, without a signature;
        # that is not a login attempt yet.
        if not failure.check(ValidPublicKey):
            _log.warn(
                "Manhole login refused for {user!r} with key {fingerprint}: {reason}",
                user=_user(credentials),
                fingerprint=_blob_fingerprint(credentials.blob),
                reason=failure.getErrorMessage(),
            )
        return failure


def _user(credentials):
    return credentials.username.decode("utf-8", "replace")


def _fingerprint(key):
    return "{} SHA256:{}".format(
        key.sshType().decode("ascii"),
        key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("="),
    )


def _blob_fingerprint(blob):
    try:
        return _fingerprint(keys.Key.fromString(blob))
    except (keys.BadKeyError, ValueError):
        return "(not a key)"
