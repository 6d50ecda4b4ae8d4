"""Where a gateway's backend is and how to reach it, as both plugins'
configurations give it, with its TLS files read when the options are."""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cfosproxy.ws import tls


@dataclass(frozen=True)
class Backend:
    """One OCPP backend a gateway links to.

    @ivar url: the backend's C{ws://} or C{wss://} URL, without the client
        id (a wallbox's C{gateway_url}).
    @ivar client_id: the id presented to the backend.
    @ivar password: Basic auth password, or empty for none.
    @ivar ca: PEM file of the CAs that may sign the backend's certificate;
        empty: the system's trusted roots.
    @ivar certificate: PEM client certificate, or empty for none.
    @ivar private_key: PEM key of C{certificate}; empty: in its file.
    @ivar tls_options: for C{wss://}, the client TLS options made from
        C{ca}, C{certificate} and C{private_key}; None for C{ws://}.
    """

    url: str
    client_id: str
    password: str = field(default="", repr=False)
    ca: str = ""
    certificate: str = ""
    private_key: str = ""
    tls_options: object = field(default=None, repr=False, compare=False)

    @classmethod
    def read(
        cls, url, client_id, password="", *, ca="", certificate="", private_key="",
        section, keys=tls.GATEWAY_KEYS,
    ):
        """The backend at C{url}, with the files of a C{wss://} one read
        now: a mistake in them fails the start, not the first connection
        hours later.

        @param section: the configuration section, for errors.
        @param keys: the names of its ca, certificate and private key
            settings, for errors.
        @raise tls.TLSConfigError: a file cannot be read or used.
        """
        tls_options = None
        parts = urlsplit(url)
        if parts.scheme == "wss":
            tls_options = tls.client_tls_options(
                parts.hostname,
                ca=ca,
                certificate=certificate,
                private_key=private_key,
                section=section,
                keys=keys,
            )
        return cls(url, client_id, password, ca, certificate, private_key, tls_options)
