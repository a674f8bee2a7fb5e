"""LavaLite configuration: lavalite.conf plus its companions lim.conf, sbatchd.conf, queues.conf.

Our own tiny INI parser rather than configparser, because every error must name FILE:LINE,
the [section] and the key, and a bad file must report ALL its errors at once. One declarative
table (KEYS) drives parsing, validation, defaults and the documented samples in etc/, so the
docs cannot drift from the code. Imports stay cheap: this module is on every CLI command's path.
"""

import math
import os
import sys
from types import SimpleNamespace

from lavalite import preemption
from lavalite.fairshare import GroupLoop, expand_groups, parse_shares, unknown_groups
from lavalite.files import write_whole
from lavalite.limits import parse_size
from lavalite.loadthreshold import looser
from lavalite.loadthreshold import parse as parse_loads

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    # a file's syntax pass: {section: (line, {key: (value, line)})}
    Parsed = dict[str, tuple[int, dict[str, tuple[str, int]]]]
    # a section's keys in KEYS: {key: (kind, default, doc)}
    Rows = dict[str, tuple[str, str, str]]

LAVALITE, LIM, SBATCHD, QUEUES = "lavalite.conf", "lim.conf", "sbatchd.conf", "queues.conf"
FILES = (LAVALITE, LIM, SBATCHD, QUEUES)
_LC, _LM, _SB, _QU = FILES  # short names keep the KEYS table one row per key
QUEUE = (
    "*"  # KEYS section for queues.conf: every section but [usergroup|quota|limit NAME] is a queue
)
USERGROUP = "usergroup"  # [usergroup NAME]: a group of users (fairshare)
QUOTA = "quota"  # KEYS section for queues.conf's [quota NAME] sections (docs/policy.md)
QUOTA_PREFIX = QUOTA + " "
LIMIT = (
    "limit"  # KEYS section for queues.conf's [limit NAME] sections (LSF's Limit, docs/policy.md)
)
LIMIT_PREFIX = LIMIT + " "
# a [limit NAME]'s consumer keys, each with its per- form, and its resource keys
LIMIT_CONSUMERS = ("users", "queues", "hosts", "projects")
LIMIT_RESOURCES = ("slots", "mem", "jobs")
SEARCH = ("/etc/lavalite/lavalite.conf", "~/.lavalite/lavalite.conf")
AUTO_SLICE = "auto"  # cgroup_slice derived per cluster (cluster_slice)
_DUR = "duration >= 0 (seconds, or 90s/10m/2h/1d)"

# (file, section, key, kind, default, doc). Defaults are written as they appear in a file, so
# render() prints them verbatim and they are parsed like user values. kind "free" marks a section
# of arbitrary `name = value` lines (key is None).
KEYS = [
    (_LC, "cluster", "name", "str", "lavalite", "Cluster name, shown by commands and in logs."),
    (
        _LC,
        "cluster",
        "master_candidates",
        "list",
        "",
        "Hosts that may run mbatchd, in failover order. Empty = this host only.",
    ),
    (_LC, "cluster", "admins", "list", "root", "Users allowed to administer the cluster."),
    (
        _LC,
        "cluster",
        "key_file",
        "path",
        "{state_dir}/cluster.key",
        "Shared secret authenticating daemons and commands: same file on every host, mode 0600.",
    ),
    (_LC, "cluster", "listen", "str", "0.0.0.0", "Address the daemons listen on."),
    (_LC, "cluster", "allow_root_jobs", "bool", "no", "Whether root may submit jobs."),
    (
        _LC,
        "cluster",
        "command_wait",
        "dur>=0",
        "60",
        "How long a command waits while mbatchd cannot be reached (restarting, failing over), "
        "retrying with one line on stderr, before it gives up (exit 3); 0 = at once. "
        "$LAVALITE_COMMAND_WAIT overrides it for one command or script.",
    ),
    (
        _LC,
        "cluster",
        "bjobs_element_ids",
        "bool",
        "no",
        "How bjobs names an array element: no = as LSF (JOBID 12, JOB_NAME arr[1]); "
        "yes = JOBID 12[1], JOB_NAME arr.",
    ),
    (
        _LC,
        "cluster",
        "tls_ca",
        "file?",
        "",
        "CA certificate(s) (PEM) that every host's certificate is issued by. Set = every TCP "
        "connection uses TLS 1.2+: daemons verify each other (mutual TLS), commands verify "
        "mbatchd. Empty = no TLS (the cluster key authenticates either way). "
        "See docs/multihost.md.",
    ),
    (
        _LC,
        "cluster",
        "tls_cert",
        "file?",
        "",
        "This host's certificate (PEM), naming the host as the cluster does; needed by the "
        "daemons when tls_ca is set, not by hosts that only run commands.",
    ),
    (
        _LC,
        "cluster",
        "tls_key",
        "file?",
        "",
        "The private key of tls_cert (PEM, unencrypted, mode 0600: root and the daemons only).",
    ),
    (
        _LC,
        "cluster",
        "parse_script",
        "bool",
        "no",
        "`bsub job_script` (one word naming a file) reads the file's #BSUB lines and keeps its "
        "text with the job, as LSF's LSB_BSUB_PARSE_SCRIPT=Y; no = it runs as a command. "
        "`bsub < job_script` reads them either way.",
    ),
    (
        _LC,
        "cluster",
        "job_report",
        "bool",
        "yes",
        "bsub -o/-oo writes LSF's job report (Sender, Subject, the job as submitted, how it "
        "ended, its resource usage) before the output in the file; no = the output alone.",
    ),
    (
        _LC,
        "hosts",
        None,
        "free",
        "",
        "host = address: where to reach a host whose name does not resolve, e.g. node1 = 10.0.0.11",
    ),
    (
        _LC,
        "paths",
        "state_dir",
        "path",
        "/var/lib/lavalite",
        "Daemon state: database, pid files, key. Relative paths are relative to this file.",
    ),
    (
        _LC,
        "paths",
        "spool_dir",
        "path",
        "/var/spool/lavalite",
        "Job scripts, job working files and local sockets.",
    ),
    (
        _LC,
        "paths",
        "run_dir",
        "path",
        "/run/lavalite",
        "Runtime records that a reboot clears, as the jobs they describe (one small directory "
        "per running job attempt): best on a RAM filesystem, so starting a job writes no disk.",
    ),
    (
        _LC,
        "paths",
        "log_dir",
        "path",
        "/var/log/lavalite",
        "Daemon logs when [logging] target = file.",
    ),
    (
        _LC,
        "paths",
        "lim_conf",
        "path",
        "lim.conf",
        "LIM settings. Missing at the default place = built-in defaults; "
        "any other path must exist.",
    ),
    (
        _LC,
        "paths",
        "sbatchd_conf",
        "path",
        "sbatchd.conf",
        "sbatchd settings (same rule as lim_conf).",
    ),
    (
        _LC,
        "paths",
        "queues_conf",
        "path",
        "queues.conf",
        "Queue definitions (same rule; missing = one queue `serial` with defaults).",
    ),
    (_LC, "mbatchd", "port", "port", "6881", "TCP port mbatchd listens on."),
    (_LC, "mbatchd", "database", "path", "{state_dir}/lavalite.db", "The job database (SQLite)."),
    (
        _LC,
        "mbatchd",
        "default_queue",
        "str",
        "serial",
        "Queue for jobs submitted without -q; must be defined in queues.conf.",
    ),
    (
        _LC,
        "mbatchd",
        "clean_period",
        "dur>=0",
        "1h",
        "How long finished jobs stay in memory (shown by bjobs -a).",
    ),
    (
        _LC,
        "mbatchd",
        "history_days",
        "int>=0",
        "0",
        "Days finished jobs and their events stay in the store for bhist and bacct (0 = for "
        "ever); older ones are removed a few hundred at a time between loop turns.",
    ),
    (
        _LC,
        "mbatchd",
        "metrics_port",
        "port0",
        "0",
        "HTTP port of mbatchd's /metrics (Prometheus) and /status (JSON).",
    ),
    (
        _LC,
        "mbatchd",
        "store_lock",
        "choice:exclusive|shared",
        "exclusive",
        "exclusive: mbatchd holds the database lock while it runs (needed on NFS, and no second "
        "mbatchd can open it); shared: sqlite3 may read the live database (local disk only).",
    ),
    (
        _LC,
        "mbatchd",
        "disk_warn_free",
        "size",
        "1G",
        "mbatchd logs a warning when the database's filesystem has less free space than this "
        "(0 = never); lavalite_store_free_bytes shows it. On a full disk submits are refused.",
    ),
    (
        _LC,
        "mbatchd",
        "node_lost_grace",
        "dur>=0",
        "60",
        "How long a host may be unavailable before its running jobs are requeued (rerunnable "
        "queue) or end FAILED(node_lost).",
    ),
    (
        _LC,
        "mbatchd",
        "max_user_priority",
        "int>=1",
        "100",
        "LSF's MAX_USER_PRIORITY: the highest priority a user may give a job (bsub -sp); a job "
        "without -sp has half of it. Admins may go beyond it.",
    ),
    (
        _LC,
        "mbatchd",
        "fairshare_half_life",
        "num>=0",
        "5",
        "Fairshare: hours after which a user's past run time and CPU time count half "
        "(LSF's HIST_HOURS); 0 = they never decay. See docs/policy.md.",
    ),
    (
        _LC,
        "mbatchd",
        "cpu_time_factor",
        "num>=0",
        "0.7",
        "Fairshare: weight of decayed CPU hours in the dynamic priority (LSF's CPU_TIME_FACTOR).",
    ),
    (
        _LC,
        "mbatchd",
        "run_time_factor",
        "num>=0",
        "0.7",
        "Fairshare: weight of decayed run hours, of finished and running jobs, in the dynamic "
        "priority (LSF's RUN_TIME_FACTOR).",
    ),
    (
        _LC,
        "mbatchd",
        "run_job_factor",
        "num>=0",
        "3",
        "Fairshare: weight of (1 + slots in use) in the dynamic priority (LSF's RUN_JOB_FACTOR).",
    ),
    (
        _LC,
        "mbatchd",
        "max_preexec_retry",
        "int>=0",
        "5",
        "How many times a job whose pre-execution command (bsub -E) fails goes back to PEND "
        "before it ends FAILED(pre_exec).",
    ),
    (
        _LC,
        "mbatchd",
        "notify_command",
        "str",
        "",
        "Command mbatchd runs (as itself, on its host) for bsub -B (job begins) and -N (job "
        "ends), with the event, the job id and the address (-u, else the user) as arguments "
        "and LSB_JOBID, LSB_JOBNAME, LSB_USER, LSB_NOTIFY_EVENT, LSB_MAILTO, LSB_JOBSTAT, "
        "LSB_JOBEXIT_STAT in its environment. Empty = none (-B and -N are accepted and do "
        "nothing).",
    ),
    (_LC, "lim", "port", "port", "6879", "TCP port LIM listens on."),
    (_LC, "lim", "metrics_port", "port0", "0", "HTTP port of LIM's /metrics and /status."),
    (_LC, "sbatchd", "metrics_port", "port0", "0", "HTTP port of sbatchd's /metrics and /status."),
    (_LC, "logging", "level", "choice:debug|info|warning|error", "info", "Daemon log level."),
    (
        _LC,
        "logging",
        "target",
        "choice:stderr|syslog|file",
        "stderr",
        "Where daemons log: stderr (systemd's journal), syslog (facility daemon) or file "
        "(<log_dir>/<role>-<host>.log, rotated).",
    ),
    (
        _LC,
        "logging",
        "syslog_address",
        "str",
        "/dev/log",
        "Syslog socket (a path) or host:port (UDP), for target = syslog and llctrl's audit lines.",
    ),
    (
        _LC,
        "logging",
        "rotate_size",
        "int>=1",
        "10485760",
        "target = file: bytes at which a log file is rotated.",
    ),
    (_LC, "logging", "rotate_keep", "int>=0", "5", "target = file: rotated files kept."),
    (_LM, "lim", "poll_interval", "dur>0", "4", "Seconds between host load samples."),
    (
        _LM,
        "lim",
        "poll_jitter",
        "dur>=0",
        "1",
        "Random extra delay per sample, so hosts do not poll in step.",
    ),
    (_LM, "lim", "heartbeat_interval", "dur>0", "2", "Seconds between heartbeats among LIMs."),
    (
        _LM,
        "lim",
        "cpu_factor",
        "num>0",
        "1.0",
        "This host's CPU speed relative to the others (LSF's CPU factor, lshosts' cpuf, "
        "bhosts -l's CPUF): shown, not yet used to scale run limits or CPU times.",
    ),
    (
        _LM,
        "lim",
        "heartbeat_misses",
        "int>=1",
        "3",
        "Missed heartbeats before a host is unavailable (and a backup takes over the master).",
    ),
    (
        _LM,
        "lim",
        "restart_backoff",
        "dur>0",
        "0.5",
        "Delay before restarting a dead mbatchd; doubles each time it dies within 10 s of its "
        "start (a failure to start), back to this after a longer run.",
    ),
    (_LM, "lim", "restart_backoff_max", "dur>0", "10", "Upper bound of that delay."),
    (
        _LM,
        "lim",
        "supervise_mbatchd",
        "bool",
        "yes",
        "The master LIM starts and restarts mbatchd. `no` where systemd runs mbatchd "
        "(lavalite-mbatchd.service, pinned to one host).",
    ),
    (
        _LM,
        "labels",
        None,
        "free",
        "",
        "host = labels (spaces or commas) that jobs can request, e.g. node1 = gpu bigmem",
    ),
    (_SB, "sbatchd", "slots", "slots", "auto", "Job slots on this host."),
    (
        _SB,
        "sbatchd",
        "work_dir",
        "path",
        "{run_dir}/jobs",
        "The records of the job attempts running here (lock, spec, pid, status).",
    ),
    (
        _SB,
        "sbatchd",
        "tmp_dir",
        "path",
        "/tmp",
        "Where each job attempt gets its own TMPDIR, lavalite.<job>.<attempt>.<random>, the "
        "user's, mode 0700, removed when the attempt ends (as LSF's LSF_TMPDIR); one left "
        "empty is renamed for the same user's next job instead, or removed within 6 s.",
    ),
    (
        _SB,
        "sbatchd",
        "shepherds",
        "int>=1",
        "2",
        "Shepherd processes that start and watch this host's jobs (about 12 MB each): one "
        "starts roughly a thousand short jobs a second on a 2-core VM; attempts go to the least "
        "busy. At least one per 200 slots is started whatever this says.",
    ),
    (
        _SB,
        "sbatchd",
        "cgroups",
        "choice:auto|on|off|v1|v2",
        "auto",
        "Confine jobs in cgroups: auto = v2 or v1, whichever has the memory controller, else "
        "none (logged once); on = refuse to start without; v1/v2 = that hierarchy only; off = "
        "process group only.",
    ),
    (
        _SB,
        "sbatchd",
        "cgroup_slice",
        "relpath",
        "auto",
        "Directory under each cgroup hierarchy that holds the jobs' groups "
        "(<slice>/shepherd-<pid>.<n>). auto = lavalite-<cluster name>-<8 hex digits of a hash of "
        "state_dir>: one per cluster, so clusters sharing a host never touch each other's jobs.",
    ),
    (
        _SB,
        "sbatchd",
        "default_output",
        "choice:cwd|discard",
        "cwd",
        "Job output without bsub -o: cwd = lavalite-%J.out in the submit directory (as Slurm).",
    ),
    (_SB, "sbatchd", "kill_grace", "dur>=0", "10", "Seconds between SIGTERM and SIGKILL."),
    (
        _SB,
        "sbatchd",
        "usage_interval",
        "dur>=0",
        "10",
        "Seconds between samples of the running jobs' CPU time, memory, swap, threads and PIDs "
        "(from their cgroups, else their process groups in /proc), sent to mbatchd in one "
        "frame for bjobs (as LSF's SBD_SLEEP_TIME, 30 s there); 0 = no samples.",
    ),
    (
        _SB,
        "sbatchd",
        "reconnect_max",
        "dur>0",
        "30",
        "Maximum backoff while mbatchd is unreachable, from a minute after losing it (before, "
        "sbatchd retries about twice a second: a restarted mbatchd is found at once).",
    ),
    (_QU, QUEUE, "priority", "int", "30", "Higher-priority queues dispatch first (as LSF)."),
    (
        _QU,
        QUEUE,
        "max_running_user",
        "int>=0",
        "0",
        "Running jobs per user in this queue (0 = no limit).",
    ),
    (_QU, QUEUE, "max_running_queue", "int>=0", "0", "Running jobs in this queue (0 = no limit)."),
    (_QU, QUEUE, "default_walltime", "dur>=0", "0", "Run limit of jobs that give none (0 = none)."),
    (_QU, QUEUE, "max_walltime", "dur>=0", "0", "Largest run limit a job may ask for (0 = none)."),
    (
        _QU,
        QUEUE,
        "max_attempts",
        "int>=1",
        "1",
        "Attempts a job gets unless bsub --retries says otherwise.",
    ),
    (_QU, QUEUE, "max_retries", "int>=0", "10", "Upper bound on bsub --retries."),
    (
        _QU,
        QUEUE,
        "default_memory",
        "size",
        "0",
        "Memory limit of jobs that give no bsub -M (MB, or 512M, 2G; 0 = none).",
    ),
    (_QU, QUEUE, "max_memory", "size", "0", "Largest bsub -M a job may ask for (0 = no bound)."),
    (
        _QU,
        QUEUE,
        "default_pids",
        "int>=0",
        "0",
        "Task (process and thread) limit of jobs that give no --pids (0 = none).",
    ),
    (_QU, QUEUE, "max_pids", "int>=0", "0", "Largest --pids a job may ask for (0 = no bound)."),
    (
        _QU,
        QUEUE,
        "retry_backoff",
        "dur>=0",
        "10",
        "Delay before the first retry; doubles each retry.",
    ),
    (_QU, QUEUE, "retry_backoff_max", "dur>=0", "5m", "Upper bound of the retry delay."),
    (_QU, QUEUE, "rerunnable", "bool", "no", "Requeue (PEND) jobs whose host is lost."),
    (_QU, QUEUE, "open", "bool", "yes", "Accept submissions."),
    (
        _QU,
        QUEUE,
        "interactive",
        "choice:yes|no|only",
        "yes",
        "Interactive jobs (bsub -I, -Ip, -Is): yes = accepted, no = refused, only = accepted "
        "and nothing else (LSF's INTERACTIVE).",
    ),
    (_QU, QUEUE, "active", "bool", "yes", "Dispatch pending jobs."),
    (_QU, QUEUE, "description", "str", "", "Free text shown by bqueues -l."),
    (
        _QU,
        QUEUE,
        "fairshare",
        "shares",
        "",
        "Fairshare among users (LSF's FAIRSHARE): USER_SHARES[[alice, 2] [bob, 1] [default, 1]]; "
        "a name is a user, a [usergroup] (its members share together), GROUP@ (each member "
        "alone), default (each user named nowhere else) or others (all of those together). "
        "Empty = first come, first served. See docs/policy.md.",
    ),
    (
        _QU,
        QUEUE,
        "slot_reserve",
        "reserve",
        "",
        "Slot reservation (LSF's SLOT_RESERVE): MAX_RESERVE_TIME[N] lets a pending job of more "
        "than one slot that cannot start hold the free slots it could use, for up to N seconds "
        "(or 10m, 1h), so that narrow jobs do not starve it. Empty = no reservation. See "
        "docs/policy.md.",
    ),
    (
        _QU,
        QUEUE,
        "placement",
        "choice:first|pack|spread",
        "first",
        "Which host a job goes to: first = the first with a free slot, in host order, each "
        "filled before the next (the fastest); pack = the one with the fewest free slots that "
        "fits; spread = the one with the most. See docs/policy.md.",
    ),
    (
        _QU,
        QUEUE,
        "res_req",
        "resreq",
        "",
        "Resource requirement of jobs that give no bsub -R (LSF's RES_REQ): select[] and "
        "order[], e.g. select[mem>1000] order[r15s].",
    ),
    (
        _QU,
        QUEUE,
        "preemption",
        "preemption",
        "",
        "Preemptive scheduling (LSF's PREEMPTION): PREEMPTIVE[low normal] = this queue's jobs "
        "suspend running jobs of those lower-priority queues to get their slots (bare "
        "PREEMPTIVE: of every lower-priority queue); PREEMPTABLE[high] = this queue's jobs may "
        "be preempted by those higher-priority queues (bare: by every one). Empty = none. See "
        "docs/policy.md.",
    ),
    (
        _QU,
        QUEUE,
        "load_sched",
        "loads",
        "",
        "Load thresholds (LSF's loadSched): a host past one takes no new job of this queue, "
        "e.g. r15s=2.0 ut=0.9 mem=512M. Indices: r15s r1m r15m ut pg ls it mem swp tmp.",
    ),
    (
        _QU,
        QUEUE,
        "backfill",
        "bool",
        "no",
        "Backfill (LSF's BACKFILL): a job of this queue whose run limit (bsub -W, else "
        "default_walltime) ends before a reservation's estimated start may use its held slots.",
    ),
    (
        _QU,
        QUEUE,
        "preempt_action",
        "choice:suspend|requeue",
        "suspend",
        "What preemption does to this queue's jobs: suspend (SSUSP, resumed when the "
        "preempting job ends) or requeue (killed and pending again).",
    ),
    (
        _QU,
        QUEUE,
        "load_stop",
        "loads",
        "",
        "Load thresholds (LSF's loadStop): past one, the queue's jobs on the host are "
        "suspended (SSUSP), one per load sample, until it is back within load_sched.",
    ),
    (
        _QU,
        USERGROUP,
        "members",
        "list",
        "",
        "Users and groups of a [usergroup NAME] section, for fairshare shares and bsub -G.",
    ),
    (_QU, QUOTA, "users", "list", "", "The users whose jobs the quota counts."),
    (
        _QU,
        QUOTA,
        "groups",
        "list",
        "",
        "The Unix groups whose members' jobs it counts (membership as bsub -G checks it).",
    ),
    (_QU, QUOTA, "projects", "list", "", "The projects (bsub -P) whose jobs it counts."),
    (
        _QU,
        QUOTA,
        "core_hours",
        "core-hours",
        "0",
        "Core-hours (slots x hours) the members may use per period; required.",
    ),
    (
        _QU,
        QUOTA,
        "period",
        "dur>0",
        "30d",
        "Length of the windows usage is counted in, from the Unix epoch (UTC).",
    ),
    (
        _QU,
        QUOTA,
        "admit_below",
        "percent",
        "90%",
        "A submit is refused when used + running + pending + its estimate would reach this "
        "share of core_hours.",
    ),
    *(
        (_QU, LIMIT, key, "list", "", doc)
        for consumer, what in (
            ("users", "users or [usergroup]s"),
            ("queues", "queues"),
            ("hosts", "hosts"),
            ("projects", "projects (bsub -P)"),
        )
        for key, doc in (
            (
                consumer,
                f"The {what} whose jobs the limit counts together; all = every one, ~NAME "
                f"leaves one out. Empty = not limited by {consumer[:-1]}.",
            ),
            (f"per_{consumer[:-1]}", f"As {consumer}, but each of them has the limit alone."),
        )
    ),
    (_QU, LIMIT, "slots", "count?", "", "Slots the jobs it counts may hold at once."),
    (
        _QU,
        LIMIT,
        "mem",
        "size?",
        "",
        "Memory their running jobs may reserve (rusage[mem] x slots, else -M): MB or 512M, 2G.",
    ),
    (_QU, LIMIT, "jobs", "count?", "", "Jobs they may have running (suspended ones count)."),
]
_FILE_DOC = {
    LAVALITE: "Main LavaLite configuration. Companion files: lim.conf, sbatchd.conf, queues.conf.",
    LIM: "LIM (load information manager) settings. Every key is optional.",
    SBATCHD: "sbatchd (per-host job runner) settings. Every key is optional.",
    QUEUES: "Queues: each [NAME] section (letters, digits, _ - .) defines one queue; "
    "[usergroup NAME] sections define user groups, [quota NAME] sections quotas on core-hours, "
    "[limit NAME] sections limits on running jobs (docs/policy.md).",
}
# (low, high) keys of one section: low must not exceed high when both are > 0 (0 = unset)
# (lower, upper, unit): the lower may not exceed the upper where the upper is set (> 0)
_PAIRS = [
    ("restart_backoff", "restart_backoff_max", "s"),
    ("default_walltime", "max_walltime", "s"),
    ("retry_backoff", "retry_backoff_max", "s"),
    ("default_memory", "max_memory", " bytes"),
    ("default_pids", "max_pids", ""),
]
# numeric kinds: (base, min, max, min is exclusive, description)
_NUM = {
    "int": ("int", None, None, False, "integer"),
    "int>=0": ("int", 0, None, False, "integer >= 0"),
    "int>=1": ("int", 1, None, False, "integer >= 1"),
    "port": ("int", 1, 65535, False, "TCP port 1-65535"),
    "port0": ("int", 0, 65535, False, "TCP port, 0 = off"),
    "slots": ("int", 1, None, False, "integer >= 1, or auto = number of CPUs"),
    "dur>=0": ("dur", 0, None, False, _DUR),
    "dur>0": ("dur", 0, None, True, _DUR.replace(">=", ">")),
    "num>0": ("num", 0, None, True, "number > 0"),
    "num>=0": ("num", 0, None, False, "number >= 0"),
    "core-hours": ("num", 0, None, False, "a number of core-hours > 0"),  # 0: see _quota
}
_BOOLS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _index() -> "tuple[dict[str, dict[str, Rows]], dict[tuple[str, str], str]]":
    """KEYS -> ({file: {section: {key: (kind, default, doc)}}}, {(file, section): doc} of the
    free-form sections)."""
    schema: dict[str, dict[str, Rows]] = {f: {} for f in FILES}
    free: dict[tuple[str, str], str] = {}
    for f, sec, key, kind, default, doc in KEYS:
        rows = schema[f].setdefault(sec, {})
        if kind == "free":
            free[f, sec] = doc
        else:
            assert key is not None  # only a free-form row has no key
            rows[key] = (kind, default, doc)
    return schema, free


_SCHEMA, _FREE = _index()
# Config attributes conf.cluster, conf.lim...: [lim] and [sbatchd] gather keys from two files
_NAMESPACES = dict.fromkeys(s for f in FILES[:3] for s in _SCHEMA[f] if (f, s) not in _FREE)


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class Section(SimpleNamespace):
    """One section's settings as attributes (conf.mbatchd.port)."""


class QueueConf(SimpleNamespace):
    """One queue of queues.conf; vars(q) is a plain JSON-able dict."""


class QuotaConf(SimpleNamespace):
    """One [quota NAME] of queues.conf (name, users, groups, projects, core_hours, period,
    admit_below as a fraction); vars(q) is a plain JSON-able dict."""


class LimitConf(SimpleNamespace):
    """One [limit NAME] of queues.conf (name; users, per_user, queues, per_queue, hosts,
    per_host, projects, per_project as lists; slots, mem (bytes), jobs: None = no limit)."""


class Config:
    # one Section per namespace of _NAMESPACES, set in __init__ (declared for type checkers)
    cluster: Section
    paths: Section
    mbatchd: Section
    lim: Section
    sbatchd: Section
    logging: Section

    def __init__(self, path: str) -> None:
        self.path, self.dir = path, os.path.dirname(path)
        for sec in _NAMESPACES:
            setattr(self, sec, Section())
        self.hosts: dict[str, str] = {}  # host name -> address ([hosts])
        self.queues: dict[str, QueueConf] = {}
        self.usergroups: dict[str, list[str]] = {}  # [usergroup NAME] -> members as written
        self.group_users: dict[str, frozenset[str]] = {}  # group -> its users, nested resolved
        self.quotas: dict[str, QuotaConf] = {}
        self.limits: dict[str, LimitConf] = {}
        self.lim.labels = {}

    def queue_order(self) -> list[QueueConf]:
        """Queues by priority, highest first; file order breaks ties (sorted is stable)."""
        return sorted(self.queues.values(), key=lambda q: -q.priority)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and vars(self) == vars(other)


def _convert(kind: str, raw: str) -> "Any":
    """Text -> typed value; ValueError's message says what was expected."""
    if kind in ("str", "path", "file?"):  # paths are resolved once [paths] is known
        return raw
    if kind == "shares":
        if raw:
            parse_shares(raw)  # checked here, resolved by mbatchd
        return raw
    if kind == "reserve":
        return _reserve_time(raw)
    if kind == "preemption":
        if raw:
            preemption.parse(raw)  # checked here, against the other queues in _check_preemption
        return raw
    if kind == "loads":
        parse_loads(raw)  # checked here, parsed again by mbatchd
        return raw
    if kind == "resreq":
        if raw:
            from lavalite.resreq import queue_req  # its regular expressions: only when given

            queue_req(raw)
        return raw
    if kind == "list":
        return raw.replace(",", " ").split()
    if kind == "bool":
        if raw.lower() in _BOOLS:
            return _BOOLS[raw.lower()]
        raise ValueError(f"expected yes/no/true/false/on/off/1/0, got {raw!r}")
    if kind.startswith("choice:"):
        if raw in kind[7:].split("|"):
            return raw
        raise ValueError(f"expected one of {kind[7:]}, got {raw!r}")
    if kind == "size":
        return parse_size(raw)
    if kind in ("count?", "size?"):  # empty: no limit on this resource
        return None if not raw else _convert(kind[:-1] if kind == "size?" else "int>=0", raw)
    if kind == "percent":
        return _percent(raw)
    if kind == "relpath":
        parts = raw.split("/")
        if raw.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"expected a relative path without '.' or '..' parts, got {raw!r}")
        return raw
    if kind == "slots" and raw == "auto":
        return os.cpu_count() or 1
    base, lo, hi, strict, desc = _NUM[kind]
    value: float  # an int where base is int
    try:
        if base == "int":
            value = int(raw)
        elif base == "num":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        else:
            mult = _UNITS.get(raw[-1:].lower()) if base == "dur" else None
            value = float(raw[:-1] if mult else raw) * (mult or 1)
            if not math.isfinite(value):
                raise ValueError
    except ValueError:
        want = {
            "dur": "a duration such as 90, 1.5, 90s, 10m, 2h, 1d",
            "num": "a number",
        }.get(base, "an integer" + (" or auto" if kind == "slots" else ""))
        raise ValueError(f"expected {want}, got {raw!r}") from None
    too_low = lo is not None and (value < lo or (strict and value == lo))
    if too_low or (hi is not None and value > hi):
        raise ValueError(f"{raw!r} out of range: expected {desc}")
    return value


def _reserve_time(raw: str) -> float:
    """'MAX_RESERVE_TIME[N]' -> N seconds (a duration > 0); '' -> 0 (no reservation)."""
    if not raw:
        return 0.0
    name, bracket, rest = raw.partition("[")
    if name.strip().upper() != "MAX_RESERVE_TIME" or not bracket or not rest.endswith("]"):
        raise ValueError(f"expected MAX_RESERVE_TIME[N] (N a duration > 0), got {raw!r}")
    return float(_convert("dur>0", rest[:-1].strip()))


def _percent(raw: str) -> float:
    """'90%' or '90' -> 0.9, within (0, 100%]."""
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw)
    except ValueError:
        raise ValueError(f"expected a percentage such as 90%, got {raw!r}") from None
    if not 0 < value <= 100:
        raise ValueError(f"{raw!r} out of range: expected a percentage in (0, 100%]")
    return value / 100


def _queue_name_ok(name: str) -> bool:
    return name.isascii() and all(c.isalnum() or c in "_-." for c in name)


def _user_groups(conf: "Config", parsed: "Parsed", path: str, errors: list[str]) -> None:
    """conf.usergroups from the [usergroup NAME] sections: {name: members}. A group with no
    members, or that contains itself (directly or through others), is an error."""
    lines = {}
    for sec, (sline, keys) in parsed.items():
        if _section_key(QUEUES, sec) == USERGROUP:
            name = sec[len(USERGROUP) + 1 :]
            raw, line = keys.get("members", ("", sline))
            conf.usergroups[name], lines[name] = _convert("list", raw), line
            if not conf.usergroups[name]:
                errors.append(f"{path}:{line}: [{sec}] members: a group needs members")
    while True:
        try:
            conf.group_users = expand_groups(conf.usergroups)
            return
        except GroupLoop as exc:  # reported, and the loop cut so the others are checked
            name = exc.group
            errors.append(f"{path}:{lines[name]}: [{USERGROUP} {name}] members: {exc}")
            conf.usergroups[name] = [m for m in conf.usergroups[name] if m not in conf.usergroups]


def _check_shares(
    conf: "Config", q: QueueConf, given: "tuple[int, dict] | None", path: str, errors: list[str]
) -> None:
    """A queue's fairshare names no undefined `group@` (its syntax was checked with the key)."""
    if not q.fairshare or given is None or "fairshare" not in given[1]:
        return
    try:
        entries = parse_shares(q.fairshare)
    except ValueError:  # reported by _fill
        return
    for name in unknown_groups(entries, conf.usergroups):
        errors.append(
            f"{path}:{given[1]['fairshare'][1]}: [{q.name}] fairshare: {name} names no "
            f"[{USERGROUP} {name[:-1]}]"
        )


def _check_preemption(conf: "Config", parsed: "Parsed", path: str, errors: list[str]) -> None:
    """Each queue's preemption names only other queues, of lower (PREEMPTIVE) or higher
    (PREEMPTABLE) priority (its syntax was checked with the key)."""
    priorities = {name: q.priority for name, q in conf.queues.items()}
    for name, q in conf.queues.items():
        if not q.preemption:
            continue
        try:
            policy = preemption.parse(q.preemption)
        except ValueError:  # reported by _fill
            continue
        line = parsed[name][1]["preemption"][1]
        for problem in preemption.problems(name, policy, priorities):
            errors.append(f"{path}:{line}: [{name}] preemption: {problem}")


def _check_loads(
    q: QueueConf, given: "tuple[int, dict] | None", path: str, errors: list[str]
) -> None:
    """Every index of load_stop has a load_sched at the same load or less (each was checked
    with its key): a job stopped past load_stop resumes within load_sched."""
    if not q.load_stop or given is None or "load_stop" not in given[1]:
        return
    try:
        index = looser(parse_loads(q.load_stop), parse_loads(q.load_sched))
    except ValueError:  # reported by _fill
        return
    if index is not None:
        errors.append(
            f"{path}:{given[1]['load_stop'][1]}: [{q.name}] load_stop: {index} needs a "
            f"load_sched {index} at the same load or less (a job stopped past load_stop "
            f"resumes within load_sched)"
        )


def _free_ok(key: str, value: str) -> bool:
    """An entry of [hosts]/[labels]: one host name, a non-empty value."""
    return len(key.split()) == 1 and bool(value)


def _hint(word: str, choices: "Iterable[str]") -> str:
    import difflib  # only on errors: keeps the CLI's import cheap

    close = difflib.get_close_matches(word, list(choices), 1)
    return f"; did you mean {close[0]}?" if close else ""


def _read(path: str, errors: list[str], queues: bool = False) -> "Parsed | None":
    """Syntax pass -> {section: (line, {key: (value, line)})} in file order, None if unreadable.
    Known sections and keys are checked later, against KEYS."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return None
    sections: dict[str, tuple[int, dict[str, tuple[str, int]]]] = {}
    cur: dict[str, tuple[str, int]] | None = None
    name = None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s[0] == "[" and s[-1] == "]":
            name = " ".join(s[1:-1].split())
            if queues and name.startswith("queue "):  # LSF-style `[queue NAME]` alias
                name = name[6:]
            cur = {}  # keys of a rejected section are parsed, then dropped
            if not name:
                errors.append(f"{path}:{n}: empty section name []")
            elif name in sections:
                errors.append(
                    f"{path}:{n}: duplicate {'queue' if queues else 'section'} [{name}]"
                    f" (first at line {sections[name][0]})"
                )
            else:
                sections[name] = (n, cur)
            continue
        key, eq, value = s.partition("=")
        key = key.strip()
        if not eq or not key:
            errors.append(f"{path}:{n}: expected [section] or key = value, got {s!r}")
        elif cur is None:
            errors.append(f"{path}:{n}: key {key!r} is outside any [section]")
        elif key in cur:
            errors.append(
                f"{path}:{n}: [{name}] {key}: duplicate key (first at line {cur[key][1]})"
            )
        else:
            cur[key] = (value.strip(), n)
    return sections


def _check(fname: str, path: str, parsed: "Parsed", errors: list[str]) -> None:
    """Report unknown sections/keys and bad free-form entries of one parsed file."""
    schema = _SCHEMA[fname]
    for sec, (sline, keys) in parsed.items():
        if fname == QUEUES:
            sec_key = _section_key(fname, sec)
            prefix = {USERGROUP: USERGROUP + " ", QUOTA: QUOTA_PREFIX, LIMIT: LIMIT_PREFIX}.get(
                sec_key, ""
            )
            what = {USERGROUP: "user group", QUOTA: "quota", LIMIT: "limit"}.get(sec_key, "queue")
            if not _queue_name_ok(sec.removeprefix(prefix)):
                errors.append(
                    f"{path}:{sline}: bad {what} name [{sec}]: use letters, digits, _ - ."
                )
        elif sec not in schema:
            other = [f for f in FILES if sec in _SCHEMA[f]]
            hint = f"; it belongs in {other[0]}" if other else _hint(sec, schema)
            errors.append(f"{path}:{sline}: unknown section [{sec}]{hint}")
            continue
        else:
            sec_key = sec
        if (fname, sec_key) in _FREE:
            for key, (value, line) in keys.items():
                if not _free_ok(key, value):
                    why = "empty value" if _free_ok(key, "x") else "host name with spaces"
                    errors.append(f"{path}:{line}: [{sec}] {key}: {why}")
            continue
        for key, (_, line) in keys.items():
            if key not in schema[sec_key]:
                other = [f for f in FILES if key in _SCHEMA[f].get(sec_key, ())]
                hint = f"; it belongs in {other[0]}" if other else _hint(key, schema[sec_key])
                errors.append(f"{path}:{line}: [{sec}] {key}: unknown key{hint}")


def _fill(
    ns: SimpleNamespace,
    rows: "Rows",
    given: "dict[str, tuple[str, int]]",
    path: str,
    sec: str,
    errors: list[str],
) -> None:
    """Set every key of one section on ns: the given value if valid, else the default."""
    for key, (kind, default, _) in rows.items():
        raw, line = given.get(key, (default, None))
        try:
            value = _convert(kind, raw)
        except ValueError as exc:
            errors.append(f"{path}:{line}: [{sec}] {key}: {exc}")
            value = _convert(kind, default)
        setattr(ns, key, value)
    for lo, hi, unit in _PAIRS:
        if lo in rows and hi in rows and 0 < getattr(ns, hi) < getattr(ns, lo):
            key = lo if lo in given else hi
            low, high = (_fmt(getattr(ns, k)) for k in (lo, hi))
            errors.append(
                f"{path}:{given[key][1]}: [{sec}] {key}: {lo} ({low}{unit}) exceeds "
                f"{hi} ({high}{unit})"
            )


def _resolve_paths(conf: Config, fname: str) -> None:
    """Expand {state_dir}/{spool_dir}/{run_dir}, ~ and relative paths (relative to
    lavalite.conf's dir)."""
    # [paths] first, in table order (state_dir, spool_dir, ...), so later keys see resolved values
    for sec in sorted(_SCHEMA[fname], key=lambda s: s != "paths"):
        ns = getattr(conf, sec, None)
        for key, (kind, _, _) in _SCHEMA[fname][sec].items():
            value = getattr(ns, key)
            if kind == "path" or (kind == "file?" and value):
                for name in ("state_dir", "spool_dir", "run_dir"):
                    value = value.replace(f"{{{name}}}", getattr(conf.paths, name))
                value = os.path.join(conf.dir, os.path.expanduser(value))
                setattr(ns, key, os.path.normpath(value))


def _build(path: str, main: "Parsed", errors: list[str], read: bool = True) -> Config:
    """Config from parsed lavalite.conf `main`; companions are read only if `read`."""
    conf = Config(path)
    _check(LAVALITE, path, main, errors)
    parsed: Parsed | None  # None: a companion file absent or unreadable
    for fname in FILES:
        parsed, fpath, pkey = main, path, fname.replace(".", "_")
        if fname != LAVALITE:
            fpath, parsed = getattr(conf.paths, pkey), None
            if read and os.path.exists(fpath):
                parsed = _read(fpath, errors, queues=fname == QUEUES)
                if parsed is not None:
                    _check(fname, fpath, parsed, errors)
            elif read:
                raw, line = main.get("paths", (0, {}))[1].get(pkey, (fname, 0))
                if raw != fname:  # set explicitly, to other than the default place
                    errors.append(f"{path}:{line}: [paths] {pkey}: {fpath} does not exist")
        if fname == QUEUES:  # no queues.conf at all: one default queue `serial`
            names = ["serial"] if parsed is None else [n for n in parsed if _queue_name_ok(n)]
            _user_groups(conf, parsed or {}, fpath, errors)
            _quotas(conf, parsed or {}, fpath, errors)
            _limits(conf, parsed or {}, fpath, errors)
            for name in names:
                q = conf.queues[name] = QueueConf(name=name)
                _fill(
                    q,
                    _SCHEMA[QUEUES][QUEUE],
                    (parsed or {}).get(name, (0, {}))[1],
                    fpath,
                    name,
                    errors,
                )
                _check_shares(conf, conf.queues[name], (parsed or {}).get(name), fpath, errors)
                _check_loads(conf.queues[name], (parsed or {}).get(name), fpath, errors)
            _check_preemption(conf, parsed or {}, fpath, errors)
            continue
        parsed = parsed or {}
        for sec, rows in _SCHEMA[fname].items():
            given = parsed.get(sec, (0, {}))[1]
            if (fname, sec) in _FREE:
                table = {k: v for k, (v, _) in given.items() if _free_ok(k, v)}
                if sec == "labels":
                    conf.lim.labels = {k: v.replace(",", " ").split() for k, v in table.items()}
                else:
                    conf.hosts = table
            else:
                _fill(getattr(conf, sec), rows, given, fpath, sec, errors)
        _resolve_paths(conf, fname)
    if conf.sbatchd.cgroup_slice == AUTO_SLICE:
        conf.sbatchd.cgroup_slice = cluster_slice(conf.cluster.name, conf.paths.state_dir)
    dq = conf.mbatchd.default_queue
    if dq not in conf.queues:
        dq_line = main.get("mbatchd", (0, {}))[1].get("default_queue", (0, None))[1]
        if dq_line:
            errors.append(
                f"{path}:{dq_line}: [mbatchd] default_queue: queue {dq!r} is not defined "
                f"in {conf.paths.queues_conf}"
            )
        else:
            errors.append(
                f"{conf.paths.queues_conf}: no queue [{dq}], the default_queue; "
                f"define it or set default_queue in {path}"
            )
    _tls_keys_together(conf, main, path, errors)
    return conf


def _section_key(fname: str, sec: str) -> str:
    """The KEYS section of a file's [sec]: queues.conf's are queues, user groups or quotas."""
    if fname != QUEUES:
        return sec
    if sec.startswith(USERGROUP + " "):
        return USERGROUP
    if sec.startswith(LIMIT_PREFIX):
        return LIMIT
    return QUOTA if sec.startswith(QUOTA_PREFIX) else QUEUE


def _quotas(conf: Config, parsed: "Parsed", path: str, errors: list[str]) -> None:
    """conf.quotas from queues.conf's [quota NAME] sections: each needs members and a
    core_hours > 0."""
    for sec, (sline, given) in parsed.items():
        name = sec[len(QUOTA_PREFIX) :]
        if not sec.startswith(QUOTA_PREFIX) or not _queue_name_ok(name):
            continue
        q = conf.quotas[name] = QuotaConf(name=name)
        found = len(errors)
        _fill(q, _SCHEMA[QUEUES][QUOTA], given, path, sec, errors)
        if not (q.users or q.groups or q.projects):
            errors.append(f"{path}:{sline}: [{sec}]: no members: give users, groups or projects")
        raw, line = given.get("core_hours", ("", sline))
        where = f"{path}:{line}: [{sec}] core_hours:"
        # the kind lets 0 through (its default must convert): 0 given or left out is refused here
        if q.core_hours == 0 and not any(e.startswith(where) for e in errors[found:]):
            why = f"{raw!r} out of range" if raw else "missing"
            errors.append(f"{where} {why}: expected a number of core-hours > 0")


def _limits(conf: Config, parsed: "Parsed", path: str, errors: list[str]) -> None:
    """conf.limits from queues.conf's [limit NAME] sections: each limits a resource, and names
    each kind of consumer at most one way (`users` or `per_user`)."""
    for sec, (sline, given) in parsed.items():
        name = sec[len(LIMIT_PREFIX) :]
        if not sec.startswith(LIMIT_PREFIX) or not _queue_name_ok(name):
            continue
        lim = conf.limits[name] = LimitConf(name=name)
        _fill(lim, _SCHEMA[QUEUES][LIMIT], given, path, sec, errors)
        if all(r not in given for r in LIMIT_RESOURCES):
            errors.append(f"{path}:{sline}: [{sec}]: no resource: give slots, mem or jobs")
        for consumer in LIMIT_CONSUMERS:
            per = f"per_{consumer[:-1]}"
            if consumer in given and per in given:
                errors.append(
                    f"{path}:{given[per][1]}: [{sec}] {per}: give {consumer} or {per}, not both"
                )
            for key in (consumer, per):
                if key in given and not getattr(lim, key):
                    errors.append(f"{path}:{given[key][1]}: [{sec}] {key}: names no {consumer}")


def _tls_keys_together(conf: Config, main: "Parsed", path: str, errors: list[str]) -> None:
    """tls_cert and tls_key go together and need tls_ca to check peers with (tls_ca alone:
    a host that only runs commands). Whether the files fit is tls.check's business."""
    c, given = conf.cluster, main.get("cluster", (0, {}))[1]  # a key set here is given
    if bool(c.tls_cert) != bool(c.tls_key):
        key, other = ("tls_cert", "tls_key") if c.tls_cert else ("tls_key", "tls_cert")
        errors.append(f"{path}:{given[key][1]}: [cluster] {key}: needs {other} too")
    elif c.tls_cert and not c.tls_ca:
        errors.append(
            f"{path}:{given['tls_cert'][1]}: [cluster] tls_cert: needs tls_ca, the CA "
            f"that peers' certificates are checked against"
        )


def origin(conf: Config, section: str, key: str) -> str:
    """'FILE:LINE' where lavalite.conf sets [section] key (FILE alone where it does not), for
    errors found after loading."""
    parsed = _read(conf.path, []) or {}
    line = parsed.get(section, (0, {}))[1].get(key, (None, None))[1]
    return f"{conf.path}:{line}" if line else conf.path


def cluster_slice(name: str, state_dir: str) -> str:
    """The cgroup slice of the cluster whose state is in state_dir: its name (characters a
    directory name may not hold, or that would read as a path, as _) and 8 hex digits of a
    hash of state_dir, so two clusters of one name on a host still get a slice each."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in name)
    return f"lavalite-{safe}-{_state_id(state_dir)}"


def _state_id(state_dir: str) -> str:
    """8 hex digits naming a state directory (the cluster it holds): FNV-1a, a few lines of
    Python, where zlib's CRC would add its import (0.3 ms) to every user command's start."""
    h = 0x811C9DC5
    for byte in state_dir.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def from_env(var: str, kind: str, value: "Any") -> "Any":
    """$var checked as a key of `kind` would be, else `value` (the configured one)."""
    raw = os.environ.get(var)
    if raw is None:
        return value
    try:
        return _convert(kind, raw.strip())
    except ValueError as exc:
        raise ConfigError([f"${var}: {exc}"]) from None


def find_conf(explicit: str | None = None) -> str:
    """--conf, then $LAVALITE_CONF (returned even if missing so load() reports it), then the
    first of SEARCH that exists."""
    if explicit:
        return explicit
    if os.environ.get("LAVALITE_CONF"):
        return os.environ["LAVALITE_CONF"]
    for cand in SEARCH:
        if os.path.exists(os.path.expanduser(cand)):
            return os.path.expanduser(cand)
    raise ConfigError(
        [
            f"no configuration found: looked at --conf, $LAVALITE_CONF, "
            f"{', '.join(SEARCH)}; run `lavalite up` for a private cluster, or "
            f"copy etc/lavalite.conf to /etc/lavalite/"
        ]
    )


def load(path: str) -> Config:
    """Parse and validate lavalite.conf and its companions; ConfigError lists every error."""
    path = os.path.abspath(os.path.expanduser(path))
    errors: list[str] = []
    main = _read(path, errors)
    if main is None:
        raise ConfigError(errors)
    conf = _build(path, main, errors)
    if errors:
        raise ConfigError(errors)
    return conf


def _state_paths(state_dir: str) -> dict[str, str]:
    """Everything under state_dir but the runtime records, which go to a RAM filesystem where
    there is one (/dev/shm), named after state_dir, as /run/lavalite is for installed nodes."""
    import zlib  # only `lavalite up` comes here, never a user command

    run = os.path.join(state_dir, "run")
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        run = os.path.join(
            "/dev/shm",
            f"lavalite-{os.getuid()}",
            f"{os.path.basename(state_dir)}-{zlib.crc32(state_dir.encode()):08x}",
        )
    return {
        "state_dir": state_dir,
        "spool_dir": os.path.join(state_dir, "spool"),
        "run_dir": run,
        "log_dir": os.path.join(state_dir, "log"),
    }


def defaults(state_dir: str) -> Config:
    """The embedded defaults with every path under state_dir (`lavalite up`, no root needed)."""
    sd = os.path.abspath(os.path.expanduser(state_dir))
    main = {"paths": (0, {k: (v, 0) for k, v in _state_paths(sd).items()})}
    errors: list[str] = []
    conf = _build(os.path.join(sd, LAVALITE), main, errors, read=False)
    if errors:  # only if KEYS itself is inconsistent
        raise ConfigError(errors)
    return conf


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe(kind: str) -> str:
    if kind in _NUM:
        return _NUM[kind][4]
    if kind.startswith("choice:"):
        return "one of " + kind[7:]
    return {
        "list": "names, separated by spaces or commas",
        "bool": "yes/no",
        "size": "size in MB, or with a unit: 512M, 2G",
        "relpath": "relative path (no '.' or '..' parts)",
        "shares": "USER_SHARES[[name, shares] ...], empty = none",
        "reserve": "MAX_RESERVE_TIME[N], N a duration > 0; empty = none",
        "preemption": "PREEMPTIVE[queue ...] and/or PREEMPTABLE[queue ...], empty = none",
        "loads": "INDEX=VALUE ..., empty = none",
        "resreq": "select[...] order[...], empty = none",
        "percent": "percentage in (0, 100%]",
        "count?": "integer >= 0, empty = no limit",
        "size?": "size in MB, or with a unit: 512M, 2G; empty = no limit",
        "file?": "path of a file, empty = none",
        "str": "text",
    }.get(kind, kind)


def render(conf_name: str, values: dict[str, dict] | None = None) -> str:
    """Documented sample of conf_name: every key with its meaning, type and default. Keys given
    in values[section][key] are set; the others stay commented out at their default, so a file
    written once keeps following the defaults of the LavaLite that reads it.
    queues.conf gets the queues (and [quota NAME] sections) in values, else [serial] and a
    commented-out [quota NAME]."""
    values = values or {}
    schema = _SCHEMA[conf_name]
    for sec, keys in values.items():
        rows = schema.get(_section_key(conf_name, sec))
        if rows is None or ((conf_name, sec) not in _FREE and set(keys) - set(rows)):
            raise ValueError(f"render {conf_name}: unknown [{sec}] or key in {sorted(keys)}")
    out = [
        f"# {_FILE_DOC[conf_name]}",
        "# Syntax: [section], key = value, full-line comments (# or ;), no inline comments.",
        "",
    ]
    for sec in (list(values) or ["serial"]) if conf_name == QUEUES else schema:
        out.append(f"[{sec}]")
        given = values.get(sec, {})
        if (conf_name, sec) in _FREE:
            out += [f"# {_FREE[conf_name, sec]}"]
            out += [f"{k} = {_fmt(v)}" for k, v in given.items()] + [""]
            continue
        out += _render_keys(schema[_section_key(conf_name, sec)], given)
    if conf_name == QUEUES and not any(_section_key(QUEUES, s) == USERGROUP for s in values):
        out += [f"# [{USERGROUP} NAME]"]
        for key, (kind, _, doc) in schema[USERGROUP].items():
            out += [f"# {doc}", f"# Type: {_describe(kind)}.", f"# {key} = alice bob"]
    if conf_name == QUEUES and not any(s.startswith(QUOTA_PREFIX) for s in values):
        out += [f"# [{QUOTA_PREFIX}NAME]: a quota on core-hours (docs/policy.md)"] + _render_keys(
            schema[QUOTA], {}
        )
    if conf_name == QUEUES and not any(s.startswith(LIMIT_PREFIX) for s in values):
        out += [f"# [{LIMIT_PREFIX}NAME]: a limit on running jobs (docs/policy.md)"]
        out += _render_keys(schema[LIMIT], {})
    return "\n".join(out).rstrip() + "\n"


def _render_keys(rows: "Rows", given: dict) -> list[str]:
    """A section's keys, documented: the given ones set, the others commented out."""
    out = []
    for key, (kind, default, doc) in rows.items():
        line = f"{key} = {_fmt(given[key])}" if key in given else f"# {key} = {default}"
        out += [
            f"# {doc}",
            f"# Type: {_describe(kind)}. Default: {default or '(empty)'}",
            line.rstrip(),
            "",
        ]
    return out


def write_state_conf(state_dir: str, overrides: dict) -> str:
    """Write the four files into state_dir for `lavalite up` (paths default to state_dir, as in
    defaults()); existing files are kept. Returns the lavalite.conf path. They are readable by
    all, in a directory all can traverse: every user's commands read them (they hold no
    secret: the key is a file of its own)."""
    from lavalite import private  # only `lavalite up` and tests come here

    sd = os.path.abspath(os.path.expanduser(state_dir))
    private.make_dir(sd, traversable=True)
    for name in FILES:
        values = {s: dict(kv) for s, kv in overrides.get(name, {}).items()}
        if name == LAVALITE:
            values["paths"] = {**_state_paths(sd), **values.get("paths", {})}
        target = os.path.join(sd, name)
        if not os.path.exists(target):
            write_whole(target, render(name, values), 0o644)
    return os.path.join(sd, LAVALITE)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write-samples":
        os.makedirs(argv[1], exist_ok=True)
        for name in FILES:
            with open(os.path.join(argv[1], name), "w", encoding="utf-8") as f:
                f.write(render(name))
        return 0
    print(
        "usage: python -m lavalite.config --write-samples DIR  (to check a configuration: "
        "lavalite config-check)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
