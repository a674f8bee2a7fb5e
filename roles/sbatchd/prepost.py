"""A job's command line wrapped for bsub -E (pre-execution command), -Ep (post-execution
command) and -c (CPU time limit), as LSF runs them: on the execution host, as the job's user,
in its directory and environment, in its cgroups.

One /bin/sh around the job does the three steps; a job without these options is exec'd as it
is (no shell: the fast path stays fast). A pre-execution command that fails (non-zero) leaves
PRE_FAILED in the job's TMPDIR and exits with its code without running the job: the shepherd
reports the attempt ended by `pre_exec` and mbatchd puts the job back to PEND. The job's own
ending is kept: the post-execution command runs after it (LSB_JOBEXIT_STAT holds the job's
wait status, as LSF), and then the wrapper exits with the job's code or dies by its signal.
-c is RLIMIT_CPU on each of the job's processes: SIGXCPU at the limit, SIGKILL 5 s of CPU later.
"""

import math

PRE_FAILED = ".lavalite-pre-exec-failed"  # in the job's TMPDIR
CPU_GRACE = 5  # seconds of CPU between SIGXCPU (soft limit) and SIGKILL (hard limit)

# $1 pre-exec, $2 post-exec, $3 CPU seconds (each may be empty), then the job's argv. The
# wrapper ignores no signal (a trap is reset in the job): TERM reaches the job, which ends, and
# the post-execution command still runs before the wrapper dies of the same signal.
_SCRIPT = f"""pre=$1 post=$2 cpu=$3
shift 3
if [ -n "$pre" ]; then
    /bin/sh -c "$pre"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        : > "$TMPDIR/{PRE_FAILED}"
        exit "$rc"
    fi
fi
limit() {{
    [ -z "$cpu" ] || {{ ulimit -S -t "$cpu" && ulimit -H -t $((cpu + {CPU_GRACE})); }} || exit 126
}}
if [ -z "$post" ]; then
    limit
    exec "$@"
fi
trap : HUP INT QUIT TERM USR1 USR2
(limit; exec "$@")
rc=$?
if [ "$rc" -gt 128 ]; then LSB_JOBEXIT_STAT=$((rc - 128)); else LSB_JOBEXIT_STAT=$((rc * 256)); fi
export LSB_JOBEXIT_STAT
/bin/sh -c "$post"
trap - HUP INT QUIT TERM USR1 USR2
if [ "$rc" -gt 128 ]; then kill -$((rc - 128)) $$; fi
exit "$rc"
"""


def wrapped(argv: list[str], spec: dict) -> list[str]:
    """argv as it is, or inside the wrapper when the job has -E, -Ep or -c."""
    pre, post, cpu = spec.get("pre_exec"), spec.get("post_exec"), spec.get("cpu_limit")
    if pre is None and post is None and cpu is None:
        return argv
    seconds = "" if cpu is None else str(math.ceil(cpu))
    return ["/bin/sh", "-c", _SCRIPT, "lavalite-job", pre or "", post or "", seconds, *argv]
