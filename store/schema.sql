-- LavaLite store, schema version 5. mbatchd is the only writer.
-- Jobs keep their immutable spec as a JSON blob; the columns are what changes or is filtered on.

CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY,
    req_id        TEXT,                 -- client request id: a retried submit finds its job
    user          TEXT NOT NULL,
    uid           INTEGER NOT NULL,
    queue         TEXT NOT NULL,
    name          TEXT NOT NULL,
    slots         INTEGER NOT NULL,
    spec          BLOB NOT NULL,        -- JSON: cmd, cwd, out, err, env_id, walltime, from_host
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    attempt       INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    host          TEXT,
    submit_time   REAL NOT NULL,
    start_time    REAL,
    end_time      REAL,
    eligible_time REAL NOT NULL,
    exit_code     INTEGER,
    exit_signal   INTEGER,
    kill_requested INTEGER NOT NULL DEFAULT 0,
    pend_seq      INTEGER NOT NULL DEFAULT 0,
    message       TEXT,                 -- what the worker said of the last attempt's end
    hosts         TEXT,                 -- JSON [[host, slots], ...] of a job on several hosts
    cpu_time      REAL,                 -- CPU seconds of the last attempt, as its worker measured
    max_mem       INTEGER               -- its peak memory, bytes
);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs(state) WHERE state IN ('PEND', 'RUN');
CREATE INDEX IF NOT EXISTS jobs_end ON jobs(end_time) WHERE end_time IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_user_end ON jobs(user, end_time) WHERE end_time IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_req ON jobs(req_id) WHERE req_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS job_events (
    seq      INTEGER PRIMARY KEY,
    job_id   INTEGER NOT NULL,
    time     REAL NOT NULL,
    old      TEXT,                      -- NULL for the submit event
    new      TEXT NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    host     TEXT,
    attempt  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events(job_id);

-- Submit environments, shared by every job submitted from the same environment.
CREATE TABLE IF NOT EXISTS envs (
    id    INTEGER PRIMARY KEY,
    hash  TEXT NOT NULL UNIQUE,
    data  BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS queues (
    name    TEXT PRIMARY KEY,
    config  BLOB NOT NULL              -- JSON of the queue's settings when mbatchd last started
);

CREATE TABLE IF NOT EXISTS hosts (
    name       TEXT PRIMARY KEY,
    slots      INTEGER NOT NULL,
    status     TEXT NOT NULL,
    last_seen  REAL
);

CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    uid         INTEGER NOT NULL,
    first_seen  REAL NOT NULL
);

-- Job arrays (schema 2): one row per array however many elements; an element gets a row in
-- jobs (id = array id << 32 | index) only when it is dispatched or killed alone.
CREATE TABLE IF NOT EXISTS arrays (
    id            INTEGER PRIMARY KEY,  -- from the same sequence as jobs.id
    req_id        TEXT,
    user          TEXT NOT NULL,
    uid           INTEGER NOT NULL,
    queue         TEXT NOT NULL,
    name          TEXT NOT NULL,
    slots         INTEGER NOT NULL,
    spec          BLOB NOT NULL,        -- JSON, as jobs.spec (+ lines for --each-line)
    max_attempts  INTEGER NOT NULL,
    submit_time   REAL NOT NULL,
    indices       TEXT NOT NULL,        -- the indices as submitted: 1-100:2,200
    throttle      INTEGER NOT NULL DEFAULT 0,
    cursor        INTEGER NOT NULL DEFAULT 0,   -- indices handed out, in order
    skip          TEXT NOT NULL DEFAULT '[]',   -- indices past the cursor that are elements already
    counts        TEXT NOT NULL DEFAULT '{}',   -- elements by state
    killed        INTEGER NOT NULL DEFAULT 0,
    end_time      REAL,
    pend_seq      INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS arrays_req ON arrays(req_id) WHERE req_id IS NOT NULL;

-- The parts of multi-host jobs (blaunch tasks on their other hosts) whose figures the job's
-- cpu_time and max_mem hold, by when their host ended them: a part's report sent again after
-- its commit is not added twice.
CREATE TABLE IF NOT EXISTS job_parts (
    job_id   INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    host     TEXT NOT NULL,
    time     REAL NOT NULL,
    PRIMARY KEY (job_id, attempt, host, time)
) WITHOUT ROWID;

-- Fairshare (schema 7): each fairshare queue's usage by share account (a user, a group as
-- NAME/, or others): run is slot-seconds and cpu CPU seconds, both decayed up to `at`.
CREATE TABLE IF NOT EXISTS fairshare_usage (
    queue    TEXT NOT NULL,
    account  TEXT NOT NULL,
    run      REAL NOT NULL,
    cpu      REAL NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (queue, account)
) WITHOUT ROWID;

-- Core-seconds (slots x seconds) that the ended attempts of each [quota NAME]'s jobs ran in
-- each of its periods (docs/policy.md): a row per quota and period, written as a total.
CREATE TABLE IF NOT EXISTS quota_usage (
    quota         TEXT NOT NULL,
    period_start  REAL NOT NULL,
    core_seconds  REAL NOT NULL,
    PRIMARY KEY (quota, period_start)
) WITHOUT ROWID;

-- Runs a requeue superseded (schema 7): a finished job that brequeue -d/-e runs again keeps
-- the record of each earlier run here (its jobs row holds the last), for bacct.
CREATE TABLE IF NOT EXISTS job_runs (
    job_id      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    host        TEXT,
    slots       INTEGER NOT NULL,
    start_time  REAL,
    end_time    REAL NOT NULL,
    exit_code   INTEGER,
    exit_signal INTEGER,
    cpu_time    REAL,
    max_mem     INTEGER,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
