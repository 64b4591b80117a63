"""Run the real state machine on this machine: the local engine, local adapters, real handlers.

A workdir holds everything one local installation keeps:

    WORKDIR/bucket/            the local bucket (incoming/, validated/, results/, reports/)
    WORKDIR/outbox/            the Maildir outbox (default mailer)
    WORKDIR/ledger.sqlite3     the send ledger
    WORKDIR/executions/        the engine's executions, histories and Map Runs
    WORKDIR/notifications.jsonl what SNS would have received
    WORKDIR/settings.json      the handlers' MAILMATRIX_* settings for this workdir

Attachments and templates are read in place through read-only mounts of the local bucket.
Lambda functions and the definition's substitutions come from the SAM template, so the local
run wires exactly the functions AWS would run.
"""

from __future__ import annotations

import array
import contextlib
import email.utils
import functools
import glob
import importlib
import ipaddress
import itertools
import json
import logging
import os
import re
import shlex
import socket
import sqlite3
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

try:
    import fcntl
except ImportError:  # not POSIX: runs of one workdir at once are not kept apart
    fcntl = None  # type: ignore[assignment]

from mailmatrix.adapters import deliveries, ledger_waits
from mailmatrix.adapters.executions_sfn import ending
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere
from mailmatrix.adapters.mailer_maildir import NAME_GLOB
from mailmatrix.adapters.notifier_local import LocalNotifier
from mailmatrix.adapters.smtp_urls import (
    DEFAULT_PORTS,
    PASSWORD_VARIABLE,
    delivery_of,
    redacted,
    without_password,
)
from mailmatrix.adapters.storage_local import LocalStorage, check_upload_name, open_recipients
from mailmatrix.adapters.wiring import ledger_from
from mailmatrix.core.addresses import RESERVED_SAID, first_real, is_reserved_domain, mask
from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.contents import Contents
from mailmatrix.core.earlier import (
    EarlierFiles,
    EarlierRecipients,
    EarlierSets,
    SentFiles,
    SetLedger,
)
from mailmatrix.core.failures import (
    DRILL_QUOTA_CODE,
    RECORDS_NOT_WRITTEN,
    STOPPED_BY_OPERATOR,
    Stopped,
    failure_alert,
    redrive_advice,
    why_lines,
)
from mailmatrix.core.recipients import copy_column_warnings, read_columns, recipient_addresses
from mailmatrix.core.report import progress_counts
from mailmatrix.core.send import (
    RetryPolicy,
    idempotency_key,
    letter_set,
    placeholder_constant,
    placeholder_sender,
    recipient_key,
    template_sets_changed,
)
from mailmatrix.core.templates import DEMO_KEY, MANIFEST, marks_demo
from mailmatrix.disk import write_fault
from mailmatrix.engine.errors import cause_message
from mailmatrix.errors import (
    BadWorkdir,
    ConfigurationError,
    DeliveriesDamaged,
    DeliveryChanged,
    DemoTemplates,
    KnownWorkdirsDamaged,
    LedgerLost,
    MailMatrixError,
    NoEarlierRun,
    NotFoundError,
    RecordNotWritable,
    StateFolderUnsafe,
    WorkdirNotWritable,
)
from mailmatrix.jobs import (
    SettledKeys,
    ShortKeys,
    Source,
    campaign_id_for,
    campaign_name,
    choice_metadata,
    load_templates,
    name_like_another,
    placeholder_constant_refusal,
    placeholder_sender_refusal,
    retry_metadata,
)
from mailmatrix.ports import SENT, CampaignName, FileOwner, Halt, Notification, SentCopy, name_fold
from mailmatrix.private import private_files
from mailmatrix.program import program
from mailmatrix.settings import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFINITION = REPO / "statemachine" / "mailmatrix.asl.json"
SAM_TEMPLATE = REPO / "infra" / "template.yaml"
DEFAULT_TEMPLATES = REPO / "templates"
LOCAL_BUCKET = "mailmatrix-local"
LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"
LAMBDA_LOGGER = "mailmatrix"  # the powertools Logger(service="mailmatrix") of the handlers
SEND_FUNCTION = "SendBatchFunction"  # the SAM function that runs in worker processes


@dataclass(frozen=True)
class Workdir:
    """The paths of one local installation."""

    root: Path

    @property
    def bucket(self) -> Path:
        """The local bucket's root folder."""
        return self.root / "bucket"

    @property
    def outbox(self) -> Path:
        """The Maildir outbox."""
        return self.root / "outbox"

    @property
    def ledger(self) -> Path:
        """The SQLite send ledger."""
        return self.root / "ledger.sqlite3"

    def has_ledger(self) -> bool:
        """Whether the ledger file is there and not empty. What only looks leaves an emptied
        one (truncated to nothing) alone: opening it would make it a new, empty ledger, and
        the next run could no longer tell that the ledger was lost (check_ledger_kept)."""
        try:
            found = self.ledger.stat()
        except OSError:
            return False
        return stat.S_ISREG(found.st_mode) and found.st_size > 0

    @property
    def scratch(self) -> Path:
        """The handlers' files on the way (manifest, report: addresses and names), kept here
        rather than in the system's temporary folder, readable by the owner only."""
        return self.root / "tmp"

    @property
    def executions(self) -> Path:
        """The engine's persisted executions."""
        return self.root / "executions"

    @property
    def notifications(self) -> Path:
        """Notifications that SNS would have received, one JSON object a line."""
        return self.root / "notifications.jsonl"

    @property
    def settings_file(self) -> Path:
        """The handlers' environment for this workdir."""
        return self.root / "settings.json"

    def run_settings(self, execution_id: str) -> Path:
        """The handlers' environment one execution ran with (for its redrives)."""
        return self.root / "runs" / f"{execution_id}.settings.json"

    def run_source(self, execution_id: str) -> Path:
        """Which file one execution ran and how (for its redrives): {"path": the CSV's whole
        path, "way": the campaign's way, see campaign_way}."""
        return self.root / "runs" / f"{execution_id}.source.json"

    @property
    def deliveries(self) -> Path:
        """How each campaign runs in this workdir (see check_campaign_way)."""
        return self.root / "deliveries.json"


# --- the SAM template: which functions exist and what the definition's ${...} become ----------


# libyaml's parser where PyYAML was built with it: the template parses about eight times faster.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_SafeLoader):
    """A YAML loader that reads CloudFormation short-form tags (!Ref, !GetAtt, !Sub...)."""


# PyYAML's nodes are of these three kinds only.
_CfnNode = yaml.ScalarNode | yaml.SequenceNode | yaml.MappingNode


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: _CfnNode) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_sam_template(path: Path = SAM_TEMPLATE) -> dict[str, Any]:
    """Parse the SAM template, keeping intrinsic functions as plain dicts."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(f"{path.name}: cannot read the SAM template: {error}") from error


def local_function_arn(name: str) -> str:
    """The ARN a function gets on the local engine."""
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{name}"


def local_topic_arn(name: str) -> str:
    """The ARN an SNS topic gets on the local engine."""
    return f"arn:aws:sns:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{name}"


def sam_functions(template: dict[str, Any]) -> dict[str, str]:
    """Map each function's logical id to its handler as ``module:callable``."""
    functions = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        code_uri = str(props.get("CodeUri", "")).strip("/")
        handler = str(props.get("Handler", "app.handler"))
        module_file, _, attr = handler.rpartition(".")
        folder = (Path("infra") / code_uri).as_posix()
        parts = [p for p in Path(os.path.normpath(folder)).parts if p not in ("", ".")]
        functions[logical_id] = ".".join([*parts, module_file]) + ":" + attr
    if not functions:
        raise ConfigurationError("infra/template.yaml: no AWS::Serverless::Function resources")
    return functions


def sam_substitutions(template: dict[str, Any]) -> dict[str, str]:
    """Resolve the state machine's DefinitionSubstitutions to local ARNs."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::StateMachine":
            substitutions = resource.get("Properties", {}).get("DefinitionSubstitutions", {})
            return {name: _local_value(value) for name, value in substitutions.items()}
    raise ConfigurationError("infra/template.yaml: no AWS::Serverless::StateMachine resource")


def _local_value(value: Any) -> str:
    """Turn !GetAtt Fn.Arn / !Ref Topic / plain values into what they are locally."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id = value["Fn::GetAtt"][0]
        return local_function_arn(logical_id)
    if isinstance(value, dict) and "Ref" in value:
        return local_topic_arn(str(value["Ref"]))
    return str(value)


# --- settings and registry ---------------------------------------------------------------------


LOCAL_BATCH_SIZE = 100


def local_settings(
    workdir: Workdir,
    *,
    templates_dir: Path,
    attachments_dir: Path,
    mailer: str | None = None,
    sender: str | None = None,
    send_rate: float | None = None,
    faults: str | None = None,
    max_concurrency: int | None = None,
    batch_size: int | None = None,
) -> dict[str, str]:
    """The MAILMATRIX_* environment the handlers get for a local run."""
    env = {
        "MAILMATRIX_STORAGE": workdir.bucket.resolve().as_uri(),
        "MAILMATRIX_STORAGE_MOUNTS": (
            f"templates/={templates_dir.resolve()};attachments/={attachments_dir.resolve()}"
        ),
        "MAILMATRIX_MAILER": mailer or f"maildir://{workdir.outbox.resolve()}",
        "MAILMATRIX_LEDGER": f"sqlite://{workdir.ledger.resolve()}",
        "MAILMATRIX_SCRATCH": str(workdir.scratch.resolve()),
        "MAILMATRIX_SEND_RATE": str(send_rate or 0),
        "MAILMATRIX_MAX_CONCURRENCY": str(max_concurrency or _concurrency(send_rate, faults)),
        # 100, not AWS's 25: no Lambda time limit here, and each child costs the engine a
        # few state transitions and history records (a fifth of the main process's time).
        "MAILMATRIX_BATCH_SIZE": str(batch_size or LOCAL_BATCH_SIZE),
        "POWERTOOLS_SERVICE_NAME": "mailmatrix",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }
    if mailer:  # its errors name the option it came from, not the handlers' setting
        env["MAILMATRIX_MAILER_GIVEN_AS"] = "--smtp"
    if sender:
        env["MAILMATRIX_SENDER"] = sender
    unsubscribe = unsubscribe_of()
    if unsubscribe:  # kept with the run's settings, so its redrives use it too
        env["MAILMATRIX_UNSUBSCRIBE"] = unsubscribe
    if faults:
        env["MAILMATRIX_FAULTS"] = faults
    return env


def sender_of(given: str | None) -> str | None:
    """The From a run uses besides the manifest's: ``--sender``, else MAILMATRIX_SENDER from
    the shell (the run records it, so a campaign's later runs and redrives keep it)."""
    return given or os.environ.get("MAILMATRIX_SENDER", "").strip() or None


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the handlers, restoring the previous ones afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_registry(
    workdir: Workdir,
    *,
    echo: Callable[[str, Notification], None] | None = None,
    template: dict[str, Any] | None = None,
) -> Any:
    """The engine's resources: the SAM template's functions, local S3 and local SNS.

    ``template``: the SAM template already parsed (read from infra/ when None).
    """
    from mailmatrix.engine import ResourceRegistry

    if template is None:
        template = load_sam_template()
    registry = ResourceRegistry()
    # The state machine's functions are imported now, so forked workers start with them; the
    # others (SesEvents, Alert: run by EventBridge rules on AWS) only if invoked, as they
    # bring in boto3 (~25 MB more in the engine and in every worker).
    used = set(sam_substitutions(template).values())
    for name, target in sam_functions(template).items():
        registry.register_lambda(name, target)
        if local_function_arn(name) in used:
            importlib.import_module(target.partition(":")[0])
    _route_handler_logs(workdir)

    notifier = LocalNotifier(workdir.notifications, echo=echo)

    def sns_publish(parameters: dict[str, Any]) -> dict[str, Any]:
        notification = Notification(
            subject=str(parameters.get("Subject", "")), message=str(parameters.get("Message", ""))
        )
        message_id = notifier.publish(str(parameters.get("TopicArn", "")), notification)
        return {"MessageId": message_id}

    registry.register_service("arn:aws:states:::sns:publish", sns_publish)

    def storage(bucket: str) -> LocalStorage:
        if bucket != LOCAL_BUCKET:
            raise ConfigurationError(f"local S3: unknown bucket {bucket!r} (only {LOCAL_BUCKET})")
        return LocalStorage(workdir.bucket, bucket=bucket)

    registry.set_object_store(
        lambda bucket, key: storage(bucket).get(key),
        lambda bucket, key, data: storage(bucket).put(key, data),
        lambda bucket, key: storage(bucket).open(key),
    )
    return registry


def _route_handler_logs(workdir: Workdir) -> None:
    """Send the handlers' structured logs to WORKDIR/logs/lambda.jsonl, not the terminal.

    On AWS they go to CloudWatch Logs; locally the terminal belongs to the person running the
    CLI, and `run --json` must print nothing but its JSON object on stdout.
    """
    logger = logging.getLogger(LAMBDA_LOGGER)
    path = workdir.root / "logs" / "lambda.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            stream = handler.stream
            if getattr(stream, "name", None) != str(path):
                handler.setStream(path.open("a", encoding="utf-8"))
                if str(getattr(stream, "name", "")).endswith(path.name):
                    stream.close()  # the log file of an earlier run in this process
                handler.handleError = functools.partial(_log_unwritten, path)  # type: ignore[method-assign]


# The log files a write failed to in this process: said once each.
_unwritten_logs: set[Path] = set()


def _log_unwritten(path: Path, record: logging.LogRecord) -> None:
    """A handler's log line that ``path`` could not take (a full disk, a file size limit):
    said once, in one line, where logging said "--- Logging error ---" with a traceback for
    every line after; the run's own error, if the disk stops it, says the rest."""
    if path in _unwritten_logs:
        return
    _unwritten_logs.add(path)
    error = sys.exc_info()[1]
    why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    print(f"mailmatrix: log lines are not written to {path} ({why})", file=sys.stderr)


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _worker_processes(faults: str | None) -> int:
    """How many processes send batches: one per core; none (threads) with a fault drill (it
    counts faults across the run in one process), on one core, or off POSIX."""
    cores = _cores()
    return 0 if faults or cores < 2 or os.name != "posix" else cores


def _concurrency(send_rate: float | None, faults: str | None) -> int:
    """How many batches run at once by default: 4; with a send rate and worker processes, one
    per process, since the plan splits the rate between the batches running at once (four
    batches on two processes sent at half the rate)."""
    processes = _worker_processes(faults)
    return processes if send_rate and processes else 4


def send_invoker(env: dict[str, str]) -> Any:
    """Worker processes for SendBatch (CPU-bound: Jinja, MIME, base64), one per core.

    Only SendBatch runs in them; the other functions stay in threads. With fault drills
    (MAILMATRIX_FAULTS) or one core, everything stays in threads (None): the drills count
    faults across the whole run in one process. Workers are forked now, before the engine
    starts its threads, so they inherit this run's environment and log routing.
    """
    from mailmatrix.engine import ProcessInvoker

    processes = _worker_processes(env.get("MAILMATRIX_FAULTS"))
    if not processes:
        return None
    invoker = ProcessInvoker(processes, functions=[SEND_FUNCTION], start_method="fork")
    return invoker.start()


@contextlib.contextmanager
def engine_for(
    wd: Workdir,
    env: dict[str, str],
    *,
    echo: Callable[[str, Notification], None] | None,
    sleep: Callable[[float], None] | None,
    template: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """An engine on this workdir's resources, with SendBatch in worker processes."""
    from functions.send_batch import app as send_batch_app

    send_batch_app.reset()
    registry = build_registry(wd, echo=echo, template=template)
    deliveries.start()  # before the workers fork: they count into it (the progress bar)
    ledger_waits.start(str(wd.ledger))  # and their waits for a busy ledger (the console)
    invoker = send_invoker(env)
    if invoker is not None:
        registry.invoker = invoker
    try:
        yield start_engine(wd, registry, sleep)
    finally:
        deliveries.stop()
        ledger_waits.stop()
        if invoker is not None:
            invoker.close()
        send_batch_app.reset()  # closes the ledger its batches sent through in this process


def settings_for(workdir: Workdir, execution_id: str | None = None) -> dict[str, str]:
    """The handlers' environment an execution ran with (saved beside it), else the one saved
    by the last run in ``workdir`` (executions from before settings were kept per run)."""
    if execution_id is not None:
        own = workdir.run_settings(execution_id)
        if own.is_file():
            return json.loads(own.read_text(encoding="utf-8"))
    try:
        return json.loads(workdir.settings_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"{workdir.root}: no MailMatrix run here yet (no settings.json); "
            f"start one with '{program()} run FILE.csv --workdir DIR'"
        ) from None


# --- a run -------------------------------------------------------------------------------------


def object_created_event(bucket: str, key: str, size: int, etag: str) -> dict[str, Any]:
    """The event EventBridge delivers for an S3 Object Created notification.

    Its sequencer orders the uploads of one key as S3's does (hex, greater for a later
    upload): here the clock in nanoseconds, as the upload is made just before (a clock set
    back between two runs of one file would order them wrong).
    """
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": f"local-{etag[:8]}-{now}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": LOCAL_ACCOUNT,
        "time": now,
        "region": LOCAL_REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": key,
                "size": size,
                "etag": etag,
                "sequencer": f"{time.time_ns():016X}",
            },
            "request-id": "local",
            "requester": LOCAL_ACCOUNT,
            "reason": "PutObject",
        },
    }


def incoming_key(csv_path: Path) -> str:
    """Where a run uploads ``csv_path`` in the local bucket (its name names the campaign)."""
    return f"incoming/{csv_path.name}"


def upload(
    workdir: Workdir, csv_path: Path, *, metadata: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Put the CSV under incoming/ in the local bucket, with user ``metadata``; return its key
    and the event."""
    open_recipients(csv_path).close()  # no such file, or none to put (a pipe, a device)
    key = incoming_key(csv_path)
    storage = LocalStorage(workdir.bucket, bucket=LOCAL_BUCKET)
    info = storage.put_file(key, str(csv_path), content_type="text/csv", metadata=metadata)
    return key, object_created_event(LOCAL_BUCKET, key, info.size, info.etag)


def campaign_way(
    mailer: str | None, templates: Path, attachments: Path, sender: str | None
) -> dict:
    """What must not change between a campaign's runs in a workdir: how it delivers, and what
    its letters are made of (the templates and attachments folders, the sender, the
    List-Unsubscribe target of MAILMATRIX_UNSUBSCRIBE). The names of its template sets are
    the ledger's to keep, here as on AWS (Ledger.record_template_sets). ``mailer`` None: a way
    without delivery (`validate`, which cannot know it)."""
    if sender and same_sender(sender, manifest_sender(templates)):
        sender = None  # the letters' From is the manifest's, given or not
    letters = {
        "templates": str(templates.resolve()),
        "attachments": str(attachments.resolve()),
        "sender": sender,
        "unsubscribe": unsubscribe_of(),
    }
    return letters if mailer is None else {"delivery": delivery_of(mailer), **letters}


def manifest_sender(templates: Path) -> str | None:
    """The sender the templates folder's manifest names (None: none, or no readable one:
    loading the templates says what is wrong with it)."""
    sender = _manifest(templates).get("sender")
    return str(sender) if sender else None


def manifest_context(templates: Path) -> dict[str, Any]:
    """The constants the templates folder's manifest holds (``context``; none when there is
    no readable one: loading the templates says what is wrong with it)."""
    context = _manifest(templates).get("context")
    return context if isinstance(context, dict) else {}


def _manifest(templates: Path) -> dict[str, Any]:
    """The templates folder's manifest as YAML reads it; empty when it cannot be read."""
    try:
        manifest = yaml.safe_load((templates / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def same_sender(one: str, other: str | None) -> bool:
    """Whether two From values are one: the same name and the same address (its case aside)."""
    if other is None:
        return False
    (name, address) = email.utils.parseaddr(one)
    (other_name, other_address) = email.utils.parseaddr(other)
    return bool(address) and (name.strip(), address.casefold()) == (
        other_name.strip(),
        other_address.casefold(),
    )


def unsubscribe_of() -> str | None:
    """MAILMATRIX_UNSUBSCRIBE as a run takes it from the shell (None when unset)."""
    return os.environ.get("MAILMATRIX_UNSUBSCRIBE", "").strip() or None


def check_campaign_way(workdir: Workdir, campaign: str, name: str, way: dict) -> None:
    """Refuse to run a campaign another way than its earlier runs in this workdir.

    Rows sent to the outbox count as sent: a retry that forgot --smtp would mark the failed
    rows sent without mailing them, and a run with --smtp after an outbox trial would skip
    everyone. A retry that forgot --templates, --attachments or --sender would send the rest
    of the campaign other letters than its first rows got (the bundled ones, say). So a
    campaign keeps its way, per workdir.
    """
    changes = campaign_way_changes(workdir, campaign, way, name=name)
    if not changes:
        return
    # Most often a rerun that forgot an option: what differs and how to run it as before come
    # first. A new file name comes last, for a really different campaign only (next month's
    # offers.csv from another folder): in this workdir it still holds back the letters the
    # ledger holds as gone to the same people, unless sent again on purpose.
    differs = "; they ".join(f"{change.earlier}, but this run {change.now}" for change in changes)
    fixes = [change.fix for change in changes]
    fix = ", ".join(fixes[:-1]) + " and " + fixes[-1] if len(fixes) > 1 else fixes[0]
    notes = "".join(f" {change.note}" for change in changes if change.note)
    raise DeliveryChanged(
        f"{name}: the earlier runs of a file named {name} in {workdir.root} {differs}. Nothing"
        f" was sent. To go on with that campaign (a rerun, or its file corrected), run it again"
        f" {fix}: rows already sent are skipped.{notes} Only if this file is really a different"
        " campaign (other people, or the same people to be mailed again on purpose), give it a"
        " new file name and run it under"
        " that name instead (run as above, they would get the earlier campaign's letters): a"
        " new name is a new campaign, though in this workdir it still holds back each letter"
        f" the ledger holds as gone to the same address under {name}, unless it is run with"
        f" --send-again-from {name}"
    )


def _templates_changed(workdir: Workdir, campaign: str, way: dict) -> bool:
    """Whether the campaign's earlier runs in this workdir made their letters from another
    templates folder than ``way`` does (a damaged record: not known here, the run's check of
    its way says so)."""
    try:
        earlier = _deliveries(workdir).get(campaign)
    except DeliveriesDamaged:
        return False
    if not isinstance(earlier, dict):
        return False
    return earlier.get("templates", way["templates"]) != way["templates"]


@dataclass(frozen=True)
class WayChange:
    """One way a run differs from its campaign's earlier runs in a workdir: what those did
    (``used --sender ...``), what this run did instead (``gave no --sender ...``), how to run
    it as they did (``with --templates DIR``, ``without --smtp``), and what else to know."""

    earlier: str
    now: str
    fix: str
    note: str = ""


def campaign_way_change(workdir: Workdir, campaign: str, way: dict) -> str | None:
    """How the campaign's earlier runs in this workdir differ from the execution's ``way``
    (``used --sender ..., where this execution ...``), or None: in nothing that matters (see
    check_campaign_way)."""
    changes = campaign_way_changes(workdir, campaign, way)
    if not changes:
        return None
    return "; ".join(f"{change.earlier}, where this execution {change.now}" for change in changes)


def campaign_way_changes(
    workdir: Workdir, campaign: str, way: dict, *, name: str = "FILE"
) -> list[WayChange]:
    """How the campaign's earlier runs in this workdir differ from ``way``, delivery first
    (none: in nothing that matters, see check_campaign_way); ``name``: its file's."""
    earlier = _deliveries(workdir).get(campaign)
    if earlier is None:
        if "delivery" not in way:
            return []
        return _ledger_way_changes(workdir, campaign, way["delivery"], name)
    if isinstance(earlier, str):  # recorded before the letters' sources were
        earlier = {"delivery": earlier}
    # "sets": in the way an execution of an earlier version recorded; the ledger checks them
    changed = [
        key
        for key in way
        if key not in ("sets", "delivery") and key in earlier and earlier[key] != way[key]
    ]
    changes = [_letters_change(key, earlier[key], way[key]) for key in changed]
    # Another mail server is no change (a backup relay delivers as well); the outbox is. (A
    # way without delivery: `validate`, which checks the letters' sources only.)
    both = "delivery" in earlier and "delivery" in way
    if both and (earlier["delivery"] == "outbox") != (way["delivery"] == "outbox"):
        changes.insert(0, _delivery_change(earlier["delivery"], way["delivery"], name))
    return changes


def _ledger_way_changes(
    workdir: Workdir, campaign: str, delivery: str, name: str
) -> list[WayChange]:
    """How a run through ``delivery`` differs from the way the workdir's ledger says the
    campaign's letters went, for a campaign its record (deliveries.json) does not hold: moved
    aside when damaged, or lost. Its letters, all through the outbox or all through mail
    servers, hold the run to that; none when the ledger does not say or says both."""
    if not workdir.has_ledger():
        return []
    with _local_ledger(workdir, read_only=True) as ledger:
        went = ledger.deliveries(campaign)
        kept = f"its ledger ({workdir.ledger.name}) keeps how their letters went."
        if not went:
            went = _ways_by_ids(ledger, campaign)
            kept = (
                f"its ledger ({workdir.ledger.name}), though from a version that did not keep"
                " how their letters went, shows it by the ids it holds of the letters sent"
                " (file names in the outbox, Message-IDs through a mail server)."
            )
    kinds = {earlier == "outbox" for earlier in went}
    if len(kinds) != 1 or kinds == {delivery == "outbox"}:
        return []
    change = _delivery_change(went[-1], delivery, name)
    kept = (
        f"This workdir has no record of those runs ({workdir.deliveries.name}: moved aside, or"
        f" lost?), but {kept}"
    )
    return [WayChange(change.earlier, change.now, change.fix, f"{kept} {change.note}".rstrip())]


# The way of a campaign's letters through a mail server, as a ledger from before it kept the
# way tells it (_ways_by_ids): which server, it does not know.
SOME_SERVER = ""


def _ways_by_ids(ledger: SqliteLedger, campaign: str) -> list[str]:
    """How ``campaign``'s letters went, as a ledger from before it kept the way
    (SqliteLedger.deliveries) tells it by the ids of those it holds as sent: the outbox's
    are the names of its files (mailer_maildir.NAME_GLOB), a mail server's their Message-IDs.
    ``["outbox"]`` or ``[SOME_SERVER]``; none when none is sent, or when both kinds are."""
    outbox, servers = ledger.sent_ids_named(campaign, NAME_GLOB)
    if outbox == servers:
        return []
    return ["outbox"] if outbox else [SOME_SERVER]


def _delivery_change(earlier: str, now: str, name: str) -> WayChange:
    """The outbox for a mail server, or the other way round (``name``: the file's)."""
    if earlier == SOME_SERVER:
        return WayChange(
            "delivered through a mail server (--smtp; which one, this workdir no longer says)",
            "gave no --smtp (the local outbox)",
            "with the --smtp URL they used",
        )
    if earlier == "outbox":
        return WayChange(
            "delivered through the local outbox (no --smtp)",
            f"gave --smtp {now}",
            "without --smtp",
            "Rows in the outbox count as sent here, so a run through a server would skip them,"
            " and so would a copy under a new name run as it is. To deliver through the server"
            " after an outbox trial, either run the file in another --workdir (its ledger holds"
            " nothing of the trial, so every row is sent), or, in this workdir, run a copy under"
            f" a new file name with --smtp and --send-again-from {name} (the trial's letters"
            " count as sent here: that option sends them again, once each).",
        )
    password = " (its password in the URL or in MAILMATRIX_SMTP_PASSWORD)" if "@" in earlier else ""
    return WayChange(
        f"delivered through --smtp {earlier}",
        "gave no --smtp (the local outbox)",
        f"with --smtp {earlier}{password}",
    )


def _letters_change(key: str, earlier: str | None, now: str | None) -> WayChange:
    """A templates or attachments folder, a sender or an unsubscribe target changed."""
    if key == "sender":
        shell = os.environ.get("MAILMATRIX_SENDER", "").strip()
        unset = " and with MAILMATRIX_SENDER unset" if shell else ""
        return WayChange(
            f"used {_sender_said(earlier)}",
            f"gave {_sender_said(now, shell=shell)}",
            f"with --sender {shlex.quote(earlier)}" if earlier else f"without --sender{unset}",
        )
    if key == "unsubscribe":
        return WayChange(
            f"used {_unsubscribe_said(earlier)}",
            f"gave {_unsubscribe_said(now)}",
            f"with MAILMATRIX_UNSUBSCRIBE={shlex.quote(earlier)} set in the shell"
            if earlier
            else "with MAILMATRIX_UNSUBSCRIBE unset",
        )
    flag, folder = f"--{key}", shlex.quote(str(earlier))
    used = shlex.quote(str(now))
    if key == "templates" and now and is_bundled(Path(now)):
        used = f"the bundled demo templates ({used})"
    return WayChange(f"used {flag} {folder}", f"used {used}", f"with {flag} {folder}")


def _sender_said(sender: str | None, *, shell: str = "") -> str:
    """A way's sender as a refusal names it (``shell``: MAILMATRIX_SENDER, a source of it)."""
    if sender is None:
        return "no --sender (the templates manifest's sender)"
    source = " (or MAILMATRIX_SENDER)" if sender == shell else ""
    return f"--sender {shlex.quote(sender)}{source}"


def _unsubscribe_said(target: str | None) -> str:
    """A way's List-Unsubscribe target as a refusal names it."""
    if target is None:
        return "no MAILMATRIX_UNSUBSCRIBE"
    return f"MAILMATRIX_UNSUBSCRIBE={shlex.quote(target)}"


# What each workdir delivered through mail servers, and how many letters of each campaign its
# ledger held as sent, kept in the user's state folder (cli.defaults.state_dir) for every run
# and redrive through a server: {"workdirs": {"/abs/workdir": {"campaign": ["smtp://..."]}},
# "sent": {"/abs/workdir": {"campaign": 18}}}. A file's run through a server from one workdir
# is checked against the others' (see check_other_workdirs), and its ledger against its marks
# (check_sent_mark). The record stays when a workdir is moved, deleted or put back from a
# backup, the default workdir included: it lives in none of them.
KNOWN_WORKDIRS = "known-workdirs.json"
# An earlier build kept the record in the default workdir: merged into the state folder's
# record, it is renamed so (and left for a person to read).
MERGED_SUFFIX = ".merged"


@dataclass
class KnownWorkdirs:
    """The known workdirs' deliveries, read under their lock (see _known_locked), and how
    many letters of each campaign each workdir's ledger held as sent at the end of its last
    run through a server (``sent``: the most seen; outside the workdir, a workdir put back
    whole from an older backup cannot take it back with it). ``other``: the record's parts
    this version does not know (a later version's), written back as they were found."""

    path: Path
    workdirs: dict[str, dict[str, list[str]]]
    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)

    def named(self) -> list[Path]:
        """Every workdir the record names."""
        return [Path(here) for here in sorted({*self.workdirs, *self.sent})]

    def sent_mark(self, here: str, campaign: str) -> int:
        """The most letters of ``campaign`` the ledger of ``here`` was seen to hold as sent."""
        return self.sent.get(here, {}).get(campaign, 0)

    def mark_sent(self, here: str, campaign: str, sent: int) -> None:
        """Keep that the ledger of ``here`` holds ``sent`` letters of ``campaign`` as sent
        (the most seen), and save."""
        if sent > self.sent_mark(here, campaign):
            self.sent.setdefault(here, {})[campaign] = sent
            self.save()

    def add(self, here: str, campaign: str, delivery: str) -> None:
        """Record that ``here`` delivers ``campaign`` through ``delivery``, and save."""
        servers = self.workdirs.setdefault(here, {}).setdefault(campaign, [])
        if delivery not in servers:
            servers.append(delivery)
            self.save()

    def forget(self, here: str, campaign: str, delivery: str) -> None:
        """Forget that ``here`` delivered ``campaign`` through ``delivery`` (no row of it was
        claimed there), and save."""
        servers = self.workdirs.get(here, {}).get(campaign, [])
        if delivery in servers:
            servers.remove(delivery)
            if not servers:
                del self.workdirs[here][campaign]
            if not self.workdirs[here]:
                del self.workdirs[here]
            self.save()

    def merge(self, other: KnownWorkdirs) -> None:
        """Take in what ``other`` records (not saved): every workdir's servers, and the larger
        sent mark of each workdir and campaign. Merging one twice changes nothing, and never
        lowers a mark."""
        for here, campaigns in other.workdirs.items():
            for campaign, servers in campaigns.items():
                mine = self.workdirs.setdefault(here, {}).setdefault(campaign, [])
                mine += [server for server in servers if server not in mine]
        for here, marks in other.sent.items():
            for campaign, sent in marks.items():
                if sent > self.sent_mark(here, campaign):
                    self.sent.setdefault(here, {})[campaign] = sent
        for name, part in other.other.items():
            self.other.setdefault(name, part)

    def save(self) -> None:
        """Write the record (whole, in one rename); RecordNotWritable when it cannot be."""
        tmp = self.path.with_name(f".{KNOWN_WORKDIRS}.tmp")
        try:
            kept = {**self.other, "workdirs": self.workdirs, "sent": self.sent}
            text = json.dumps(kept, indent=2, sort_keys=True) + "\n"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise RecordNotWritable(_unkept(self.path, exc)) from exc


@contextlib.contextmanager
def _known_locked(workdir: Path | None = None) -> Iterator[KnownWorkdirs]:
    """Hold the lock on the known workdirs (taken before any workdir's own lock) and yield
    them, with the record an earlier build kept in the default workdir merged in: two runs
    starting at once check and record one after the other. Refuses (RecordNotWritable) when
    they cannot be kept: a check that could not remember this run would let the next one mail
    its people again; and (StateFolderUnsafe) when the state folder is in the run's
    ``workdir``, the default one or a workdir the record names (see check_state_folder)."""
    from mailmatrix.cli.defaults import default_workdir, state_dir

    folder = state_dir()
    path = folder / KNOWN_WORKDIRS
    check_state_folder(folder, [*([workdir] if workdir else []), default_workdir()])
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        lock = folder / f".{KNOWN_WORKDIRS}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RecordNotWritable(_unkept(path, exc)) from exc
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        known, earlier = _record_with_earlier(path)
        check_state_folder(folder, known.named())
        # Saved now, whether or not this run adds to it: a folder that takes no file stops
        # the run before it sends, not after, when its marks could no longer be kept
        known.save()
        if earlier is not None:
            _set_aside_merged(earlier)
        yield known
    finally:
        os.close(fd)  # which releases the lock


def check_state_folder(folder: Path, workdirs: list[Path]) -> None:
    """Refuse (StateFolderUnsafe) the state folder ``folder`` when it is one of ``workdirs``
    or inside one, compared as resolved (symbolic links followed): put back from an older
    backup, that workdir would take the record of known workdirs back with it, and its
    marks would no longer catch it. A workdir inside the state folder is no harm: a backup
    of the workdir does not hold the record."""
    for workdir in workdirs:
        try:
            inside = folder.resolve().is_relative_to(workdir.resolve())
        except (OSError, RuntimeError):  # a loop of links: no folder to make, said then
            continue
        if inside:
            raise StateFolderUnsafe(_state_in_workdir(folder, workdir))


def _state_in_workdir(folder: Path, workdir: Path) -> str:
    """Why a state folder in ``workdir`` (or that is it) stops a run, and what to do."""
    from mailmatrix.cli.defaults import default_workdir

    where = "is the workdir" if folder.resolve() == workdir.resolve() else "is inside the workdir"
    default = " (the default one)" if workdir.resolve() == default_workdir().resolve() else ""
    return (
        f"{folder}: the state folder, which keeps the record of known workdirs"
        f" (MAILMATRIX_STATE_DIR, else $XDG_STATE_HOME/mailmatrix), {where} {workdir}{default}."
        " The record keeps what each workdir delivered through a mail server and how many of"
        " each file's letters its ledger held as sent; put back from an older backup, that"
        " workdir would take the record back with it, and a run there would mail again the"
        " people mailed since the backup. Nothing was sent. Set MAILMATRIX_STATE_DIR to a"
        f" folder outside every workdir (copy {KNOWN_WORKDIRS} there first, if there is one),"
        " then run the command again"
    )


def _record_with_earlier(path: Path) -> tuple[KnownWorkdirs, Path | None]:
    """The record of known workdirs at ``path``, with the record an earlier build kept in the
    default workdir merged in (not saved), and that one's path (None: none to merge)."""
    known = _record_at(path)
    earlier = _earlier_record(path)
    if earlier is not None:
        known.merge(_record_at(earlier))
    return known, earlier


def _record_at(path: Path) -> KnownWorkdirs:
    """The record of known workdirs at ``path`` (empty when there is no such file yet);
    KnownWorkdirsDamaged when it cannot be read, or any part of it is not as this version
    writes it: what is not understood is never dropped, then written over."""
    found = _load_known(path)
    workdirs, sent = _workdirs_in(path, found), _sent_in(path, found)
    other = {k: v for k, v in found.items() if k not in _PARTS} if isinstance(found, dict) else {}
    return KnownWorkdirs(path, workdirs, sent, other)


def _earlier_record(path: Path) -> Path | None:
    """The record of known workdirs an earlier build kept in the default workdir, when there
    is one not merged yet into the record at ``path``. Records in default workdirs of other
    runs (another MAILMATRIX_WORKDIR) are merged when a run has that default workdir."""
    from mailmatrix.cli.defaults import default_workdir

    earlier = default_workdir() / KNOWN_WORKDIRS
    try:
        if not earlier.is_file() or earlier.resolve() == path.resolve():
            return None
    except OSError:  # a default workdir that cannot be looked into holds none we can read
        return None
    return earlier


def _set_aside_merged(earlier: Path) -> None:
    """Rename an earlier build's record, merged, so it is not merged again. One that cannot be
    renamed (a default workdir that cannot be written) is merged again by the next run: that
    takes the larger mark of each, so it lowers none."""
    try:
        earlier.replace(earlier.with_name(KNOWN_WORKDIRS + MERGED_SUFFIX))
    except OSError as exc:
        log.debug("known workdirs: %s merged, not renamed: %s", earlier, exc)


def _read_record() -> KnownWorkdirs:
    """The record of known workdirs as it is now, read without its lock (for commands that
    only look: validate, show), with an earlier build's record not merged yet taken in too;
    KnownWorkdirsDamaged when one cannot be read, StateFolderUnsafe for a relative
    MAILMATRIX_STATE_DIR."""
    from mailmatrix.cli.defaults import state_dir

    return _record_with_earlier(state_dir() / KNOWN_WORKDIRS)[0]


# The record of known workdirs as a command that only looks read it (read_known_record): the
# record, or why it cannot be read.
RecordAsRead = KnownWorkdirs | KnownWorkdirsDamaged | StateFolderUnsafe


def read_known_record() -> RecordAsRead:
    """The record of known workdirs as _read_record reads it, or the error that says why it
    cannot be: `validate` asks it twice (check_earlier_runs, check_known_workdirs) and reads
    it once."""
    try:
        return _read_record()
    except (KnownWorkdirsDamaged, StateFolderUnsafe) as exc:
        return exc


def workdirs_holding(execution: str, here: Path) -> list[Path]:
    """Other workdirs that hold an execution whose id starts with ``execution`` (where, see
    _execution_places). For a `show` or `redrive` not given the --workdir its run had; reads
    only, and finds nothing rather than fail."""
    found: list[Path] = []
    for place in _execution_places(here):
        try:
            holds = any(place.glob(f"{glob.escape(execution)}*/execution.json"))
        except OSError:
            continue
        workdir = place.parent
        if holds and not any(workdir.resolve() == other.resolve() for other in found):
            found.append(workdir)
    return found


def workdirs_with_runs(here: Path) -> list[Path]:
    """The workdirs that hold executions (where, see _execution_places), the one run most
    recently first. For `executions` given a workdir that has none; reads only, and finds
    nothing rather than fail."""
    latest: dict[Path, tuple[float, Path]] = {}
    for place in _execution_places(here):
        try:
            stamps = [record.stat().st_mtime for record in place.glob("*/execution.json")]
            workdir = place.parent.resolve()
        except (OSError, RuntimeError):  # unreadable, or a loop of links
            continue
        if stamps and workdir not in latest:
            latest[workdir] = (max(stamps), place.parent)
    return [found for _, found in sorted(latest.values(), key=lambda seen: -seen[0])]


def ran_in(wd: Workdir, campaign: str) -> bool:
    """Whether a file of ``campaign``'s name ran in the workdir: its record of runs
    (deliveries.json) or its ledger holds it. Reads only; a damaged record counts as a run
    (what it held is not known)."""
    try:
        if campaign in _deliveries(wd):
            return True
    except DeliveriesDamaged:
        return True
    if not wd.has_ledger():
        return False
    with _local_ledger(wd, read_only=True) as ledger:
        return ledger.has_entries(campaign)


def workdirs_that_ran(campaign: str, here: Path) -> list[Path]:
    """The workdirs whose record of runs holds ``campaign`` (where, see _execution_places).
    For a `settle` not given the --workdir the file ran in; reads only, and finds nothing
    rather than fail."""
    found: list[Path] = []
    for place in _execution_places(here):
        workdir = place.parent
        try:
            ran = campaign in _deliveries(Workdir(workdir))
            known = any(workdir.resolve() == other.resolve() for other in found)
        except (MailMatrixError, OSError, RuntimeError):  # damaged, unreadable, a loop
            continue
        if ran and not known:
            found.append(workdir)
    return found


def _execution_places(here: Path) -> list[Path]:
    """Where workdirs' executions may be: the folders below ``here`` (two levels: ``demo``,
    ``my-campaign/real``), the default workdir's and those of the workdirs the record of
    known workdirs names."""
    from mailmatrix.cli.defaults import default_workdir

    places = [*here.glob("*/executions"), *here.glob("*/*/executions")]
    places.append(default_workdir() / "executions")
    try:
        known = _read_record().workdirs
    except MailMatrixError:  # damaged, or no state folder to read: the other places
        known = {}
    return places + [Path(workdir) / "executions" for workdir in known]


def _load_known(path: Path) -> Any:
    """The record of known workdirs at ``path`` as JSON gives it ({} when there is no such
    file yet); KnownWorkdirsDamaged when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise KnownWorkdirsDamaged(_damaged(path, f"not readable ({exc})")) from exc


def _workdirs_in(path: Path, found: Any) -> dict[str, dict[str, list[str]]]:
    """The known workdirs' deliveries in ``found``, the record read from ``path``."""
    if isinstance(found, list) and all(isinstance(entry, str) for entry in found):
        # The list of workdirs an earlier build kept: what each delivered, from its own record
        found = {"workdirs": {entry: _deliveries_through_servers(Path(entry)) for entry in found}}
    if not isinstance(found, dict):
        raise KnownWorkdirsDamaged(_not_written_so(path, f"it holds a JSON {_kind(found)}"))
    return _record_part(path, found, "workdirs", _servers_listed, "a list of mail servers")


def _sent_in(path: Path, found: Any) -> dict[str, dict[str, int]]:
    """The letters sent by workdir and campaign that ``found``, the record read from
    ``path``, keeps (see KnownWorkdirs; none in a record from before they were kept)."""
    found = found if isinstance(found, dict) else {}  # (the list of an earlier build: none)
    sent = _record_part(path, found, "sent", _is_count, "a count")
    return {workdir: {c: n for c, n in marks.items() if n} for workdir, marks in sent.items()}


# The parts of the record this version reads; any other is kept as it is (KnownWorkdirs.other).
_PARTS = ("workdirs", "sent")


def _record_part(
    path: Path, found: dict[str, Any], name: str, fits: Callable[[Any], bool], what: str
) -> dict[str, Any]:
    """The part ``name`` of the record read from ``path`` (``found``), by workdir and campaign,
    each value ``fits`` (``what`` it should be); KnownWorkdirsDamaged naming the first entry
    that is not so: what is not understood is never dropped, then written over."""
    part = found.get(name, {})
    if not isinstance(part, dict):
        raise KnownWorkdirsDamaged(_not_written_so(path, f'its "{name}" is a {_kind(part)}'))
    for workdir, campaigns in part.items():
        where = f'its "{name}" entry of {workdir}'
        if not os.path.isabs(workdir):
            raise KnownWorkdirsDamaged(_not_written_so(path, f"{where} is not a whole path"))
        if not isinstance(campaigns, dict):
            raise KnownWorkdirsDamaged(_not_written_so(path, f"{where} is a {_kind(campaigns)}"))
        for campaign, value in campaigns.items():
            if not fits(value):
                found_so = f"{where}, campaign {campaign}, is {json.dumps(value)[:60]}"
                raise KnownWorkdirsDamaged(_not_written_so(path, f"{found_so}, not {what}"))
    return part


def _servers_listed(value: Any) -> bool:
    return isinstance(value, list) and all(_is_server(server) for server in value)


def _is_server(value: Any) -> bool:
    """Whether ``value`` is a delivery as delivery_of writes a mail server's: ``ses``, or
    the URL of an SMTP server with its host (and a port, if any, that is a number)."""
    if not isinstance(value, str):
        return False
    if value == "ses":
        return True
    try:
        parts = urlsplit(value)
        known = parts.scheme in DEFAULT_PORTS and bool(parts.hostname)
        return known and _port_of(parts) is not None
    except ValueError:
        return False


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _not_written_so(path: Path, what: str) -> str:
    """Why a record of known workdirs whose part ``what`` is malformed stops a run."""
    return _damaged(path, f"not the record this version writes ({what})")


def _kind(value: Any) -> str:
    """What JSON calls the kind of ``value`` (where a record expects another)."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _deliveries_through_servers(root: Path) -> dict[str, list[str]]:
    """The campaigns the workdir at ``root`` delivered through a server, by its own record."""
    workdir = Workdir(root)
    campaigns = _deliveries(workdir) if root.is_dir() else {}
    found = {campaign: _servers_of(workdir, campaign) for campaign in campaigns}
    return {campaign: servers for campaign, servers in found.items() if servers}


def _damaged(path: Path, what: str) -> str:
    return (
        f"{path}: {what}: it records what each workdir delivered through a mail server and how"
        " many of each file's letters its ledger held as sent, so that a file sent from one"
        " workdir is not sent again from another, nor from a workdir put back from an older"
        " backup; nothing was sent. Put it back from a backup if there is one. Otherwise move"
        " it aside (keep it, for a person to read): runs then go on, but these checks start"
        " afresh and know nothing of what it held, so run each file only in the workdir of its"
        " earlier runs, with the ledger they wrote"
    )


def _unkept(path: Path, exc: OSError) -> str:
    return (
        f"{path}: the record of known workdirs cannot be kept there: {write_fault(exc)}. Runs"
        " through a mail server record in it what each workdir delivered and how many of each"
        " file's letters its ledger held as sent, so that nobody is mailed again from another"
        " workdir or from one put back from a backup; nothing was sent. Make that folder"
        " writable (chmod u+w; chattr -i, as root, for an immutable one), or set"
        " MAILMATRIX_STATE_DIR to a folder outside every workdir that is (copy the record"
        " there first, if there is one), then run the command again"
    )


def check_other_workdirs(
    known: KnownWorkdirs, wd: Workdir, campaign: str, name: str, delivery: str
) -> None:
    """Refuse (DeliveryChanged) to run or redrive a file in ``wd`` through the mail server
    ``delivery`` when runs in another workdir delivered a file of that name through the same
    server (however its URL is written): this workdir's ledger knows nothing of its letters,
    and would mail those people again (a mistyped or forgotten --workdir). Then record that
    ``wd`` delivers it there. Outbox trials, and runs through another server (a rehearsal
    with a mail catcher), are not held back. The default workdir's own earlier deliveries
    count too (those of versions before the record). Call under _known_locked."""
    from mailmatrix.cli.defaults import default_workdir

    here = str(wd.root.resolve())
    others = {path: campaigns.get(campaign, []) for path, campaigns in known.workdirs.items()}
    default = Workdir(default_workdir())
    key = str(default.root.resolve())
    others[key] = [*others.get(key, []), *_servers_of(default, campaign)]
    own = [s for s in _servers_of(wd, campaign) if same_server(s, delivery)]
    recorded_here = any(same_server(s, delivery) for s in others.get(here, []))
    # Its ledger is a trace too: its deliveries.json may have been moved aside (damaged)
    if not own and recorded_here and not _ledger_holds(wd, campaign):
        raise DeliveryChanged(
            f"{name}: the record of the workdirs says runs in this one, {wd.root}, delivered a"
            f" file named {name} through {delivery}, but the workdir holds no trace of them (a"
            " new folder where a moved or deleted one was?): a run here would mail those people"
            " again; nothing was sent. Run the file in the folder the workdir was moved to. If"
            " this file is another campaign, give it a new file name and run that"
        )
    check_sent_mark(wd, campaign, name, known)
    for other, servers in others.items():
        server = next((s for s in servers if same_server(s, delivery)), None)
        if other == here or server is None:
            continue
        # A workdir that no longer records the campaign: moved, renamed or deleted
        gone = not _servers_of(Workdir(Path(other)), campaign)
        if gone and own:  # this workdir, moved from there: its own ledger holds the campaign
            # unless it is a copy put back from an older backup of that one
            check_sent_mark(wd, campaign, name, known, moved_from=other)
            known.mark_sent(here, campaign, known.sent_mark(other, campaign))
            known.forget(other, campaign, server)
            continue
        there = f"run it there (--workdir {shlex.quote(other)})"
        where = (
            "If that workdir was moved, run the file in its new place."
            if gone
            else f"To send the rest of that campaign, {there}."
        )
        raise DeliveryChanged(
            f"{name}: runs in another workdir, {other}, delivered a file named {name} through"
            f" {server}{_sent_there(Workdir(Path(other)), campaign, gone)}, and this workdir"
            f" ({wd.root}) has no record of its letters: a run here through that server would"
            f" mail those people again; nothing was sent. {where} If this file is another"
            " campaign (other people, or the same people mailed again on purpose), give it a"
            " new file name and run that"
        )
    known.add(here, campaign, delivery)


def other_ledgers(
    wd: Workdir,
    known: RecordAsRead | None = None,
    servers: Collection[str] = (),
    send_again_from: Collection[str] = (),
) -> str:
    """The ledgers of the workdirs other than ``wd`` that the record of known workdirs
    (``known``; None: read here) names with deliveries through a mail server (one of
    ``servers``, however its URL is written; any, for none: an outbox trial), and those
    campaigns' servers, as validation takes them (MAILMATRIX_OTHER_LEDGERS, see
    adapters.ledgers_elsewhere); "" when it names none, or cannot be read (a run through a
    server is refused then; an outbox trial does not need it). A rehearsal through another
    server (a mail catcher) holds nothing back, as check_other_workdirs has it.
    ``send_again_from``: the run's names to send again; one that ``wd`` ran too (an outbox
    trial there, say) names that run, not the other workdirs' files of the name, whose
    letters it does not send again ("not_again")."""
    record = read_known_record() if known is None else known
    if not isinstance(record, KnownWorkdirs):
        log.debug("other ledgers: the record of known workdirs not read: %s", record)
        return ""
    found: dict[str, Any] = {}
    ran_here = [n for n in send_again_from if _ledger_holds(wd, campaign_of_file(Path(n)))]
    for other, campaigns in _other_workdirs(record, wd):
        through = {}
        for campaign, used in campaigns.items():
            kept = [s for s in used if not servers or any(same_server(s, d) for d in servers)]
            if kept:
                through[campaign] = kept
        if through:
            found[other] = {"ledger": str(Workdir(Path(other)).ledger), "campaigns": through}
            if ran_here:
                found[other]["not_again"] = ran_here
    return json.dumps(found) if found else ""


def _other_workdirs(record: KnownWorkdirs, wd: Workdir) -> list[tuple[str, dict[str, list[str]]]]:
    """The workdirs ``record`` names other than ``wd``, each with its campaigns' servers."""
    here = str(wd.root.resolve())
    return [(other, found) for other, found in sorted(record.workdirs.items()) if other != here]


def check_other_ledgers(others: str, name: str) -> None:
    """Refuse (DeliveryChanged) a run or redrive of the file ``name`` through a mail server
    when a ledger of another workdir that ``others`` (other_ledgers) names cannot be read:
    whom runs there mailed is unknown, and a row whose letter went from there would go
    again. Before anything is sent, as check_other_workdirs refuses."""
    if not others:
        return
    with contextlib.closing(LedgersElsewhere(others)) as elsewhere:
        unread = dict(elsewhere.unread)
    if not unread:
        return
    from mailmatrix.cli.defaults import state_dir

    workdir, why = next(iter(sorted(unread.items())))
    raise DeliveryChanged(
        f"{name}: the ledger of the workdir {workdir}, whose runs sent letters through a mail"
        f" server, could not be read ({why}): a run here could not tell whom they mailed, and"
        " would mail them again; nothing was sent. Make that ledger readable (give back"
        " access to it, or put back a copy from a backup), then run again; if that workdir is"
        " done with for good, take it out of the record of known workdirs"
        f" ({state_dir() / KNOWN_WORKDIRS}) first. No option runs the file without it"
    )


def campaigns_elsewhere(wd: Workdir) -> frozenset[str]:
    """The campaigns workdirs other than ``wd`` delivered through a mail server, as the record
    of known workdirs names them (none where it cannot be read)."""
    record = read_known_record()
    if not isinstance(record, KnownWorkdirs):
        return frozenset()
    return frozenset(
        campaign
        for _, campaigns in _other_workdirs(record, wd)
        for campaign, servers in campaigns.items()
        if servers
    )


def _hold_to_way(
    known: KnownWorkdirs | None, wd: Workdir, campaign: str, name: str, way: dict[str, Any]
) -> None:
    """Check the file against the other workdirs (``known``: None for the outbox), recording
    in the known workdirs that ``wd`` delivers it, then record its way here; under the locks
    of both. Should the way not be recorded (its ledger, made first, cannot be made or
    written: no room, no access), the run stops before anything is claimed or sent, and the
    entry this added to the known workdirs is taken back: it would refuse the file's runs from
    other workdirs, and this one's next run, for letters that never went."""
    here, delivery = str(wd.root.resolve()), way["delivery"]
    added = known is not None and delivery not in known.workdirs.get(here, {}).get(campaign, [])
    if known is not None:
        check_other_workdirs(known, wd, campaign, name, delivery)
    try:
        record_campaign_way(wd, campaign, way)
    except BaseException:
        if known is not None and added:
            try:
                known.forget(here, campaign, delivery)
            except RecordNotWritable as exc:  # the safe side: the entry stays
                log.debug("known workdirs: %s kept for %s: %s", here, campaign, exc)
        raise


def check_sent_mark(
    wd: Workdir,
    campaign: str,
    name: str,
    known: KnownWorkdirs | MailMatrixError | None = None,
    *,
    moved_from: str | None = None,
) -> None:
    """Refuse (LedgerLost) a run of ``campaign`` in ``wd`` whose ledger holds fewer of its
    letters as sent than the record of workdirs (``known``; None: read here, without its
    lock; an error: it could not be read) saw it hold (here, or at ``moved_from``, the folder
    it takes the place of): the workdir, its ledger and its own record (deliveries.json)
    together, was put back from an older backup, and would mail again the people mailed
    since. One indexed count, only where the record has a mark."""
    if known is None:
        try:
            known = _read_record()
        except MailMatrixError as exc:
            known = exc
    if isinstance(known, MailMatrixError):  # said by check_known_workdirs (validate), and runs
        log.debug("the record of known workdirs not read: %s", known)
        return
    mark = known.sent_mark(moved_from or str(wd.root.resolve()), campaign)
    if not mark or not wd.has_ledger():  # no ledger at all: the checks beside this say it
        return
    with _local_ledger(wd, read_only=True) as ledger:
        sent = ledger.sent_count(campaign)
    if sent >= mark:
        return
    raise LedgerLost(
        f"{name}: the record of the workdirs ({known.path}) saw the ledger of this workdir,"
        f" {wd.root}{f' (in its earlier place, {moved_from})' if moved_from else ''},"
        f" hold {mark} of this file's letters as sent through a mail server, but it"
        f" holds {sent}: the workdir was put back from a backup older than its last run? A run"
        " here would mail again the people mailed since; nothing was sent. Put back the"
        " workdir as its last run left it (its ledger.sqlite3, with its -wal file), and run"
        " the file again: rows already sent are skipped. If that is lost, the letters sent"
        " since the backup are unknown here: find in the mail server's log who got them,"
        " take those rows out of the file, and run the rest under a new file name"
    )


def _ledger_holds(workdir: Workdir, campaign: str) -> bool:
    """Whether ``workdir``'s ledger holds entries of ``campaign``."""
    if not workdir.has_ledger():
        return False
    with _local_ledger(workdir, read_only=True) as ledger:
        return ledger.has_entries(campaign)


def _servers_of(workdir: Workdir, campaign: str) -> list[str]:
    """The servers ``workdir``'s own record says ``campaign`` went through (deliveries.json)."""
    earlier = _deliveries(workdir).get(campaign) if workdir.root.is_dir() else None
    return _servers_in(earlier) if isinstance(earlier, dict) else []


def _servers_in(way: dict[str, Any]) -> list[str]:
    """The mail servers a campaign's recorded way went through: all of them, or the last one
    alone in a way recorded before they were kept."""
    servers = way.get("servers") or [way.get("delivery")]
    return [s for s in servers if isinstance(s, str) and s != "outbox"]


def _sent_there(other: Workdir, campaign: str, gone: bool) -> str:
    """How many of ``campaign``'s rows ``other``'s ledger has sent, said for the refusal."""
    if gone:
        return " (that folder no longer holds their record: moved, renamed or deleted?)"
    try:
        if not other.has_ledger():
            return ""
        with _local_ledger(other, read_only=True) as ledger:
            sent = ledger.sent_count(campaign)
    except (OSError, MailMatrixError) as exc:
        log.debug("run: the ledger of %s not read: %s", other.root, exc)
        return ""
    return f" ({sent} letter(s) of it are recorded sent there)" if sent else ""


def same_server(one: str, another: str) -> bool:
    """Whether two deliveries (``smtp://user@host:port``, as delivery_of writes them) reach
    the same server: the same port (the scheme's own when none is written) on the same host,
    by name or by any address the names resolve to (this machine's addresses are one:
    localhost, 127.0.0.1, ::1, 0.0.0.0)."""
    first, second = urlsplit(one), urlsplit(another)
    if _port_of(first) != _port_of(second):
        return False
    hosts = (first.hostname or "").lower(), (second.hostname or "").lower()
    if hosts[0] == hosts[1]:
        return True
    return bool(_addresses(hosts[0]) & _addresses(hosts[1]))


def _port_of(parts: Any) -> int | None:
    try:
        return parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _addresses(host: str) -> frozenset[str]:
    """The addresses ``host`` resolves to (none when it does not), this machine's as one."""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return frozenset()
    addresses = set()
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        local = address.is_loopback or address.is_unspecified
        addresses.add("this machine" if local else str(address))
    return frozenset(addresses)


def _known_workdirs(way: dict[str, Any], wd: Workdir) -> contextlib.AbstractContextManager[Any]:
    """_known_locked for a way through a mail server from ``wd``; nothing (None) for the
    outbox."""
    mails = way.get("delivery", "outbox") != "outbox"
    return _known_locked(wd.root) if mails else contextlib.nullcontext()


def check_known_workdirs(
    workdir: Path | None, csv_path: Path, known: RecordAsRead | None = None
) -> MailMatrixError | None:
    """What keeps a run through a mail server from using the record of known workdirs, as
    validate forecasts `run` (reads only): a state folder it refuses (StateFolderUnsafe), or
    the record damaged (KnownWorkdirsDamaged). Raised when the earlier runs of the file in
    ``workdir`` went through a mail server, as its next run must too; returned otherwise, for
    validate to note (a run into the outbox does not use the record); None: nothing.
    ``known``: the record as read (read_known_record; None: read here)."""
    from mailmatrix.cli.defaults import default_workdir, state_dir

    try:
        folder = state_dir()
        check_state_folder(folder, [*([workdir] if workdir else []), default_workdir()])
        record = _read_record() if known is None else known
        if not isinstance(record, KnownWorkdirs):
            raise record
        check_state_folder(folder, record.named())
    except (StateFolderUnsafe, KnownWorkdirsDamaged) as exc:
        problem = exc
    else:
        return None
    if workdir is not None and _through_servers(Workdir(workdir), campaign_of_file(csv_path)):
        raise problem
    return problem


def _through_servers(wd: Workdir, campaign: str) -> bool:
    """Whether ``campaign``'s runs in ``wd`` delivered through a mail server last, by the
    workdir's record, else by its ledger."""
    earlier = _deliveries(wd).get(campaign) if wd.root.is_dir() else None
    if isinstance(earlier, dict):
        earlier = earlier.get("delivery")
    if isinstance(earlier, str):
        return earlier != "outbox"
    if not wd.has_ledger():
        return False
    with _local_ledger(wd, read_only=True) as ledger:
        went = ledger.deliveries(campaign) or _ways_by_ids(ledger, campaign)
    return bool(went) and went[-1] != "outbox"


def check_earlier_runs(
    workdir: Path,
    csv_path: Path,
    templates: Path,
    attachments: Path,
    sender: str | None,
    sets: Collection[str],
    known: RecordAsRead | None = None,
) -> bool:
    """Refuse, as `run` would in ``workdir`` with ``sender`` (its --sender), a file whose
    earlier runs there made their letters otherwise: other templates or attachments folders,
    another sender or MAILMATRIX_UNSUBSCRIBE (DeliveryChanged), or template sets that ``sets``
    lacks (TemplateSetsChanged); return whether the workdir has earlier runs of the file.
    ``known``: the record of known workdirs as read (read_known_record; None: read here).
    Reads only: a workdir that is not there has none."""
    wd = Workdir(Path(workdir))
    campaign = campaign_of_file(csv_path)
    check_ledger_kept(wd, campaign, csv_path.name)
    check_sent_mark(wd, campaign, csv_path.name, known)
    check_name_alike(wd, csv_path)
    way = campaign_way(None, templates, attachments, sender_of(sender))
    check_campaign_way(wd, campaign, csv_path.name, way)
    found = campaign in _deliveries(wd)
    if wd.has_ledger():
        with _local_ledger(wd, read_only=True) as ledger:
            used = ledger.template_sets(campaign)
            found = found or bool(used) or ledger.has_entries(campaign)
        missing = sorted(used - set(sets))
        if missing:
            raise template_sets_changed(csv_path.name, missing, scope="a run of it")
    return found


def last_run_here(workdir: Path, csv_path: Path) -> str | None:
    """The execution of the latest run of the file validated in ``workdir``, as its ledger
    keeps it (latest_upload), else None: a run that claimed no row (all held back, say) keeps
    no record of runs, but its upload stays in the ledger. Reads only."""
    wd = Workdir(Path(workdir))
    if not wd.has_ledger():
        return None
    with _local_ledger(wd, read_only=True) as ledger:
        latest = ledger.latest_upload(campaign_of_file(csv_path))
    return latest.execution.rsplit(":", 1)[-1] if latest is not None else None


@contextlib.contextmanager
def _ways_locked(workdir: Workdir) -> Iterator[None]:
    """Hold the workdir's lock on its campaigns' ways, so that two runs starting at once check
    and record one after the other (one with --smtp, one without, would both pass)."""
    _make_root(workdir)
    fd = os.open(workdir.root / ".deliveries.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # which releases the lock


def forget_campaign_way(workdir: Workdir, campaign: str) -> None:
    """Forget how ``campaign`` runs here: none of its rows was ever claimed."""
    deliveries = _deliveries(workdir)
    if deliveries.pop(campaign, None) is not None:
        _write_deliveries(workdir, deliveries)


def record_campaign_way(
    workdir: Workdir,
    campaign: str,
    way: dict,
    *,
    in_ledger: bool = False,
    sent: int | None = None,
) -> None:
    """Remember how ``campaign`` runs in this workdir (see check_campaign_way), and
    (``in_ledger``) that rows of it were claimed in the ledger, ``sent`` of its letters
    recorded sent there: the most it ever held is kept (see check_ledger_kept).

    The names of the template sets that the way of earlier versions held (here, or in an
    execution's run record) go to the ledger, which keeps them now.
    """
    deliveries = _deliveries(workdir)
    earlier = deliveries.get(campaign)
    way = dict(way)
    if in_ledger or (isinstance(earlier, dict) and earlier.get(IN_LEDGER)):
        way[IN_LEDGER] = True
    most = max(_sent_mark(earlier), sent or 0)
    if most:
        way[SENT_IN_LEDGER] = most
    sets = set(way.pop("sets", None) or ())
    # Every server the campaign went through from here, not only the last (check_other_workdirs)
    servers = [way["delivery"]] if way.get("delivery", "outbox") != "outbox" else []
    if isinstance(earlier, dict):
        sets |= set(earlier.get("sets") or ())
        servers = _servers_in(earlier) + servers
    if servers:
        way["servers"] = list(dict.fromkeys(servers))
    # The ledger file is made before the record: a record without one is a ledger lost
    with _local_ledger(workdir) as ledger:
        if sets:
            ledger.add_template_sets(campaign, sets)
    deliveries[campaign] = way
    _write_deliveries(workdir, deliveries)


def _write_deliveries(workdir: Workdir, deliveries: dict[str, Any]) -> None:
    path = workdir.deliveries
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(deliveries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _deliveries(workdir: Workdir) -> dict[str, Any]:
    path = workdir.deliveries
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8 text
        raise DeliveriesDamaged(_deliveries_damaged(path, f"not readable ({exc})")) from exc
    if not isinstance(found, dict):
        raise DeliveriesDamaged(_deliveries_damaged(path, "not the record this version writes"))
    return found


def _deliveries_damaged(path: Path, what: str) -> str:
    """Why a damaged deliveries.json stops a run, and the ways on: a backup, or the record
    started anew, which leaves the ledger (not this file) to skip the people mailed and to
    hold each file to the outbox or to mail servers (_ledger_way_changes)."""
    return (
        f"{path}: damaged, {what}. It records each file run in this workdir: how it was sent"
        " (the outbox or a mail server, its templates, attachments and sender) and how many of"
        " its letters the ledger held as sent, so that a run of it another way, or with a"
        " ledger lost or put back from an older backup, is refused rather than mailing people"
        " again or not at all. Nothing was sent. Put it back from a backup of the workdir (one"
        " taken with its ledger, ledger.sqlite3); the ledger alone cannot rebuild it: it keeps"
        " only whether each file's letters went through the outbox or a mail server (those"
        " sent by this version of mailmatrix or a later one). Without a backup, move it aside"
        " (keep it): runs go on, the ledger still skipping every email it holds as sent and"
        " refusing a file's run through a mail server after the outbox, or the other way round,"
        " but the other checks know nothing of the earlier runs until each file runs again: run"
        " each file with the settings its earlier runs used, and only if ledger.sqlite3 is the"
        " one they wrote"
    )


# In a campaign's record in deliveries.json: rows of it were claimed in the ledger (which never
# forgets one), set as a run or redrive of it ends (see _settle_campaign_way).
IN_LEDGER = "in_ledger"
# And how many of its letters the ledger held as sent, the most as any run or redrive ended: a
# sent letter stays so, and a ledger holding fewer lost some (rows deleted, an older backup).
SENT_IN_LEDGER = "sent_in_ledger"


def _sent_mark(way: Any) -> int:
    """The letters a campaign's record (``way``) says its ledger held as sent; 0 when it does
    not say (a record of an earlier version: nothing to check)."""
    return _count(way.get(SENT_IN_LEDGER) if isinstance(way, dict) else None)


def _count(value: Any) -> int:
    """``value``, a count kept in a JSON record, or 0 where it is none (absent, or damaged)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_ledger_kept(
    wd: Workdir, campaign: str | None, name: str, *, execution: str | None = None
) -> None:
    """Refuse (LedgerLost) a run of the file ``name`` (``campaign``), or the redrive of its
    ``execution``, when the workdir records runs that sent letters (deliveries.json) but its
    ledger does not know them: the file is missing or empty, or holds no entry of a campaign
    recorded as in it. The ledger is what skips the people mailed before: without their
    entries, it would mail them again; so it would when it holds fewer letters of ``campaign``
    as sent than the record says it did (rows deleted, put back from an older backup). Reads
    only, and little: the record, the ledger's size, one indexed lookup per campaign recorded
    as in it, and one indexed count of ``campaign``'s letters sent."""
    recorded = _deliveries(wd) if wd.root.is_dir() else {}
    loss = _ledger_loss(wd, recorded, campaign) if recorded else None
    if loss is not None:
        how, lost = loss
        raise LedgerLost(_ledger_lost(wd, campaign, name, execution, how, lost))


def _ledger_lost(
    wd: Workdir,
    campaign: str | None,
    name: str,
    execution: str | None,
    how: str | None,
    lost: list[str],
) -> str:
    """What check_ledger_kept says: what the ledger lost (``how``: None, the entries of the
    campaigns ``lost``), that nothing was sent, and the ways on."""
    this = campaign in lost
    if how is None:
        how = "holds no entry of " + (
            "this file's letters" if this else f"the letters of {len(lost)} file(s) run here"
        )
    subject, again = name, "run the file again"
    if execution is not None:
        subject, again = f"execution {execution}", "redrive it again"
    servers = _servers_of(wd, campaign) if campaign else []
    elsewhere = (
        f" under a new file name as well (runs from here delivered {name} through"
        f" {servers[-1]}, and a file of that name is refused through it from another workdir)"
        if servers
        else ""
    )
    said = (
        f"{subject}: the workdir {wd.root} records runs that sent letters"
        f"{' of this file' if this else ''} (deliveries.json), but its ledger"
        f" ({wd.ledger.name}) {how}: it has lost the record of the emails sent earlier"
        " (deleted or emptied, or put back from a backup older than those runs?). The ledger"
        " is what skips the people already mailed"
    )
    put_back = (
        "Put back the ledger file those runs wrote (with its -wal file, if the backup has one)"
        f" and {again}"
    )
    if this:
        doing = "its redrive" if execution is not None else "this run"
        return (
            f"{said}, so {doing} would mail them again; nothing was sent. {put_back}: rows"
            f" already sent are skipped. Only to mail everyone in {name} again on purpose, run"
            f" it in a new --workdir{elsewhere}"
        )
    return (
        f"{said}, so runs here would mail them again; nothing was sent. {put_back}. Or run"
        f" {name} in a new --workdir{elsewhere}: its own letters are not among those lost"
    )


def _ledger_loss(
    wd: Workdir, recorded: dict[str, Any], campaign: str | None
) -> tuple[str | None, list[str]] | None:
    """How the ledger lost what the runs ``recorded`` in deliveries.json sent ("is missing",
    "is empty", fewer of ``campaign``'s letters sent than recorded; None: it holds no entry
    of the campaigns returned) and which campaigns it lost; None when it lost none. A run
    records a campaign only once the ledger file is made (record_campaign_way): a record with
    no ledger file, or an empty one, is a ledger deleted or emptied since."""
    try:
        size = wd.ledger.stat().st_size
    except FileNotFoundError:
        return "is missing", list(recorded)
    if size == 0:
        return "is empty", list(recorded)
    kept = [key for key, way in recorded.items() if isinstance(way, dict) and way.get(IN_LEDGER)]
    if not kept:
        return None
    mark = _sent_mark(recorded.get(campaign)) if campaign is not None else 0
    with _local_ledger(wd, read_only=True) as ledger:
        lost = [key for key in kept if not ledger.has_entries(key)]
        if lost:
            return None, lost
        if campaign is None or not mark:
            return None
        sent = ledger.sent_count(campaign)
    if sent >= mark:
        return None
    return f"holds {sent} of this file's letters as sent, fewer than the {mark} it held", [campaign]


def prepare(workdir: Workdir, env: dict[str, str]) -> None:
    """Create the workdir and record the settings the handlers will run with.

    A workdir made here is open to its owner only: its files (outbox, reports, ledger,
    histories) hold the recipients' names, addresses and letters. One that exists is left as
    its owner made it.
    """
    _make_root(workdir)
    for folder in (workdir.bucket, workdir.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    workdir.scratch.mkdir(mode=0o700, exist_ok=True)
    workdir.scratch.chmod(0o700)  # one made before by hand may be open to others
    _write_private(workdir.settings_file, kept_settings(env))


def kept_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as the workdir keeps it: the SMTP URL without its password (which would be in
    every backup of the workdir); a redrive takes it from MAILMATRIX_SMTP_PASSWORD."""
    mailer = env.get("MAILMATRIX_MAILER", "")
    if not mailer.startswith("smtp"):
        return dict(env)
    return {**env, "MAILMATRIX_MAILER": without_password(mailer)}


def _make_root(workdir: Workdir) -> None:
    """Make the workdir's folder; one of its parents that is a file is a bad --workdir."""
    blocked = next((p for p in workdir.root.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise BadWorkdir(
            f"workdir {workdir.root}: {blocked} is a file, not a folder: give a --workdir"
            " whose parent folders are folders (or do not exist yet)"
        )
    workdir.root.parent.mkdir(parents=True, exist_ok=True)
    workdir.root.mkdir(mode=0o700, exist_ok=True)


def check_workdir_writable(workdir: Workdir) -> None:
    """Refuse (WorkdirNotWritable), before anything is sent, a workdir whose folder takes no
    new file or whose ledger cannot be written (its permissions, an immutable flag, a
    read-only file system): the run would fail at its first write, in words of SQLite's."""
    try:
        _make_root(workdir)
        fd, probe = tempfile.mkstemp(prefix=".writable-", dir=workdir.root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WorkdirNotWritable(
            f"cannot write the workdir {workdir.root}: no file can be made in that folder:"
            f" {write_fault(exc)}. The ledger, the outbox and the execution records are"
            " written there, so nothing was sent. Make the folder writable (chmod u+w; chattr"
            " -i, as root, for an immutable one), then run the command again"
        ) from exc
    problem = _ledger_write_problem(workdir.ledger) if workdir.ledger.is_file() else None
    if problem is not None:
        raise WorkdirNotWritable(
            f"cannot write the ledger {workdir.ledger} ({problem}): the file, or its -wal or"
            " -shm file beside it, is read-only (its permissions, an immutable flag, a"
            " read-only file system). The ledger records each email as it is sent, so nothing"
            " was sent. Make it writable (chmod u+w; chattr -i, as root, for an immutable"
            " file), then run the command again: rows already sent are skipped"
        )


# How SQLite answers a write to a file it may not write, or open for writing.
_UNWRITABLE_CODES = frozenset(
    {sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
)


def _ledger_write_problem(path: Path) -> str | None:
    """Why the ledger at ``path`` cannot be written, in SQLite's words (None: it can, or it
    fails otherwise, as the run then says): a write, rolled back, meets what a run's first
    write would."""
    try:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TABLE mailmatrix_write_check (x)")
            finally:
                db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code
        return str(exc) if code in _UNWRITABLE_CODES else None
    return None


def _write_private(path: Path, env: dict[str, str]) -> None:
    """Write settings readable by the owner only: they may hold an SMTP password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(env, indent=2) + "\n")
    os.chmod(path, 0o600)


def start_engine(workdir: Workdir, registry: Any, sleep: Callable[[float], None] | None) -> Any:
    """An engine storing its executions in the workdir (``sleep`` paces Retry and Wait)."""
    from mailmatrix.engine import Engine

    if sleep is None:
        return Engine(workdir.executions, registry)
    return Engine(workdir.executions, registry, sleep=sleep)


@private_files()
def run_campaign(
    csv_path: Path,
    *,
    workdir: Path,
    templates_dir: Path | None = None,
    attachments_dir: Path | None = None,
    mailer: str | None = None,
    sender: str | None = None,
    send_rate: float | None = None,
    faults: str | None = None,
    max_concurrency: int | None = None,
    batch_size: int | None = None,
    listener: Any = None,
    echo: Callable[[str, Notification], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    retry_failed: bool = False,
    retry_unknown: bool = False,
    send_again_from: Collection[str] = (),
    corrected: Collection[int] = (),
    before_sending: Callable[[], None] | None = None,
) -> Any:
    """Upload ``csv_path`` and run the state machine on it to the end; return the record.

    ``retry_failed``: first give back the rows of this campaign that failed for good in
    earlier runs (the operator fixed the cause), so this run sends them again;
    ``retry_unknown``: those failed as OutcomeUnknown (the operator checked that they did
    not arrive). ``send_again_from``: the files (names) whose letters this run sends again
    to the addresses they went to; ``corrected``: the rows whose address was corrected,
    whose letters go to it though their files went to the earlier address (both recorded in
    the ledger as the file is validated; see jobs.choice_metadata). ``before_sending``: a
    last check of the caller's, once the file's way of delivery is checked and before
    anything is written (`run` refuses a file with rows in doubt there): it raises to refuse.
    """
    check_upload_name(csv_path)  # before anything is written
    open_recipients(csv_path).close()  # no such file, or no file (a pipe): before any is made
    wd = Workdir(Path(workdir))
    sender = sender_of(sender)
    templates_dir = templates_dir or DEFAULT_TEMPLATES
    attachments_dir = attachments_dir or csv_path.parent / "attachments"
    if not templates_dir.is_dir():
        raise ConfigurationError(f"templates: {templates_dir}: no such folder")
    if not any(path.is_file() for path in templates_dir.rglob("*")):
        raise ConfigurationError(f"templates: {templates_dir}: the folder holds no template files")
    if not attachments_dir.is_dir():
        need = attachment_need(csv_path, templates_dir)
        if need:
            raise ConfigurationError(attachments_missing(attachments_dir, need))
    env = local_settings(
        wd,
        templates_dir=templates_dir,
        attachments_dir=attachments_dir,
        mailer=mailer,
        sender=sender,
        send_rate=send_rate,
        faults=faults,
        max_concurrency=max_concurrency,
        batch_size=batch_size,
    )
    campaign = campaign_of_file(csv_path)
    way = campaign_way(env["MAILMATRIX_MAILER"], templates_dir, attachments_dir, sender)
    if mailer and delivery_of(mailer) != "outbox":
        # A rerun that forgot --templates is told the folder its earlier runs used, not to
        # make the bundled demo's letters its own (the way is checked again below, locked).
        if _templates_changed(wd, campaign, way):
            check_campaign_way(wd, campaign, csv_path.name, way)
        check_real_recipients(csv_path, mailer, templates_dir, sender)
    check_ledger_kept(wd, campaign, csv_path.name)
    check_name_alike(wd, csv_path)
    asked = (("--retry-failed", retry_failed), ("--retry-unknown", retry_unknown))
    retries = [flag for flag, given in asked if given]
    if retries:
        _check_earlier_run(wd, campaign, csv_path.name, retries)
    check_workdir_writable(wd)
    with _known_workdirs(way, wd) as known, _ways_locked(wd):
        check_campaign_way(wd, campaign, csv_path.name, way)
        if before_sending is not None:
            before_sending()
        first = campaign not in _deliveries(wd)
        # Before anything is sent: a run killed while sending (SIGKILL, a reboot) never gets
        # to its end, and the next run of the file must still be held to its way.
        _hold_to_way(known, wd, campaign, csv_path.name, way)
        # with the names its earlier runs were given: a rerun sends their letters again too
        again = _sent_again_here(wd, campaign, send_again_from)
        others = other_ledgers(wd, known, _servers_in(way), again)
    if others:
        env["MAILMATRIX_OTHER_LEDGERS"] = others
    try:
        if _servers_in(way):  # an outbox trial is only warned (its validation's warnings)
            check_other_ledgers(others, csv_path.name)
        prepare(wd, env)
        with _local_ledger(wd) as ledger:
            halt = ledger.halted(campaign)
            if halt is not None and halt.code in lifted_halts(faults):
                ledger.clear_halt(campaign)
            send_again_from = sent_again(ledger, campaign, send_again_from)
        # As `aws send` asks it: ValidateRecipients gives back the failed rows the file holds.
        metadata = retry_metadata(retry_failed, retry_unknown)
        metadata.update(choice_metadata(send_again_from, corrected))
        _, event = upload(wd, csv_path, metadata=metadata)
        stopper = _HaltOnStop(listener, wd, campaign)
        # whole: a redrive may run from another folder; and the choices, which its summary
        # names as the run's did
        ran = {"path": str(csv_path.resolve()), "way": way}
        if send_again_from or corrected:
            ran["choices"] = {
                "send_again_from": list(dict.fromkeys(send_again_from)),
                "corrected_address": sorted(set(corrected)),
            }
        record = execute(wd, event, env, listener=stopper, echo=echo, sleep=sleep, ran=ran)
    except BaseException as error:
        _note_not_kept(error, _settle_campaign_way(wd, campaign, way, first=first))
        raise
    return _with_not_kept(record, _settle_campaign_way(wd, campaign, way, first=first))


def is_bundled(templates_dir: Path) -> bool:
    """Whether ``templates_dir`` is the bundled templates folder: the demo company's letters."""
    return templates_dir.resolve() == DEFAULT_TEMPLATES.resolve()


def is_demo(templates_dir: Path) -> bool:
    """Whether ``templates_dir`` holds the demo company's letters: any folder whose manifest
    says ``demo: true`` (the bundled one, and a copy of it, until that line is deleted), and
    the bundled folder while its manifest's sender is still at a domain reserved for examples
    (the demo's is talent@example.com), marked or not."""
    try:
        text = (templates_dir / MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return is_bundled(templates_dir)  # validation says what is wrong; the guard stays on
    if marks_demo(text):
        return True
    if not is_bundled(templates_dir):
        return False
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError:
        return True
    sender = manifest.get("sender") if isinstance(manifest, dict) else None
    _, address = email.utils.parseaddr(str(sender or ""))
    return not address or is_reserved_domain(address.rpartition("@")[2])


def check_real_recipients(
    csv_path: Path, mailer: str, templates_dir: Path, sender: str | None
) -> None:
    """Refuse to deliver through the SMTP server ``mailer``, when the file has a recipient
    outside the domains reserved for examples, the demo templates (DemoTemplates: see is_demo;
    run without --templates, a real campaign would mail its people the demo company's
    letters), or letters From a placeholder (PlaceholderSender: ``sender``, else the
    manifest's, at one of those domains, as a copy of the demo's templates keeps it), or
    letters whose manifest's constants write an address at one of those domains
    (PlaceholderConstant: the demo's contact_email, kept in a copy). The
    demo's own addresses (example.com, .example) may go through a local mail catcher. A file
    intake cannot read, or a sender that is not one address, is left to validation, which
    refuses it."""
    demo = is_demo(templates_dir)
    origin = "--sender or MAILMATRIX_SENDER"
    own = "Give your own From address with --sender (or MAILMATRIX_SENDER)"
    if not sender:
        manifest = templates_dir / MANIFEST
        sender, origin = manifest_sender(templates_dir), f"'sender' in {manifest}"
        own = f"Set your own From address as 'sender' in {manifest}, or give it with --sender"
    placeholder = bool(sender and placeholder_sender(sender))
    constant = placeholder_constant(manifest_context(templates_dir))
    if not demo and not placeholder and constant is None:
        return
    try:
        with open_recipients(csv_path) as stream:
            real = first_real(recipient_addresses(stream, source=csv_path.name))
    except MailMatrixError:
        return
    if real is None:
        return
    via = f"--smtp {redacted(mailer)}"
    if demo:
        raise demo_templates_refusal(templates_dir, real, name=csv_path.name, via=via)
    if placeholder:
        assert sender is not None
        raise placeholder_sender_refusal(
            sender,
            origin,
            real,
            name=csv_path.name,
            via=via,
            own=f"{own}, then run the file again",
        )
    assert constant is not None
    raise placeholder_constant_refusal(
        constant,
        real,
        name=csv_path.name,
        via=via,
        manifest=str(templates_dir / MANIFEST),
        then="then run the file again",
    )


def demo_templates_refusal(
    templates_dir: Path, found: tuple[int, str, str], *, name: str, via: str
) -> DemoTemplates:
    """The refusal of a run that would deliver the demo templates (``templates_dir``: see
    is_demo) through the mail server ``via`` to ``found``, the (row, column, address) of file
    ``name`` outside the domains reserved for examples."""
    row, column, address = found
    which = "the bundled demo templates"
    if not is_bundled(templates_dir):
        which = f"a copy of {which}, its {MANIFEST} still saying {DEMO_KEY}: true"
    return DemoTemplates(
        f"templates: the letters would be made from {which}"
        f" ({templates_dir}: the demo company's text and its From), and {via}"
        f" would deliver them to real people ({name} row {row},"
        f" {column} {mask(address)}); nothing was sent. Make the letters and the manifest's"
        f" sender your own in a copy of that folder, delete the line {DEMO_KEY}: true from its"
        f" {MANIFEST}, and pass it with --templates DIR (without --smtp, the demo goes to the"
        " local outbox; through SMTP, only to addresses at domains reserved for examples:"
        f" {RESERVED_SAID})"
    )


def check_name_alike(wd: Workdir, csv_path: Path) -> None:
    """Refuse (NameLikeAnother) a file whose name is alike (name_fold) that of a file run
    in ``wd`` before, as Validate would: the ledger's record of names (Ledger.record_name),
    else, for runs from before it, the files the local bucket holds under incoming/. Reads
    only."""
    source = Source(LOCAL_BUCKET, incoming_key(csv_path), "", None)
    campaign = campaign_id_for(source)
    found = None
    if wd.has_ledger():
        with _local_ledger(wd, read_only=True) as ledger:
            found = ledger.named_alike(campaign_name(source))
    if found is None:
        found = _incoming_alike(wd, csv_path.name)
    if found is not None and found.campaign != campaign:
        raise name_like_another(source, found, stack="")


def _incoming_alike(wd: Workdir, name: str) -> CampaignName | None:
    """A file under the local bucket's incoming/ whose name is alike ``name`` (name_fold)
    and whose campaign ran in ``wd`` (deliveries.json), or None."""
    folder = wd.bucket / "incoming"
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except OSError:  # no runs here yet
        return None
    folded, ran = name_fold(name), _deliveries(wd)
    for other in names:
        if name_fold(other) != folded:
            continue
        campaign = campaign_of_file(Path(other))
        if campaign in ran:
            return CampaignName(campaign, f"{LOCAL_BUCKET}/{incoming_key(Path(other))}")
    return None


def _check_earlier_run(wd: Workdir, campaign: str, name: str, retries: list[str]) -> None:
    """Refuse a retry of a campaign's failed rows (``retries``: its flags) in a workdir where
    the campaign never ran: it would send every row. Refused before anything is made there
    (a workdir that is not there is left so)."""
    if _ledger_holds(wd, campaign):
        return
    raise NoEarlierRun(
        f"{name}: no earlier run of this file in the workdir {wd.root}, so"
        f" {' and '.join(retries)} would send every row: give the --workdir of the"
        " runs whose failed rows should go again (the command a run prints has it)"
    )


def _settle_campaign_way(wd: Workdir, campaign: str, way: dict, *, first: bool) -> str | None:
    """After a run: keep its way if any row of the campaign was ever claimed (again: a run
    beside it may have ended meanwhile), forget it if this first run claimed none. When the
    ledger cannot tell (the disk, say), the way stays recorded: the safe side. So does the
    known workdirs' record of its delivery (see check_other_workdirs).

    The workdir's own record is kept whether or not the known workdirs' record can be: when
    that one cannot take the letters the ledger holds as sent, why (and what it means) is
    returned, for the run to say; None otherwise."""
    here = str(wd.root.resolve())
    update: Callable[[], None] | None = None
    unkept: BaseException | None = None
    with contextlib.ExitStack() as held:
        try:
            known = held.enter_context(_known_workdirs(way, wd))
        except (MailMatrixError, OSError) as exc:  # broken since the run began
            known, unkept = None, exc
        sent = 0
        with (
            contextlib.suppress(MailMatrixError, OSError),
            _ways_locked(wd),
            _local_ledger(wd) as ledger,
        ):
            if ledger.has_entries(campaign):
                sent = ledger.sent_count(campaign)
                record_campaign_way(wd, campaign, way, in_ledger=True, sent=sent)
                if known is not None:
                    update = functools.partial(known.mark_sent, here, campaign, sent)
            elif first:
                forget_campaign_way(wd, campaign)
                if known is not None:
                    update = functools.partial(known.forget, here, campaign, way["delivery"])
        try:
            if update is not None:
                update()
        except (MailMatrixError, OSError) as exc:
            unkept = exc
    # Only letters sent need the mark: a record not told that none were stays on the safe side
    return _not_kept_after(unkept) if unkept is not None and sent else None


# In an execution record run_campaign or redrive returns: why the record of known workdirs
# could not take what the run sent (see _settle_campaign_way).
RECORD_NOT_KEPT = "record_not_kept"


def _with_not_kept(record: Any, unkept: str | None) -> Any:
    """``record``, saying ``unkept`` (RECORD_NOT_KEPT) when there is that to say."""
    if unkept is not None:
        record[RECORD_NOT_KEPT] = unkept
    return record


def _note_not_kept(error: BaseException, unkept: str | None) -> None:
    """Add ``unkept`` to what ``error``, raised by a run as it sent, says (its notes)."""
    if unkept is not None:
        error.add_note(unkept)


def _not_kept_after(exc: BaseException) -> str:
    """What a run that sent letters says when the record of known workdirs could not take
    them as it ended (``exc``): why, what it means, and how to bring it up to date."""
    from mailmatrix.cli.defaults import state_dir

    try:
        path: Path | str = state_dir() / KNOWN_WORKDIRS
    except MailMatrixError:
        path = KNOWN_WORKDIRS
    cause = exc.__cause__ if isinstance(exc, RecordNotWritable) else exc
    if isinstance(exc, KnownWorkdirsDamaged):
        why = "it can no longer be read (damaged)"
        fix = "A run of the file through the server says what to do about it"
    elif isinstance(cause, OSError):
        why = write_fault(cause)
        fix = (
            "Make that folder writable (chmod u+w; chattr -i, as root, for an immutable one),"
            " then run the file again as this run did: it sends nothing again (its rows are"
            " skipped) and brings the record up to date"
        )
    else:
        why, fix = str(exc), "Run the file again as this run did, once that is fixed"
    return (
        f"{path}: the record of known workdirs could not be brought up to date as this run"
        f" ended: {why}. The letters were sent, as the summary says, and the workdir keeps"
        " its own record of them; but the record outside it does not know how many of this"
        " file's letters the workdir's ledger now holds as sent: if the workdir is put back"
        " from a backup taken before this run, a run there is not refused, and mails again"
        f" the people mailed since the backup. {fix}"
    )


def attachments_missing(attachments_dir: Path, need: str) -> str:
    """Why a file's rows cannot get their attachments: no folder where it was looked for."""
    return (
        f"no attachments folder at {attachments_dir}, and {need}; "
        "give the folder of the files with --attachments"
    )


def header_warnings(csv_path: Path, templates_dir: Path) -> list[str]:
    """What validation will warn of the header of ``csv_path`` with the templates in
    ``templates_dir`` (see recipients.copy_column_warnings), said before the run sends;
    none when the file or the templates are unusable: validation then says what is wrong."""
    templates = LocalStorage(templates_dir, mounts={"templates/": templates_dir})
    try:
        catalog = load_templates(templates, "templates/")
        with open_recipients(csv_path) as stream:
            columns = read_columns(stream, source=csv_path.name)
    except (MailMatrixError, OSError):
        return []
    return copy_column_warnings(columns, catalog)


def attachment_need(csv_path: Path, templates_dir: Path) -> str | None:
    """Why the rows of ``csv_path`` may attach files, as far as its header and the templates
    tell (see Catalog.attachment_need); None when they cannot, or when the file or the
    templates are unusable: validation then says what is wrong with them."""
    templates = LocalStorage(templates_dir, mounts={"templates/": templates_dir})
    try:
        catalog = load_templates(templates, "templates/")
        with open_recipients(csv_path) as stream:
            columns = read_columns(stream, source=csv_path.name)
    except MailMatrixError:
        return None
    return catalog.attachment_need(columns)


def lifted_halts(faults: str | None) -> tuple[str, ...]:
    """The codes of the campaign halts that a run of its file lifts as it starts (run with
    the drill ``faults``): the operator's stop, as they run it again to have it sent, the
    engine's when it could not write its records (room was made), and a drill's used-up
    quota unless the run drills too (the drill's, not the account's)."""
    stops = (STOPPED_BY_OPERATOR, RECORDS_NOT_WRITTEN)
    return stops if faults else (*stops, DRILL_QUOTA_CODE)


class RunForecast:
    """What a run of a file in a workdir, without --faults or --retry-*, would do with the
    rows validation passes on, as the ledger of the file's earlier runs there tells: skip
    those sent, report again those failed for good, fail those whose address an earlier run
    sent another set's letter (``other_letter``, as a claim checks ``sets``, the templates'
    set names) or whose own file an earlier run sent another recipient as theirs
    (``attachment_of_another``), or send nothing at all while a halt holds the campaign
    (send_batch's check, before any row).

    ``see`` each row passed on; ``counts`` leaves out the rows withdrawn after. ``sets`` are
    the template sets of the run's templates (a claim checks the address's letters of the
    others).
    """

    STATES = ("sent", "failed", "unknown", "other_letter", "attachment_of_another")

    def __init__(
        self,
        workdir: Path,
        csv_path: Path,
        *,
        sets: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        send_again_from: Collection[str] = (),
        corrected: Collection[int] = (),
        known: RecordAsRead | None = None,
    ) -> None:
        wd = Workdir(Path(workdir))
        self.campaign = campaign_of_file(csv_path)
        self._known = known  # the record of known workdirs as read (None: read when asked)
        self._send_again_from = tuple(send_again_from)  # as `run --send-again-from` names them
        self._corrected = frozenset(corrected)  # as `run --corrected-address` names them
        # row numbers, 8 bytes each: a rerun of a million sent rows holds them all
        self._rows = {state: array.array("q") for state in self.STATES}
        self._settled: SettledKeys | None = None
        # When the templates have several sets (a claim looks for the address's letters of
        # the others then only), the keys of the letters not recorded sent that may have gone
        # out all the same (few): with those recorded sent (settled, not failed), the letters
        # that may have gone out.
        self._sets = tuple(sets) if len(sets) > 1 else ()
        self._unsent_gone = ShortKeys(())
        self._failed: dict[str, bool] = {}  # key -> failed as OutcomeUnknown (few)
        self._owners: dict[str, str] = {}  # file -> its owner's recipient, letter gone out
        self.owners: list[FileOwner] = []  # the same, whole, for intake (earlier_files)
        self.halt: Halt | None = None
        self.halt_age = 0.0
        self.hold_left = 0.0
        self._workdir = wd
        self._ledger: SqliteLedger | None = None  # open while intake asks it (sent_files)
        # The other workdirs' ledgers (earlier_sets), and those that could not be read there
        self._elsewhere: LedgersElsewhere | None = None
        self.unchecked: list[str] = []
        self._any_server = False  # the other workdirs' letters through any server were asked
        # Of the rows failed here ("failed", "unknown"), those whose letter of the set went, or
        # may have, under another file since: (row, that file, whether only may have). A
        # retry's claim holds them back as sent there.
        self._went_under: dict[str, list[tuple[int, str, bool]]] = {"failed": [], "unknown": []}
        if not wd.has_ledger():  # no run of any file here claimed a row
            return
        with _local_ledger(wd, read_only=True) as ledger:
            self._send_again_from = sent_again(ledger, self.campaign, self._send_again_from)
            self._settled = SettledKeys(ledger, self.campaign)
            for unknown in (False, True):
                keys = ledger.failed_keys(self.campaign, unknown=unknown)
                self._failed.update(dict.fromkeys(keys, unknown))
            if self._sets:
                self._unsent_gone = ShortKeys(ledger.unsent_gone_keys(self.campaign))
            self.owners = list(ledger.file_owners(self.campaign))
            self._owners = {owner.attachment: owner.recipient for owner in self.owners}
            halt = ledger.halted(self.campaign)
        if halt is not None and halt.code not in lifted_halts(None):
            self.halt = halt
            self.halt_age = max(0.0, clock() - halt.at)
            self.hold_left = max(0.0, RetryPolicy().halt_hold_s - self.halt_age)

    def earlier_files(self, attachments: AttachmentIndex) -> EarlierFiles:
        """The files earlier runs sent as their recipients' own that ``attachments`` still
        holds, for intake to hold to them (as validate_job does), from the ledger's one read."""
        return EarlierFiles(
            self.owners, attachments, functools.partial(recipient_key, self.campaign)
        )

    def sent_files(self, attachments: AttachmentIndex, contents: Contents) -> SentFiles | None:
        """The files letters of every campaign here carried as their recipients' own, for
        intake to refuse copies of them to other people (as validate_job does); the ledger
        stays open for intake's questions until close(). None: no run here sent a letter."""
        ledger = self._open_ledger()
        if ledger is None:
            return None
        return SentFiles(
            ledger,
            attachments,
            contents,
            campaign=self.campaign,
            recipient=recipient_key,
            skipped=self._skipped,
            send_again_from=self._send_again_from,
            doubtful=True,  # the run's claim holds such rows back: validate says so now
        )

    def earlier_recipients(self) -> EarlierRecipients | None:
        """The recipients earlier runs here mailed, asked for the addresses in rows' Cc and
        Bcc (as validate_job does); the ledger stays open until close(). None: no ledger."""
        ledger = self._open_ledger()
        if ledger is None:
            return None
        return EarlierRecipients(
            ledger, campaign=self.campaign, key=idempotency_key, skipped=self._skipped
        )

    def earlier_sets(self) -> EarlierSets | None:
        """The letters other files here, or in other workdirs through a mail server, sent to
        an address in a set, for intake to hold back a row whose set went to its address so
        (as validate_job does; other ledgers not read are in ``unchecked``); the ledgers stay
        open until close(). None: no ledger to ask."""
        ledger: SetLedger | None = self._open_ledger()
        try:  # as the file's next run through its server: its earlier runs', if they had one
            servers = _servers_of(self._workdir, self.campaign)
        except DeliveriesDamaged:  # said as `run` refuses the file for it
            servers = []
        self._any_server = not servers
        others = other_ledgers(self._workdir, self._known, servers, self._send_again_from)
        if others:
            self._elsewhere = LedgersElsewhere(others)
            self.unchecked = self._elsewhere.unchecked
            if self._elsewhere:
                ledger = self._elsewhere.around(ledger)
        if ledger is None:
            return None
        return EarlierSets(
            ledger,
            campaign=self.campaign,
            person=letter_set,
            skipped=self._skipped,
            send_again_from=self._send_again_from,
            doubtful=True,  # the run's claim holds such rows back: validate says so now
        )

    def notes(self) -> list[str]:
        """What the forecast says of how it counted (after intake): the rows it holds for
        letters other workdirs sent were counted through any mail server, when the file never
        ran through one here (validate takes no --smtp; a run holds only those of its own)."""
        if not (self._any_server and self._elsewhere is not None and self._elsewhere.found_any):
            return []
        return [
            "the rows held back for letters other workdirs sent count their letters through any"
            " mail server, this file having never run through one here: `run --smtp URL` holds"
            " back only the letters that went through that server (a rehearsal through a mail"
            " catcher holds back none of them)"
        ]

    def _open_ledger(self) -> SqliteLedger | None:
        """The workdir's ledger, opened read-only once for intake's questions; None: none."""
        if self._ledger is None and self._workdir.has_ledger():
            self._ledger = SqliteLedger(str(self._workdir.ledger), read_only=True)
        return self._ledger

    def _skipped(self, email: str, template: str) -> bool:
        """Whether a run skips the letter of ``email`` and ``template`` (settled)."""
        key = idempotency_key(self.campaign, email, template)
        return self._settled is not None and key in self._settled

    def close(self) -> None:
        """Close the ledgers sent_files and earlier_sets opened, if they did."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._elsewhere is not None:
            self._elsewhere.close()

    def see(self, row: dict[str, Any]) -> None:
        """A row validation passed on (its email and template set make its ledger key)."""
        if self._settled is None:
            return
        state = self._state(row)
        if state is not None:
            self._rows[state].append(int(row["row"]))
        if state in self._went_under:
            letter = self._letter_elsewhere(row)
            if letter is not None:
                doubtful = letter.state != SENT
                went = (int(row["row"]), letter.source or letter.campaign, doubtful)
                self._went_under[state].append(went)

    def _letter_elsewhere(self, row: dict[str, Any]) -> SentCopy | None:
        """The letter of the row's set that went, or may have, to its address under another
        file (not one --send-again-from names), as a retry's claim finds it; None: none."""
        ledger = self._open_ledger()
        if ledger is None:
            return None
        person = letter_set(row["email"], row["template"])
        people = {person: str(row["template"])}
        return ledger.letters_of_sets(self.campaign, people, self._send_again_from).get(person)

    def went_under(
        self, state: str, withdrawn: Collection[int] = ()
    ) -> list[tuple[int, str, bool]]:
        """The rows a run would report failed again as ``state`` ("failed", "unknown") whose
        letters went, or may have (True), under another file since: a retry holds them back
        (row, that file, whether only may have), leaving out those ``withdrawn``."""
        return [went for went in self._went_under.get(state, []) if went[0] not in withdrawn]

    def _state(self, row: dict[str, Any]) -> str | None:
        """What a claim of ``row`` would answer, in the claim's order (None: it sends)."""
        assert self._settled is not None
        key = idempotency_key(self.campaign, row["email"], row["template"])
        if key in self._settled:
            failed = self._failed.get(key)
            return "sent" if failed is None else "unknown" if failed else "failed"
        if self._sets and self._other_letter_gone(row):
            return "other_letter"
        if row.get("own_attachment") and row.get("attachment"):
            if int(row["row"]) in self._corrected:
                return None  # sent to the corrected address, as the operator asked
            owner = self._owners.get(str(row["attachment"]))
            if owner is not None and owner != recipient_key(self.campaign, row["email"]):
                return "attachment_of_another"
        return None

    def _other_letter_gone(self, row: dict[str, Any]) -> bool:
        """Whether a letter of another set may have gone to the row's address (the claim of
        a row not settled refuses it then: OtherLetterSent)."""
        return any(
            self._gone(idempotency_key(self.campaign, row["email"], name))
            for name in self._sets
            if name != row["template"]
        )

    def _gone(self, key: str) -> bool:
        """Whether the letter ``key`` may have gone out: recorded sent, or not and doubtful."""
        settled = self._settled is not None and key in self._settled
        return (settled and key not in self._failed) or key in self._unsent_gone

    def rows(self, state: str, withdrawn: Collection[int] = (), limit: int = 20) -> list[int]:
        """The first ``limit`` rows (file row numbers) a run would answer with ``state``,
        leaving out those ``withdrawn``."""
        kept = (row for row in self._rows[state] if row not in withdrawn)
        return sorted(itertools.islice(kept, limit))

    def counts(self, withdrawn: Collection[int] = ()) -> dict[str, int]:
        """The rows a run would skip as ``sent``, report failed again as ``failed`` for good
        and as ``unknown`` (OutcomeUnknown), or fail as ``other_letter`` (OtherLetterSent) and
        ``attachment_of_another`` (AttachmentOfAnother), leaving out those ``withdrawn``."""
        return {
            state: sum(1 for row in rows if row not in withdrawn) if withdrawn else len(rows)
            for state, rows in self._rows.items()
        }


class _HaltOnStop:
    """Passes a listener's calls on; when the run is stopped (Ctrl-C, SIGTERM, SIGHUP), records
    a halt of the campaign, which the batches running look for between rows (every 0.25 s):
    they stop after the email they are on instead of sending the rest of their batch. The next
    run or redrive of the campaign lifts it."""

    def __init__(self, inner: Any, wd: Workdir, campaign: str) -> None:
        self.inner, self.wd, self.campaign = inner, wd, campaign

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        if self.inner is not None and hasattr(self.inner, "on_event"):
            self.inner.on_event(execution_id, event)

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        if self.inner is not None and hasattr(self.inner, "on_map_run"):
            self.inner.on_map_run(map_run)

    def on_stopping(self, execution_id: str, reason: str | None = None) -> None:
        code, why = STOPPED_BY_OPERATOR, "the run was stopped (Ctrl-C, SIGTERM or SIGHUP)"
        if reason is not None:  # the engine's: it cannot write the execution's records
            code, why = RECORDS_NOT_WRITTEN, f"the run stopped: {reason}"
        with _local_ledger(self.wd) as ledger:
            ledger.halt(
                self.campaign,
                code=code,
                reason=f"{why}; a redrive sends the rest",
                attempt="operator",
            )
        log.info("stopping: batches end after the email they are on")


@contextlib.contextmanager
def _local_ledger(wd: Workdir, *, read_only: bool = False) -> Iterator[SqliteLedger]:
    """The workdir's ledger (a local run's is always SQLite: local_settings); ``read_only``
    for what only looks (`validate`, `show`): it writes nothing, there or beside it."""
    ledger = SqliteLedger(str(wd.ledger), read_only=read_only)
    try:
        yield ledger
    finally:
        ledger.close()


def execute(
    wd: Workdir,
    event: dict[str, Any],
    env: dict[str, str],
    *,
    listener: Any = None,
    echo: Callable[[str, Notification], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    ran: dict[str, Any] | None = None,
) -> Any:
    """Start an execution of the definition for ``event`` with the handlers' ``env``
    (``ran``: the file it runs and the campaign's way, kept for its redrives)."""
    template = load_sam_template()
    # The execution keeps its own settings: a redrive delivers as it did, whatever runs of
    # other files in the workdir have saved since.
    execution_id = str(uuid.uuid4())
    _write_private(wd.run_settings(execution_id), kept_settings(env))
    if ran is not None:
        _write_private(wd.run_source(execution_id), ran)
    with (
        environment(env),
        engine_for(wd, env, echo=echo, sleep=sleep, template=template) as engine,
    ):
        record = engine.start(
            DEFINITION.read_text(encoding="utf-8"),
            event,
            name=execution_id,
            substitutions=sam_substitutions(template),
            listener=listener,
        )
        record["history"] = engine.history(record["name"])
        _explain(engine, record)
    _report_doubts(wd, record)
    alert_if_failed(wd, record, echo=echo)
    return record


def _check_password_given(env: Mapping[str, str]) -> None:
    """Refuse (ConfigurationError, nothing sent) a redrive through a server that takes a login
    while MAILMATRIX_SMTP_PASSWORD is not set: the workdir keeps its URL without the password."""
    mailer = env.get("MAILMATRIX_MAILER", "")
    parts = urlsplit(mailer) if mailer.startswith("smtp") else None
    if parts is None or not parts.username or parts.password or PASSWORD_VARIABLE in os.environ:
        return
    raise ConfigurationError(
        f"the execution delivers through {mailer}, which takes a login, and the workdir keeps"
        f" no password: nothing was sent. Set {PASSWORD_VARIABLE} to the password and redrive"
        f" again, or run the file again with --smtp (a run skips the rows already sent)"
    )


@private_files()
def redrive(
    workdir: Path,
    execution_id: str,
    *,
    listener: Any = None,
    echo: Any = None,
    sleep: Callable[[float], None] | None = None,
) -> Any:
    """Redrive a failed execution in ``workdir`` with the settings it ran with."""
    wd = Workdir(Path(workdir))
    env = settings_for(wd, execution_id)
    _check_password_given(env)
    _check_own_workdir(wd, env, execution_id)
    check_workdir_writable(wd)
    ran = _ran(wd, execution_id)
    source = _source_of(ran)
    if isinstance(ran.get("way"), dict):  # its validation, if redriven, asks them as they are now
        names = run_choices(wd, execution_id)[0]
        env["MAILMATRIX_OTHER_LEDGERS"] = other_ledgers(wd, None, _servers_in(ran["way"]), names)
        if _servers_in(ran["way"]):
            name = source.name if source else "the run's file"
            check_other_ledgers(env["MAILMATRIX_OTHER_LEDGERS"], name)
    with environment(env), engine_for(wd, env, echo=echo, sleep=sleep) as engine:
        history = engine.history(execution_id)
        _check_same_file(wd, execution_id, _validated_upload(history), source)
        campaign = campaign_of(history) or (campaign_of_file(source) if source else None)
        name = source.name if source else "its file"
        check_ledger_kept(wd, campaign, name, execution=execution_id)
        way, first = ran.get("way"), False
        if campaign and isinstance(way, dict):
            # Held to its file's way like a run, and recorded before it sends: it may be the
            # first of the file to send (its run stopped before any row).
            with _known_workdirs(way, wd) as known, _ways_locked(wd):
                _check_redrive_way(wd, campaign, execution_id, name, way)
                first = campaign not in _deliveries(wd)
                _hold_to_way(known, wd, campaign, name, way)
        try:
            if campaign:
                # The operator redrives because they fixed the cause: lift an account halt.
                with contextlib.closing(ledger_from(Settings.from_env())) as ledger:
                    ledger.clear_halt(campaign)
                listener = _HaltOnStop(listener, wd, campaign)
            record = engine.redrive(execution_id, listener=listener)
        except BaseException as error:
            if campaign and isinstance(way, dict):
                _note_not_kept(error, _settle_campaign_way(wd, campaign, way, first=first))
            raise
        if campaign and isinstance(way, dict):
            _with_not_kept(record, _settle_campaign_way(wd, campaign, way, first=first))
        record["history"] = engine.history(record["name"])
        _explain(engine, record)
    _report_doubts(wd, record)
    alert_if_failed(wd, record, echo=echo)
    return record


def _check_redrive_way(
    wd: Workdir, campaign: str, execution_id: str, name: str, way: dict[str, Any]
) -> None:
    """Refuse to redrive an execution whose way (delivery, templates, attachments, sender)
    the file's later runs here changed: its rows would get other letters, or go another way,
    than the campaign's. Says which execution superseded it, and what to do instead."""
    said = campaign_way_change(wd, campaign, way)
    if said is None:
        return
    latest = None
    if wd.ledger.is_file():
        with _local_ledger(wd) as ledger:
            latest = ledger.latest_upload(campaign)
    newer = latest.execution.rsplit(":", 1)[-1] if latest is not None else ""
    if newer and newer != execution_id:
        why = (
            f"a newer run of {name} (execution {newer}) superseded it, with other settings than"
            f" this execution's: that run {said}"
        )
        instead = (
            f"See that execution instead (`{program()} show {newer} --workdir"
            f" {shlex.quote(str(wd.root))}`; redrive it if it did not finish), or run the file"
            f" again as that run did (rows already sent are skipped): {again_command(wd, newer)}"
        )
    else:
        why = f"the file's later runs here have other settings than this execution's: they {said}"
        instead = "Run the file again as those runs did (rows already sent are skipped)."
    raise DeliveryChanged(
        f"execution {execution_id} cannot be redriven: {why}. Its redrive would give its rows"
        f" other letters, or send them another way, than the rest of the campaign. {instead}"
    )


def _ran(wd: Workdir, execution_id: str) -> dict[str, Any]:
    """What an execution's run recorded of its file and way ({}: not recorded)."""
    try:
        found = json.loads(wd.run_source(execution_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def sent_again(ledger: SqliteLedger, campaign: str, given: Collection[str]) -> tuple[str, ...]:
    """The files whose letters a run of ``campaign`` sends again: those ``given`` (run
    --send-again-from), and those its earlier runs were given, as the ledger recorded them:
    the commands a run prints (--retry-failed, a rerun) do not repeat the choice, and the
    letters it let through are not held back by the next run."""
    recorded = (
        value for choice, value, _ in ledger.choices(campaign) if choice == "send_again_from"
    )
    return tuple(dict.fromkeys([*given, *recorded]))


def _sent_again_here(wd: Workdir, campaign: str, given: Collection[str]) -> tuple[str, ...]:
    """sent_again, asked of ``wd``'s ledger read-only before the run (``given``: none yet)."""
    if not wd.has_ledger():
        return tuple(given)
    with _local_ledger(wd, read_only=True) as ledger:
        return sent_again(ledger, campaign, given)


def run_choices(wd: Workdir, execution_id: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The choices an execution's run was given (--send-again-from's files, in the order
    given, --corrected-address's rows), as it recorded them; none for a run recorded before
    it kept them."""
    choices = _ran(wd, execution_id).get("choices")
    choices = choices if isinstance(choices, dict) else {}
    names = choices.get("send_again_from") or []
    rows = choices.get("corrected_address") or []
    return (
        tuple(name for name in names if isinstance(name, str)),
        tuple(row for row in rows if isinstance(row, int)),
    )


def campaign_of_file(path: Path) -> str:
    """The campaign of a file run here: its name names it (incoming_key)."""
    return campaign_id_for(Source(LOCAL_BUCKET, incoming_key(path), "", None))


def run_source_path(wd: Workdir, execution_id: str) -> str | None:
    """The whole path of the file an execution ran, as its run recorded it (None: not)."""
    source = _source_of(_ran(wd, execution_id))
    return None if source is None else str(source)


def _source_of(ran: dict[str, Any]) -> Path | None:
    """The file a run record names, its whole path (None: not recorded)."""
    path = ran.get("path")
    return Path(path) if isinstance(path, str) else None


def rerun_options(wd: Workdir, execution_id: str) -> tuple[str, dict[str, Any], str | None]:
    """How to run an execution's file again the way it ran (for the retry commands a redrive
    prints): the file's path, the options that its letters and delivery came from (the
    campaign's recorded way, the saved settings), MAILMATRIX_UNSUBSCRIBE. Written as a run
    prints them (as_run_prints): short, yet the same run. A file no longer where it ran is
    named as moved_file says."""
    env = settings_for(wd, execution_id)
    mailer = env.get("MAILMATRIX_MAILER", "")
    ran = _ran(wd, execution_id)
    given = _source_of(ran)
    if given is not None and not given.is_file():
        given = moved_file(given)
    way = ran.get("way") or {}
    way = way if isinstance(way, dict) else {}
    attachments = way.get("attachments")
    options = {
        "--templates": way.get("templates"),
        # a folder the run did not need (no row attaches a file) may not exist
        "--attachments": attachments if attachments and Path(attachments).is_dir() else None,
        "--sender": way.get("sender") or env.get("MAILMATRIX_SENDER"),
        "--smtp": None if mailer.startswith("maildir://") else mailer or None,
        "--send-rate": env.get("MAILMATRIX_SEND_RATE")
        if env.get("MAILMATRIX_SEND_RATE") != "0"
        else None,
        "--concurrency": env.get("MAILMATRIX_MAX_CONCURRENCY"),
        "--batch-size": env.get("MAILMATRIX_BATCH_SIZE"),
    }
    if given is None:
        return "FILE", options, way.get("unsubscribe")
    shown = given if not given.is_absolute() else _as_given(given)
    return str(shown), as_run_prints(given, options), way.get("unsubscribe")


# What the commands printed for a file no longer where it ran put in place of its folder.
MOVED_FOLDER = "DIR"


def moved_file(path: Path) -> Path:
    """How commands name a file that is no longer at ``path``, where it ran: under its own
    name (which names its campaign) in a folder the operator fills in (MOVED_FOLDER)."""
    return Path(MOVED_FOLDER) / path.name


def moved_file_note(path: str) -> str | None:
    """What to say of the file an execution ran, at ``path`` then, when it is no longer
    there: that, and what the commands printed name it by; None while it is there."""
    if Path(path).is_file():
        return None
    return (
        f"{path}, the file this execution ran, is no longer there (moved or deleted since):"
        f" the commands below name it {moved_file(Path(path))}, where {MOVED_FOLDER} is the"
        f" folder it is in now (it must keep its name, which names its campaign)"
    )


def as_run_prints(csv_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` of a rerun of the file at ``csv_path`` (its whole path), as `run`
    prints its own: a folder under the current one by its relative path, and none that only
    says what a run without it does (the bundled templates, the attachments folder beside
    the file, the default concurrency and batch size). The run they make is the same: the
    same folders, resolved; a rerun's concurrency is compared with that of a run without
    --faults, as no printed command carries them."""
    shown = dict(options)
    templates, attachments = options.get("--templates"), options.get("--attachments")
    if templates and Path(templates) == DEFAULT_TEMPLATES.resolve():
        shown["--templates"] = None
    elif templates:
        shown["--templates"] = str(_as_given(Path(templates)))
    if attachments and Path(attachments) == (csv_path.parent / "attachments").resolve():
        shown["--attachments"] = None
    elif attachments:
        shown["--attachments"] = str(_as_given(Path(attachments)))
    rate = float(options.get("--send-rate") or 0)
    if str(options.get("--concurrency")) == str(_concurrency(rate, None)):
        shown["--concurrency"] = None
    if str(options.get("--batch-size")) == str(LOCAL_BATCH_SIZE):
        shown["--batch-size"] = None
    return shown


def _as_given(path: Path) -> Path:
    """``path`` (a whole one) relative to the current folder when it is under it."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except (OSError, ValueError):  # elsewhere, or the current folder is gone
        return path


def _check_same_file(
    wd: Workdir, execution_id: str, campaign: dict[str, Any], given: Path | None
) -> None:
    """Refuse to redrive an execution whose file changed since it was validated.

    A redrive sends the rows as validated then: after the operator corrected an address, it
    would mail the old one. Changed means: a later run uploaded other content under the same
    name, or the file the run was given (``given``) now holds other content, or is gone
    (moved: it may have been edited where it went).
    """
    source = campaign.get("source") or {}
    etag, key = source.get("etag"), source.get("key")
    if not etag or not key:
        return
    checks = [("a later run uploaded it", wd.bucket / key)]
    if given is not None:
        checks.append(("it was edited", given))
    for where, path in checks:
        if path.is_file() and _etag_of(path) == etag:
            continue
        named = ""
        if not path.is_file():
            where = "it is no longer there, and may have been edited elsewhere"
            if path == given:
                named = f" ({moved_file(path)}: {MOVED_FOLDER} is the folder it is in now)"
        raise ConfigurationError(
            f"execution {execution_id} validated {key.rsplit('/', 1)[-1]} as it was then, and"
            f" the file has changed since ({where}): its redrive would send the rows as they"
            f" were. Run the file again instead (rows already sent are skipped): "
            + again_command(wd, execution_id)
            + named
        )


def _validated_upload(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The campaign ValidateRecipients chose, with the upload it read (``source``); for an
    execution that failed before, the upload its event named (its redrive validates that
    one, and fails as UploadReplaced once the file ran again with other content)."""
    campaign = validation_of(history).get("campaign") or {}
    if campaign.get("source") or not history:
        return campaign
    details = history[0].get("executionStartedEventDetails") or {}
    try:
        event = json.loads(details.get("input") or "{}")
    except json.JSONDecodeError:
        return campaign
    upload = (event.get("detail") or {}).get("object") if isinstance(event, dict) else None
    return {"source": upload} if isinstance(upload, dict) else campaign


def run_command(
    csv_file: str, workdir: Path, given: dict[str, Any], unsubscribe: str | None, *flags: str
) -> str:
    """The ``mailmatrix run`` command of ``csv_file`` in ``workdir`` with ``flags`` and the
    options ``given`` (those set; an SMTP URL without its password), and the
    MAILMATRIX_UNSUBSCRIBE the run had: a run of a campaign without the options its letters
    and delivery came from is refused (check_campaign_way), or sends other letters."""
    smtp = given.get("--smtp")
    shown = {**given, "--smtp": without_password(smtp) if smtp else None}
    options = "".join(f" {flag} {shlex.quote(str(v))}" for flag, v in shown.items() if v)
    # A name starting with "-" would read as an option.
    named = f"./{csv_file}" if csv_file.startswith("-") else csv_file
    # No option carries it: the command sets it for itself, as the shell did for the run.
    shell = f"MAILMATRIX_UNSUBSCRIBE={shlex.quote(unsubscribe)} " if unsubscribe else ""
    return (
        f"{shell}{program()} run {shlex.quote(named)}{''.join(f' {f}' for f in flags)}"
        f" --workdir {shlex.quote(str(workdir))}{options}"
    )


# The retry a reason names for a letter failed as OutcomeUnknown under another file
# (sent_under_reason), and that file's campaign.
_RETRY_UNKNOWN_THERE = re.compile(r"`run [^`]* --retry-unknown`")
_CAMPAIGN_NAMED = re.compile(r"\(campaign (c-[0-9a-f]+)\)")


def naming_run_options(reason: str, wd: Workdir) -> str:
    """``reason`` with the `run F --retry-unknown` it names for another file written whole, as
    the latest run of that file in ``wd`` takes it (again_command: the workdir, templates,
    delivery); as it is where ``wd`` keeps no such run."""
    command, campaign = _RETRY_UNKNOWN_THERE.search(reason), _CAMPAIGN_NAMED.search(reason)
    if command is None or campaign is None or not wd.has_ledger():
        return reason
    try:
        with _local_ledger(wd, read_only=True) as ledger:
            latest = ledger.latest_upload(campaign[1])
        if latest is None:
            return reason
        whole = again_command(wd, latest.execution.rsplit(":", 1)[-1], "--retry-unknown")
    except (MailMatrixError, OSError):
        return reason  # the command as the reason names it: the rest is the operator's
    return reason.replace(command[0], f"`{whole}`")


def again_command(wd: Workdir, execution_id: str, *flags: str) -> str:
    """The command that runs an execution's file again the way it ran (the options its
    letters and delivery came from), with ``flags``."""
    csv_file, options, unsubscribe = rerun_options(wd, execution_id)
    way = ("--templates", "--attachments", "--sender", "--smtp")
    return run_command(csv_file, wd.root, {f: options.get(f) for f in way}, unsubscribe, *flags)


def nothing_to_redrive(wd: Workdir, execution_id: str, output: Any = None) -> str:
    """Why an execution that succeeded (its ``output``, the summary, as JSON text or data) is
    not redriven, and what sends its failed rows; that none failed, when none did."""
    if isinstance(output, str):
        with contextlib.suppress(json.JSONDecodeError):
            output = json.loads(output)
    counts = output.get("counts") if isinstance(output, dict) else None
    if isinstance(counts, dict) and not counts.get("failed") and not counts.get("unsent"):
        return (
            f"execution {execution_id} SUCCEEDED and none of its rows failed at sending: there"
            " is nothing to redrive or to send again (a redrive resumes an execution that"
            " failed or was stopped; the rows it sent stay sent, and its report lists them)."
        )
    return (
        f"execution {execution_id} SUCCEEDED: a redrive resumes an execution that failed or"
        " was stopped. Its rows that failed at sending (its report gives each reason) are sent"
        f" again, once the cause is fixed, by: {again_command(wd, execution_id, '--retry-failed')}"
    )


def _etag_of(path: Path) -> str:
    """The ETag the local bucket would give the file (the MD5 of its content)."""
    return LocalStorage(path.parent).head(path.name).etag


def _check_own_workdir(wd: Workdir, env: dict[str, str], execution_id: str) -> None:
    """Refuse to redrive an execution whose saved settings point into another workdir.

    A copy of a workdir holds the original's settings: its redrive would send through the
    original's ledger and outbox, and each workdir would then count the other's sends wrong.
    """
    ledger = env.get("MAILMATRIX_LEDGER", "")
    if ledger.startswith("sqlite://") and ledger != f"sqlite://{wd.ledger.resolve()}":
        elsewhere = Path(ledger.removeprefix("sqlite://")).parent
        where = shlex.quote(str(elsewhere))
        advice = (
            f"redrive it with --workdir {where}, or run the file again here"
            if elsewhere.is_dir()
            else f"{where} is gone (moved?): run the file again here (its ledger skips what"
            " was sent)"
        )
        raise ConfigurationError(
            f"execution {execution_id} ran in the workdir {elsewhere} (its saved settings point"
            f" there, not to {wd.root}): {advice}"
        )


def campaign_of(history: list[dict[str, Any]]) -> str | None:
    """The campaign id that ValidateRecipients chose in an execution, if it got that far."""
    return validation_of(history).get("campaign", {}).get("id")


def validation_of(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The ValidateRecipients result of an execution ({} when it did not get that far)."""
    for event in history:
        details = event.get("stateExitedEventDetails") or {}
        if details.get("name") == "ValidateRecipients":
            return json.loads(details.get("output") or "{}").get("validation", {})
    return {}


def progress_of(wd: Workdir, execution_id: str) -> dict[str, int] | None:
    """What an execution that has no summary got done (see report.progress_counts), from the
    ledger; None when it validated nothing or its manifest is gone."""
    from mailmatrix.engine import Engine, ResourceRegistry

    engine = Engine(wd.executions, ResourceRegistry())
    validation = validation_of(engine.history(execution_id))
    storage = LocalStorage(wd.bucket, bucket=LOCAL_BUCKET)
    try:
        with storage.open(validation["manifest"]["key"]) as manifest:
            keys = [json.loads(line)["key"] for line in manifest]
    except (KeyError, NotFoundError):
        return None
    outcomes = {}
    if wd.has_ledger():  # no ledger yet: no row was ever claimed here
        with _local_ledger(wd, read_only=True) as ledger:
            outcomes = ledger.outcomes_of(keys)
    attempts = engine.child_execution_arns(execution_id)
    return progress_counts(validation.get("counts", {}), keys, outcomes, attempts)


def _report_doubts(wd: Workdir, record: Any) -> None:
    """Write the report of an execution that ended without its summary and left rows in doubt
    (doubts.write_doubts_report), so the rows the operator must check are in a report too."""
    from mailmatrix.doubts import write_doubts_report

    write_doubts_report(wd, record)


def _explain(engine: Any, record: Any) -> None:
    """Add to a finished execution's record why it stopped and when to redrive it."""
    stopped = stopped_of(engine, record)
    record["stopped"] = stopped
    record["failure_details"] = why_lines(stopped)
    if record["status"] != "SUCCEEDED":
        ended = ending(record)
        record["redrive_advice"] = redrive_advice(ended.status, ended.error, ended.cause, stopped)


def stopped_of(engine: Any, record: Any) -> Stopped:
    """What stopped a failed execution's Map Runs: its failed batches' errors and messages
    (without Lambda's stack trace), and the batches never started."""
    if record["status"] == "SUCCEEDED":
        return Stopped()
    found: list[tuple[str, str]] = []
    not_started = 0
    for map_run in engine.describe(record["name"]).get("mapRuns", []):
        if map_run.get("status") != "FAILED":
            continue
        for child in engine.map_run_children(record["name"], map_run["id"]):
            if child.get("status") in ("FAILED", "TIMED_OUT", "ABORTED"):
                message = str(cause_message(child.get("cause")) or "")
                found.append((str(child.get("error")), message))
        not_started += map_run.get("pending") or 0
    return Stopped(batches=tuple(found), not_started=not_started)


def alert_if_failed(
    wd: Workdir, record: Any, *, echo: Callable[[str, Notification], None] | None = None
) -> None:
    """Publish the failure alert, as the stack's Alert function does on AWS: why sending
    stopped (the batches' errors) and when a redrive makes sense.

    On AWS a rule on "Step Functions Execution Status Change" (FAILED, TIMED_OUT, ABORTED)
    sends the alert, so the definition needs no Catch and a redrive resumes where it failed.
    """
    if record["status"] == "SUCCEEDED":
        return
    notification = failure_alert(
        ending(record),
        record.get("stopped") or Stopped(),
        redrive=f"{program()} redrive {record['name']} --workdir {shlex.quote(str(wd.root))}",
    )
    LocalNotifier(wd.notifications, echo=echo).publish(local_topic_arn("AlertTopic"), notification)
