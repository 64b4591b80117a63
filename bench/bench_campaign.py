"""The whole local campaign next to mailmerge and next to the machine's floor.

One campaign: 10,000 rows, two templates picked by Status (the bundled templates/ and the
demo's columns), a distinct 50 KB random PDF per row. Measured side by side, each in a child
process of its own, with its peak memory:

- mailmerge (the PyPI CLI, installed only for this benchmark into .venv/bench-mailmerge):
  ``--dry-run --no-limit`` with the same two templates written in its format, output to a file;
- MailMatrix: ``mailmatrix run`` (validation, state machine, ledger, report) into its Maildir;
- the floor: read each attachment, base64-encode it, write a file of the same size as the
  MailMatrix message, nothing else (one process, like mailmerge).

Each contender runs MAILMATRIX_BENCH_RUNS times (default 3), in turn, and its fastest run
counts; every run's time is printed; peak memory is the largest of the runs.

Where the outputs go: MailMatrix and the floor each make 10,000 files, mailmerge one. On the
disk of the machine this was written on (ext4 mounted without a journal), the kernel's time
to make a file depends on what other processes deleted in the minutes before (the inode
allocator of a file system without a journal passes over inodes freed recently): 10,000
files of 75 KB took 0.6 to 4.5 s of system time there, against 0.4 s, steady, on tmpfs. That
is the machine's weather, not either program, so the three contenders write their outputs to
a folder on tmpfs (/dev/shm) when it has room (MAILMATRIX_BENCH_OUTPUT=DIR picks another
folder, ``disk`` the benchmark's own temporary folder). The run also prints, side by side,
making 10,000 such files on the disk and on the folder used, and one more turn of
MailMatrix and of the floor writing to the disk, with their ratios (``*_disk``).

Peak memory is the most the process tree held at once, polled from /proc every 100 ms: the sum
of RSS over its processes (``peak_rss_mb``; it counts pages the forked workers share with the
main process once per process, so it overstates) and, for reference, the sum of PSS
(proportional set size: shared pages counted once). A last run without attachments
(MAILMATRIX_BENCH_FLAT_ROWS rows each, default 20,000 and 100,000; templates with
``attachment: none``) shows whether memory grows with the campaign's size: the two peaks
and their ratio (1.00 is flat). That part alone: ``python -m bench.bench_campaign flat OUT``.
"""

from __future__ import annotations

import csv
import os
import pathlib
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROWS = int(os.environ.get("MAILMATRIX_BENCH_ROWS", "10000"))
FLAT_ROWS = [
    int(n) for n in os.environ.get("MAILMATRIX_BENCH_FLAT_ROWS", "20000,100000").split(",") if n
]
ATTACHMENT_BYTES = 50 * 1024
MILLION = 1_000_000
RUNS = max(1, int(os.environ.get("MAILMATRIX_BENCH_RUNS", "3")))
POLL_SECONDS = 0.1  # memory polling; faster polling took a fifth of a core from the runs
MAILMERGE = "mailmerge==2.3.0"
REPO = pathlib.Path(__file__).resolve().parents[1]
MAILMERGE_VENV = REPO / ".venv" / "bench-mailmerge"
CONTEXT = {  # the templates' manifest constants, which mailmerge's template sets itself
    "company": "Acme Corporation",
    "signatory": "Dana Whitfield",
    "signatory_title": "Head of Talent Acquisition",
    "company_address": "1 Example Street, Springfield",
    "contact_email": "talent@example.com",
}
HEADER = ["Email", "Name", "Status", "Attachment_File", "Position", "Department"]
HEADER += ["Start_Date", "Salary"]
_POSITIONS = (("Data Engineer", "Analytics"), ("Backend Developer", "Platform"))
_NAMES = ("Amelia Hart", "José García", "Zoë Ångström", "陈静", "Sean O'Brien", "Ingrid Larsen")


# --- the campaign -------------------------------------------------------------------------------


def make_campaign(folder: pathlib.Path, rows: int, *, attachments: bool = True) -> pathlib.Path:
    """Write recipients.csv (and attachments/, one random PDF a row); return the CSV's path."""
    rng = random.Random(20261204)
    files = folder / "attachments"
    files.mkdir(parents=True, exist_ok=True)
    path = folder / "recipients.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i in range(rows):
            offer = i % 3 != 2
            position, department = _POSITIONS[i % len(_POSITIONS)]
            name = f"letter-{i:07d}.pdf" if attachments else ""
            if attachments:
                body = b"%PDF-1.4\n" + rng.randbytes(ATTACHMENT_BYTES - 16) + b"\n%%EOF\n"
                (files / name).write_bytes(body)
            writer.writerow(
                [
                    f"person.{i}@example.com",
                    f"{_NAMES[i % len(_NAMES)]} {i}",
                    "Offer" if offer else "Rejection",
                    name,
                    position,
                    department,
                    f"2027-{1 + i % 12:02d}-11" if offer else "",
                    f"€{60 + i % 30},000" if offer else "",
                ]
            )
    return path


def no_attachment_templates(folder: pathlib.Path) -> pathlib.Path:
    """The bundled templates with ``attachment: none`` for both sets (the flat-memory run)."""
    target = folder / "templates"
    shutil.copytree(REPO / "templates", target, dirs_exist_ok=True)
    manifest = target / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8").replace("attachment: required", "attachment: none")
    manifest.write_text(text, encoding="utf-8")
    return target


# --- measuring a child process ------------------------------------------------------------------


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from each thread's /proc children list)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, (0, 0) once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def warm(folder: pathlib.Path) -> None:
    """Read every file under ``folder``, so each contender starts with the same page cache."""
    for entry in os.scandir(folder):
        if entry.is_file():
            with open(entry.path, "rb") as stream:
                while stream.read(1 << 20):
                    pass


def measured(
    command: list[str],
    *,
    stdout: pathlib.Path,
    cwd: pathlib.Path | None = None,
    inputs: pathlib.Path | None = None,
) -> dict:
    """Run ``command`` alone; return its seconds and the peak PSS / RSS of its process tree.

    ``inputs`` (the attachments) are read first: this machine pages out files it has not
    touched for a while, and the contender that ran before must not warm them for the next.
    """
    if inputs is not None and inputs.is_dir():
        warm(inputs)
    os.sync()  # nor inherit the write-back of what the one before wrote
    peak = {"rss": 0, "pss": 0}
    # The contenders run one at a time and each waits for its own processes: what the
    # children's CPU grows by is this one's tree.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with stdout.open("wb") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, cwd=cwd)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                totals = [_memory_kb(pid) for pid in _tree(child.pid)]
                peak["rss"] = max(peak["rss"], sum(t[0] for t in totals))
                peak["pss"] = max(peak["pss"], sum(t[1] for t in totals))
                done.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, stderr = child.communicate()
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {child.returncode}: {stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_mb": peak["rss"] / 1024,
        "pss_mb": peak["pss"] / 1024,
    }


# --- the three contenders -----------------------------------------------------------------------


def mailmerge_python() -> pathlib.Path:
    """The mailmerge venv's python, created on first use (never the project's venv)."""
    python = MAILMERGE_VENV / "bin" / "python"
    if not (MAILMERGE_VENV / "bin" / "mailmerge").exists():
        subprocess.run([sys.executable, "-m", "venv", str(MAILMERGE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MAILMERGE], check=True)
    return python


def mailmerge_files(folder: pathlib.Path, csv_path: pathlib.Path) -> list[str]:
    """The same two templates in mailmerge's format; return mailmerge's arguments."""
    for name in ("layout", "offer", "rejection"):
        shutil.copytree(REPO / "templates" / name, folder / name, dirs_exist_ok=True)
    constants = "".join(f'{{%- set {k} = "{v}" -%}}\n' for k, v in CONTEXT.items())
    (folder / "template.txt").write_text(
        constants + '{%- set chosen = "offer" if Status == "Offer" else "rejection" -%}\n'
        "TO: {{ Name }} <{{ Email }}>\n"
        "FROM: Acme Talent <talent@example.com>\n"
        'SUBJECT: {% include chosen + "/subject.txt" %}\n'
        f"ATTACHMENT: {csv_path.parent / 'attachments'}/{{{{ Attachment_File }}}}\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="mailmerge-alternative"\n\n'
        "--mailmerge-alternative\nContent-Type: text/plain; charset=utf-8\n\n"
        '{% include chosen + "/body.txt" %}\n\n'
        "--mailmerge-alternative\nContent-Type: text/html; charset=utf-8\n\n"
        '{% include chosen + "/body.html" %}\n\n'
        "--mailmerge-alternative--\n",
        encoding="utf-8",
    )
    (folder / "server.conf").write_text(
        "[smtp_server]\nhost = 127.0.0.1\nport = 25\nsecurity = Never\nusername = None\n",
        encoding="utf-8",
    )
    return [
        "--dry-run",
        "--no-limit",
        "--output-format",
        "raw",
        "--template",
        str(folder / "template.txt"),
        "--database",
        str(csv_path),
        "--config",
        str(folder / "server.conf"),
    ]


def mailmatrix_command(csv_path: pathlib.Path, workdir: pathlib.Path, *extra: str) -> list[str]:
    """``mailmatrix run`` on ``csv_path`` into ``workdir`` (validation, ledger, report)."""
    script = pathlib.Path(sys.executable).parent / "mailmatrix"
    return [str(script), "run", str(csv_path), "--workdir", str(workdir), "--json", *extra]


def floor(attachments: pathlib.Path, out: pathlib.Path, sizes_file: pathlib.Path) -> None:
    """Base64-encode each attachment and write a file of the given size; nothing else."""
    import binascii

    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in sizes_file.read_text().split()]
    names = sorted(os.listdir(attachments))
    for index, (name, size) in enumerate(zip(names, sizes, strict=False)):
        with open(attachments / name, "rb") as source:
            encoded = binascii.b2a_base64(source.read())
        body = encoded + b"x" * max(0, size - len(encoded))
        with open(out / f"{index}.eml", "wb") as target:
            target.write(body[:size])


# --- the benchmark ------------------------------------------------------------------------------

TMPFS = pathlib.Path("/dev/shm")
OUTPUT_ROOM = 4 * 1024**3  # the outputs of the turns on tmpfs: two of 750 MB at a time, and more


def output_root(out_dir: pathlib.Path) -> pathlib.Path:
    """The folder the contenders write to (see the module's docstring)."""
    chosen = os.environ.get("MAILMATRIX_BENCH_OUTPUT", "")
    if chosen == "disk":
        return out_dir
    if chosen:
        return pathlib.Path(chosen)
    try:
        room = os.statvfs(TMPFS)
    except OSError:
        return out_dir
    if room.f_bavail * room.f_frsize < OUTPUT_ROOM or not os.access(TMPFS, os.W_OK):
        return out_dir
    return TMPFS


def file_making(folder: pathlib.Path, count: int, size: int) -> float:
    """CPU seconds (user and system) to make ``count`` files of ``size`` bytes in ``folder``,
    as the floor writes them; the files are removed after."""
    folder.mkdir(parents=True)
    data = os.urandom(size)
    started = time.process_time()
    for index in range(count):
        with open(folder / f"{index}.eml", "wb") as target:
            target.write(data)
    spent = time.process_time() - started
    shutil.rmtree(folder)
    return spent


def _outbox_sizes(workdir: pathlib.Path) -> list[int]:
    return [entry.stat().st_size for entry in os.scandir(workdir / "outbox" / "new")]


def _best(runs: list[dict]) -> dict:
    """The fastest run's time, with the largest peak memory of all the runs."""
    fastest = min(runs, key=lambda m: m["seconds"])
    return {
        "seconds": fastest["seconds"],
        "cpu_s": fastest["cpu_s"],
        "rss_mb": max(m["rss_mb"] for m in runs),
        "pss_mb": max(m["pss_mb"] for m in runs),
    }


def run(out_dir: pathlib.Path) -> dict[str, str]:
    """Measure mailmerge, MailMatrix and the floor on the same campaign; then the flat run."""
    campaign = out_dir / "campaign"
    started = time.perf_counter()
    csv_path = make_campaign(campaign, ROWS)
    print(f"campaign: {ROWS} rows, {ATTACHMENT_BYTES // 1024} KB PDF each", end="")
    print(f" (generated in {time.perf_counter() - started:.1f} s)", flush=True)

    args = mailmerge_files(out_dir / "mailmerge", csv_path)
    mailmerge_python()
    root = output_root(out_dir)
    outputs = pathlib.Path(tempfile.mkdtemp(prefix="mm-bench-out-", dir=root))
    try:
        return _turns(out_dir, outputs, csv_path, args)
    finally:
        shutil.rmtree(outputs, ignore_errors=True)


def _turns(
    out_dir: pathlib.Path, outputs: pathlib.Path, csv_path: pathlib.Path, args: list[str]
) -> dict[str, str]:
    """The three contenders' turns, writing to ``outputs``; then the same on the disk."""
    campaign = csv_path.parent
    print(f"outputs written to {outputs.parent}", flush=True)
    inputs = campaign / "attachments"
    sizes_file = out_dir / "sizes.txt"
    runs: dict[str, list[dict]] = {"mm": [], "us": [], "fl": []}
    for attempt in range(RUNS):  # in turn, so a slow spell of the machine hits all three
        runs["mm"].append(
            measured(
                [str(MAILMERGE_VENV / "bin" / "mailmerge"), *args],
                stdout=outputs / "dry-run.txt",
                inputs=inputs,
            )
        )
        workdir = outputs / "mailmatrix"
        shutil.rmtree(workdir, ignore_errors=True)
        runs["us"].append(_mailmatrix_turn(csv_path, workdir, out_dir, inputs))
        sizes = _outbox_sizes(workdir)
        sizes_file.write_text("\n".join(map(str, sizes)))
        floor_out = outputs / "floor"
        shutil.rmtree(floor_out, ignore_errors=True)
        runs["fl"].append(_floor_turn(inputs, floor_out, sizes_file, out_dir))
        print(
            f"run {attempt + 1}/{RUNS}: "
            + ", ".join(
                f"{label} {runs[key][-1]['seconds']:.1f} s"
                for label, key in (("mailmerge", "mm"), ("MailMatrix", "us"), ("floor", "fl"))
            ),
            flush=True,
        )
    merge, ours, base = (_best(runs[key]) for key in ("mm", "us", "fl"))
    rates = {name: ROWS / m["seconds"] for name, m in (("mm", merge), ("us", ours), ("fl", base))}
    total_mb = sum(sizes) / 1e6
    print(f"{'':12}{'msg/s':>9}{'seconds':>9}{'CPU s':>8}{'peak PSS MB':>13}{'peak RSS MB':>13}")
    for label, key, m in (
        ("mailmerge", "mm", merge),
        ("MailMatrix", "us", ours),
        ("floor", "fl", base),
    ):
        print(
            f"{label:12}{rates[key]:9.0f}{m['seconds']:9.1f}{m['cpu_s']:8.1f}"
            f"{m['pss_mb']:13.0f}{m['rss_mb']:13.0f}"
        )
    print(f"outbox: {total_mb:.0f} MB in {ROWS} messages", flush=True)
    # However well the work is spread, the run cannot take less than its CPU time over the
    # cores: the floor ratio that CPU time allows.
    cores = os.cpu_count() or 1
    fewest_seconds = ours["cpu_s"] / cores
    bound = base["seconds"] / fewest_seconds if fewest_seconds else 0.0
    print(
        f"MailMatrix used {ours['cpu_s']:.1f} s of CPU ({ours['cpu_s'] / ROWS * 1e3:.2f} ms a"
        f" message, user and system): on {cores} cores it cannot take less than"
        f" {fewest_seconds:.1f} s, a floor ratio of at most {bound:.2f}",
        flush=True,
    )

    shutil.rmtree(outputs / "mailmatrix", ignore_errors=True)
    shutil.rmtree(outputs / "floor", ignore_errors=True)
    disk = _on_disk(out_dir, outputs, csv_path, sizes_file, merge["seconds"])
    flat = flat_memory(out_dir / "flat")
    figures = {
        "campaign_msgs_per_s": f"{rates['us']:.0f}",
        "mailmerge_msgs_per_s": f"{rates['mm']:.0f}",
        "floor_msgs_per_s": f"{rates['fl']:.0f}",
        "mailmerge_peak_rss_mb": f"{merge['rss_mb']:.0f}",
        "campaign_peak_pss_mb": f"{ours['pss_mb']:.0f}",
        **flat,
        "mailmerge_ratio": f"{rates['us'] / rates['mm']:.2f}",
        "floor_ratio": f"{rates['us'] / rates['fl']:.2f}",
        "campaign_cpu_s": f"{ours['cpu_s']:.1f}",
        "floor_ratio_cpu_bound": f"{bound:.2f}",
        # RSS summed over the process tree: pages the forked workers share with the main
        # process count once per process, so this overstates the memory used (PSS is printed)
        "peak_rss_mb": f"{ours['rss_mb']:.0f}",
        **disk,
    }
    return figures


def _mailmatrix_turn(
    csv_path: pathlib.Path, workdir: pathlib.Path, out_dir: pathlib.Path, inputs: pathlib.Path
) -> dict:
    """One measured ``mailmatrix run`` into ``workdir``, its outbox checked whole."""
    result = measured(
        mailmatrix_command(csv_path, workdir), stdout=out_dir / "mailmatrix.json", inputs=inputs
    )
    sent = len(_outbox_sizes(workdir))
    if sent != ROWS:
        raise RuntimeError(f"mailmatrix: {sent} messages in the outbox, expected {ROWS}")
    return result


def _floor_turn(
    inputs: pathlib.Path, floor_out: pathlib.Path, sizes_file: pathlib.Path, out_dir: pathlib.Path
) -> dict:
    """One measured run of the floor into ``floor_out``."""
    return measured(
        [
            *(sys.executable, "-m", "bench.bench_campaign", "floor"),
            *(str(inputs), str(floor_out), str(sizes_file)),
        ],
        stdout=out_dir / "floor.txt",
        cwd=REPO,
        inputs=inputs,
    )


def _on_disk(
    out_dir: pathlib.Path,
    outputs: pathlib.Path,
    csv_path: pathlib.Path,
    sizes_file: pathlib.Path,
    mailmerge_seconds: float,
) -> dict[str, str]:
    """When the turns wrote to tmpfs: making the files on the disk and there, side by side,
    and one turn of MailMatrix and of the floor on the disk, with their ratios."""
    if outputs.parent == out_dir:
        return {}
    inputs = csv_path.parent / "attachments"
    try:  # nothing deleted on the disk between these two: a deletion slows what follows
        ours = _mailmatrix_turn(csv_path, out_dir / "mailmatrix-disk", out_dir, inputs)
        base = _floor_turn(inputs, out_dir / "floor-disk", sizes_file, out_dir)
    finally:
        shutil.rmtree(out_dir / "mailmatrix-disk", ignore_errors=True)
        shutil.rmtree(out_dir / "floor-disk", ignore_errors=True)
    sizes = [int(n) for n in sizes_file.read_text().split()]
    size = sum(sizes) // len(sizes)
    on_disk = file_making(out_dir / "probe", ROWS, size)
    here = file_making(outputs / "probe", ROWS, size)
    print(
        f"making {ROWS} files of {size / 1024:.0f} KB: {on_disk:.1f} s of CPU on the disk,"
        f" {here:.1f} s in {outputs.parent}",
        flush=True,
    )
    ratios = {
        "mailmerge_ratio_disk": f"{mailmerge_seconds / ours['seconds']:.2f}",
        "floor_ratio_disk": f"{base['seconds'] / ours['seconds']:.2f}",
    }
    print(
        f"on the disk, one turn each: MailMatrix {ours['seconds']:.1f} s ({ours['cpu_s']:.1f} s"
        f" CPU), floor {base['seconds']:.1f} s: mailmerge ratio"
        f" {ratios['mailmerge_ratio_disk']}, floor ratio {ratios['floor_ratio_disk']}",
        flush=True,
    )
    return {
        "file_making_disk_s": f"{on_disk:.2f}",
        "file_making_s": f"{here:.2f}",
        **ratios,
    }


def flat_memory(folder: pathlib.Path) -> dict[str, str]:
    """Campaigns without attachments of each size in FLAT_ROWS: peak memory of each."""
    templates = no_attachment_templates(folder)
    figures = {}
    runs: list[tuple[int, float, float]] = []
    for rows in FLAT_ROWS:
        csv_path = make_campaign(folder / f"rows-{rows}", rows, attachments=False)
        result = measured(
            mailmatrix_command(
                csv_path,
                folder / f"work-{rows}",
                "--templates",
                str(templates),
                "--attachments",
                str(csv_path.parent / "attachments"),
            ),
            stdout=folder / f"run-{rows}.json",
        )
        print(
            f"no attachments, {rows} rows: {rows / result['seconds']:.0f} msg/s,"
            f" peak RSS sum {result['rss_mb']:.0f} MB (PSS {result['pss_mb']:.0f} MB)",
            flush=True,
        )
        figures[f"flat_{rows}_peak_rss_mb"] = f"{result['rss_mb']:.0f}"
        runs.append((rows, result["rss_mb"], rows / result["seconds"]))
        shutil.rmtree(folder / f"work-{rows}", ignore_errors=True)
    if len(runs) >= 2 and runs[-1][0] < MILLION:
        (small, small_mb, _), (large, large_mb, rate) = runs[0], runs[-1]
        per_row_kb = (large_mb - small_mb) * 1024 / (large - small)
        projected = large_mb + per_row_kb * (MILLION - large) / 1024
        print(
            f"1,000,000 rows not run: about {MILLION / rate / 60:.0f} min at {rate:.0f} msg/s;"
            f" memory grows {per_row_kb:.1f} KB a row from {small} to {large} rows,"
            f" so about {projected:.0f} MB at 1,000,000 (not flat)"
            if per_row_kb > 0.5
            else f"1,000,000 rows not run: about {MILLION / rate / 60:.0f} min; memory flat",
            flush=True,
        )
        figures["flat_kb_per_row"] = f"{per_row_kb:.1f}"
    if len(runs) >= 2:
        (small, small_mb, _), (large, large_mb, _) = runs[0], runs[-1]
        ratio = large_mb / small_mb if small_mb else 0.0
        print(
            f"peak memory at {large} rows / at {small} rows: {large_mb:.0f} / {small_mb:.0f} MB"
            f" = {ratio:.2f} for {large / small:.0f}x the rows",
            flush=True,
        )
        figures["flat_peak_ratio"] = f"{ratio:.2f}"
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor"]:
        floor(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4]))
    elif sys.argv[1:2] == ["flat"]:
        figures = flat_memory(pathlib.Path(sys.argv[2]))
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    else:
        figures = run(pathlib.Path(sys.argv[1]))
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
