"""``wmlp slurm status|logs|cancel``: a submitted job, named by its run folder or its job id. Torch-free."""

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

from ..render import jobs
from ..render.target import Target

POLL_S = 0.5  # how often `logs --follow` and `cancel` ask Slurm


def record_job(target: Target, run_dir: Optional[str], parsable: str, script: Path, resolved_recipe: Path,
               sbatch_args: Sequence[str] = ()) -> None:
    """After ``sbatch``: job.json in the run folder (``--run-dir``, else the script's default, from here).

    The job is submitted already, so a folder that cannot be written is a warning, not an error."""
    job_id = parsable.split(";", 1)[0]
    folder = Path(run_dir) if run_dir else Path(target.run_name() + "-" + job_id)
    try:
        jobs.record_submission(folder, parsable, script, str(resolved_recipe), target.site.name or None, Path.cwd(),
                               sbatch_args)
    except OSError as exc:
        click.echo("wmlp: warning: job {} is submitted, but {} cannot be written ({}): `wmlp slurm status {}` "
                   "still works".format(job_id, folder / jobs.RECORD, exc.strerror or exc, job_id), err=True)


def _restarts(job: jobs.Job, info: jobs.JobInfo) -> Optional[int]:
    if info.restarts is not None:
        return info.restarts
    other = jobs.scontrol_info(job.job_id) if info.source != "scontrol" else None
    if other is not None and other.restarts is not None:
        return other.restarts
    return jobs.node_logs(job.run_dir, job.job_id)[0] if job.run_dir else None


def _status(job: jobs.Job, info: jobs.JobInfo) -> Dict[str, object]:
    run_dir = job.run_dir
    checkpoint = jobs.newest_checkpoint(run_dir) if run_dir else None
    last = jobs.last_line(run_dir / "steps.jsonl") if run_dir else None
    try:
        last_step = json.loads(last) if last else None
    except ValueError:
        last_step = last
    return {
        "job_id": job.job_id,
        "state": info.state,
        "source": info.source,
        "restarts": _restarts(job, info),
        "nodes": info.nodes,
        "run_dir": str(run_dir) if run_dir else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "last_step": last_step,
    }


def _known(job: jobs.Job) -> jobs.JobInfo:
    info = jobs.query(job.job_id)
    if info is None:
        where = " (run folder {})".format(job.run_dir) if job.run_dir else ""
        raise jobs.JobError("job {}{}: Slurm does not know it (ended long ago, or another cluster's)".format(
            job.job_id, where))
    return info


@click.command("status")
@click.argument("ref", metavar="RUN|JOB")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one object, for scripts.")
def slurm_status(ref: str, fmt: str) -> None:
    """State of a job: its run folder (with job.json) or its job id."""
    job = jobs.resolve(ref)
    status = _status(job, _known(job))
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
        return
    rows = [
        ("job", status["job_id"]),
        ("state", "{} (from {})".format(status["state"], status["source"])),
        ("restarts", "?" if status["restarts"] is None else status["restarts"]),
        ("nodes", status["nodes"] or "-"),
        ("run folder", status["run_dir"] or "unknown (name the run folder instead of the job id)"),
        ("checkpoint", status["checkpoint"] or "none yet"),
    ]
    if status["last_step"] is not None:
        last = status["last_step"]
        rows.append(("last step", json.dumps(last, sort_keys=True) if isinstance(last, dict) else last))
    for name, value in rows:
        click.echo("{:<11} {}".format(name + ":", value))


class _Tail:
    """New complete lines of a set of files, each file remembered by its read offset."""

    def __init__(self) -> None:
        self.offsets: Dict[Path, int] = {}
        self.shown: Optional[Path] = None

    def emit(self, paths: List[Path], final: bool = False) -> None:
        for path in paths:
            try:
                with open(str(path), "rb") as fh:
                    fh.seek(self.offsets.get(path, 0))
                    data = fh.read()
            except OSError:
                continue
            if not final:
                data = data[: data.rfind(b"\n") + 1]  # a line still being written waits for its end
            if not data:
                continue
            self.offsets[path] = self.offsets.get(path, 0) + len(data)
            if self.shown != path:
                click.echo("==> {} <==".format(path))
                self.shown = path
            text = data.decode("utf-8", "replace")
            click.echo(text, nl=not text.endswith("\n"))
        sys.stdout.flush()


def _log_files(job: jobs.Job, node: Optional[int]) -> List[Path]:
    files = [p for p in jobs.batch_logs(job.record, job.job_id) if p.is_file()] if node is None else []
    if job.run_dir is not None:
        _, nodes = jobs.node_logs(job.run_dir, job.job_id)
        files += [p for p in nodes if node is None or p.name.endswith("-node{}.log".format(node))]
    return files


@click.command("logs")
@click.argument("run", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job has ended.")
@click.option("--node", type=click.IntRange(0),
              help="Only this node's log (K of ...-node<K>.log), without the batch script's.")
def slurm_logs(run: str, follow: bool, node: Optional[int]) -> None:
    """The batch script's .out/.err and the node logs of the job's newest start."""
    record = jobs.read_record(Path(run))
    job = jobs.Job(str(record["job_id"]), Path(run).resolve(), record)
    tail = _Tail()
    if not follow:
        tail.emit(_log_files(job, node), final=True)
        return
    jobs.need_slurm()
    while True:
        live = jobs.is_live(job.job_id)
        tail.emit(_log_files(job, node))  # a requeued job's new start shows up here too
        if not live:
            break
        time.sleep(POLL_S)
    tail.emit(_log_files(job, node), final=True)


@click.command("cancel")
@click.argument("ref", metavar="RUN|JOB")
@click.option("--timeout", default=120, show_default=True, type=click.IntRange(0),
              help="Seconds to wait for the checkpoint before a plain scancel.")
def slurm_cancel(ref: str, timeout: int) -> None:
    """Stop a job after a checkpoint: mark it not to requeue, signal the batch script, then wait.

    A pending job is simply cancelled; a running one gets the batch script's checkpoint signal (that of
    its `#SBATCH --signal`, USR1 by default) and --timeout seconds to stop, then `scancel`.
    """
    job = jobs.resolve(ref)
    info = _known(job)
    if not info.live:
        click.echo("job {} has already ended ({})".format(job.job_id, info.state))
        return
    if info.state != "RUNNING":
        jobs.scancel(job.job_id)
        click.echo("job {} was {}: cancelled".format(job.job_id, info.state))
        return
    if job.run_dir is not None:
        (job.run_dir / jobs.CANCEL_MARKER).write_text(job.job_id + "\n")
    signal = jobs.batch_signal(job.run_dir, job.job_id)
    jobs.scancel(job.job_id, "--signal={}".format(signal), "--batch")
    click.echo("job {}: {} sent to the batch script, the trainers checkpoint and stop{}".format(
        job.job_id, signal, "" if job.run_dir else " (run folder unknown: no .cancel marker written)"))
    deadline = time.monotonic() + timeout
    while True:
        now = jobs.query(job.job_id)
        if now is None or not now.live:
            click.echo("job {} ended ({})".format(job.job_id, now.state if now else "gone"))
            return
        if now.state in ("PENDING", "REQUEUED") or (now.restarts or 0) > (info.restarts or 0):
            jobs.scancel(job.job_id)
            click.echo("job {} requeued itself after the checkpoint: cancelled".format(job.job_id))
            return
        if time.monotonic() >= deadline:
            jobs.scancel(job.job_id)
            click.echo("job {} still {} after {} s: cancelled (scancel)".format(job.job_id, now.state, timeout))
            return
        time.sleep(POLL_S)


COMMANDS = (slurm_status, slurm_logs, slurm_cancel)
