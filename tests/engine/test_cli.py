"""The engine's CLI verbs through click's runner: sfn run, executions, show, redrive."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from mailmatrix.cli.engine_cmds import executions_cmd, redrive_cmd, sfn_group, show_cmd

DEFINITION = {
    "StartAt": "Add",
    "States": {
        "Add": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, 1)"}, "Next": "Call"},
        "Call": {
            "Type": "Task",
            "Resource": "arn:aws:lambda:eu-west-1:123456789012:function:Fn",
            "End": True,
        },
    },
}


def echo_handler(event: dict, context: object) -> dict:
    """Return the event with the function's name."""
    return {"event": event, "function": context.function_name}  # type: ignore[attr-defined]


def failing_handler(event: dict, context: object) -> dict:
    """Always fail."""
    raise RuntimeError("down")


LONG_CAUSE = "halted by attempt arn:aws:states:eu-west-1:123456789012:execution:" + "M" * 300
LONG_CAUSE += ": redrive in 60 s or later, once the cause is fixed"


def failing_at_length(event: dict, context: object) -> dict:
    """Fail with a cause longer than a line or two."""
    raise RuntimeError(LONG_CAUSE)


def _failed_execution(tmp_path: pathlib.Path, handler: str) -> list[str]:
    """Run execution e1 of DEFINITION in tmp_path/w with the Lambda ``handler`` (it fails);
    return the --workdir arguments."""
    path = tmp_path / "def.json"
    path.write_text(json.dumps(DEFINITION))
    workdir = ["--workdir", str(tmp_path / "w")]
    fail = f"--function=Fn={__name__}:{handler}"
    args = ["run", str(path), "--input", '{"n": 1}', "--name", "e1", fail, *workdir]
    assert CliRunner().invoke(sfn_group, args).exit_code == 1
    return workdir


def test_show_gives_a_long_cause_to_its_end(tmp_path: pathlib.Path) -> None:
    workdir = _failed_execution(tmp_path, "failing_at_length")

    shown = CliRunner().invoke(show_cmd, ["e1", *workdir])

    assert LONG_CAUSE.replace(" ", "") in "".join(shown.output.split())


def test_sfn_run_prints_output_and_show_and_redrive(tmp_path: pathlib.Path) -> None:
    # GIVEN a definition whose Lambda fails the first time
    path = tmp_path / "def.json"
    path.write_text(json.dumps(DEFINITION))
    runner = CliRunner()
    workdir = ["--workdir", str(tmp_path / "w")]
    fail = [f"--function=Fn={__name__}:failing_handler"]

    # WHEN it runs: exit 1 with the error and cause
    result = runner.invoke(
        sfn_group, ["run", str(path), "--input", '{"n": 1}', "--name", "e1", *fail, *workdir]
    )
    assert result.exit_code == 1
    assert "Error: RuntimeError" in result.output
    # AND the redrive command it prints names the workdir and the function, as given
    hint = f"mailmatrix redrive e1 --workdir {tmp_path / 'w'} {fail[0].replace('=', ' ', 1)}"
    assert hint in result.output

    # THEN executions lists it, show draws the failed state
    listing = runner.invoke(executions_cmd, workdir)
    assert "e1" in listing.output and "FAILED" in listing.output
    shown = runner.invoke(show_cmd, ["e1", *workdir])
    assert "Add (Pass) SUCCEEDED" in shown.output
    assert "Call (Task) FAILED" in shown.output
    by_prefix = runner.invoke(show_cmd, ["e", *workdir])
    assert by_prefix.exit_code == 0 and "Call (Task) FAILED" in by_prefix.output
    unknown = runner.invoke(show_cmd, ["nope", *workdir])
    assert unknown.exit_code == 2 and "no such execution" in unknown.output
    # said as `run` says its refusals, by the command's name
    assert unknown.output.startswith("show: execution 'nope': no such execution")
    # AND it names the workdir it looked in, and how to list that workdir's executions
    assert f"no such execution in the workdir {tmp_path / 'w'} (" in unknown.output
    assert f"executions --workdir {tmp_path / 'w'}` lists them" in unknown.output

    # AND a redrive with a working function reruns from the failed state and succeeds
    ok = [f"--function=Fn={__name__}:echo_handler"]
    again = runner.invoke(redrive_cmd, ["e1", *ok, *workdir])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == {"event": {"n": 2}, "function": "Fn"}


MAP_DEFINITION = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "Echo",
                "States": {"Echo": {"Type": "Pass", "End": True}},
            },
            "ItemBatcher": {"MaxItemsPerBatch": 2},
            "End": True,
        }
    },
}


def test_show_draws_map_run_counts(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(MAP_DEFINITION))
    runner = CliRunner()
    workdir = ["--workdir", str(tmp_path / "w")]
    result = runner.invoke(
        sfn_group, ["run", str(path), "--input", "[1, 2, 3]", "--name", "m", *workdir]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"Items": [1, 2]}, {"Items": [3]}]
    shown = runner.invoke(show_cmd, ["m", *workdir], terminal_width=200)
    assert "Map Run SUCCEEDED: total 2, succeeded 2, failed 0, pending 0" in shown.output


def test_live_progress_follows_states_and_map_runs() -> None:
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from mailmatrix.cli.engine_cmds import LiveProgress

    progress = Progress(console=Console(file=StringIO()))
    live = LiveProgress(progress)
    live.on_event("e", {"type": "MapStateEntered", "stateEnteredEventDetails": {"name": "Fan"}})
    live.on_map_run(
        {"mapRunArn": "arn:x", "stateName": "Fan", "total": 4, "succeeded": 2, "failed": 1}
    )
    tasks = {t.description: t for t in progress.tasks}
    assert set(tasks) == {"state Fan", "Map Run Fan"}
    assert (tasks["Map Run Fan"].completed, tasks["Map Run Fan"].total) == (3, 4)


def test_bad_execution_name_is_refused(tmp_path: pathlib.Path) -> None:
    runner = CliRunner()
    result = runner.invoke(show_cmd, ["../etc", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no such execution" in result.output  # only names listed in the store resolve


def test_an_input_holding_a_lone_surrogate_is_a_usage_error_not_a_traceback(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN an input that is valid JSON, but whose string escapes half a surrogate pair
    path = tmp_path / "def.json"
    path.write_text(json.dumps(DEFINITION))
    args = ["run", str(path), "--input", '{"n": "\\ud800"}', "--workdir", str(tmp_path / "w")]

    result = CliRunner().invoke(sfn_group, args)

    # THEN it is refused as a bad --input, before any execution is made
    assert result.exit_code == 2, result.output
    assert "--input: a string holds a lone surrogate" in " ".join(result.output.split())
    assert not (tmp_path / "w").exists()


def test_state_names_like_markup_are_drawn_as_they_are(tmp_path: pathlib.Path) -> None:
    # GIVEN a definition whose state names hold what rich markup reads as tags, on a console
    # that counts as a terminal (the live display is drawn)
    names = ["[/x] first", "[bold]second"]
    definition = {
        "StartAt": names[0],
        "States": {
            names[0]: {"Type": "Wait", "Seconds": 1, "Next": names[1]},  # drawn meanwhile
            names[1]: {"Type": "Fail", "Error": "[/e]", "Cause": "[/c] cause"},
        },
    }
    path = tmp_path / "def.json"
    path.write_text(json.dumps(definition))
    workdir = ["--workdir", str(tmp_path / "w")]
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    # WHEN it runs and is shown
    ran = CliRunner().invoke(sfn_group, ["run", str(path), "--name", "e1", *workdir], env=terminal)
    shown = CliRunner().invoke(show_cmd, ["e1", *workdir], env={"COLUMNS": "200"})
    # THEN neither breaks, and the names, error and cause are shown as written
    assert ran.exit_code == 1, ran.output
    assert shown.exit_code == 0, shown.output
    for text in (*names, "[/e]", "[/c] cause"):
        assert text in shown.output


def _failed_execution_with_history(tmp_path: pathlib.Path, history: bytes) -> list[str]:
    """Run e1 to a failure in a workdir, then put ``history`` in place of its history."""
    workdir = _failed_execution(tmp_path, "failing_handler")
    (tmp_path / "w" / "executions" / "e1" / "history.jsonl").write_bytes(history)
    return workdir


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (b'{"type":"ExecutionStarted"}\n{"type": \n', "line 2 unreadable"),
        (b"\xff\xfe garbage\n", "line 1 unreadable"),
        (b"[1, 2]\n", "line 1 unreadable: not a JSON object"),
        (b"{}\n", "event 1 has no type"),
    ],
    ids=["cut-json", "not-utf8", "not-an-object", "no-type"],
)
def test_show_of_a_corrupt_history_says_which_line_without_a_traceback(
    tmp_path: pathlib.Path, history: bytes, message: str
) -> None:
    workdir = _failed_execution_with_history(tmp_path, history)

    shown = CliRunner().invoke(show_cmd, ["e1", *workdir])

    assert shown.exit_code == 2
    assert "history.jsonl" in shown.output and message in shown.output
    assert shown.exception is None or isinstance(shown.exception, SystemExit)


def test_executions_lists_an_execution_whose_history_is_corrupt(tmp_path: pathlib.Path) -> None:
    # GIVEN a MailMatrix workdir (it has settings.json) whose failed execution has a torn history
    workdir = _failed_execution_with_history(tmp_path, b'{"type": \n')
    (tmp_path / "w" / "settings.json").write_text("{}")
    # WHEN its executions are listed
    listed = CliRunner().invoke(executions_cmd, workdir, env={"COLUMNS": "200"})
    # THEN the list is drawn, with the execution in it
    assert listed.exit_code == 0, listed.output
    assert "e1" in listed.output and "FAILED" in listed.output


def test_a_record_that_is_not_an_execution_is_left_out_of_the_list(tmp_path: pathlib.Path) -> None:
    workdir = _failed_execution_with_history(tmp_path, b'{"type":"ExecutionStarted"}\n')
    (tmp_path / "w" / "executions" / "e2").mkdir()
    (tmp_path / "w" / "executions" / "e2" / "execution.json").write_text("[]")

    listed = CliRunner().invoke(executions_cmd, workdir, env={"COLUMNS": "200"})

    assert listed.exit_code == 0, listed.output
    assert "e1" in listed.output


def test_a_damaged_execution_record_is_named_not_lost(tmp_path: pathlib.Path) -> None:
    # GIVEN two executions in a workdir, one of whose records was damaged
    path = tmp_path / "def.json"
    path.write_text(json.dumps(DEFINITION))
    workdir = ["--workdir", str(tmp_path / "w")]
    ok = [f"--function=Fn={__name__}:echo_handler"]
    runner = CliRunner()
    for name in ("kept", "damaged"):
        args = ["run", str(path), "--input", '{"n": 1}', "--name", name, *ok, *workdir]
        ran = runner.invoke(sfn_group, args)
        assert ran.exit_code == 0, ran.output
    record = tmp_path / "w" / "executions" / "damaged" / "execution.json"
    record.write_text("{broken")

    # WHEN the executions are listed THEN the damaged one is named, with why
    listing = runner.invoke(executions_cmd, workdir)
    assert listing.exit_code == 0
    assert "kept" in listing.stdout
    assert f"mailmatrix executions: {record}: unreadable: " in listing.stderr
    # AND show and redrive of it say it cannot be read, not that there is no such execution
    for command in (show_cmd, redrive_cmd):
        refused = runner.invoke(command, ["damaged", *workdir])
        assert refused.exit_code == 2
        assert f"store: {record}: unreadable: " in refused.output
        assert "no such execution" not in refused.output
