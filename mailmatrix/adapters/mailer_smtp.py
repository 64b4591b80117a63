"""Delivers through any SMTP server: plain, STARTTLS or implicit TLS, with optional AUTH.

URLs: ``smtp://[user:pass@]host[:25]``, ``smtp+starttls://...[:587]``, ``smtps://...[:465]``.
Query options: ``timeout`` (seconds, default 30), ``cafile`` (PEM bundle to trust, for
private relays), ``helo`` (the name to greet with). User and password are percent-decoded;
a URL with a user and no password takes it from ``MAILMATRIX_SMTP_PASSWORD``.

Each thread keeps its own connection (smtplib connections are not thread-safe) and
reconnects when the server dropped it. A message goes out only when every envelope
recipient was accepted: on any refused RCPT the transaction is reset, so nobody receives a
message that is then reported as failed.

Failures map to the Mailer port's errors: 421/450/451/452/454 and dropped connections are
transient; other 5xx replies are permanent for the message; rate replies are Throttled;
authentication failures, a used-up daily quota and a sender refused for good (5xx to MAIL
FROM) halt the campaign; a connection refused when checked before a campaign is CannotConnect
(nothing listens there: a setup problem). A refused RCPT about the recipient (mailbox or
address class) is marked so (``SendError.recipient``): send_batch halts a campaign whose
service refused every try of several rows in a row, but not for a run of such recipients. A
message counts as sent on a 2xx reply to its content only after a 354 to DATA: a success to
DATA itself means the content was never sent. Errors quote the server's replies with the
addresses in them masked (a refused RCPT's reply names the recipient).
"""

from __future__ import annotations

import math
import os
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mailmatrix.adapters.smtp_urls import DEFAULT_PORTS, PASSWORD_VARIABLE
from mailmatrix.core.addresses import mask, mask_addresses
from mailmatrix.core.failures import NO_SMTP_AUTH, UNREACHABLE_WORDS
from mailmatrix.core.message import envelope_address
from mailmatrix.errors import (
    AccountSendingHalted,
    CannotConnect,
    ConfigurationError,
    PermanentSendError,
    SendError,
    ServiceUnreachable,
    Throttled,
    TransientSendError,
)
from mailmatrix.settings import MAILER_SETTING

TRANSIENT_CODES = frozenset({421, 450, 451, 452, 454})
# Words of a reply that asks for a slower rate. "Try again later" alone is not one: it says
# "not now" (greylisting, a busy server), which send_batch handles as a refusal.
_RATE_WORDS = ("rate", "throttl", "too many messages")


# Which scheme speaks how, for a URL whose scheme is not what the server at its port speaks.
SCHEMES_ADVICE = (
    "smtps:// is TLS from the start (usually port 465), smtp+starttls:// plain then STARTTLS"
    " (usually 587), smtp:// no TLS (25, or a local test server's port): give the scheme the"
    " port speaks"
)

# The query options of an SMTP URL, and the bounds of its timeout (seconds): a socket takes no
# 0 (it would not block), and RFC 5321 4.5.3.2 gives a server 10 minutes for its longest step.
QUERY_OPTIONS = ("timeout", "cafile", "helo")
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect."""

    host: str
    port: int
    security: str = "plain"  # plain | starttls | tls
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    helo: str | None = None


class SmtpMailer:
    """The Mailer port over SMTP, one connection per thread."""

    def __init__(self, server: SmtpServer, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = server
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: dict[smtplib.SMTP, threading.Thread] = {}

    @classmethod
    def from_url(cls, url: str, *, given_as: str = MAILER_SETTING) -> SmtpMailer:
        """Build from ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs; ``given_as``:
        where the operator gave the URL (the setting, or ``--smtp``), as errors name it."""
        parts = urlsplit(url)
        security = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}.get(parts.scheme)
        if security is None or not parts.hostname:
            raise ConfigurationError(
                f"{given_as}: expected smtp://, smtp+starttls:// or smtps://HOST[:PORT], "
                f"got {parts.scheme or url!r}"
            )
        query = query_options(parts.query)
        problem = port_problem(parts) or query_problem(parts.query)
        if problem:
            raise ConfigurationError(f"{given_as}: {problem}")
        if parts.username and not parts.password and os.environ.get(PASSWORD_VARIABLE) is None:
            # An empty password would be sent, and refused as wrong, naming no cause.
            raise ConfigurationError(
                f"{given_as}: the URL names the user {unquote(parts.username)!r} but no"
                f" password, and {PASSWORD_VARIABLE} is not set: set it to the password (it"
                " stays out of the URL, the shell's history and the commands printed), or"
                " leave the user out of the URL for a server that takes mail without a login"
            )
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        timeout = float(query.get("timeout", DEFAULT_TIMEOUT))
        context = None
        if "cafile" in query:
            context = _trusting(query["cafile"], given_as)
        server = SmtpServer(
            host=parts.hostname,
            port=port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else _password_from_env(parts),
            timeout=timeout,
            helo=query.get("helo"),
        )
        return cls(server, ssl_context=context)

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Hand the message over; return its Message-ID (the server's reply is not standard)."""
        if not destinations:
            raise PermanentSendError(f"smtp {self._where}: no envelope recipients")
        mail_from = envelope_address(sender, where="smtp sender")
        rcpt_to = [envelope_address(a, where="smtp recipient") for a in destinations]

        connection, reused = self._connection()
        try:
            reply = self._transaction(connection, mail_from, rcpt_to, raw)
        except _StaleConnection:
            # The server closed an idle connection: nothing was accepted, so send again once.
            self._drop()
            if not reused:
                closed = f"smtp {self._where}: connection closed"
                raise TransientSendError(closed, refused=True) from None
            connection, _ = self._connection()
            try:
                reply = self._transaction(connection, mail_from, rcpt_to, raw)
            except _StaleConnection:
                self._drop()
                closed = f"smtp {self._where}: connection closed"
                raise TransientSendError(closed, refused=True) from None
        return _message_id(raw) or reply

    def check(self) -> None:
        """Connect, greet (STARTTLS and login as configured) and say QUIT, before a campaign.

        Raises what ``send`` would raise on connecting, so an unreachable server or a wrong
        password stops the campaign at validation instead of after every batch's retries; a
        refused connection, before anything was ever sent, as CannotConnect.
        """
        try:
            connection = self._connect()
        except SendError as exc:
            if isinstance(exc.__cause__, ConnectionRefusedError):
                # Nothing listens there: a setup problem (a server not started, another
                # port), not a passing fault that a redrive at once would get past.
                raise CannotConnect(
                    f"smtp: cannot connect to {self._where} (connection refused): is the mail"
                    " server running, and is the port right?",
                    refused=True,
                ) from exc
            if _no_such_host(exc.__cause__):
                raise CannotConnect(
                    f"smtp: cannot connect to {self._where}: no such host ({exc.__cause__}): is"
                    " the server's name right?",
                    refused=True,
                ) from exc
            mismatch = self._scheme_mismatch(exc.__cause__)
            if mismatch:
                raise CannotConnect(
                    f"smtp: {self._where}: {mismatch}: {SCHEMES_ADVICE}", refused=True
                ) from exc
            raise type(exc)(f"{exc.message} (checked before sending)", details=exc.details) from exc
        _quit(connection)

    def _scheme_mismatch(self, error: BaseException | None) -> str | None:
        """What the server at the URL's port does not do that its scheme asks of it (TLS from
        the start, STARTTLS), from the error of connecting to it; None when that is not it."""
        security = self.server.security
        if isinstance(error, smtplib.SMTPNotSupportedError) and security == "starttls":
            return "the server offers no STARTTLS, which smtp+starttls:// asks of it"
        cert = isinstance(error, ssl.SSLCertVerificationError)
        if isinstance(error, ssl.SSLError) and not cert and security == "tls":
            return f"no TLS there ({error.reason or error}), which smtps:// asks of it"
        return None

    def close(self) -> None:
        """Say QUIT on every connection this mailer opened."""
        with self._lock:
            connections, self._connections = list(self._connections), {}
        for connection in connections:
            _quit(connection)
        self._local = threading.local()

    @property
    def _where(self) -> str:
        host = self.server.host
        return f"[{host}]:{self.server.port}" if ":" in host else f"{host}:{self.server.port}"

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        existing = getattr(self._local, "connection", None)
        if existing is not None:
            return existing, True
        connection = self._connect()
        self._local.connection = connection
        with self._lock:
            # Engines may run each batch on a new thread: close what finished threads left.
            ended = [c for c, thread in self._connections.items() if not thread.is_alive()]
            for old in ended:
                del self._connections[old]
            self._connections[connection] = threading.current_thread()
        for old in ended:
            _quit(old)
        return connection, False

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        try:
            if server.security == "tls":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    server.host,
                    server.port,
                    local_hostname=server.helo,
                    timeout=server.timeout,
                    context=self.ssl_context,
                )
            else:
                connection = smtplib.SMTP(
                    server.host, server.port, local_hostname=server.helo, timeout=server.timeout
                )
        except ssl.SSLCertVerificationError as exc:
            raise self._untrusted(exc) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ServiceUnreachable(
                f"smtp {self._where}: connect: {exc}: {UNREACHABLE_WORDS} (is it running, and is"
                " the port right?)",
                refused=True,
            ) from exc

        try:
            connection.ehlo()
            if server.security == "starttls":
                connection.starttls(context=self.ssl_context)
                connection.ehlo()
            if server.username:
                _login(connection, server.username, server.password or "")
        except BaseException as exc:
            connection.close()  # a half-open session would hold the server's slot
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                raise AccountSendingHalted(
                    f"smtp {self._where}: login refused: {exc.smtp_code} {_text(exc.smtp_error)}"
                    f" (the user {server.username!r} and the password in the URL or"
                    f" {PASSWORD_VARIABLE})"
                ) from exc
            if isinstance(exc, _NoAuthOffered):
                raise AccountSendingHalted(
                    f"smtp {self._where}: login: {NO_SMTP_AUTH}: it takes no user and password"
                ) from exc
            if isinstance(exc, smtplib.SMTPNotSupportedError):
                raise AccountSendingHalted(f"smtp {self._where}: connect: {exc}") from exc
            if isinstance(exc, smtplib.SMTPResponseException):
                where = f"smtp {self._where}: connect"
                raise _classify(exc.smtp_code, exc.smtp_error, where) from exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise self._untrusted(exc) from exc
            if isinstance(exc, smtplib.SMTPException | OSError):
                where = f"smtp {self._where}: connect: {exc}"
                raise TransientSendError(where, refused=True) from exc
            raise
        return connection

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> AccountSendingHalted:
        return AccountSendingHalted(
            f"smtp {self._where}: connect: certificate not trusted: {exc.verify_message}"
        )

    def _transaction(
        self, connection: smtplib.SMTP, mail_from: str, rcpt_to: list[str], raw: bytes
    ) -> str:
        """Run MAIL, RCPT and DATA; return the server's reply to DATA."""
        where = f"smtp {self._where}"
        stage = "MAIL FROM"
        try:
            code, reply = connection.mail(mail_from)
            if code in (421, -1):
                raise _StaleConnection()
            if code != 250:
                self._reset(connection)
                if code >= 500:  # the sender, the same in every row: no row would go
                    raise AccountSendingHalted(
                        f"{where}: MAIL FROM: the server refuses the sender for good: {code}"
                        f" {_text(reply)}",
                        details={"code": code},
                    )
                raise _classify(code, reply, f"{where}: MAIL FROM")
            stage = "RCPT TO"
            for address in rcpt_to:
                code, reply = connection.rcpt(address)
                if code not in (250, 251):
                    self._reset(connection)
                    refused_rcpt = f"{where}: recipient {mask(address)} refused"
                    raise _classify(code, reply, refused_rcpt, recipient=True)
            stage = "DATA"
            connection.putcmd("data")
            code, reply = connection.getreply()
            if code != 354 and code < 400:
                # A success here (a broken server, or a reply out of step) is not the message
                # taken: its content was never sent. The session's state is unknown: drop it.
                self._drop()
                raise TransientSendError(
                    f"{where}: DATA: the server answered {code} {_text(reply)}, not 354 (go"
                    " ahead): the message was not sent",
                    details={"code": code},
                    refused=True,
                )
            if code == 354:
                stage = "message"
                connection.send(_data_block(raw))
                # Only from here can the server have taken the message without our knowing.
                stage = _AWAITING
                code, reply = connection.getreply()
                if 200 <= code < 300:
                    # Any success is the message taken (250 is the rule): reporting another
                    # as a failure would let --retry-failed send a second, unmarked copy.
                    return _one_line(reply)
                if code < 400:
                    # Neither taken nor refused: the server may hold the message.
                    self._drop()
                    raise TransientSendError(
                        f"{where}: DATA: the server answered the message with {code}"
                        f" {_text(reply)}, neither success nor failure",
                        details={"code": code},
                    )
            # Not every server forgets the envelope after a refused DATA (aiosmtpd answers the
            # next MAIL with "503 nested MAIL command"): reset it, as after MAIL/RCPT.
            self._reset(connection)
            raise _classify(code, reply, f"{where}: DATA")
        except smtplib.SMTPServerDisconnected as exc:
            if stage == "MAIL FROM":
                raise _StaleConnection() from exc
            self._drop()
            # Until the whole message is sent the server cannot have taken it.
            raise TransientSendError(
                f"{where}: connection lost during {stage}: {exc}", refused=stage != _AWAITING
            ) from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:
                self._drop()
            else:
                self._reset(connection)  # e.g. DATA refused before the content: 554, 451
            raise _classify(exc.smtp_code, exc.smtp_error, f"{where}: {stage}") from exc
        except (SendError, _StaleConnection):
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            refused = stage != _AWAITING
            raise TransientSendError(f"{where}: {stage}: {exc}", refused=refused) from exc

    def _reset(self, connection: smtplib.SMTP) -> None:
        try:
            connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._connections.pop(connection, None)
            connection.close()


UNREADABLE_PORT = (
    "the port is not a number: a '/', '@', ':', '?' or '#' in the user or password must be "
    "URL-encoded (%2F, %40, %3A, %3F, %23), or the password left to MAILMATRIX_SMTP_PASSWORD"
)
PORT_OUT_OF_RANGE = "the port is out of range: give one from 1 to 65535"


def port_problem(parts: Any) -> str | None:
    """Why the port of the split URL ``parts`` cannot be used (None: it can, or none is given).

    Said without quoting it: what follows the ':' is often a password whose '/' or '@' was not
    URL-encoded. Port 0 is refused too: no server listens there.
    """
    try:
        port = parts.port
    except ValueError:  # out of 0-65535, or no number
        written = parts.netloc.rpartition("@")[2].rpartition(":")[2].lstrip("+-")
        return PORT_OUT_OF_RANGE if written.isascii() and written.isdigit() else UNREADABLE_PORT
    return PORT_OUT_OF_RANGE if port == 0 else None


# What EHLO may name (RFC 5321 4.1.1.1: a domain or an address literal): no space, no line
# break, which would end the command and start another.
_HELO = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f.:]{2,60}\]|\[IPv6:[0-9A-Fa-f.:]{2,60}\]")


def query_options(text: str) -> dict[str, str]:
    """The query options of an SMTP URL (its part after '?'), each with its value."""
    return {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}


def query_problem(text: str) -> str | None:
    """Why the query options of an SMTP URL (its part after '?') cannot be used (None: they
    can). An option given twice, or without a value, is refused: either was taken silently
    (the last value, or the default)."""
    given = parse_qs(text, keep_blank_values=True)
    unknown = sorted(set(given) - set(QUERY_OPTIONS))
    if unknown:
        return f"unknown options: {', '.join(unknown)} (known: {', '.join(QUERY_OPTIONS)})"
    twice = sorted(name for name, values in given.items() if len(values) > 1)
    if twice:
        return f"options given twice: {', '.join(twice)}"
    empty = sorted(name for name, values in given.items() if not values[0])
    if empty:
        return f"options without a value: {', '.join(f'{name}=' for name in empty)}"
    query = {name: values[0] for name, values in given.items()}  # each given once
    helo = query.get("helo")
    if helo is not None and not _HELO.fullmatch(helo):
        return (
            f"helo={helo!r}: expected a host name or an address literal ([192.0.2.1]):"
            " letters, digits, '.', '-', ':' and brackets"
        )
    if "timeout" in query:
        try:
            timeout = float(query["timeout"])
        except ValueError:
            timeout = math.nan
        if not 0 < timeout <= MAX_TIMEOUT:  # NaN too
            return (
                f"timeout={query['timeout']}: expected seconds, more than 0 and at most"
                f" {MAX_TIMEOUT:g}"
            )
    return None


def _trusting(cafile: str, given_as: str) -> ssl.SSLContext:
    """The TLS context that trusts the CA certificates in ``cafile`` (the URL's option, given
    as ``given_as`` says); ConfigurationError naming the file when it cannot be used."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:  # read, but not certificates in PEM
        raise ConfigurationError(
            f"{given_as}: cafile={cafile}: holds no CA certificate in PEM that TLS can read"
            f" ({exc.reason or exc}): give a PEM file of the certificates to trust"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"{given_as}: cafile={cafile}: cannot be read ({exc.strerror or exc}): give the"
            " path of a PEM file of the CA certificates to trust"
        ) from exc


def _password_from_env(parts: Any) -> str | None:
    """The password of a URL that names a user but no password, from the environment (so it
    stays out of shell history and printed commands)."""
    return os.environ.get(PASSWORD_VARIABLE) if parts.username else None


class _NoAuthOffered(smtplib.SMTPNotSupportedError):
    """The server has no AUTH in its EHLO reply: it takes no login at all."""


def _login(connection: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism only (PLAIN, else LOGIN, else CRAM-MD5).

    smtplib's login() tries the next mechanism after a refusal: a second failed login per
    connection, which servers count towards lock-outs, and a stall with some servers.
    """
    if not connection.has_extn("auth"):
        raise _NoAuthOffered(NO_SMTP_AUTH)
    offered = connection.esmtp_features["auth"].upper().split()
    connection.user, connection.password = user, password
    for mechanism, respond in (
        ("PLAIN", connection.auth_plain),
        ("LOGIN", connection.auth_login),
        ("CRAM-MD5", connection.auth_cram_md5),
    ):
        if mechanism in offered:
            connection.auth(mechanism, respond)
            return
    raise smtplib.SMTPNotSupportedError(f"no AUTH mechanism in common (offered: {offered})")


def _no_such_host(error: BaseException | None) -> bool:
    """Whether ``error`` is the name service's answer that the host name has no address (a
    mistyped name), not that it could not answer now (EAI_AGAIN: a passing fault)."""
    answers = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    return isinstance(error, socket.gaierror) and error.errno in answers


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


_AWAITING = "the reply to the message"
# A line starting with a period gets a second one (RFC 5321 4.5.2, "transparency").
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


def _data_block(raw: bytes) -> bytes:
    """The message as DATA sends it: lines starting with "." doubled, ended by CRLF "." CRLF
    (what smtplib's data() sends, written here so each stage's failure can be told apart)."""
    block = _LEADING_PERIOD.sub(b"..", raw)
    if not block.endswith(b"\r\n"):
        block += b"\r\n"
    return block + b".\r\n"


class _StaleConnection(Exception):
    """The connection was gone before the server accepted anything."""


def _classify(code: int, reply: bytes | str, where: str, *, recipient: bool = False) -> SendError:
    """Turn an SMTP reply into the Mailer port's error.

    ``recipient``: the reply to a RCPT. One whose enhanced status code is of the mailbox
    class (X.2.X, RFC 3463: "receiving mail at a rate", "over its daily quota") or about the
    recipient's address (X.1.1 to X.1.6: no such mailbox, domain not found) is about that
    recipient, not the account: it neither throttles nor halts the campaign, or one limited
    mailbox would stop every row after it, in every retry and redrive.
    """
    text = _text(reply)
    message = f"{where}: {code} {text}"
    lowered = text.lower()
    if recipient and _RECIPIENT_STATUS.match(text):
        if 400 <= code < 500:
            details = {"code": code}
            return TransientSendError(message, details=details, refused=True, recipient=True)
        return PermanentSendError(message, details={"code": code}, recipient=True)
    if code in (530, 534, 535, 538):
        return AccountSendingHalted(message, details={"code": code})
    if ("daily" in lowered and "quota" in lowered) or "sending paused" in lowered:
        return AccountSendingHalted(message, details={"code": code})
    if 400 <= code < 500:
        if any(word in lowered for word in _RATE_WORDS):
            return Throttled(message, details={"code": code}, refused=True)
        # The server answered "not now": it did not take the message.
        return TransientSendError(message, details={"code": code}, refused=True)
    if code == -1:
        return TransientSendError(message, details={"code": code})
    # "Relay access denied": the server does not pass this sender's mail on (no login, or not
    # its server): every recipient outside its own domains meets it alike.
    alike = recipient and _RELAY_DENIED.search(lowered) is not None
    return PermanentSendError(message, details={"code": code}, alike=alike)


# How servers say they do not relay the sender's mail (Postfix, Sendmail, Exim, Exchange):
# not "user unknown in relay recipient table", which is about the recipient.
_RELAY_DENIED = re.compile(
    r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|unable to relay"
    r"|not permitted to relay"
)


# An enhanced status code about the recipient at the start of a reply's text: of the mailbox
# class (4.2.1, 5.2.2) or of the addressing class about the destination (4.1.1 to 4.1.6;
# 4.1.7 and 4.1.8 are about the sender's address, which every row shares).
_RECIPIENT_STATUS = re.compile(r"[45]\.(?:2\.\d{1,3}|1\.[1-6])\b")


def _text(reply: bytes | str) -> str:
    """A server's reply as an error quotes it: on one line, the addresses in it masked (a
    refused RCPT's reply names the recipient)."""
    return mask_addresses(_one_line(reply))


def _one_line(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def _message_id(raw: bytes) -> str:
    headers = BytesHeaderParser().parsebytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    return (headers.get("Message-ID") or "").strip().strip("<>")
