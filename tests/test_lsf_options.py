"""The commands under their LSF names: every LSF 10.1 option is implemented or refused by name,
no word is misread as an option (glued values, abbreviations), a closed pipe ends a command
quietly, and users see job ids as ID and ID[INDEX], never the number on the wire."""

import json
import os
import subprocess
import sys

from conftest import ROOT

from roles.cli import ALIASES, main, quick_parser
from roles.cli.lsf_options import OPTIONS

# Copied from IBM Spectrum LSF 10.1's command reference (the "Options" list of each command's
# page, and bsub's "bsub options" list), not generated from roles.cli.lsf_options: a table
# that forgets an option, or mistakes a flag for an option taking a value, fails here.
# (flags, options taking a value)
LSF_DOC = {
    "bsub": (
        "-ar -B -datachk -H -hl -I -Ip -IS -ISp -ISs -Is -IX -K -N -Ne -r -rn -ti -tty -ul -XF "
        "-x -Zs -h -help -V",
        "-a -alloc_flags -app -b -C -c -clusters -cn_cu -cn_mem -core_isolation -csm -cwd -D "
        "-data -datagrp -E -Ep -e -env -eo -eptl -ext -F -f -freq -G -g -gpu -hostfile -i -io -is "
        "-J -Jd -jobaff -jsdl -jsdl_strict -jsm -json -k -L -Lp -ln_mem -ln_slots -M -m -mig "
        "-n -network -nnodes -notify -o -oo -outdir -P -p -pack -ptl -Q -q -R -rcacct -rnc -S "
        "-s -sla -smt -sp -stage -step_cgroup -T -t -U -u -v -W -We -w -wa -wt -yaml",
    ),
    "bjobs": (
        "-A -a -aff -aps -cname -d -data -env -fwd -gpu -hms -hostfile -json -l -noheader -p "
        "-p0 -p1 -p2 -p3 -pei -pi -plan -prio -psum -r -s -script -ss -sum -UF -W -WF -WL -WP "
        "-w -X -x -h -help -V",
        "-app -G -g -J -Jd -Lp -m -N -o -P -q -rusage -sla -U -u",
    ),
    "bkill": ("-l -b -r -d -h -V", "-stat -app -g -sla -J -m -q -s -u -C"),
    "bresume": ("-h -V", "-app -C -g -J -m -q -sla -u"),
    "btop": ("-u -h -V", ""),
    "bbot": ("-u -h -V", ""),
    "brequeue": ("-a -d -e -H -p -r -h -V", "-J -u"),
    "bswitch": ("-h -V", "-a -J -m -q -u"),
    "bstop": ("-a -h -V", "-app -C -g -J -m -q -sla -u"),
    "bmod": (
        "-ar -arn -B -Bn -N -Ne -Nn -r -rn -ul -uln -x -xn -hl -hln -appn -apsn -bn -Cn -cn "
        "-clustern -cwdn -Dn -datan -En -Epn -en -eptln -Fn -fn -freqn -Gn -gn -gpun -hostfilen "
        "-in -isn -Jn -Jdn -kn -Ln -Lpn -Mn -mn -mign -nn -networkn -on -oon -outdirn -Pn -pn "
        "-qn -Rn -rncn -Sn -sn -slan -spn -Tn -tn -Un -un -vn -Wn -Wep -Wen -wn -wan -wtn -Zsn "
        "-h -V",
        "-a -app -aps -b -C -c -clusters -cwd -D -data -E -Ep -e -eo -eptl -ext -F -f -freq -G "
        "-g -gpu -hostfile -i -is -J -Jd -k -L -Lp -M -m -mig -n -network -o -oo -outdir -P -p "
        "-Q -q -R -rnc -S -s -sla -sp -T -t -U -u -v -W -We -w -wa -wt -Z -Zs",
    ),
    "bqueues": ("-w -l -r -lr -json -alloc -noheader -h -V", "-o -m -u"),
    "bhosts": (
        "-a -aff -alloc -attr -cname -e -gpu -json -l -loc -noheader -rc -rconly -s -w -x -X -h -V",
        "-o -R",
    ),
    "bpeek": ("-f -h -V", "-q -m -J"),
    "bwait": ("-h -V", "-w -t -r"),
    "blaunch": ("-n -fixenv -no-shell -use-login-shell -h -V", "-u -z -use-env"),
    "bhist": (
        "-l -aff -gpu -hostfile -a -b -d -data -e -p -r -s -w -UF -cname -t -h -V",
        "-app -C -D -f -n -S -J -Jd -Lp -m -N -P -q -u -G -g -T",
    ),
    "bacct": (
        "-b -l -aff -gpu -d -E -e -UF -w -x -cname -h -V",
        "-app -C -D -f -Lp -m -M -N -P -q -rcacct -rcalloc -sla -S -u -U",
    ),
    "busers": ("-w -alloc -json -h -V", "-o"),
    "blimits": ("-a -c -w -fwd -gl -h -V", "-o -n -P -q -u -Lp -m -C -A"),
    "lsload": ("-a -gpu -gpuload -l -w -json -N -E -s -loc -h -V", "-o -I -n -R"),
    "lshosts": ("-a -cname -gpu -w -l -json -s -loc -T -h -V", "-o -R"),
}
LSF_NAMES = sorted(LSF_DOC)


def _unsupported(name):
    return [
        (opt, takes_value)
        for opt, (takes_value, implemented) in OPTIONS[name].items()
        if not implemented
    ]


def test_the_table_holds_each_command_s_lsf_options_as_documented():
    # llctrl and bquota are LavaLite's own; badmin's words are subcommands, each with its own
    # options
    own = ("llctrl", "badmin", "bquota")
    assert sorted(OPTIONS) == LSF_NAMES == sorted(n for n in ALIASES if n not in own)
    for name, (flags, values) in LSF_DOC.items():
        documented = {**dict.fromkeys(flags.split(), False), **dict.fromkeys(values.split(), True)}
        table = {opt: takes_value for opt, (takes_value, _) in OPTIONS[name].items()}
        assert table == documented, (name, set(table) ^ set(documented))


def test_what_the_table_calls_implemented_the_command_parses_the_same_way():
    """An option marked implemented is one of the command's own, taking a value or not as LSF."""
    for name in LSF_NAMES:
        options = quick_parser(ALIASES[name]).options
        for opt, (takes_value, implemented) in OPTIONS[name].items():
            if implemented and opt not in ("-h", "-V"):  # -V: the version, before any parser
                assert opt in options, (name, opt)
                assert options[opt][1] is not takes_value, (name, opt)
            elif not implemented:
                assert opt not in options, (name, opt)


def _line(name, opt, takes_value):
    """A command line that would run if `opt` were accepted: its value, then a job id or a
    command."""
    tail = {"bsub": ["true"], "bwait": ["-w", "done(1)"], "bqueues": [], "bhosts": []}
    return [opt] + (["x"] if takes_value else []) + tail.get(name, ["1"])


def test_every_unsupported_lsf_option_is_refused_by_name_and_submits_nothing(
    cluster, monkeypatch, capsys
):
    monkeypatch.setenv("LAVALITE_CONF", cluster.conf_path)
    walked = 0
    for name in LSF_NAMES:
        for opt, takes_value in _unsupported(name):
            assert main(_line(name, opt, takes_value), prog=name) == 2, (name, opt)
            out, err = capsys.readouterr()
            assert err == f"{name}: {opt} is an LSF option that LavaLite does not support\n"
            assert out == ""
            walked += 1
    assert walked > 100
    assert cluster.client.jobs(all=True) == []


def _lsf_command(tmp_path, name):
    """How a user runs `name`: a link named so to the program (argv[0] picks the command)."""
    link = tmp_path / name
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "lavalite.py"))
    return [sys.executable, str(link)]


def test_bsub_lp_is_refused_and_nothing_runs(cluster, tmp_path):
    res = _run(cluster, tmp_path, ["bsub", "-Lp", "proj", "true"])
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "bsub: -Lp is an LSF option that LavaLite does not support\n"
    assert cluster.client.jobs(all=True) == []


MISREAD = [
    ["bsub", "--ret", "2", "true"],
    ["bsub", "--each", "f", "true"],
    ["bjobs", "--js"],
    ["lavalite", "submit", "--ret", "2", "true"],
    ["lavalite", "jobs", "--js"],
    ["bsub", "-qserial", "true"],
    ["bsub", "-o=x", "true"],
    ["bjobs", "-al"],
    ["bkill", "-1"],
    ["lavalite", "submit", "-ox", "out.txt", "true"],
    ["lavalite", "submit", "-qserial", "true"],
]


def _run(cluster, tmp_path, argv, **kw):
    """argv[0] is the command's name: lavalite, or an LSF name."""
    program = cluster.program if argv[0] == "lavalite" else _lsf_command(tmp_path, argv[0])
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        program + argv[1:],
        env=cluster.env,
        cwd=cluster.state,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        **kw,
    )


def test_abbreviations_and_glued_values_are_refused(cluster, tmp_path):
    for argv in MISREAD:
        res = _run(cluster, tmp_path, argv)
        assert res.returncode == 2, res
        bad = next(a for a in argv[1:] if a.startswith("-"))
        assert bad in res.stderr and "Traceback" not in res.stderr, res
    assert cluster.client.jobs(all=True) == []


def test_the_first_word_that_is_no_option_starts_the_command(cluster, tmp_path):
    """bsub's words from there are LSF's command line: joined, and split again to be exec'd
    directly when they hold no shell syntax."""
    res = _run(cluster, tmp_path, ["bsub", "-q", "serial", "sh", "-c", "exit 0", "-oo", "x"])
    assert res.returncode == 0, res
    job_id = int(res.stdout.split("<")[1].split(">")[0])
    assert cluster.wait([job_id])[job_id]["cmd"] == ["sh", "-c", "exit", "0", "-oo", "x"]


def test_a_closed_pipe_ends_a_command_quietly(cluster, tmp_path):
    """No traceback, no "Exception ignored" at exit: the status a shell shows for coreutils
    killed by SIGPIPE."""
    cluster.wait([cluster.submit(["true"])])
    for argv in (
        ["bjobs", "-a"],
        ["bjobs", "-a", "-l"],
        ["bjobs", "-a", "--json"],
        ["bqueues"],
        ["bhosts"],
        ["lavalite", "jobs", "-a"],
    ):
        read_end, write_end = os.pipe()
        os.close(read_end)  # no reader at all: the first write fails (EPIPE)
        try:
            res = _run(cluster, tmp_path, argv, stdout=write_end)
        finally:
            os.close(write_end)
        assert (res.returncode, res.stderr) == (141, ""), (argv, res)


def test_array_elements_show_as_id_and_index(make_cluster):
    c = make_cluster(slots=1)
    res = c.cli("submit", "-J", "ids[1-3]%1", "sh", "-c", 'test "$LSB_JOBINDEX" = 2 || sleep 60')
    array_id = int(res.stdout.split("<")[1].split(">")[0])
    wire = (array_id << 32) | 1
    c.wait_started([wire])
    long = c.cli("jobs", "-l", f"{array_id}[1]").stdout
    assert f"Job <{array_id}[1]>" in long and str(wire) not in long
    for index in (1, 3):  # a running element; an index not handed out yet
        (view,) = [
            json.loads(line)
            for line in c.cli("jobs", "--json", f"{array_id}[{index}]").stdout.splitlines()
        ]
        assert (view["id"], view["index"], view["label"]) == (
            array_id,
            index,
            f"{array_id}[{index}]",
        )
    killed = c.cli("kill", f"{array_id}[1]").stdout
    assert killed == f"Job <{array_id}[1]> is being terminated\n"
    c.wait([wire])
    never = c.cli("wait", "-w", f"done({array_id}[1])", check=False)
    assert never.returncode == 1 and f"done({array_id}[1])" in never.stderr, never
    assert str(wire) not in never.stdout + never.stderr
    c.client.kill([array_id])
