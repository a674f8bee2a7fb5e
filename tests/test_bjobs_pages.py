"""bjobs in pages: mbatchd's `jobs` answers `limit` jobs and a cursor (roles/mbatchd/listing.py),
the command prints each page as it comes (roles/cli/bjobs_pages.py). The paging logic runs
on mbatchd's core without processes; real clusters list more jobs than a page holds with each
filter, and show that the first lines come before the last page is fetched."""

import fcntl
import grp
import os
import pwd
import subprocess

import pytest
from conftest import wait_until
from test_core import USER, world  # noqa: F401  (world: the fixture)
from test_lsf_options import _lsf_command

from lavalite.model import element_id
from lavalite.protocol import ProtocolError
from roles.cli import commands
from roles.mbatchd.listing import COMPACT_FLOOR, Listing


def _submit(core, store, name="j", **spec):
    msg = {"spec": {"cmd": ["true"], "env": {}, "name": name, **spec}}
    return core.submit(USER, msg, 100.0, store.env_id)["job"]


def _pages(core, limit, now=100.0, **fields):
    """Every page of a listing: (its views, its `next`)."""
    pages, after = [], None
    while True:
        reply = core.query_jobs(USER, {"limit": limit, "after": after, **fields}, now, _none)
        assert len(reply["jobs"]) <= limit
        pages.append(reply)
        after = reply["next"]
        if after is None:
            return pages


def _none(job_id):
    return None


def _rows(views):
    """(id, state) of each job or element: what the command prints a line for (a run of
    indices not handed out comes as one view)."""
    from roles.cli.array_commands import expand

    return [(v["id"], v["state"]) for v in expand(views)]


def _mixed(core, store):
    """Plain jobs around an array of 9, of which 2 started and one killed alone before its
    turn; returns (plain ids, array id)."""
    core.host_register("h1", {"slots": 2, "running": []}, 100.0)
    first = [_submit(core, store) for _ in range(3)]
    array_id = _submit(core, store, name="arr[1-9]")
    last = [_submit(core, store) for _ in range(2)]
    core.schedule(100.0)  # two slots: jobs 1 and 2 run
    core.kill(USER, {"jobs": [element_id(array_id, 5)]}, 100.0)
    return first + last, array_id


def test_pages_of_any_size_list_what_one_answer_lists(world):
    _, store, core = world
    plain, array_id = _mixed(core, store)
    whole = core.query_jobs(USER, {"all": True}, 100.0, _none)
    assert whole["next"] is None
    rows = _rows(whole["jobs"])
    # a job, then the array's elements by index, then the jobs after it
    assert [r[0] for r in rows] == plain[:3] + [
        element_id(array_id, i) for i in range(1, 10)
    ] + plain[3:]
    for limit in (1, 2, 3, 7, 100):
        paged = [r for page in _pages(core, limit, all=True) for r in _rows(page["jobs"])]
        assert paged == rows, limit


def test_a_page_starts_at_its_cursor_and_sees_jobs_submitted_meanwhile(world):
    _, store, core = world
    ids = [_submit(core, store) for _ in range(5)]
    first = core.query_jobs(USER, {"limit": 2}, 100.0, _none)
    assert [v["id"] for v in first["jobs"]] == ids[:2]
    later = _submit(core, store)
    rest = core.query_jobs(USER, {"limit": 10, "after": first["next"]}, 100.0, _none)
    assert [v["id"] for v in rest["jobs"]] == ids[2:] + [later]
    assert rest["next"] is None


def test_filters_of_user_queue_and_states_apply_in_mbatchd(world):
    _, store, core = world
    plain, array_id = _mixed(core, store)
    bob = {**USER, "user": "bob", "uid": 1001}
    theirs = core.submit(bob, {"spec": {"cmd": ["true"], "env": {}}}, 100.0, store.env_id)["job"]

    def listed(limit, **fields):
        return [r for page in _pages(core, limit, **fields) for r in _rows(page["jobs"])]

    assert theirs not in [r[0] for r in listed(2)]
    assert [r[0] for r in listed(2, users=["bob"])] == [theirs]
    assert {r[1] for r in listed(2, users=["all"], states=["RUN"])} == {"RUN"}
    assert [r[0] for r in listed(1, states=["RUN"])] == plain[:2]
    assert [r[0] for r in listed(3, all=True, states=["KILLED"])] == [element_id(array_id, 5)]
    assert listed(2, queue="nosuch") == []


def test_name_project_group_and_host_apply_in_mbatchd(world):
    _, store, core = world
    plain, array_id = _mixed(core, store)  # jobs named j, elements arr[1] ... arr[9]
    spec = {"cmd": ["true"], "env": {}, "name": "other", "project": "p1", "user_group": "nogroup"}
    try:
        nobody = {**USER, "user": "nobody", "uid": pwd.getpwnam("nobody").pw_uid}
        grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("needs the user nobody and the group nogroup (-G)")
    other = core.submit(nobody, {"spec": spec}, 100.0, store.env_id)["job"]
    tagged = _submit(core, store, name="tagged[1-3]", project="p1")  # none handed out

    def listed(**fields):
        pages = _pages(core, 2, users=["all"], all=True, **fields)
        return [r[0] for page in pages for r in _rows(page["jobs"])]

    elements = [element_id(array_id, i) for i in range(1, 10)]
    assert listed(name="oth*") == [other]
    assert listed(name="arr") == elements
    assert listed(name="arr[3]") == [element_id(array_id, 3)]
    assert listed(name="*[2]") == [element_id(array_id, 2), element_id(tagged, 2)]
    assert listed(project="p1") == [other] + [element_id(tagged, i) for i in (1, 2, 3)]
    assert other not in listed(project="default")
    assert listed(user_group="nogroup") == [other]
    assert listed(host="h1") == plain[:2]  # running there; pending indices run nowhere
    assert listed(name="j", host="h1", project="default") == plain[:2]


def test_named_ids_and_an_array_id_go_by_pages_with_the_missing_said(world):
    _, store, core = world
    plain, array_id = _mixed(core, store)
    asked = [plain[0], 999, array_id, element_id(array_id, 8)]
    pages = _pages(core, 2, jobs=asked)
    assert len(pages) > 2
    views = [r for page in pages for r in _rows(page["jobs"])]
    ids = [r[0] for r in views]
    assert ids == [plain[0]] + [element_id(array_id, i) for i in range(1, 10)] + [
        element_id(array_id, 8)
    ]
    assert [m for page in pages for m in page["missing"]] == [999]


def test_ids_that_left_memory_are_skipped_and_compacted(world):
    _, store, core = world
    ids = [_submit(core, store) for _ in range(4)]
    listing = Listing(ids, lambda i: i in core.jobs)
    for job_id in ids[1:3]:
        del core.jobs[job_id]
        listing.gone()
    assert list(listing.starting(ids[1])) == ids[1:]  # stale ones stay until compaction
    core.listing = listing
    assert [v["id"] for p in _pages(core, 1) for v in p["jobs"]] == [ids[0], ids[3]]
    many = Listing(list(range(1, 3 * COMPACT_FLOOR)), lambda i: i % 3 == 0)
    for _ in range(2 * COMPACT_FLOOR):
        many.gone()
    assert many.ids == list(range(3, 3 * COMPACT_FLOOR, 3))
    many.add(10**6)
    many.add(5)  # below the last: still in order
    assert many.ids[:3] == [3, 5, 6] and many.ids[-1] == 10**6


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"limit": 0}, "'limit'"),
        ({"limit": 10**6}, "'limit'"),
        ({"limit": "5"}, "limit"),
        ({"after": -1}, "'after'"),
        ({"states": ["RUN", 3]}, "'states'"),
    ],
)
def test_a_bad_page_request_is_refused_by_field(world, fields, says):
    _, store, core = world
    with pytest.raises(ProtocolError, match=says):
        core.query_jobs(USER, fields, 100.0, _none)


def test_the_table_takes_its_widths_from_the_first_rows(capsys):
    rows = iter([["1", "a"], ["22", "b"], "  a line of its own", ["333333", "c"]])
    commands.table(rows, ["ID", "X"], sample=2)
    assert capsys.readouterr().out.splitlines() == [
        "ID  X",
        "1   a",
        "22  b",
        "  a line of its own",
        "333333  c",  # later and wider: its own line widens
    ]


# --- real clusters


def _bjobs(c, tmp_path, words, page):
    env = dict(c.env, LAVALITE_BJOBS_PAGE=str(page))
    return subprocess.run(
        _lsf_command(tmp_path, "bjobs") + words,
        env=env,
        cwd=c.state,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _bsub(c, tmp_path, *words):
    res = subprocess.run(
        _lsf_command(tmp_path, "bsub") + list(words),
        env=c.env,
        cwd=c.state,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res
    return int(res.stdout.split("<")[1].split(">")[0])


def test_every_filter_lists_the_same_in_pages_of_two(make_cluster, tmp_path):
    c = make_cluster(slots=2, queues={"serial": {}, "night": {}})
    done = [_bsub(c, tmp_path, "-P", "alpha", "true"), _bsub(c, tmp_path, "false")]
    c.wait(done)
    running = [
        _bsub(c, tmp_path, "-J", "run_me", "-P", "beta", "-G", "root", "sleep 300"),
        _bsub(c, tmp_path, "-J", "run_too", "sleep 300"),
    ]
    c.wait_started(running)
    array_id = _bsub(c, tmp_path, "-J", "arr[1-7]", "-q", "night", "sleep 300")
    waiting = [_bsub(c, tmp_path, "-J", f"wait{i}", "sleep 300") for i in range(3)]
    held = _bsub(c, tmp_path, "-H", "-J", "held", "true")
    user = c.client.jobs([done[0]])[0]["user"]
    cases = [
        [],
        ["-a"],
        ["-d"],
        ["-p"],
        ["-r"],
        ["-s"],
        ["-u", "all", "-a"],
        ["-u", user],
        ["-q", "night"],
        ["-J", "wait*"],
        ["-J", "arr"],
        ["-P", "beta"],
        ["-G", "root"],
        ["-m", "testhost"],
        [str(array_id)],
        [f"{array_id}[2-6]", str(waiting[0]), "999999"],
        ["-sum"],
        ["-a", "-json"],
        ["-a", "-noheader", "-o", "jobid stat job_name delimiter=','"],
        ["-l", str(held)],
    ]
    for words in cases:
        small, whole = _bjobs(c, tmp_path, words, 2), _bjobs(c, tmp_path, words, 1000)
        assert (small.returncode, small.stderr) == (whole.returncode, whole.stderr), words
        # the default table's widths come from the first page: compare the words of each line
        lines = [line.split() for line in small.stdout.splitlines()]
        assert lines == [line.split() for line in whole.stdout.splitlines()], words
    every = _bjobs(c, tmp_path, ["-a", "-noheader", "-o", "jobid job_name stat"], 2).stdout
    assert len(every.splitlines()) == 2 + 2 + 7 + 3 + 1
    assert f"{array_id} arr[7] PEND" in every.splitlines()
    missing = _bjobs(c, tmp_path, ["999999"], 2)
    assert (missing.returncode, missing.stderr) == (1, "Job <999999> is not found\n")
    bad = _bjobs(c, tmp_path, [], 0)
    assert bad.returncode == 2 and "$LAVALITE_BJOBS_PAGE: '0' out of range" in bad.stderr
    pages = c.client.pages("jobs", users=["all"], all=True, limit=1)

    assert len(next(pages)["jobs"]) == 1
    pages.close()  # its next page was asked for already: that reply answers no later call
    assert c.client.call("ping")["pid"] == c.pid("mbatchd")


def _listing_held(c, tmp_path):
    """1,000 jobs, and `bjobs -u all` in pages of 5 writing into a pipe of 4 KiB that is not
    read yet: the command blocks writing long before its last page. Returns the command and
    the pipe's end to read, whose first line (the header) is read."""
    c.client.submit_many([["sleep", "300"]] * 1000, req="many", cwd=c.state, env={})
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    env = dict(c.env, LAVALITE_BJOBS_PAGE="5")
    proc = subprocess.Popen(
        _lsf_command(tmp_path, "bjobs") + ["-u", "all"],
        env=env,
        cwd=c.state,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    out = os.fdopen(read_end)
    assert out.readline().split()[:2] == ["JOBID", "USER"]
    return proc, out


def _listed(proc, out):
    """(the job ids of the rest of the listing, stderr) once the command has ended well."""
    with out:
        rest = out.read()
    said = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, said
    return [int(line.split()[0]) for line in rest.splitlines()], said


def test_the_first_lines_are_printed_before_the_last_page_is_fetched(make_cluster, tmp_path):
    """A job submitted once the first line is read is listed: the listing was still being
    fetched. (Read whole first, as one answer, the listing could not hold it.)"""
    c = make_cluster(slots=1)
    proc, out = _listing_held(c, tmp_path)
    later = c.submit(["sleep", "300"])
    listed, said = _listed(proc, out)
    assert len(listed) == 1001 and listed[-1] == later and said == ""


def test_a_listing_goes_on_after_mbatchd_restarts_between_pages(make_cluster, tmp_path):
    """mbatchd killed (-9) in the middle of a listing: the command asks for its next page
    again until the restarted mbatchd answers, and lists every job once, in order."""
    c = make_cluster(slots=1)
    proc, out = _listing_held(c, tmp_path)
    c.kill9_restarted("mbatchd")
    listed, said = _listed(proc, out)
    assert listed == sorted(set(listed)) and len(listed) == 1000
    assert "mbatchd" in said and "retrying" in said  # it waited for the new one


def test_jobs_older_than_clean_period_by_id_only(make_cluster, tmp_path):
    """Gone from mbatchd's memory: `bjobs ID` reads the store (with -a, -d, -l too); the
    listings leave them out, as LSF's do; an array's ID is not found, its elements are."""
    c = make_cluster(mbatchd={"clean_period": "1"})
    done = _bsub(c, tmp_path, "-J", "old", "true")
    array_id = _bsub(c, tmp_path, "-J", "olds[1-2]", "true")
    c.wait([done, element_id(array_id, 1), element_id(array_id, 2)])
    wait_until(lambda: c.client.call("stats")["jobs_in_memory"] == 0)

    def bjobs(*words):
        res = _bjobs(c, tmp_path, ["-noheader", "-o", "jobid job_name stat", *words], 2)
        return res.returncode, res.stdout, res.stderr

    assert bjobs(str(done)) == (0, f"{done} old DONE\n", "")
    assert bjobs("-d", str(done)) == bjobs("-a", str(done)) == bjobs(str(done))
    assert "Done successfully." in _bjobs(c, tmp_path, ["-l", str(done)], 2).stdout
    assert bjobs(f"{array_id}[1-2]") == (
        0,
        f"{array_id} olds[1] DONE\n{array_id} olds[2] DONE\n",
        "",
    )
    assert bjobs("-d") == (0, "", "No done job found\n")
    assert bjobs("-a") == (0, "", "No job found\n")
    assert bjobs(str(array_id)) == (1, "", f"Job <{array_id}> is not found\n")
