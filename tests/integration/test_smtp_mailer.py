"""The SMTP mailer against a real SMTP server (aiosmtpd) that each test starts on 127.0.0.1."""

from __future__ import annotations

import collections
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailmatrix.adapters.mailer_smtp import SmtpMailer
from mailmatrix.core.message import build_message, message_bytes
from mailmatrix.core.templates import Rendered
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

HOST = "127.0.0.1"
SENDER = "Acme Talent <talent@example.com>"


class Recorder:
    """An aiosmtpd handler that keeps every envelope and can refuse on purpose."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.peers: set[tuple[str, int]] = set()
        self.rcpt_reply: dict[str, str] = {}
        self.data_reply: str | None = None
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.peers.add(session.peer)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextmanager
def smtp_server(handler: Recorder, **kwargs) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this test run."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailmatrix test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer",
        b"s3cret:/@",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server replies 535


def message(to: str = "amy@example.com", cc: tuple[str, ...] = ()) -> bytes:
    rendered = Rendered(subject="Your offer", html="<p>Hi Amy</p>", text="Hi Amy\n")
    msg = build_message(
        sender=SENDER,
        to_name="Amy",
        to_email=to,
        rendered=rendered,
        cc=list(cc),
        attachment=("letter.pdf", b"%PDF-1.4\n"),
    )
    return message_bytes(msg)


def test_plain_smtp_delivers_the_exact_bytes_to_every_envelope_recipient():
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        raw = message(cc=("kim@example.com",))
        message_id = mailer.send(
            raw, sender=SENDER, destinations=["amy@example.com", "kim@example.com", "b@example.com"]
        )
        mailer.close()

    assert handler.envelopes == [
        ("talent@example.com", ["amy@example.com", "kim@example.com", "b@example.com"], raw)
    ]
    assert f"Message-ID: <{message_id}>".encode() in raw


def test_starttls_with_auth(certificate):
    handler = Recorder()
    with smtp_server(
        handler,
        tls_context=server_tls(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    ) as port:
        url = (
            f"smtp+starttls://mailer:s3cret%3A%2F%40@{HOST}:{port}"
            f"?cafile={certificate[0]}&timeout=10"
        )
        mailer = SmtpMailer.from_url(url)
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()
    assert [e[1] for e in handler.envelopes] == [["amy@example.com"]]


# aiosmtpd only knows STARTTLS as "TLS": on an implicit-TLS listener it must be told that AUTH
# without STARTTLS is fine (the whole connection is already encrypted), and it warns about it.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_auth(certificate):
    handler = Recorder()
    with smtp_server(
        handler,
        ssl_context=server_tls(certificate),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    ) as port:
        mailer = SmtpMailer.from_url(
            f"smtps://mailer:s3cret%3A%2F%40@{HOST}:{port}?cafile={certificate[0]}"
        )
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()
    assert len(handler.envelopes) == 1


def test_wrong_password_halts_the_campaign(certificate):
    handler = Recorder()
    with smtp_server(
        handler,
        tls_context=server_tls(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    ) as port:
        mailer = SmtpMailer.from_url(
            f"smtp+starttls://mailer:wrong@{HOST}:{port}?cafile={certificate[0]}"
        )
        with pytest.raises(AccountSendingHalted) as caught:
            mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
    assert caught.value.message.startswith(f"smtp {HOST}:{port}: login refused: 535")
    assert "(the user 'mailer' and the password in the URL or MAILMATRIX_SMTP_PASSWORD)" in (
        caught.value.message
    )
    assert "wrong" not in caught.value.message
    assert handler.envelopes == []


def test_untrusted_certificate_halts_the_campaign(certificate):
    with smtp_server(Recorder(), ssl_context=server_tls(certificate)) as port:
        mailer = SmtpMailer.from_url(f"smtps://{HOST}:{port}")  # system trust store only
        with pytest.raises(AccountSendingHalted, match="certificate not trusted"):
            mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])


def test_refused_recipient_is_permanent_and_nobody_gets_the_message():
    handler = Recorder()
    handler.rcpt_reply["kim@example.com"] = "550 5.1.1 <kim@example.com>: user unknown"
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        with pytest.raises(PermanentSendError) as caught:
            mailer.send(
                message(), sender=SENDER, destinations=["amy@example.com", "kim@example.com"]
            )
        # the connection stays usable after RSET
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()

    assert caught.value.message == (
        f"smtp {HOST}:{port}: recipient k***@example.com refused: "
        "550 5.1.1 <k***@example.com>: user unknown"
    )
    assert caught.value.details == {"code": 550}
    assert [e[1] for e in handler.envelopes] == [["amy@example.com"]]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 Temporary local problem", TransientSendError),
        ("452 4.3.1 Insufficient system storage", TransientSendError),
        ("450 4.2.0 Mailbox busy", TransientSendError),
        ("454 Throttling failure: Maximum sending rate exceeded.", Throttled),
        ("454 Throttling failure: Daily message quota exceeded.", AccountSendingHalted),
        ("554 5.7.1 Message rejected: content", PermanentSendError),
        ("552 5.3.4 Message size exceeds fixed limit", PermanentSendError),
    ],
    ids=["451", "452", "450", "454-rate", "454-daily-quota", "554", "552"],
)
def test_replies_to_data_map_to_the_port_errors(reply, error):
    handler = Recorder()
    handler.data_reply = reply
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        with pytest.raises(error) as caught:
            mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()
    assert type(caught.value) is error
    assert caught.value.message == f"smtp {HOST}:{port}: DATA: {reply}"
    # A 4xx answer says the server did not take the message: no copy can have gone out
    assert caught.value.refused == (error in (TransientSendError, Throttled))


def test_connection_refused_while_sending_is_transient():
    port = free_port()  # nothing listens there: a server restarting, after the check passed
    mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}?timeout=5")
    with pytest.raises(TransientSendError, match=rf"^smtp {HOST}:{port}: connect: ") as caught:
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
    assert caught.value.refused  # nothing was handed over: no copy can have gone out
    # AND it says so in the words of the check before sending, not as a bare errno
    assert caught.value.message.endswith(
        ": the mail server could not be reached (is it running, and is the port right?)"
    )
    # and the server as a whole is out of reach: a batch stops instead of trying each row
    assert isinstance(caught.value, ServiceUnreachable)


NOT_LISTENING = (
    "smtp: cannot connect to {} (connection refused): is the mail server running, and is the"
    " port right?"
)


@pytest.mark.parametrize(
    ("scheme", "missing"),
    [
        ("smtp+starttls", "the server offers no STARTTLS, which smtp+starttls:// asks of it"),
        ("smtps", "no TLS there (WRONG_VERSION_NUMBER), which smtps:// asks of it"),
    ],
    ids=["starttls", "smtps"],
)
def test_a_scheme_the_server_does_not_speak_is_a_setup_problem(scheme, missing):
    # GIVEN a server that speaks SMTP without TLS (no STARTTLS offered), and a URL whose
    # scheme asks for TLS of it
    with smtp_server(Recorder()) as port:
        mailer = SmtpMailer.from_url(f"{scheme}://{HOST}:{port}?timeout=5")

        # WHEN the server is checked before sending
        with pytest.raises(CannotConnect) as caught:
            mailer.check()

    # THEN it says what the server does not do and which scheme goes with which port: it was
    # an account halt (STARTTLS) and a passing fault "to redrive now" (smtps)
    assert caught.value.message.startswith(f"smtp: {HOST}:{port}: {missing}: smtps:// is TLS")
    assert "give the scheme the port speaks" in caught.value.message


@pytest.mark.parametrize("scheme", ["smtp", "smtp+starttls", "smtps"])
def test_a_check_refused_a_connection_says_it_as_a_setup_problem(scheme):
    # GIVEN a URL, with a password, of a port nothing listens on
    port = free_port()
    mailer = SmtpMailer.from_url(f"{scheme}://mailer:s3cret@{HOST}:{port}?timeout=5")

    # WHEN the server is checked before sending THEN it is told as a setup problem, naming
    # where it connected (and not the password), not as a passing fault to redrive at once
    with pytest.raises(CannotConnect) as caught:
        mailer.check()
    assert caught.value.message == NOT_LISTENING.format(f"{HOST}:{port}")
    assert not isinstance(caught.value, TransientSendError)


@pytest.mark.parametrize(
    ("url", "asked", "shown"),
    [
        ("smtp://127.0.0.1", ("127.0.0.1", 25), "127.0.0.1:25"),
        ("smtp+starttls://localhost", ("localhost", 587), "localhost:587"),
        ("smtps://[::1]", ("::1", 465), "[::1]:465"),
    ],
    ids=["smtp", "starttls", "smtps-ipv6"],
)
def test_a_refused_check_names_the_default_port_of_a_url_that_gives_none(
    monkeypatch, url, asked, shown
):
    # GIVEN no server at the scheme's default port (the socket refuses without the network)
    tried = []

    def refuse(address, *args, **kwargs):
        tried.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)

    # WHEN the server is checked THEN the message names the port that was tried
    with pytest.raises(CannotConnect) as caught:
        SmtpMailer.from_url(url).check()
    assert tried == [asked]
    assert caught.value.message == NOT_LISTENING.format(shown)


@pytest.mark.parametrize(
    ("errno", "passing"),
    [(socket.EAI_NONAME, False), (socket.EAI_AGAIN, True)],
    ids=["no-such-host", "name-service-busy"],
)
def test_a_host_name_without_an_address_is_a_setup_problem_a_busy_name_service_is_not(
    monkeypatch, errno, passing
):
    # GIVEN a name service (stood in for: no lookup leaves this machine) that answers the
    # server's name with no address, or cannot answer now
    def look_up(host, *args, **kwargs):
        raise socket.gaierror(errno, "lookup failed")

    monkeypatch.setattr(socket, "getaddrinfo", look_up)
    mailer = SmtpMailer.from_url("smtp://mail.exmaple.invalid:2525")

    # WHEN the server is checked before sending
    with pytest.raises(SendError) as caught:
        mailer.check()

    # THEN a name without an address is told as the setup problem it is (a mistyped name),
    # not as a passing fault to redrive at once; a busy name service stays one
    if passing:
        assert type(caught.value) is ServiceUnreachable
    else:
        assert type(caught.value) is CannotConnect
        assert caught.value.message == (
            "smtp: cannot connect to mail.exmaple.invalid:2525: no such host ([Errno"
            f" {errno}] lookup failed): is the server's name right?"
        )


def test_a_check_that_times_out_stays_a_passing_fault():
    # GIVEN a server that takes the connection but never greets
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}?timeout=1")

        # WHEN it is checked THEN it is the passing fault it was (a redrive may get past it)
        with pytest.raises(ServiceUnreachable) as caught:
            mailer.check()
    assert type(caught.value) is ServiceUnreachable
    assert caught.value.message.startswith(f"smtp {HOST}:{port}: connect: ")
    assert caught.value.message.endswith("(checked before sending)")


@pytest.mark.parametrize(
    ("at", "reply", "error", "said"),
    [
        (
            "RCPT",
            "450 4.1.1 <victor.hugo@example.com>: Recipient address rejected: unverified address",
            TransientSendError,
            "recipient v***@example.com refused: 450 4.1.1 <v***@example.com>: Recipient address"
            " rejected: unverified address",
        ),
        (
            "RCPT",
            "550 5.1.1 <victor.hugo@example.com>: Recipient address rejected: User unknown",
            PermanentSendError,
            "recipient v***@example.com refused: 550 5.1.1 <v***@example.com>: Recipient address"
            " rejected: User unknown",
        ),
        (
            "DATA",
            "554 5.7.1 <victor.hugo@example.com>: Recipient address rejected: Access denied",
            PermanentSendError,
            "DATA: 554 5.7.1 <v***@example.com>: Recipient address rejected: Access denied",
        ),
    ],
    ids=["rcpt-4xx", "rcpt-5xx", "data"],
)
def test_a_reply_that_quotes_the_recipient_is_quoted_with_the_address_masked(
    at, reply, error, said
):
    # GIVEN a server whose refusal names the recipient in full
    handler = Recorder()
    if at == "RCPT":
        handler.rcpt_reply["victor.hugo@example.com"] = reply
    else:
        handler.data_reply = reply
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")

        # WHEN a message to that recipient is refused
        with pytest.raises(error) as caught:
            mailer.send(
                message("victor.hugo@example.com"),
                sender=SENDER,
                destinations=["victor.hugo@example.com"],
            )
        mailer.close()

    # THEN the error quotes the reply with the address masked as the recipient's own is
    assert caught.value.message == f"smtp {HOST}:{port}: {said}"


def test_reconnects_after_the_server_dropped_an_idle_connection():
    handler = Recorder()
    # aiosmtpd closes a connection idle for longer than its timeout (server side)
    with smtp_server(handler, timeout=0.3) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        time.sleep(0.8)
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()
    assert len(handler.envelopes) == 2
    assert len(handler.peers) == 2  # a second connection was opened


def test_one_connection_per_thread():
    handler = Recorder()
    threads, per_thread = 4, 5
    errors: list[Exception] = []
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        barrier = threading.Barrier(threads)

        def work(index: int) -> None:
            barrier.wait()
            try:
                for n in range(per_thread):
                    to = f"t{index}-{n}@example.com"
                    mailer.send(message(to=to), sender=SENDER, destinations=[to])
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        mailer.close()

    assert errors == []
    assert sorted(e[1][0] for e in handler.envelopes) == sorted(
        f"t{i}-{n}@example.com" for i in range(threads) for n in range(per_thread)
    )
    assert len(handler.peers) == threads


@pytest.mark.parametrize(
    ("url", "message_text"),
    [
        ("http://example.com", "expected smtp://, smtp+starttls:// or smtps://HOST[:PORT]"),
        ("smtp://", "expected smtp://"),
        ("smtp://127.0.0.1:2525?tls=yes", "unknown options: tls"),
        ("smtp://127.0.0.1:2525?timeout=soon", "timeout=soon: expected seconds, more than 0"),
        ("smtp://127.0.0.1:2525?timeout=0", "timeout=0: expected seconds, more than 0"),
        ("smtp://127.0.0.1:2525?helo=a b", "helo='a b': expected a host name"),
        ("smtp://127.0.0.1:2525?timeout=inf", "more than 0 and at most 600"),
        ("smtps://127.0.0.1?cafile=missing.pem", "cafile"),
        ("smtp://127.0.0.1:99999", "the port is out of range: give one from 1 to 65535"),
        ("smtp://127.0.0.1:0", "the port is out of range"),  # not the default port in its place
        ("smtp://u:p/w@127.0.0.1", "the port is not a number"),
    ],
)
def test_bad_urls_are_configuration_errors(url, message_text):
    with pytest.raises(ConfigurationError, match=r"^MAILMATRIX_MAILER: ") as caught:
        SmtpMailer.from_url(url)
    assert message_text in caught.value.message

    # AND a URL given as an option is named by the option, not by the setting
    with pytest.raises(ConfigurationError, match=r"^--smtp: ") as caught:
        SmtpMailer.from_url(url, given_as="--smtp")
    assert message_text in caught.value.message
    assert "MAILMATRIX_MAILER" not in caught.value.message


def test_a_cafile_that_cannot_be_used_is_named_with_what_is_wrong(tmp_path):
    # GIVEN a cafile that does not exist, and one that holds no certificate
    missing = tmp_path / "missing.pem"
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")

    # WHEN each is given THEN the error names the file and what is wrong with it in words
    with pytest.raises(ConfigurationError) as caught:
        SmtpMailer.from_url(f"smtps://127.0.0.1?cafile={missing}", given_as="--smtp")
    assert caught.value.message == (
        f"--smtp: cafile={missing}: cannot be read (No such file or directory): give the path"
        " of a PEM file of the CA certificates to trust"
    )
    with pytest.raises(ConfigurationError) as caught:
        SmtpMailer.from_url(f"smtps://127.0.0.1?cafile={empty}")
    assert caught.value.message.startswith(
        f"MAILMATRIX_MAILER: cafile={empty}: holds no CA certificate in PEM that TLS can read ("
    )


def test_url_defaults():
    mailer = SmtpMailer.from_url("smtp+starttls://u%40x:p%25w@relay.example.com")
    assert (mailer.server.port, mailer.server.security) == (587, "starttls")
    assert (mailer.server.username, mailer.server.password) == ("u@x", "p%w")
    assert SmtpMailer.from_url("smtps://relay.example.com").server.port == 465
    assert SmtpMailer.from_url("smtp://relay.example.com").server.port == 25


def test_a_user_without_a_password_in_the_url_takes_it_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAILMATRIX_SMTP_PASSWORD", "s3cret:@")

    assert SmtpMailer.from_url("smtp+starttls://hr@relay.example.com").server.password == (
        "s3cret:@"
    )
    assert SmtpMailer.from_url("smtp+starttls://hr:given@relay.example.com").server.password == (
        "given"
    )
    assert SmtpMailer.from_url("smtp://relay.example.com").server.password is None


def test_a_user_without_a_password_anywhere_is_refused_naming_the_variable(monkeypatch):
    # GIVEN a URL naming a user, no password in it, and MAILMATRIX_SMTP_PASSWORD not set
    monkeypatch.delenv("MAILMATRIX_SMTP_PASSWORD", raising=False)

    # WHEN the mailer is made THEN it is refused, saying what to set (an empty password was
    # sent, and refused as wrong with no word of the variable)
    with pytest.raises(ConfigurationError) as refused:
        SmtpMailer.from_url("smtp+starttls://hr@relay.example.com")
    assert "names the user 'hr' but no password" in refused.value.message
    assert "MAILMATRIX_SMTP_PASSWORD is not set" in refused.value.message
    # AND one set empty on purpose is taken as the password
    monkeypatch.setenv("MAILMATRIX_SMTP_PASSWORD", "")
    assert SmtpMailer.from_url("smtp+starttls://hr@relay.example.com").server.password == ""


def test_connections_of_finished_threads_are_closed():
    handler = Recorder()
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        for _ in range(3):  # as an engine that runs every batch on a new thread
            worker = threading.Thread(
                target=mailer.send,
                args=(message(),),
                kwargs={"sender": SENDER, "destinations": ["amy@example.com"]},
            )
            worker.start()
            worker.join(timeout=30)
        assert len(mailer._connections) == 1  # the last thread's; earlier ones said QUIT
        mailer.close()
        assert mailer._connections == {}
    assert len(handler.envelopes) == 3


# ---------------------------------------------------------------- a whole local run over SMTP

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "offer-letters"


def test_a_local_campaign_over_smtp_checks_the_server_then_sends_each_letter_once(tmp_path):
    from mailmatrix.local import run_campaign

    handler = Recorder()
    with smtp_server(handler) as port:
        record = run_campaign(
            EXAMPLE / "recipients.csv", workdir=tmp_path / "work", mailer=f"smtp://{HOST}:{port}"
        )
    assert record["status"] == "SUCCEEDED"
    # 18 letters (2 rows of the example are rejected); the check sent no envelope
    assert len(handler.envelopes) == 18
    assert len({tuple(rcpts) for _, rcpts, _ in handler.envelopes}) == 18


class TakesThenHangsUp(Recorder):
    """Keeps each message, then drops the connection instead of answering the DATA."""

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        server.transport.close()
        return "250 never heard"


class BusyAtMail(Recorder):
    """Answers every MAIL FROM with 421, as a server does before closing the connection."""

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        return "421 4.7.0 try again later"


def test_a_server_that_refuses_before_data_is_a_refusal_not_an_unknown_outcome():
    with smtp_server(BusyAtMail()) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        with pytest.raises(TransientSendError) as caught:
            mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        mailer.close()

    assert caught.value.refused  # nothing was handed over: retried as often as needed


def test_a_server_that_takes_messages_without_answering_stops_the_campaign_at_two_rows(tmp_path):
    from mailmatrix.local import Workdir, progress_of, run_campaign

    # GIVEN a server that keeps every message but never answers the DATA
    handler = TakesThenHangsUp()
    with smtp_server(handler) as port:
        # WHEN the example campaign (18 valid rows, one batch) runs through it
        record = run_campaign(
            EXAMPLE / "recipients.csv",
            workdir=tmp_path / "work",
            mailer=f"smtp://{HOST}:{port}?timeout=5",
        )

    # THEN the first row was tried twice (one lost reply may be a passing fault), the second
    # once, and the campaign halted there: three copies for two rows, not two for every row
    copies = collections.Counter(tuple(rcpts) for _, rcpts, _ in handler.envelopes)
    assert sorted(copies.values()) == [1, 2]
    assert record["status"] == "FAILED"
    (why,) = record["failure_details"]
    assert why.startswith(
        "AccountSendingHalted (1 batch): send_batch: row 3: the mail service confirmed no try"
        " of 2 rows in a row: it may take messages without confirming them (rows 2 and 3"
        " failed as OutcomeUnknown: they may have arrived;"
    )
    assert record["redrive_advice"].startswith(
        "the mail server took messages without confirming them"
    )
    # AND both rows are failed in doubt, for a person to check; the others were not tried
    counts = progress_of(Workdir(tmp_path / "work"), record["name"])
    assert counts is not None
    assert (counts["failed"], counts["unknown"], counts["unsent"]) == (2, 2, 16)


def test_a_server_not_listening_stops_the_campaign_at_validation_as_a_setup_problem(tmp_path):
    from mailmatrix.local import run_campaign

    port = free_port()  # nothing listens there
    record = run_campaign(
        EXAMPLE / "recipients.csv",
        workdir=tmp_path / "work",
        mailer=f"smtp://{HOST}:{port}?timeout=5",
    )
    assert record["status"] == "FAILED"
    assert record["error"] == "CannotConnect"
    assert json.loads(record["cause"])["errorMessage"] == NOT_LISTENING.format(f"{HOST}:{port}")
    assert "redrive now" not in record["redrive_advice"]
    assert record["redrive_advice"].startswith("once the URL names a mail server that answers")
    # stopped at validation: no batch ran (each retried for ~85 s before)
    history = (tmp_path / "work" / "executions" / record["name"] / "history.jsonl").read_text()
    assert "MapRunStarted" not in history
    assert not (tmp_path / "work" / "ledger.sqlite3").exists() or not _ledger_rows(
        tmp_path / "work" / "ledger.sqlite3"
    )
    # AND show gives the cause's message, not the function's JSON error document, and no
    # way out of the state that failed
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    shown = (
        CliRunner()
        .invoke(
            cli,
            ["show", record["name"], "--workdir", str(tmp_path / "work")],
            env={"COLUMNS": "300"},
        )
        .output
    )
    assert f"CannotConnect: smtp: cannot connect to {HOST}:{port} (connection refused)" in shown
    assert "stackTrace" not in shown and "errorMessage" not in shown
    (validate,) = [line for line in shown.splitlines() if "ValidateRecipients" in line]
    assert "FAILED" in validate and "→" not in validate


def _ledger_rows(path: Path) -> list:
    import sqlite3

    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT key FROM sends").fetchall()


def test_a_refused_data_does_not_spoil_the_next_message_on_the_same_connection():
    # GIVEN a server whose handler fails on the first message (aiosmtpd then answers 500 and
    # keeps the envelope: without a reset the next MAIL gets "503 nested MAIL command")
    class FailsFirst(Recorder):
        failed = False

        async def handle_DATA(self, server, session, envelope):
            if not self.failed:
                self.failed = True
                raise OSError("mail folder missing")
            return await super().handle_DATA(server, session, envelope)

    handler = FailsFirst()
    with smtp_server(handler) as port:
        mailer = SmtpMailer.from_url(f"smtp://{HOST}:{port}")
        with pytest.raises(SendError, match="DATA"):
            mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
        # WHEN the next recipient's message goes over the same connection THEN it is accepted
        mailer.send(message(), sender=SENDER, destinations=["bob@example.com"])
        mailer.close()
    assert [rcpts for _, rcpts, _ in handler.envelopes] == [["bob@example.com"]]
    assert len(handler.peers) == 1


# ------------------------------------------------ a server that answers out of the protocol


class ScriptedServer:
    """A bare SMTP server on 127.0.0.1 whose replies to DATA and to the message are given,
    answering out of the protocol where aiosmtpd cannot be made to (one connection at a time).
    It keeps each message whose content it received."""

    def __init__(self, data_reply: str, end_reply: str) -> None:
        self.data_reply, self.end_reply = data_reply, end_reply
        self.messages: list[bytes] = []
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.listener.accept()
            except OSError:  # closed by stop()
                return
            with peer, peer.makefile("rb") as lines:
                self._session(peer, lines)

    def _session(self, peer: socket.socket, lines) -> None:
        peer.sendall(b"220 scripted ESMTP\r\n")
        for line in lines:
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                peer.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                peer.sendall(self.data_reply.encode() + b"\r\n")
                if self.data_reply.startswith("354"):
                    content = b"".join(iter(lines.readline, b".\r\n"))
                    self.messages.append(content)
                    peer.sendall(self.end_reply.encode() + b"\r\n")
            elif verb == b"QUIT":
                peer.sendall(b"221 bye\r\n")
                return
            else:
                peer.sendall(b"502 unknown\r\n")

    def stop(self) -> None:
        self.listener.close()


@contextmanager
def scripted_server(data_reply: str = "354 go on", end_reply: str = "250 ok") -> Iterator:
    server = ScriptedServer(data_reply, end_reply)
    try:
        yield server
    finally:
        server.stop()


def send_through(server: ScriptedServer) -> str:
    """Send one message through ``server`` with a mailer of its own; return its Message-ID."""
    mailer = SmtpMailer.from_url(f"smtp://{HOST}:{server.port}?timeout=5")
    try:
        return mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
    finally:
        mailer.close()


def test_a_server_that_says_250_to_data_itself_has_not_taken_the_message():
    # GIVEN a server that answers the DATA command with 250 instead of 354 (a broken server,
    # or a reply out of step): the message's content is never sent to it
    # WHEN a message is sent THEN it is not reported sent: nothing was handed over
    with (
        scripted_server(data_reply="250 2.0.0 ok") as server,
        pytest.raises(TransientSendError) as caught,
    ):
        send_through(server)

    assert server.messages == []
    assert caught.value.refused  # so retrying it cannot make a second copy
    assert caught.value.message == (
        f"smtp {HOST}:{server.port}: DATA: the server answered 250 2.0.0 ok, not 354 (go"
        " ahead): the message was not sent"
    )


@pytest.mark.parametrize("end_reply", ["251 2.1.5 will forward", "252 2.0.0 accepted"])
def test_any_2xx_reply_to_the_message_means_the_server_took_it(end_reply):
    # GIVEN a server that accepts the message with another success code than 250
    with scripted_server(end_reply=end_reply) as server:
        # WHEN a message is sent THEN it counts as sent: a failure would be retried by
        # --retry-failed, and the recipient would get a second copy, unmarked
        message_id = send_through(server)

    assert len(server.messages) == 1
    assert f"Message-ID: <{message_id}>".encode() in server.messages[0]


def test_a_reply_to_the_message_that_is_neither_success_nor_failure_is_an_unknown_outcome():
    # GIVEN a server that answers the message's content with a 3xx reply: whether it took the
    # message cannot be told
    with (
        scripted_server(end_reply="354 more please") as server,
        pytest.raises(TransientSendError) as caught,
    ):
        send_through(server)

    # THEN it is neither sent nor refused for good: in doubt, tried at most twice in all
    assert len(server.messages) == 1
    assert not caught.value.refused


# ------------------------------------------- one recipient's mailbox limits, not the account's

MAILBOX_RATE = (
    "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents"
    " additional messages from being delivered"
)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (MAILBOX_RATE, TransientSendError),
        ("552 5.2.2 Mailbox over its daily quota", PermanentSendError),
        ("450 4.1.2 <amy@example.com>: domain not found, try again later", TransientSendError),
    ],
    ids=["4.2.1-rate", "5.2.2-daily-quota", "4.1.2-domain"],
)
def test_a_recipient_s_own_mailbox_limit_neither_throttles_nor_halts_the_campaign(reply, error):
    refusal = _rcpt_refused_with(reply)

    assert type(refusal) is error  # not Throttled, not AccountSendingHalted
    assert refusal.refused == (error is TransientSendError)
    assert refusal.recipient  # a run of such rows does not halt the campaign either


@pytest.mark.parametrize(
    "reply",
    [
        "451 4.7.1 Greylisted, please try again later",
        "450 4.1.8 <talent@example.com>: sender address rejected: domain not found",
    ],
    ids=["greylisted", "4.1.8-sender"],
)
def test_a_refusal_of_all_mail_for_now_is_neither_a_throttle_nor_about_the_recipient(reply):
    refusal = _rcpt_refused_with(reply)

    # "try again later" is "not now", not "slower": a run of such rows halts the campaign
    assert type(refusal) is TransientSendError
    assert refusal.refused and not refusal.recipient


def _rcpt_refused_with(reply: str) -> SendError:
    """The error of a send whose one recipient the server refuses with ``reply``."""
    handler = Recorder()
    handler.rcpt_reply["amy@example.com"] = reply
    with (
        smtp_server(handler) as port,
        closing(SmtpMailer.from_url(f"smtp://{HOST}:{port}")) as mailer,
        pytest.raises(SendError) as caught,
    ):
        mailer.send(message(), sender=SENDER, destinations=["amy@example.com"])
    return caught.value


def test_a_rate_limited_mailbox_holds_back_its_own_row_only(tmp_path):
    from mailmatrix.adapters.ledger_sqlite import SqliteLedger
    from mailmatrix.core.send import RetryPolicy, send_batch
    from tests.fixtures.sending import kit

    # GIVEN a server that refuses the first row's recipient for receiving mail too fast
    handler = Recorder()
    handler.rcpt_reply["person2@example.com"] = MAILBOX_RATE
    rows = [
        kit.item("c-1", row, f"person{row}@example.com", f"Person {row}", f"p{row}.pdf")
        for row in (2, 3, 4)
    ]
    with (
        smtp_server(handler) as port,
        closing(SqliteLedger(str(tmp_path / "ledger.db"))) as ledger,
        closing(SmtpMailer.from_url(f"smtp://{HOST}:{port}")) as mailer,
        pytest.raises(TransientSendError) as stopped,
    ):
        # WHEN a batch of three rows is sent through it
        send_batch(
            rows,
            kit.campaign("c-1"),
            catalog=kit.catalog(),
            fetch_attachment=kit.fetcher(),
            mailer=mailer,
            ledger=ledger,
            attempt="child-1",
            sleep=lambda seconds: None,
            policy=RetryPolicy(tries=2),
        )

    # THEN the other recipients got their letters; only that row waits for a retry
    assert stopped.value.details["deferred"] == [2]
    assert [rcpts for _, rcpts, _ in handler.envelopes] == [
        ["person3@example.com"],
        ["person4@example.com"],
    ]


class RefusesTheSender(Recorder):
    """Refuses the envelope sender for good, as a server that does not let it send does."""

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        return "553 5.7.1 <talent@example.com>: Sender address rejected: not owned by user"


def test_a_sender_refused_for_good_halts_the_campaign_instead_of_failing_every_row(tmp_path):
    import json

    from click.testing import CliRunner

    from mailmatrix.adapters.ledger_sqlite import SqliteLedger
    from mailmatrix.cli.main import cli
    from mailmatrix.local import campaign_of_file

    # GIVEN a server that refuses the campaign's sender at MAIL FROM
    handler = RefusesTheSender()
    csv_file = EXAMPLE / "recipients.csv"
    with smtp_server(handler) as port:
        # WHEN the example campaign runs through it
        args = ["run", str(csv_file), "--workdir", str(tmp_path / "work")]
        done = CliRunner().invoke(cli, [*args, "--smtp", f"smtp://{HOST}:{port}", "--json"])

    # THEN the campaign halts at its first row, naming the refusal, and no row is failed for
    # good: every row would fail the same way, and the run after the fix must send them all
    result = json.loads(done.stdout)
    assert done.exit_code == 1, done.output
    assert (result["counts"]["sent"], result["counts"]["failed"]) == (0, 0)
    assert "the server refuses the sender for good: 553 5.7.1" in json.dumps(result)
    assert result["redrive_advice"].startswith(
        "the mail server would not take mail from this run (see above: its login, or the sender)"
    )
    ledger = SqliteLedger(str(tmp_path / "work" / "ledger.sqlite3"))
    try:
        outcomes = ledger.outcomes(campaign_of_file(csv_file))
    finally:
        ledger.close()
    assert [o.state for o in outcomes] == ["released"]
    assert handler.envelopes == []


class RelayDenied(Recorder):
    """Refuses every recipient for good, as a server that does not relay the sender's mail,
    until ``relaying``."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[str] = []
        self.relaying = False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.relaying:
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)
        self.tried.append(address)
        return f"554 5.7.1 <{address}>: Relay access denied"


def test_rows_a_relay_refuses_are_sent_by_the_run_after_the_fix(tmp_path):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN a server that relays nothing for this sender (no login): every RCPT refused
    handler = RelayDenied()
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path / "work")]
    with smtp_server(handler) as port:
        url = f"smtp://{HOST}:{port}"
        # WHEN the demo campaign (18 valid rows) runs through it
        done = CliRunner().invoke(cli, [*args, "--smtp", url, "--json"])

        # THEN every row fails, each tried once, none for good
        result = json.loads(done.stdout)
        assert done.exit_code == 5, done.output
        assert (len(handler.tried), result["counts"]["failed"]) == (18, 18)

        # AND once the server relays, a plain run of the file sends them all, once
        handler.relaying = True
        again = CliRunner().invoke(cli, [*args, "--smtp", url, "--json"])
    assert again.exit_code == 0, again.output
    assert len({tuple(rcpts) for _, rcpts, _ in handler.envelopes}) == 18
    assert len(handler.envelopes) == 18


def test_a_recipient_unknown_in_the_relay_table_fails_for_good():
    refusal = _rcpt_refused_with(
        "550 Recipient address rejected: User unknown in relay recipient table"
    )

    # a "relay" in the words, but about the recipient: not the sender's mail refused alike
    assert type(refusal) is PermanentSendError
    assert not refusal.alike
