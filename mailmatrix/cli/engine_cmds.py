"""`mailmatrix executions`, `show`, `redrive` and `sfn run`: the local engine's verbs."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

import click
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from mailmatrix.cli import exits
from mailmatrix.cli.console import RunConsole
from mailmatrix.cli.defaults import DEFAULT_WORKDIR_TEXT, default_workdir
from mailmatrix.cli.progress import LedgerWaitNotices, progress_display
from mailmatrix.core.failures import ENGINE_PROCESS_ENDED, Stopped, redrive_advice, why_lines
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.engine.errors import SHOWN_CAUSE_CHARS, StatesError, cause_message
from mailmatrix.engine.reader import check_characters
from mailmatrix.errors import InputFileError, MailMatrixError
from mailmatrix.private import private_files
from mailmatrix.program import program


class NotRunnable(click.ClickException):
    """No such execution, one that cannot be redriven, a definition that does not load:
    a usage problem (exit 2), not a failed execution (exit 1)."""

    exit_code = exits.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        context = click.get_current_context(silent=True)
        self.command = context.command_path if context else "mailmatrix"

    def show(self, file: IO[Any] | None = None) -> None:
        """Say it as `run` says its refusals: ``mailmatrix redrive: ...``, not ``Error: ...``."""
        click.echo(f"{self.command}: {self.format_message()}", file=file, err=True)


_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "RUNNING": "yellow",
    "CAUGHT": "magenta",
    "NOT RUN": "dim",
}


def registry_from_functions(workdir: pathlib.Path, functions: tuple[str, ...]) -> ResourceRegistry:
    """A registry with each ``NAME=module:callable`` of --function registered as a Lambda."""
    registry = ResourceRegistry()
    if functions and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # modules beside the definition, as `python -m` finds them
    for spec in functions:
        name, sep, target = spec.partition("=")
        if not sep or ":" not in target:
            raise click.BadParameter(
                f"{spec!r}: expected NAME=module:callable", param_hint="--function"
            )
        registry.register_lambda(name, target)
    bucket_root = workdir / "bucket"

    def get(bucket: str, key: str) -> bytes:
        return (bucket_root / bucket / key).read_bytes()

    def put(bucket: str, key: str, data: bytes | bytearray) -> None:
        path = bucket_root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    registry.set_object_store(get, put)
    return registry


# The hook that builds the registry for `redrive` and `sfn run` from --workdir and --function.
# The project's runner may replace it (see mailmatrix.local.build_registry).
registry_factory: Callable[[pathlib.Path, tuple[str, ...]], ResourceRegistry] = (
    registry_from_functions
)

_workdir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=default_workdir,
    show_default=DEFAULT_WORKDIR_TEXT,
    help="Working directory (executions under it).",
)
_function_option = click.option(
    "--function",
    "functions",
    multiple=True,
    metavar="NAME=module:callable",
    help="Resolve the Lambda function NAME to a Python callable (repeatable).",
)


def _engine(workdir: pathlib.Path, registry: ResourceRegistry | None = None) -> Engine:
    return Engine(workdir / "executions", registry or ResourceRegistry())


def _looked_up(workdir: pathlib.Path, given: str) -> Engine:
    """The engine of ``workdir``'s executions, to look up the execution ``given``; none
    there: no such execution (and no workdir made)."""
    engine = _existing_engine(workdir)
    if engine is None:
        _found_elsewhere(given, workdir)
        raise MailMatrixError(f"execution {given!r}: no such execution. {_no_executions(workdir)}")
    return engine


def _found_elsewhere(given: str, workdir: pathlib.Path) -> None:
    """Raise MailMatrixError naming the --workdir to give when another workdir holds the
    execution ``given`` (local.workdirs_holding): `show ID` of `make demo`'s run, say."""
    from mailmatrix.local import workdirs_holding

    name = given.rsplit(":", 1)[-1]
    here = pathlib.Path.cwd()
    found = [w for w in workdirs_holding(name, here) if w.resolve() != workdir.resolve()]
    if not found:
        return
    shown = [w.relative_to(here) if w.is_relative_to(here) else w for w in found]
    named = " or ".join(f"--workdir {shlex.quote(str(w))}" for w in shown)
    raise MailMatrixError(
        f"execution {given!r}: not in the workdir {workdir}, but in another: give {named}"
    )


def _existing_engine(workdir: pathlib.Path) -> Engine | None:
    """The engine of ``workdir``'s executions, or None when it has none: a command that only
    looks (executions, show) makes no workdir."""
    if not (workdir / "executions").is_dir():
        return None
    return _engine(workdir)


def _no_executions(workdir: pathlib.Path) -> str:
    """Why ``workdir`` lists no execution, and where executions may be instead."""
    if not workdir.is_dir():
        said = f"No workdir at {workdir}: nothing has run there."
    else:
        said = f"No executions in {workdir / 'executions'}."
    found, more = _workdirs_with_runs(workdir)
    if not found:
        return (
            f"{said} A run given --workdir DIR keeps its executions there: give the same --workdir."
        )
    here = " here" if all(name.startswith("./") for name in found) else ""
    option = f"--workdir {shlex.quote(found[0].removeprefix('./'))}"
    if len(found) == 1:
        return f"{said} The folder {found[0]}{here} holds executions: give {option}."
    others = f" and {more} more" if more else ""
    return (
        f"{said} The folders {', '.join(found)}{others}{here} hold executions, the one run"
        f" most recently first: give one as --workdir (e.g. {option})."
    )


def _workdirs_with_runs(workdir: pathlib.Path, most: int = 3) -> tuple[list[str], int]:
    """The workdirs other than ``workdir`` that hold runs' executions, most recent first
    (local.workdirs_with_runs: `make demo`'s ./demo, my-campaign/real, those run through a
    mail server), as given to --workdir (./ before those here), at most ``most``; and how
    many more there are."""
    from mailmatrix.local import workdirs_with_runs

    try:
        here, shown = pathlib.Path.cwd(), workdir.resolve()
    except (OSError, RuntimeError):  # a folder since removed, a loop of links: none to name
        return [], 0
    found = [path for path in workdirs_with_runs(here) if path.resolve() != shown]
    named = [
        f"./{path.relative_to(here)}" if path.is_relative_to(here) else str(path) for path in found
    ]
    return named[:most], max(0, len(named) - most)


def _duration(start: str | None, stop: str | None) -> str:
    if not start or not stop:
        return "-"
    seconds = (_parse(stop) - _parse(start)).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _run_for(record: dict[str, Any]) -> str:
    """How long an execution ran. One whose process ended while it ran (killed) is known to
    have run only until its last record was written, not when it stopped: "at least 0.1s
    (killed?)"."""
    lasted = _duration(record.get("startDate"), record.get("stopDate"))
    if record.get("error") == ENGINE_PROCESS_ENDED and record.get("status") == "ABORTED":
        return f"at least {lasted} (killed?)"
    return lasted


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@click.command("executions")
@_workdir_option
@private_files()  # it marks an execution whose process is gone ABORTED
def executions_cmd(workdir: pathlib.Path) -> None:
    """List the executions of the local engine: id, status, start, duration, result."""
    engine = _existing_engine(workdir)
    records = engine.list_executions(with_data=True) if engine is not None else []
    for problem in engine.store.unreadable() if engine is not None else []:
        click.echo(f"mailmatrix executions: {problem}: not listed", err=True)
    if not records:
        click.echo(_no_executions(workdir))
        return
    table = Table()
    for heading in ("status", "started", "duration", "redrives"):
        table.add_column(heading, no_wrap=True)
    table.add_column("input", overflow="fold")
    table.add_column("result", overflow="fold")
    # The id is what `show` and `redrive` take: never cut it, whatever the terminal width.
    table.add_column("execution", no_wrap=True, min_width=36)
    for record in records:
        table.add_row(
            status_label(record["status"], record.get("output")),
            record.get("startDate", "-")[:19].replace("T", " "),
            _run_for(record),
            str(record.get("redriveCount", 0)),
            escape(_input_label(record.get("input"))),
            result_label(
                record.get("output"), execution_progress(workdir, record), record["status"]
            ),
            escape(record["name"]),
        )
    console = RunConsole()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # piped output: no squeezed columns
    console.print(table)


def _input_label(text: Any) -> str:
    """What an execution ran on: the object an S3 event names (the uploaded CSV), else the
    start of its input."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        value = text
    if isinstance(value, dict):
        key = ((value.get("detail") or {}).get("object") or {}).get("key")
        if isinstance(key, str):
            return key
    shown = text if isinstance(text, str) else json.dumps(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _output(output: Any) -> dict[str, Any]:
    """An execution's output as a mapping (empty when it has none, or another kind)."""
    try:
        value = json.loads(output) if isinstance(output, str) else output
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def status_label(status: str, output: Any = None) -> str:
    """An execution's status as markup: of a run that SUCCEEDED but left rows failed or unsent,
    with those beside it in the warning colour ("SUCCEEDED, 34 FAILED"), since SUCCEEDED says
    only that the state machine reached its end, not that the emails went."""
    counts = _output(output).get("counts")
    if status == "SUCCEEDED" and isinstance(counts, dict):
        flagged = [f"{counts[key]:,} {word}" for key, word in _FLAGGED if counts.get(key)]
        if flagged:
            return f"[yellow]{status}, {', '.join(flagged)}[/]"
    return f"[{_STYLE.get(status, 'white')}]{status}[/]"


# The rows a run that SUCCEEDED did not send, as its status names them.
_FLAGGED = (("failed", "FAILED"), ("in_doubt", "IN DOUBT"), ("unsent", "NOT SENT"))


def result_label(output: Any, progress: dict[str, int] | None = None, status: str = "") -> str:
    """What a campaign's execution did, from its summary's counts ("18 sent, 2 rejected"),
    in red when nothing was sent and rows failed (the execution itself still SUCCEEDED).

    An execution without a summary (stopped, killed, failed) is told by its ``progress``
    (local.progress_of), said to be partial: "stopped: 120 sent, 9,880 not sent yet".
    """
    value = _output(output)
    counts = value.get("counts")
    if not isinstance(counts, dict):
        if not progress or not progress.get("valid"):
            return "-"
        counts = progress
    if value.get("outcome") == "dry_run":
        return f"dry run: {counts.get('valid', 0)} valid, {counts.get('rejected', 0)} rejected"
    words = dict(_RESULT_WORDS)
    if counts is progress:
        words["unsent"] = "not sent yet"
        if status == "RUNNING":
            words["in_doubt"] = "being sent"
    parts = [f"{counts.get('sent', 0):,} sent"]
    parts += [f"{counts[key]:,} {words[key]}" for key in words if counts.get(key)]
    label = ", ".join(parts)
    if counts is progress:
        label = f"{_PARTIAL.get(status, 'unfinished')}: {label}"
    if counts.get("failed") or counts.get("unsent") or counts.get("in_doubt"):
        return f"[{'red' if not counts.get('sent') else 'yellow'}]{label}[/]"
    return label


_RESULT_WORDS = (
    ("skipped", "already sent"),
    ("failed", "failed"),
    ("superseded", "of them left to a newer upload"),
    ("in_doubt", "in doubt (being sent as the run ended)"),
    ("unsent", "not attempted"),
    ("rejected", "rejected"),
    ("duplicates", "duplicate rows"),
    ("excluded", "excluded"),
    ("sent_under", "already sent under another file"),
    ("doubt_under", "in doubt under another file"),
    ("possible_duplicates", "may have arrived more than once"),
)
# How the result of an execution without a summary begins, by its status.
_PARTIAL = {"ABORTED": "stopped", "RUNNING": "so far"}


def execution_progress(workdir: pathlib.Path, record: dict[str, Any]) -> dict[str, int] | None:
    """What a MailMatrix execution in ``workdir`` that has no summary got done, from the local
    send ledger (None elsewhere: `sfn run` workdirs, executions with a summary)."""
    if _output(record.get("output")).get("counts") or not (workdir / "settings.json").is_file():
        return None
    from mailmatrix.local import Workdir, progress_of

    try:
        return progress_of(Workdir(workdir), record["name"])
    except MailMatrixError:  # an unreadable history: the list goes on, `show` says what is wrong
        return None


def state_summaries(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per state name: status, entered/exited times, retries, from a history."""
    states: dict[str, dict[str, Any]] = {}
    current: list[str] = []
    exited: str | None = None  # the state that ended last: the next one entered followed it
    for event in history:
        kind = event["type"]
        if "stateEnteredEventDetails" in event:
            name = event["stateEnteredEventDetails"]["name"]
            if exited is not None:
                states[exited]["taken"] = name
                exited = None
            info = states.setdefault(name, {"entered": 0, "attempts": 0, "retries": 0})
            info.update(status="RUNNING", start=event["timestamp"], stop=None)
            info["entered"] += 1
            info["attempts"] = 0
            current.append(name)
        elif "stateExitedEventDetails" in event:
            name = event["stateExitedEventDetails"]["name"]
            states[name].update(status="SUCCEEDED", stop=event["timestamp"])
            exited = name
            if name in current:
                current.remove(name)
        elif kind in ("TaskScheduled", "LambdaFunctionScheduled") and current:
            info = states[current[-1]]
            info["attempts"] += 1
            info["retries"] += 1 if info["attempts"] > 1 else 0
        elif (
            kind
            in (
                "TaskFailed",
                "TaskTimedOut",
                "LambdaFunctionFailed",
                "LambdaFunctionTimedOut",
                "MapRunFailed",
            )
            and current
        ):
            info = states[current[-1]]
            info.update(status="FAILED", stop=event["timestamp"])
            details: dict[str, Any] = next(
                (v for k, v in event.items() if k.endswith("EventDetails")), {}
            )
            info["error"] = details.get("error")
        elif kind in ("ExecutionFailed",) and current:
            states[current[-1]].update(status="FAILED", stop=event["timestamp"])
    return states


def render_execution(
    record: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    progress: dict[str, int] | None = None,
    failures: list[str] | None = None,
) -> Tree:
    """The graph of states as a rich Tree with status, timing, retries and Map Run counts
    (``progress``: see result_label; ``failures``: why its Map Runs failed, see
    why_lines of local.stopped_of)."""
    machine = json.loads(record["definition"])
    summaries = state_summaries(history)
    status = record["status"]
    title = (
        f"[bold]{escape(record['name'])}[/] {status_label(status, record.get('output'))} "
        f"{_run_for(record)} redrives={record.get('redriveCount', 0)}"
    )
    if record.get("error"):
        cause = escape(str(cause_message(record.get("cause", "")))[:SHOWN_CAUSE_CHARS])
        title += f"\n[red]{escape(record['error'])}[/]: {cause}"
    for line in failures or []:
        title += f"\n  {escape(line)}"
    result = result_label(record.get("output"), progress, status)
    if result != "-":
        title += f"\nresult: {result}"
    if progress is not None and result != "-":
        title += "\n[dim](no summary: counted from the send ledger)[/]"
    tree = Tree(title)
    runs = {run["stateName"]: run for run in record.get("mapRuns", [])}
    ended = None if status == "RUNNING" else status
    _add_states(tree, machine, summaries, runs, ended)
    return tree


def _add_states(
    tree: Tree,
    machine: dict[str, Any],
    summaries: dict[str, dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    ended: str | None = None,
) -> None:
    """``ended``: the status of an execution that has ended; a state it left running ended
    with it (an ABORTED execution's Map is ABORTED, not RUNNING)."""
    for name in _ordered(machine):
        state = machine["States"][name]
        info = summaries.get(name, {"status": "NOT RUN"})
        status = info["status"]
        if status == "RUNNING" and ended:
            status = ended
        # Names and errors come from the definition and its run: shown as they are.
        label = (
            f"{escape(name)} [dim]({escape(str(state['Type']))})[/]"
            f" [{_STYLE.get(status, 'white')}]{status}[/]"
        )
        if info.get("start"):
            label += f" {_duration(info.get('start'), info.get('stop'))}"
        if info.get("retries"):
            label += f" retries={info['retries']}"
        if info.get("error") and status == "SUCCEEDED":  # a retry or a redrive got past it
            label += f" [dim](after an earlier try failed: {escape(info['error'])})[/]"
        elif info.get("error"):
            label += f" [red]{escape(info['error'])}[/]"
        targets = [state.get("Next")] + [c.get("Next") for c in state.get("Catch", [])]
        targets += [c.get("Next") for c in state.get("Choices", [])] + [state.get("Default")]
        nexts = sorted({t for t in targets if t})
        if info.get("taken") in nexts:
            label += f" → {escape(info['taken'])}"  # the way this execution went
        elif nexts and status == "NOT RUN":  # where it could have gone
            label += f" [dim]→ {escape(', '.join(nexts))}[/]"
        node = tree.add(label)
        run = runs.get(name)
        if run:
            node.add(
                f"Map Run {run['status']}: total {run.get('total', 0)}, succeeded "
                f"{run.get('succeeded', 0)}, failed {run.get('failed', 0)}, pending "
                f"{run.get('pending', 0)}, redrives {run.get('redriveCount', 0)}"
            )
        for index, branch in enumerate(state.get("Branches", [])):
            _add_states(node.add(f"branch {index}"), branch, summaries, runs, ended)
        processor = state.get("ItemProcessor", state.get("Iterator"))
        if processor and not run:
            _add_states(node.add("iteration"), processor, summaries, runs, ended)


def _ordered(machine: dict[str, Any]) -> list[str]:
    """States in the order reached from StartAt (breadth first), then any others."""
    order: list[str] = []
    queue = [machine["StartAt"]]
    while queue:
        name = queue.pop(0)
        if name in order or name not in machine["States"]:
            continue
        order.append(name)
        state = machine["States"][name]
        queue += [c["Next"] for c in state.get("Choices", [])]
        queue += [t for t in (state.get("Next"), state.get("Default")) if t]
        queue += [c["Next"] for c in state.get("Catch", [])]
    return order + [n for n in machine["States"] if n not in order]


def resolve_execution(engine: Engine, given: str, workdir: pathlib.Path) -> str:
    """The execution named by ``given`` in ``workdir``: its id, its ARN, or a prefix of one id
    only."""
    name = given.rsplit(":", 1)[-1]
    names = [record["name"] for record in engine.list_executions()]
    if name in names:
        return name
    matches = [n for n in names if n.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise MailMatrixError(f"execution {given!r}: {len(matches)} executions start so; give more")
    if (engine.store.execution_dir(name) / "execution.json").is_file():
        engine.store.load(name)  # there, but not listed: says why it cannot be read
    _found_elsewhere(given, workdir)
    where = shlex.quote(str(workdir))
    raise MailMatrixError(
        f"execution {given!r}: no such execution in the workdir {where} (`{program()}"
        f" executions --workdir {where}` lists them); a run given another --workdir is found"
        " with that --workdir"
    )


@click.command("show")
@click.argument("execution")
@_workdir_option
@private_files()  # it marks an execution whose process is gone ABORTED
def show_cmd(execution: str, workdir: pathlib.Path) -> None:
    """Draw the graph of an execution's states with status, timing, retries and Map Runs."""
    try:
        engine = _looked_up(workdir, execution)
        execution = resolve_execution(engine, execution, workdir)
        record = engine.describe(execution)
        history = engine.history(execution)
    except MailMatrixError as exc:
        raise NotRunnable(str(exc)) from exc
    report, progress = _report_file(workdir, record), execution_progress(workdir, record)
    from mailmatrix.local import stopped_of

    stopped = stopped_of(engine, record)
    failures = why_lines(stopped)
    tree = render_execution(record, history, progress=progress, failures=failures)
    # Only for one that left rows unsent: a run that sent the whole file was superseded too,
    # but nothing of it is left to the newer one.
    counts = _output(record.get("output")).get("counts") or {}
    unfinished = record["status"] != "SUCCEEDED" or bool(counts.get("superseded"))
    newer = _newer_run(workdir, record, history) if unfinished else None
    if newer and newer != record["name"]:
        tree.label = (
            f"{tree.label}\nsuperseded: a newer run of the file sends it, execution {newer}"
        )
    console = RunConsole()
    console.print(tree)
    if report is not None:  # on one line, however narrow the terminal or pipe: it is copied
        console.print(f"report: {report}", soft_wrap=True, markup=False, highlight=False)
    doubts = _doubt_lines(record, workdir)
    for line in doubts:
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    for line in _resume_lines(record, stopped, newer, workdir):
        if line not in doubts:  # the note of a file moved since, said once
            console.print(line, soft_wrap=True, markup=False, highlight=False)


def _doubt_lines(record: dict[str, Any], workdir: pathlib.Path) -> list[str]:
    """The rows in doubt an execution that has ended left, each named, and the commands that
    settle them (the file as its run was given); none for `sfn run` workdirs."""
    if record["status"] == "RUNNING" or not (workdir / "settings.json").is_file():
        return []
    from mailmatrix import local
    from mailmatrix.doubts import doubt_line, doubts_of, settle_command

    wd = local.Workdir(workdir)
    try:
        rows = doubts_of(wd, record["name"])
    except MailMatrixError:  # an unreadable ledger: the graph is shown all the same
        return []
    if not rows:
        return []
    lines = [f"in doubt (may have gone out, not recorded as sent): {len(rows)} row(s)"]
    lines += [f"  {doubt_line(row.to_dict())}" for row in rows]
    source = local.run_source_path(wd, record["name"]) or "FILE"
    moved = local.moved_file_note(source) if source != "FILE" else None
    if moved is not None:
        lines.append(moved)
        source = str(local.moved_file(pathlib.Path(source)))
    numbers = [row.settle_as for row in rows]
    lines += [
        "settle them once the mail server's log (or the outbox) was checked:",
        f"  arrived: {settle_command(source, workdir, numbers, sent=True)}",
        f"  not arrived: {settle_command(source, workdir, numbers, sent=False)}",
    ]
    return lines


def _resume_lines(
    record: dict[str, Any], stopped: Stopped, newer: str | None, workdir: pathlib.Path
) -> list[str]:
    """For an execution that ended before its end: what sends the rest (the redrive, and
    when it makes sense), or the newer run that has its rows."""
    if record["status"] not in ("FAILED", "ABORTED", "TIMED_OUT"):
        return []
    if newer and newer != record["name"]:
        where = shlex.quote(str(workdir))
        return [f"its rows are the newer run's: {program()} show {newer} --workdir {where}"]
    gone = _gone_file_lines(record, workdir)
    if gone:
        return gone
    cause = str(cause_message(record.get("cause") or "") or "")
    advice = redrive_advice(record["status"], record.get("error"), cause, stopped)
    command = f"{program()} redrive {record['name']} --workdir {shlex.quote(str(workdir))}"
    return [f"when to redrive: {advice}", f"redrive: {command}"]


def _gone_file_lines(record: dict[str, Any], workdir: pathlib.Path) -> list[str]:
    """For an execution whose file is no longer where it ran: that a redrive is refused, and
    the run of the file that sends the rest instead; none while the file is there (and for
    `sfn run` workdirs)."""
    if not (workdir / "settings.json").is_file():
        return []
    from mailmatrix import local

    wd = local.Workdir(workdir)
    source = local.run_source_path(wd, record["name"])
    note = local.moved_file_note(source) if source else None
    if note is None:
        return []
    return [
        note,
        "redrive: refused while the file is not where it ran (a redrive sends the rows as they"
        " were validated, and the file may have been edited where it went); run it again"
        " instead, rows already sent are skipped:",
        f"  {local.again_command(wd, record['name'])}",
    ]


def _newer_run(
    workdir: pathlib.Path, record: dict[str, Any], history: list[dict[str, Any]]
) -> str | None:
    """The execution of the newer upload of the file that superseded this execution's (the
    campaign's latest validated upload, when it is another), or None. Of an execution that
    stopped before its upload was validated (a mail server checked first), only a later
    upload: a redrive validates this one, and it goes before an earlier one."""
    from mailmatrix.local import Workdir, validation_of

    campaign = validation_of(history).get("campaign") or {}
    this = _upload_started(record)
    if campaign.get("id") and campaign.get("upload"):
        this = (campaign["id"], campaign["upload"], None)
    wd = Workdir(workdir)
    if this is None or not wd.has_ledger():
        return None
    from mailmatrix.adapters.ledger_sqlite import SqliteLedger

    ledger = SqliteLedger(str(wd.ledger), read_only=True)
    try:
        latest = ledger.latest_upload(this[0])
    finally:
        ledger.close()
    if latest is None or latest.upload == this[1]:
        return None
    if this[2] is not None and latest.order <= this[2]:
        return None
    return latest.execution.rsplit(":", 1)[-1]


def _upload_started(record: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """The campaign, upload and upload order of the S3 event that started an execution, or
    None when its input is not such an event."""
    from mailmatrix.jobs import Source, campaign_id_for

    detail = _output(record.get("input")).get("detail")
    try:
        source = Source.from_event_detail(detail if isinstance(detail, dict) else {})
    except InputFileError:
        return None
    upload = source.upload(campaign_id_for(source), None)
    return upload.campaign, upload.upload, upload.order


def _report_file(workdir: pathlib.Path, record: dict[str, Any]) -> pathlib.Path | None:
    """The local file of the report an execution's summary names, if it is there."""
    key = _output(record.get("output")).get("report_key")
    path = workdir / "bucket" / key if isinstance(key, str) else None
    return path if path is not None and path.is_file() else None


class LiveProgress:
    """A listener drawing the current state and each Map Run's progress on stderr, from the
    engine's first event on (after the redrive forked its workers: see run_cmd's listener)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.state_task = progress.add_task("starting", total=None)
        self.map_tasks: dict[str, Any] = {}

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        """Show the state the execution is in."""
        details = event.get("stateEnteredEventDetails")
        if details:
            self.progress.start()
            self.progress.update(self.state_task, description=f"state {escape(details['name'])}")

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        """Advance the Map Run's bar."""
        self.progress.start()
        arn = map_run["mapRunArn"]
        if arn not in self.map_tasks:
            self.map_tasks[arn] = self.progress.add_task(
                f"Map Run {escape(map_run['stateName'])}",
                total=map_run.get("total") or None,
                sending=True,
            )
        done = (map_run.get("succeeded") or 0) + (map_run.get("failed") or 0)
        self.progress.update(
            self.map_tasks[arn], completed=done, total=map_run.get("total") or None
        )


def _with_progress(action: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run action(listener) with a live progress display when stderr is a terminal, and the
    lines that say a wait for a busy ledger."""
    console = RunConsole(stderr=True)
    progress = progress_display(console) if console.is_terminal else None
    inner = LiveProgress(progress) if progress is not None else None
    listener = LedgerWaitNotices(console, inner)
    try:
        return action(listener)
    finally:
        from mailmatrix.cli.run_cmd import stop_display

        stop_display(progress)
        listener.close()


def _report(record: dict[str, Any], workdir: pathlib.Path, functions: tuple[str, ...] = ()) -> None:
    """The output of a succeeded execution, else its error and the whole redrive command."""
    if record["status"] == "SUCCEEDED":
        click.echo(json.dumps(record.get("output"), indent=2, ensure_ascii=False))
        return
    click.echo(f"Execution {record['name']} {record['status']}", err=True)
    click.echo(f"Error: {record.get('error')}", err=True)
    click.echo(f"Cause: {record.get('cause')}", err=True)
    options = [f"--workdir {shlex.quote(str(workdir))}"]
    options += [f"--function {shlex.quote(function)}" for function in functions]
    command = f"{program()} redrive {record['name']} {' '.join(options)}"
    click.echo(f"Rerun from the failed state: {command}", err=True)


@click.command("redrive")
@click.argument("execution")
@_workdir_option
@_function_option
@private_files()  # what it writes in the workdir is open to the owner only
def redrive_cmd(execution: str, workdir: pathlib.Path, functions: tuple[str, ...]) -> None:
    """Rerun a failed execution from the state that failed (only failed Map items rerun)."""
    try:
        looked_up = _looked_up(workdir, execution)
        execution = resolve_execution(looked_up, execution, workdir)
        if not functions and (workdir / "settings.json").is_file():
            from mailmatrix import local
            from mailmatrix.cli import run_cmd
            from mailmatrix.doubts import refuse_rows_in_doubt

            described = looked_up.describe(execution)
            if described["status"] == "SUCCEEDED":
                raise MailMatrixError(
                    local.nothing_to_redrive(
                        local.Workdir(workdir), execution, described.get("output")
                    )
                )

            # Rows an earlier run left in doubt may have arrived: the operator says first.
            wd = local.Workdir(workdir)
            csv_file, options, unsubscribe = local.rerun_options(wd, execution)
            again = local.again_command(wd, execution, "--retry-unknown")
            refuse_rows_in_doubt(wd, pathlib.Path(csv_file), again)
            run_cmd.stop_on_signals()  # as `run` stops
            try:
                record = _with_progress(
                    lambda listener: local.redrive(workdir, execution, listener=listener)
                )
            except KeyboardInterrupt:  # the engine turns one inside the execution into ABORTED
                run_cmd.stopped_outside_the_engine("redrive", workdir)
            except OSError as error:  # disk full, a file size limit, permissions
                said = run_cmd.with_notes(error, run_cmd.os_error_hint(error, workdir))
                click.echo(f"mailmatrix redrive: {said}", err=True)
                raise SystemExit(exits.RUN_FAILED) from None
            result = run_cmd.outcome_of(
                record,
                wd,
                smtp=options["--smtp"],
                templates=options["--templates"],
                attachments=options["--attachments"]
                or pathlib.Path(csv_file).parent / "attachments",
            )
            run_cmd.name_the_file(result, csv_file)
            run_cmd.add_choices(result, record, *local.run_choices(wd, execution))
            run_cmd.add_settle_commands(result, csv_file, workdir)
            if result["counts"].get("failed"):
                commands = run_cmd.retry_commands(
                    csv_file, workdir, options, unsubscribe, result["counts"]
                )
                result.update(commands)
            run_cmd.add_run_without_drill(result, csv_file, workdir, options, unsubscribe)
            with run_cmd.output_after_hangup():
                run_cmd.print_summary(RunConsole(), result, templates=options["--templates"])
            raise SystemExit(run_cmd.exit_code(result))
        else:
            engine = _engine(workdir, registry_factory(workdir, functions))
            record = _with_progress(lambda listener: engine.redrive(execution, listener=listener))
    except MailMatrixError as exc:
        from mailmatrix.cli.run_cmd import ledger_remedy, with_notes

        again = f"{program()} redrive {execution} --workdir {shlex.quote(str(workdir))}"
        raise NotRunnable(with_notes(exc, ledger_remedy(exc, again))) from exc
    _report(record, workdir, functions)
    raise SystemExit(exits.OK if record["status"] == "SUCCEEDED" else exits.RUN_FAILED)


@click.group("sfn")
def sfn_group() -> None:
    """Run any state machine definition on the local engine."""


@sfn_group.command("run")
@click.argument("definition", type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path))
@click.option(
    "--input", "input_text", default="{}", show_default=True, help="Execution input as JSON."
)
@click.option("--name", default=None, help="Execution name (default: a UUID).")
@click.option(
    "--sub",
    "subs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fill ${NAME} in the definition (repeatable).",
)
@_function_option
@_workdir_option
@private_files()  # what it writes in the workdir is open to the owner only
def sfn_run_cmd(
    definition: pathlib.Path,
    input_text: str,
    name: str | None,
    subs: tuple[str, ...],
    functions: tuple[str, ...],
    workdir: pathlib.Path,
) -> None:
    """Run DEFINITION.json; print the output as JSON, or the error and cause (exit 1).

    ItemReader and ResultWriter objects live under WORKDIR/bucket/BUCKET/KEY.
    """
    try:
        data = json.loads(input_text)
        check_characters(data, "a string")  # the engine records it as UTF-8
    except StatesError as exc:
        raise click.BadParameter(exc.cause, param_hint="--input") from None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    substitutions = dict(s.partition("=")[::2] for s in subs)
    try:
        engine = _engine(workdir, registry_factory(workdir, functions))
        text = definition.read_text(encoding="utf-8")
        record = _with_progress(
            lambda listener: engine.start(
                text, data, name=name, substitutions=substitutions, listener=listener
            )
        )
    except MailMatrixError as exc:
        raise NotRunnable(str(exc)) from exc
    _report(record, workdir, functions)
    raise SystemExit(exits.OK if record["status"] == "SUCCEEDED" else exits.RUN_FAILED)


commands: list[click.Command] = [executions_cmd, show_cmd, redrive_cmd, sfn_group]
