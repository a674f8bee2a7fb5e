"""A multi-host job's blaunch tasks on its other hosts, accounted with the job: the rule
(pure), sbatchd's part report, and mbatchd adding it to the job in memory or in the store.
The real thing, tasks on a second sbatchd, is in tests/test_blaunch_hosts.py."""

from test_core import commit, world  # noqa: F401  (world is a fixture)
from test_resreq import running_on_two_hosts

from lavalite import accounting
from lavalite.model import DONE
from roles.sbatchd.core import Core, Report

MB = 1 << 20


def test_figures_of_two_hosts_are_summed_and_an_unmeasured_one_adds_nothing():
    assert accounting.combined((1.5, 10), (2.0, 5)) == (3.5, 15)
    assert accounting.combined((None, None), (2.0, None)) == (2.0, None)
    assert accounting.combined((1.0, None), (None, 7)) == (1.0, 7)
    assert accounting.combined((None, None), (None, None)) == (None, None)


def test_sbatchd_reports_what_a_part_used_and_nothing_unmeasured():
    core = Core("/nonexistent", 0)
    assert core.part_ended(5, 2, (1.25, 3 * MB), 10.0) == [
        Report(
            {
                "kind": "part",
                "job": 5,
                "attempt": 2,
                "time": 10.0,
                "cpu_time": 1.25,
                "max_mem": 3 * MB,
            }
        )
    ]
    assert core.part_ended(5, 2, (None, None), 10.0) == []


def _part(rid, job_id, attempt=1, cpu=1.0, mem=MB, ended=None):
    return {
        "rid": rid,
        "kind": "part",
        "job": job_id,
        "attempt": attempt,
        "time": 100.0 + rid if ended is None else ended,  # when its host ended the part
        "cpu_time": cpu,
        "max_mem": mem,
    }


def test_mbatchd_adds_a_part_to_its_job_in_memory_then_in_the_store(world):
    conf, store, core = world
    job = core.jobs[running_on_two_hosts(core, store)]
    job_id = job.id
    assert job.hosts == [["h1", 2], ["h2", 2]]
    # a part that ended before the job (its sbatchd restarted), then the job's own end
    assert core.reports("h2", [_part(1, job_id, cpu=0.5, mem=10 * MB)], 101.0) == [1]
    exit_ = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}
    core.reports("h1", [{**exit_, "cpu_time": 1.0, "max_mem": 20 * MB}], 102.0)
    assert (job.state, job.cpu_time, job.max_mem) == (DONE, 1.5, 30 * MB)
    # the usual order: after the job's end; then reports that do not count
    core.reports("h2", [_part(2, job_id, cpu=2.0, mem=5 * MB)], 103.0)
    acks = core.reports("h1", [_part(3, job_id), _part(4, job_id, attempt=2), _part(5, 999)], 103.0)
    assert acks == [3, 4, 5]  # acknowledged, and dropped
    core.reports("h3", [_part(6, job_id)], 103.0)
    assert (job.cpu_time, job.max_mem) == (3.5, 35 * MB)
    commit(store, core)
    assert (store.job(job_id).cpu_time, store.job(job_id).max_mem) == (3.5, 35 * MB)
    # gone from memory (clean_period): the store's row is updated by the turn's commit
    core.tick(103.0 + conf.mbatchd.clean_period + 1)
    assert job_id not in core.jobs
    core.reports("h2", [_part(7, job_id, cpu=1.0, mem=MB)], 104.0)
    core.reports("h1", [_part(8, job_id), _part(9, job_id, attempt=2), _part(10, 999)], 104.0)
    commit(store, core)
    assert (store.job(job_id).cpu_time, store.job(job_id).max_mem) == (4.5, 36 * MB)
    assert store.job(999) is None


def test_a_part_report_sent_again_is_counted_once(world):
    """sbatchd sends a report again when the connection dropped between mbatchd's commit and
    its acknowledgement: the part (job, attempt, host, the time its host ended it) counts once,
    in memory, after a restart of mbatchd, and in the store once the job left memory."""
    from roles.mbatchd.core import Core as Mbatchd

    conf, store, core = world
    job_id = running_on_two_hosts(core, store)
    exit_ = {"rid": 1, "kind": "exit", "job": job_id, "attempt": 1, "exit_code": 0}
    core.reports("h1", [{**exit_, "cpu_time": 1.0, "max_mem": 20 * MB}], 102.0)
    part = _part(2, job_id, cpu=2.0, mem=5 * MB)
    core.reports("h2", [part], 103.0)
    commit(store, core)
    core.reports("h2", [part], 104.0)  # the same report again
    assert (core.jobs[job_id].cpu_time, core.jobs[job_id].max_mem) == (3.0, 25 * MB)
    commit(store, core)
    again = Mbatchd(conf, store.load(0), now=105.0)  # mbatchd restarted: the job in memory
    again.reports("h2", [part], 105.0)
    assert (again.jobs[job_id].cpu_time, again.jobs[job_id].max_mem) == (3.0, 25 * MB)
    another = _part(3, job_id, cpu=1.0, mem=MB)  # a second part on h2 (its sbatchd restarted)
    again.reports("h2", [another], 105.0)
    commit(store, again)
    again.tick(106.0 + conf.mbatchd.clean_period)
    assert job_id not in again.jobs
    again.reports("h2", [part, another], 107.0)  # both again, to the store's row
    commit(store, again)
    assert (store.job(job_id).cpu_time, store.job(job_id).max_mem) == (4.0, 26 * MB)
