"""A submitted job: its record in the run folder (``job.json``) and what Slurm says about it.

``wmlp slurm status|logs|cancel`` read the record and ask ``squeue``, then ``sacct`` (with the job
completion log as its fallback), then ``scontrol show job``: a site without an accounting database still
answers. Runs on login nodes: Python 3.8 syntax, no torch.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import KitError

RECORD = "job.json"
CANCEL_MARKER = ".cancel"  # holds the job id: the batch script does not requeue that job
# States in which a job still holds, or waits for, an allocation (squeue lists them).
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                         "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"})
_NODE_LOG = re.compile(r"^(\d+)-restart(\d+)-node(\d+)\.log$")
_RUN_LINE = re.compile(r"^wmlp: job (\d+) start \d+: .*?, run folder (.+?)(?:, recipe .*)?$")


class JobError(KitError):
    """A run folder without a record, a job Slurm does not know, a Slurm command that failed."""


class JobInfo(NamedTuple):
    job_id: str
    state: str  # first word of Slurm's state: CANCELLED, not "CANCELLED by 0"
    nodes: str  # Slurm's node list ("" before the job has nodes)
    restarts: Optional[int]  # None: the source does not say
    source: str  # squeue, sacct or scontrol
    stderr: str = ""  # the batch script's error file (scontrol names it)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


# ------------------------------------------------------------------------------------------ the record


def record_submission(
    run_dir: Path,
    job_id: str,
    script: Path,
    recipe: Optional[str],
    site: Optional[str],
    submit_dir: Path,
    sbatch_args: Sequence[str] = (),
) -> Path:
    """Write ``<run dir>/job.json`` (atomically); earlier submissions into the folder move to ``history``.

    ``job_id`` is what ``sbatch --parsable`` printed: ``ID`` or ``ID;CLUSTER``. The script is kept as
    ``<run dir>/logs/<job id>.sbatch``, the name the job gives the copy it makes when it starts. A
    ``.cancel`` left by an earlier job of the folder goes: it must not stop this one's requeues.
    """
    run_dir = Path(run_dir)
    job, _, cluster = str(job_id).strip().partition(";")
    kept = run_dir / "logs" / "{}.sbatch".format(job)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(script), str(kept))
    entry = {
        "job_id": job,
        "cluster": cluster or None,
        "script": str(kept.resolve()),
        "recipe": str(Path(recipe).resolve()) if recipe else None,
        "site": site or None,
        "submit_dir": str(Path(submit_dir).resolve()),
        "job_name": _job_name(Path(script)),
        "sbatch_args": list(sbatch_args),
        "submitted": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = run_dir / RECORD
    history: List[Dict[str, Any]] = []
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if isinstance(old, dict):
            history = list(old.pop("history", []) or []) + [old]
    entry["history"] = history
    _write_atomic(path, json.dumps(entry, indent=2) + "\n")
    marker = run_dir / CANCEL_MARKER
    if marker.is_file() and marker.read_text(errors="replace").strip() != job:
        marker.unlink()  # an earlier job's cancel: this one, resuming the folder, may requeue again
    return path


def _job_name(script: Path) -> str:
    for line in script.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#SBATCH --job-name="):
            return line.split("=", 1)[1].strip()
    return ""


def _write_atomic(path: Path, text: str) -> None:
    tmp = str(path.with_name(".{}.{}.{}".format(path.name, os.getpid(), uuid.uuid4().hex[:8])))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides, as for any file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_record(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError("{}: no {} here: not a run folder of `wmlp slurm submit`".format(run_dir, RECORD)) from None
    except (OSError, ValueError) as exc:
        raise JobError("{}: unreadable ({})".format(path, exc)) from None
    if not isinstance(record, dict) or not str(record.get("job_id", "")).isdigit():
        raise JobError("{}: no job id in it".format(path))
    return record


class Job(NamedTuple):
    """A job as the user named it: by run folder (with its record) or by job id (run folder if Slurm tells)."""

    job_id: str
    run_dir: Optional[Path]
    record: Dict[str, Any]


def resolve(ref: str) -> Job:
    """``RUN`` (a folder with job.json) or ``JOB`` (a job id; its run folder from the job's first log line)."""
    path = Path(ref)
    if path.is_dir():
        record = read_record(path)
        return Job(str(record["job_id"]), path.resolve(), record)
    if not ref.isdigit():
        raise JobError("{}: neither a run folder nor a job id".format(ref))
    info = query(ref)
    if info is None:
        raise JobError("job {}: Slurm does not know it (ended long ago, or another cluster's)".format(ref))
    known = info if info.source == "scontrol" else scontrol_info(ref)  # the one that names the .err file
    run_dir = _run_dir_from_stderr(ref, known.stderr) if known is not None else None
    record = read_record(run_dir) if run_dir is not None and (run_dir / RECORD).is_file() else {}
    return Job(ref, run_dir, record)


def _run_dir_from_stderr(job_id: str, stderr: str) -> Optional[Path]:
    """The batch script's first line names the run folder: ``wmlp: job ID start N: ..., run folder DIR``."""
    if not stderr:
        return None
    try:
        with open(stderr, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = _RUN_LINE.match(line.rstrip("\n"))
                if match and match.group(1) == job_id and os.path.isdir(match.group(2)):
                    return Path(match.group(2))
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------- Slurm queries


def _run(argv: Sequence[str], timeout: float = 30.0) -> Tuple[int, str, str]:
    exe = shutil.which(argv[0])
    if exe is None:
        return 127, "", "{}: not on PATH".format(argv[0])
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", "{} timed out after {:.0f} s".format(argv[0], timeout)
    return done.returncode, done.stdout, done.stderr


def need_slurm() -> None:
    if shutil.which("squeue") is None and shutil.which("scontrol") is None:
        raise JobError("squeue and scontrol are not on PATH: run this on a Slurm login node")


def _from_squeue(job_id: str) -> Optional[JobInfo]:
    rc, out, _ = _run(["squeue", "-h", "-j", job_id, "-O", "JobID:|,State:|,NodeList:|,RestartCnt:|"])
    for line in out.splitlines() if rc == 0 else ():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 4 and fields[0] == job_id:
            restarts = int(fields[3]) if fields[3].isdigit() else None
            nodes = "" if fields[2] in ("", "(null)") else fields[2]
            return JobInfo(job_id, fields[1].split()[0], nodes, restarts, "squeue")
    return None


def _from_sacct(job_id: str) -> Optional[JobInfo]:
    # Without an accounting database sacct fails; `sacct -c` reads the job completion log instead.
    for extra in ([], ["-c"]):
        rc, out, _ = _run(["sacct", *extra, "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,NodeList"])
        rows = [line.split("|") for line in out.splitlines() if line.strip()] if rc == 0 else []
        rows = [row for row in rows if len(row) >= 3 and row[0] == job_id]
        if rows:
            _, state, nodes = rows[-1][:3]
            nodes = "" if nodes in ("None assigned", "(null)") else nodes
            return JobInfo(job_id, state.split()[0], nodes, None, "sacct")
        if rc == 0:
            return None
    return None


def scontrol_info(job_id: str) -> Optional[JobInfo]:
    rc, out, _ = _run(["scontrol", "show", "job", "-o", job_id])
    line = next((ln for ln in out.splitlines() if ln.startswith("JobId={} ".format(job_id))), "") if rc == 0 else ""
    if not line:
        return None
    fields = dict(re.findall(r"(?:^|\s)(\w+)=(\S*)", line))
    nodes = fields.get("NodeList", "")
    restarts = fields.get("Restarts", "")
    return JobInfo(job_id, fields.get("JobState", "UNKNOWN"), "" if nodes == "(null)" else nodes,
                   int(restarts) if restarts.isdigit() else None, "scontrol", fields.get("StdErr", ""))


def query(job_id: str) -> Optional[JobInfo]:
    """What Slurm says of a job (squeue, else sacct, else scontrol); None when none of them knows it."""
    need_slurm()
    for source in (_from_squeue, _from_sacct, scontrol_info):
        info = source(job_id)
        if info is not None:
            return info
    return None


def is_live(job_id: str) -> bool:
    """Still queued or running: squeue lists it (a requeued job is live again)."""
    info = _from_squeue(job_id)
    return info is not None and info.live


def scancel(job_id: str, *args: str) -> None:
    rc, out, err = _run(["scancel", *args, job_id])
    if rc != 0:
        raise JobError("scancel {} failed (exit {}): {}".format(job_id, rc, " ".join((err or out).split())))


def batch_signal(run_dir: Optional[Path], job_id: str, default: str = "USR1") -> str:
    """The signal the job's batch script traps to checkpoint (its ``#SBATCH --signal=B:SIG@T`` line)."""
    script = run_dir / "logs" / "{}.sbatch".format(job_id) if run_dir is not None else None
    if script is not None and script.is_file():
        match = re.search(r"^#SBATCH --signal=B:(\w+)@", script.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    return default


# ------------------------------------------------------------------------------------ the run folder


def node_logs(run_dir: Path, job_id: str) -> Tuple[Optional[int], List[Path]]:
    """The node logs of the job's newest start: (restart N, [node0, node1, ...]); (None, []) before any."""
    found: Dict[int, List[Tuple[int, Path]]] = {}
    logs = Path(run_dir) / "logs"
    for path in logs.iterdir() if logs.is_dir() else ():
        match = _NODE_LOG.match(path.name)
        if match and match.group(1) == job_id:
            found.setdefault(int(match.group(2)), []).append((int(match.group(3)), path))
    if not found:
        return None, []
    newest = max(found)
    return newest, [path for _, path in sorted(found[newest])]


def batch_logs(record: Dict[str, Any], job_id: str) -> List[Path]:
    """``<submit dir>/<job name>-<job id>.out`` and ``.err`` (the template's ``%x-%j``)."""
    if not record.get("submit_dir") or not record.get("job_name"):
        return []
    base = Path(record["submit_dir"]) / "{}-{}".format(record["job_name"], job_id)
    return [base.with_name(base.name + ".out"), base.with_name(base.name + ".err")]


def newest_checkpoint(run_dir: Path) -> Optional[Path]:
    folder = Path(run_dir) / "checkpoints"
    files = [p for p in folder.glob("*.pth") if p.is_file()] if folder.is_dir() else []
    return max(files, key=lambda p: (p.stat().st_mtime, p.name)) if files else None


def last_line(path: Path) -> Optional[str]:
    """The last non-empty line of a file (read from its end: steps.jsonl grows long)."""
    try:
        with open(str(path), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1].decode("utf-8", "replace") if lines else None
