"""bjobs as LSF shows jobs: -o/-json/-noheader as monitoring scripts read them, STAT EXIT,
array elements as JOBID 12 / JOB_NAME arr[1], the filters, -sum; -V and usage under every LSF
name; bpeek's header. The -o parser has fast tests; the rest runs real clusters."""

import json

import pytest
from conftest import wait_until
from test_lsf_options import _run

from lavalite.model import element_id
from roles.cli import ALIASES
from roles.cli.bjobs_lsf import FormatError, annotate, job_ids, long_lines, parse_format

# --- the -o parser and the views' readings (no processes)


def test_o_fields_widths_and_delimiter():
    columns, delimiter = parse_format("jobid:8 stat: job_name:-12 max_mem::G delimiter=','")
    assert delimiter == ","
    assert [(c.field, c.width, c.right) for c in columns] == [
        ("jobid", 8, False),
        ("stat", 15, False),  # "field:" takes the recommended width
        ("job_name", 12, True),
        ("max_mem", 15, False),
    ]
    assert columns[3].unit == 1 << 30
    assert parse_format('jobid delimiter="^"')[1] == "^"
    every = parse_format("all:12")[0]
    assert len(every) > 30 and {(c.width, c.right) for c in every} == {(12, False)}
    assert [c.field for c in parse_format("id name proj cpu")[0]] == [
        "jobid",
        "job_name",
        "proj_name",
        "cpu_used",
    ]


@pytest.mark.parametrize(
    "text, says",
    [
        ("jobid bogus", "'bogus' is not a bjobs field"),
        ("", "no field given"),
        ("jobid:0", "a width is at least 1"),
        ("stat::M", "a unit applies to"),
        ("jobid delimiter=,", "delimiter= takes one character in quotes"),
        ("jobid:x", "'jobid' is not a bjobs field"),
    ],
)
def test_bad_o_strings_are_refused_by_name(text, says):
    with pytest.raises(FormatError, match=says):
        parse_format(text)


def test_job_id_ranges_as_lsf_writes_them():
    assert job_ids("12") == [12]
    assert job_ids("12[3]") == [element_id(12, 3)]
    assert job_ids("12[1-3,7]") == [element_id(12, i) for i in (1, 2, 3, 7)]
    with pytest.raises(Exception, match="is not a job id"):
        job_ids("jobid stat")


def _view(**kw):
    view = {
        "id": 5,
        "label": "5",
        "array": None,
        "index": None,
        "name": "n",
        "state": "FAILED",
        "stat": "FAILED(exit)",
    }
    return {**view, **kw}


def test_exit_under_the_lsf_names_and_elements_as_lsf():
    (lsf,) = annotate([_view()], lsf=True, element_ids=False)
    (native,) = annotate([_view()], lsf=False, element_ids=False)
    assert (lsf["_stat"], native["_stat"]) == ("EXIT", "FAILED(exit)")
    element = _view(id=element_id(12, 1), label="12[1]", array=12, index=1, name="arr")
    (lsf,) = annotate([element], lsf=True, element_ids=False)
    (site,) = annotate([element], lsf=True, element_ids=True)
    assert (lsf["_jobid"], lsf["_name"]) == ("12", "arr[1]")
    assert (site["_jobid"], site["_name"]) == ("12[1]", "arr")


def test_long_lines_show_usage_only_when_the_view_has_it():
    assert long_lines(_view()) == []
    lines = long_lines(_view(cpu_time=2.5, max_mem=3 << 20))
    assert lines == ["  The CPU time used is 2.5 seconds.", " MEMORY USAGE:", " MAX MEM: 3 Mbytes;"]


# --- real clusters


def _submitted(res):
    assert res.returncode == 0, res
    return int(res.stdout.split("<")[1].split(">")[0])


def _bsub(c, tmp_path, *words):
    return _submitted(_run(c, tmp_path, ["bsub", *words]))


def _records(c, tmp_path, *words):
    res = _run(c, tmp_path, ["bjobs", *words])
    assert res.returncode == 0, res
    return res


def test_a_monitoring_script_reads_noheader_o_and_json(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    done = _bsub(c, tmp_path, "-q", "serial", "-P", "p1", "true")
    failed = _bsub(c, tmp_path, "-q", "serial", "sh -c 'exit 3'")
    c.wait([done, failed])
    running = _bsub(c, tmp_path, "-J", "long", "sleep 300")
    c.wait_started([running])
    pending = _bsub(c, tmp_path, "-J", "waiting", "true")
    killed = _bsub(c, tmp_path, "-J", "gone", "true")
    assert _run(c, tmp_path, ["bkill", str(killed)]).returncode == 0
    c.wait([killed])

    res = _records(c, tmp_path, "-a", "-noheader", "-o", "jobid stat queue exit_code delimiter=','")
    rows = {int(line.split(",")[0]): line.split(",")[1:] for line in res.stdout.splitlines()}
    assert rows == {
        done: ["DONE", "serial", "0"],
        failed: ["EXIT", "serial", "3"],
        running: ["RUN", "serial", "-"],
        pending: ["PEND", "serial", "-"],
        killed: ["EXIT", "serial", "-"],
    }, res.stdout
    # `grep EXIT` finds the failed and the killed job; lavalite's own names keep the reason
    assert sum("EXIT" in line for line in res.stdout.splitlines()) == 2
    native = c.cli("jobs", "-a").stdout
    assert "FAILED(exit)" in native and "KILLED" in native and "EXIT" not in native
    long = _records(c, tmp_path, "-l", str(failed)).stdout
    assert "Status <EXIT>" in long and "Exited with exit code 3." in long, long
    assert "Status <FAILED(exit)>" in c.cli("jobs", "-l", str(failed)).stdout

    res = _records(c, tmp_path, "-a", "-json", "-o", "jobid stat job_name proj_name slots")
    doc = json.loads(res.stdout)
    assert doc["COMMAND"] == "bjobs" and doc["JOBS"] == len(doc["RECORDS"]) == 5
    by_id = {int(r["JOBID"]): r for r in doc["RECORDS"]}
    assert by_id[done] == {
        "JOBID": str(done),
        "STAT": "DONE",
        "JOB_NAME": "true",
        "PROJ_NAME": "p1",
        "SLOTS": "1",
    }
    assert by_id[running]["JOB_NAME"] == "long"

    # the header names LSF's columns; a width cuts and pads
    res = _records(c, tmp_path, "-o", "jobid:10 stat:-6 job_name", str(running))
    assert res.stdout.splitlines() == [
        "JOBID        STAT JOB_NAME",
        f"{running:<10}    RUN long",
    ]
    c.client.kill([running, pending])


def test_filters_select_as_lsf(make_cluster, tmp_path):
    c = make_cluster(slots=1, queues={"serial": {}, "night": {}})
    finished = _bsub(c, tmp_path, "-J", "first", "-P", "alpha", "-G", "root", "true")
    c.wait([finished])
    running = _bsub(c, tmp_path, "-J", "run_me", "-P", "beta", "sleep 300")
    c.wait_started([running])
    pending = _bsub(c, tmp_path, "-J", "pend_me", "-q", "night", "true")

    def ids(*words):
        res = _run(c, tmp_path, ["bjobs", "-noheader", "-o", "jobid", *words])
        assert res.returncode == 0, res
        return sorted(int(w) for w in res.stdout.split())

    assert ids() == [running, pending]
    assert ids("-a") == [finished, running, pending]
    assert ids("-p") == [pending]
    assert ids("-r") == [running]
    assert ids("-d") == [finished]
    assert ids("-s") == []
    assert ids("-a", "-J", "*_me") == [running, pending]
    assert ids("-a", "-J", "run*") == [running]
    assert ids("-a", "-P", "alpha") == [finished]
    assert ids("-a", "-G", "root") == [finished]
    assert ids("-a", "-m", "testhost") == [finished, running]
    assert ids("-q", "night") == [pending]
    assert ids("-u", "all") == [running, pending]
    lines = _run(c, tmp_path, ["bjobs", "-p"]).stdout.splitlines()
    assert [line.split()[:3] for line in lines[:2]] == [
        ["JOBID", "USER", "STAT"],
        [str(pending), "root", "PEND"],
    ]
    assert len(lines) == 3 and lines[2].startswith(" ") and lines[2].endswith(";"), lines
    for words in (["-s"], ["-s", "-o", "jobid"], ["-s", "-l"]):
        res = _run(c, tmp_path, ["bjobs", *words])
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "No suspended job found\n")
    res = _run(c, tmp_path, ["bjobs", "-sum"])
    assert res.stdout.splitlines()[1].split() == ["1", "0", "0", "0", "1", "0", "0"], res.stdout
    c.client.kill([running, pending])


def test_array_elements_and_ranges_as_lsf_shows_them(make_cluster, tmp_path):
    c = make_cluster(slots=1)
    array_id = _bsub(c, tmp_path, "-J", "arr[1-3]", "sleep 300")
    c.wait_started([element_id(array_id, 1)])
    res = _records(c, tmp_path, "-noheader", "-o", "jobid job_name stat", f"{array_id}[1-2]")
    assert res.stdout.splitlines() == [
        f"{array_id} arr[1] RUN",
        f"{array_id} arr[2] PEND",
    ]
    default = _records(c, tmp_path, str(array_id)).stdout.splitlines()
    assert default[1].split()[0] == str(array_id) and "arr[1]" in default[1], default
    assert _records(c, tmp_path, "-J", "arr*", "-noheader", "-o", "job_name").stdout.split() == [
        "arr[1]",
        "arr[2]",
        "arr[3]",
    ]
    c.client.kill([array_id])


def test_the_site_option_shows_elements_as_id_and_index(make_cluster, tmp_path):
    c = make_cluster(slots=1, conf={"cluster": {"bjobs_element_ids": "yes"}})
    array_id = _bsub(c, tmp_path, "-J", "arr[1-2]", "true")
    res = _records(c, tmp_path, "-noheader", "-o", "jobid job_name", str(array_id))
    assert res.stdout.splitlines() == [f"{array_id}[1] arr", f"{array_id}[2] arr"], res.stdout
    c.client.kill([array_id])


@pytest.mark.parametrize("name", sorted(n for n in ALIASES if n != "llctrl"))
def test_v_prints_the_version_for_every_lsf_name(cluster, tmp_path, name):
    res = _run(cluster, tmp_path, [name, "-V"])
    assert (res.returncode, res.stdout) == (0, ""), res
    assert res.stderr.startswith("LavaLite ") and "LSF 10.1" in res.stderr
    assert cluster.client.jobs(all=True) == []


def test_usage_and_errors_name_the_command_as_typed(cluster, tmp_path):
    res = _run(cluster, tmp_path, ["bjobs", "-o", "jobid bogus"])
    assert res.returncode == 2 and res.stderr.startswith("usage: bjobs"), res
    assert "bjobs: error: argument -o: -o: 'bogus' is not a bjobs field" in res.stderr
    res = _run(cluster, tmp_path, ["bsub", "-n", "x", "true"])
    assert res.returncode == 2 and res.stderr.startswith("usage: bsub"), res
    assert "lavalite" not in res.stderr
    assert cluster.client.jobs(all=True) == []


def test_bpeek_header_and_a_finished_job_s_output_path(cluster, tmp_path):
    running = _bsub(cluster, tmp_path, "echo hello; sleep 300")
    cluster.wait_started([running])

    def peeked():
        res = _run(cluster, tmp_path, ["bpeek", str(running)])
        return res if "hello" in res.stdout else None

    res = wait_until(peeked, timeout=30)
    assert res.stdout == "<< output from stdout >>\nhello\n", res
    cluster.client.kill([running])
    out = tmp_path / "out"
    done = _bsub(cluster, tmp_path, "-o", f"{out}.%J", "true")
    cluster.wait([done])
    res = _run(cluster, tmp_path, ["bpeek", str(done)])
    assert res.returncode == 1 and f"{out}.{done}" in res.stderr, res
