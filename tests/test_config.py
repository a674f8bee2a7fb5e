"""lavalite.config: real files in tmp_path; every error names FILE:LINE: [section] key."""

import os
import pathlib
import re

import pytest

from lavalite import config
from lavalite.config import ConfigError

ETC = pathlib.Path(__file__).resolve().parent.parent / "etc"


def write(d, name, text):
    p = d / name
    p.write_text(text)
    return str(p)


def errors_of(path):
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def test_empty_file_gives_defaults(tmp_path):
    conf = config.load(write(tmp_path, "lavalite.conf", ""))
    assert conf.path == str(tmp_path / "lavalite.conf") and conf.dir == str(tmp_path)
    assert conf.cluster.name == "lavalite" and conf.cluster.master_candidates == []
    assert conf.cluster.admins == ["root"] and conf.cluster.allow_root_jobs is False
    assert conf.cluster.key_file == "/var/lib/lavalite/cluster.key"
    assert conf.mbatchd.port == 6881 and conf.mbatchd.clean_period == 3600.0
    assert conf.mbatchd.database == "/var/lib/lavalite/lavalite.db"
    assert conf.lim.port == 6879 and conf.lim.poll_interval == 4.0
    assert conf.lim.heartbeat_misses == 3
    assert conf.lim.labels == {} and conf.hosts == {}
    assert conf.sbatchd.slots == (os.cpu_count() or 1) and conf.sbatchd.metrics_port == 0
    assert conf.sbatchd.work_dir == "/run/lavalite/jobs" and conf.sbatchd.tmp_dir == "/tmp"
    assert conf.paths.queues_conf == str(tmp_path / "queues.conf")
    assert conf.logging.level == "info" and conf.logging.target == "stderr"
    assert list(conf.queues) == ["serial"]
    q = conf.queues["serial"]
    assert (q.priority, q.max_attempts, q.retry_backoff_max, q.open, q.rerunnable) == (
        30,
        1,
        300.0,
        True,
        False,
    )


def test_etc_samples_equal_render_and_load(tmp_path):
    for name in config.FILES:
        assert (ETC / name).read_text() == config.render(name), (
            f"etc/{name} is stale: run python -m lavalite.config --write-samples etc"
        )
    conf = config.load(str(ETC / "lavalite.conf"))
    assert conf.paths.lim_conf == str(ETC / "lim.conf")
    # the sample spells out every default: loading it equals loading an empty file
    empty = config.load(write(tmp_path, "lavalite.conf", ""))
    for sec in ("cluster", "mbatchd", "lim", "sbatchd", "logging"):
        assert vars(getattr(conf, sec)) == vars(getattr(empty, sec))
    assert conf.queues == empty.queues


def test_render_documents_every_key_and_sets_only_given_ones():
    text = config.render("sbatchd.conf", {"sbatchd": {"slots": 3}})
    assert "\nslots = 3\n" in text and "\n# kill_grace = 10\n" in text
    for f, _sec, key, _kind, default, doc in config.KEYS:
        text = config.render(f)
        if key:
            assert f"# {doc}\n# Type: " in text and f"\n# {key} = {default}".rstrip() in text


def test_values_and_types(tmp_path):
    write(
        tmp_path,
        "lavalite.conf",
        """
# comment
; other comment
[cluster]
name = prod
master_candidates = m1, m2 m3
allow_root_jobs = Yes
[hosts]
node1 = 10.0.0.1
[paths]
state_dir = state
spool_dir = {state_dir}/spool
[mbatchd]
clean_period = 10m
default_queue = short
""",
    )
    write(tmp_path, "lim.conf", "[lim]\npoll_interval = 0.5\n[labels]\nnode1 = gpu, bigmem\n")
    write(tmp_path, "sbatchd.conf", "[sbatchd]\nslots = 4\nkill_grace = 1m\nwork_dir = ~/jobs\n")
    write(
        tmp_path,
        "queues.conf",
        "[normal]\n[short]\npriority = 50\nmax_walltime = 1d\n"
        "default_walltime = 2h\n[queue low]\npriority = 1\n",
    )
    conf = config.load(str(tmp_path / "lavalite.conf"))
    assert conf.cluster.name == "prod" and conf.cluster.master_candidates == ["m1", "m2", "m3"]
    assert conf.cluster.allow_root_jobs is True and conf.hosts == {"node1": "10.0.0.1"}
    assert conf.paths.state_dir == str(tmp_path / "state")
    assert conf.paths.spool_dir == str(tmp_path / "state" / "spool")
    assert conf.cluster.key_file == str(tmp_path / "state" / "cluster.key")
    assert conf.mbatchd.clean_period == 600.0 and conf.lim.poll_interval == 0.5
    assert conf.lim.labels == {"node1": ["gpu", "bigmem"]}
    assert conf.sbatchd.slots == 4 and conf.sbatchd.kill_grace == 60.0
    assert conf.sbatchd.work_dir == os.path.expanduser("~/jobs")
    assert list(conf.queues) == ["normal", "short", "low"]
    assert [q.name for q in conf.queue_order()] == ["short", "normal", "low"]
    short = conf.queues["short"]
    assert short.max_walltime == 86400.0 and short.default_walltime == 7200.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text, expected):
    assert config._convert("dur>=0", text) == expected


@pytest.mark.parametrize("text", ["", "m", "10x", "-1", "1e999", "nan", "5 min"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        config._convert("dur>=0", text)


def test_every_type_error_names_file_line_section_key(tmp_path):
    main = write(
        tmp_path,
        "lavalite.conf",
        """[cluster]
allow_root_jobs = maybe
[mbatchd]
port = 70000
clean_period = soon
metrics_port = x
[logging]
level = loud
""",
    )
    lim = write(tmp_path, "lim.conf", "[lim]\npoll_interval = 0\nheartbeat_misses = 0\n")
    sb = write(tmp_path, "sbatchd.conf", "[sbatchd]\nslots = 0\ncgroups = maybe\n")
    qs = write(
        tmp_path,
        "queues.conf",
        "[serial]\nmax_attempts = 0\nopen = perhaps\n"
        "default_walltime = 2h\nmax_walltime = 1h\n"
        "max_memory = lots\n",
    )
    assert errors_of(main) == [
        f"{main}:2: [cluster] allow_root_jobs: expected yes/no/true/false/on/off/1/0, got 'maybe'",
        f"{main}:4: [mbatchd] port: '70000' out of range: expected TCP port 1-65535",
        f"{main}:5: [mbatchd] clean_period: expected a duration such as 90, 1.5, 90s, 10m, 2h, 1d, "
        f"got 'soon'",
        f"{main}:6: [mbatchd] metrics_port: expected an integer, got 'x'",
        f"{main}:8: [logging] level: expected one of debug|info|warning|error, got 'loud'",
        f"{lim}:2: [lim] poll_interval: '0' out of range: "
        f"expected duration > 0 (seconds, or 90s/10m/2h/1d)",
        f"{lim}:3: [lim] heartbeat_misses: '0' out of range: expected integer >= 1",
        f"{sb}:2: [sbatchd] slots: '0' out of range: "
        f"expected integer >= 1, or auto = number of CPUs",
        f"{sb}:3: [sbatchd] cgroups: expected one of auto|on|off|v1|v2, got 'maybe'",
        f"{qs}:2: [serial] max_attempts: '0' out of range: expected integer >= 1",
        f"{qs}:6: [serial] max_memory: expected a size such as 512 (MB), 512M, 2G, got 'lots'",
        f"{qs}:3: [serial] open: expected yes/no/true/false/on/off/1/0, got 'perhaps'",
        f"{qs}:4: [serial] default_walltime: default_walltime (7200s) exceeds max_walltime (3600s)",
    ]


def test_unknown_key_hint_duplicate_malformed_unknown_section(tmp_path):
    main = write(
        tmp_path,
        "lavalite.conf",
        """stray = 1
[mbatchd]
prot = 1
port = 2
port = 3
this line is junk
[lim]
poll_interval = 3
[mbatchd_]
x = 1
[labels]
[cluster]
Name = x
zzzz = 1
[cluster]
""",
    )
    assert errors_of(main) == [
        f"{main}:1: key 'stray' is outside any [section]",
        f"{main}:5: [mbatchd] port: duplicate key (first at line 4)",
        f"{main}:6: expected [section] or key = value, got 'this line is junk'",
        f"{main}:15: duplicate section [cluster] (first at line 12)",
        f"{main}:3: [mbatchd] prot: unknown key; did you mean port?",
        f"{main}:8: [lim] poll_interval: unknown key; it belongs in lim.conf",
        f"{main}:9: unknown section [mbatchd_]; did you mean mbatchd?",
        f"{main}:11: unknown section [labels]; it belongs in lim.conf",
        f"{main}:13: [cluster] Name: unknown key; did you mean name?",
        f"{main}:14: [cluster] zzzz: unknown key",
    ]


def test_queue_errors(tmp_path):
    main = write(tmp_path, "lavalite.conf", "")
    qs = write(tmp_path, "queues.conf", "[a]\npriorty = 3\n[a]\n[bad/name]\n[queue a]\n")
    assert errors_of(main) == [
        f"{qs}:3: duplicate queue [a] (first at line 1)",
        f"{qs}:5: duplicate queue [a] (first at line 1)",
        f"{qs}:2: [a] priorty: unknown key; did you mean priority?",
        f"{qs}:4: bad queue name [bad/name]: use letters, digits, _ - .",
        f"{qs}: no queue [serial], the default_queue; define it or set default_queue in {main}",
    ]


def test_default_queue_must_exist(tmp_path):
    main = write(tmp_path, "lavalite.conf", "[mbatchd]\n\ndefault_queue = normal\n")
    assert errors_of(main) == [
        f"{main}:3: [mbatchd] default_queue: queue 'normal' is not defined "
        f"in {tmp_path / 'queues.conf'}"
    ]
    write(tmp_path, "queues.conf", "[normal]\n")
    assert list(config.load(main).queues) == ["normal"]


def test_empty_queues_conf_defines_no_queue(tmp_path):
    main = write(tmp_path, "lavalite.conf", "")
    write(tmp_path, "queues.conf", "# nothing\n")
    assert len(errors_of(main)) == 1


def test_hosts_and_labels_entries(tmp_path):
    main = write(tmp_path, "lavalite.conf", "[hosts]\nnode1 =\nnode 2 = x\n")
    lim = write(tmp_path, "lim.conf", "[labels]\nn1 =\n")
    assert errors_of(main) == [
        f"{main}:2: [hosts] node1: empty value",
        f"{main}:3: [hosts] node 2: host name with spaces",
        f"{lim}:2: [labels] n1: empty value",
    ]


def test_explicit_companion_paths(tmp_path):
    main = write(
        tmp_path, "lavalite.conf", "[paths]\nlim_conf = conf/lim.conf\nqueues_conf = queues.conf\n"
    )
    # the default place may be missing, an explicit other place may not
    missing = tmp_path / "conf" / "lim.conf"
    assert errors_of(main) == [f"{main}:2: [paths] lim_conf: {missing} does not exist"]
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "lim.conf", "[lim]\npoll_jitter = 0\n")
    assert config.load(main).lim.poll_jitter == 0.0


def test_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.conf")
    assert errors_of(missing) == [f"{missing}: cannot read: No such file or directory"]
    main = write(tmp_path, "lavalite.conf", "")
    (tmp_path / "lim.conf").mkdir()
    (tmp_path / "sbatchd.conf").write_bytes(b"[sbatchd]\ndefault_output = \xff\n")
    errs = errors_of(main)
    assert errs[0] == f"{tmp_path / 'lim.conf'}: cannot read: Is a directory"
    assert errs[1].startswith(f"{tmp_path / 'sbatchd.conf'}: cannot read: ")


def test_find_conf_order(tmp_path, monkeypatch):
    etc = write(tmp_path, "etc.conf", "")
    home = str(tmp_path / "home.conf")
    monkeypatch.setattr(config, "SEARCH", (str(tmp_path / "none.conf"), etc, home))
    monkeypatch.delenv("LAVALITE_CONF", raising=False)
    assert config.find_conf() == etc
    assert config.find_conf("/explicit/missing.conf") == "/explicit/missing.conf"
    monkeypatch.setenv("LAVALITE_CONF", "/env/missing.conf")
    assert config.find_conf() == "/env/missing.conf"
    assert config.find_conf("/explicit.conf") == "/explicit.conf"
    monkeypatch.delenv("LAVALITE_CONF")
    monkeypatch.setattr(config, "SEARCH", (home,))
    with pytest.raises(ConfigError) as info:
        config.find_conf()
    assert len(info.value.errors) == 1
    assert home in str(info.value) and "LAVALITE_CONF" in str(info.value)


def test_defaults_and_write_state_conf_round_trip(tmp_path):
    sd = tmp_path / "state"
    d = config.defaults(str(sd))
    assert d.paths.state_dir == str(sd) and d.mbatchd.database == str(sd / "lavalite.db")
    assert d.paths.log_dir == str(sd / "log")
    # the attempt records go to RAM (/dev/shm) where there is one, one directory per state dir
    assert d.sbatchd.work_dir == os.path.join(d.paths.run_dir, "jobs")
    assert d.paths.run_dir.startswith(f"/dev/shm/lavalite-{os.getuid()}/state-")
    assert d.paths.run_dir != config.defaults(str(tmp_path / "other" / "state")).paths.run_dir
    path = config.write_state_conf(str(sd), {})
    assert path == str(sd / "lavalite.conf")
    assert sorted(os.listdir(sd)) == sorted(config.FILES)
    assert config.load(path) == d

    other = tmp_path / "other"
    path = config.write_state_conf(
        str(other),
        {
            "lavalite.conf": {
                "mbatchd": {"port": 7000, "default_queue": "short"},
                "cluster": {"master_candidates": ["a", "b"], "allow_root_jobs": True},
                "hosts": {"a": "127.0.0.1"},
            },
            "sbatchd.conf": {"sbatchd": {"kill_grace": 3, "slots": 2}},
            "lim.conf": {"labels": {"a": "gpu"}, "lim": {"poll_interval": 0.25}},
            "queues.conf": {"short": {"priority": 40, "max_walltime": 600.0}, "serial": {}},
        },
    )
    conf = config.load(path)
    assert conf.mbatchd.port == 7000 and conf.cluster.master_candidates == ["a", "b"]
    assert conf.cluster.allow_root_jobs is True and conf.hosts == {"a": "127.0.0.1"}
    assert conf.sbatchd.kill_grace == 3.0 and conf.sbatchd.slots == 2
    assert conf.lim.labels == {"a": ["gpu"]} and conf.lim.poll_interval == 0.25
    assert list(conf.queues) == ["short", "serial"] and conf.queues["short"].max_walltime == 600.0
    assert conf.paths.state_dir == str(other)

    # existing files are kept
    (other / "lavalite.conf").write_text("[mbatchd]\nport = 7001\ndefault_queue = short\n")
    config.write_state_conf(str(other), {})
    assert config.load(path).mbatchd.port == 7001


def test_render_rejects_unknown_keys():
    with pytest.raises(ValueError):
        config.render("lavalite.conf", {"mbatchd": {"prot": 1}})
    with pytest.raises(ValueError):
        config.render("lim.conf", {"nosuch": {}})


def test_queue_conf_is_plain_data(tmp_path):
    import json

    conf = config.load(write(tmp_path, "lavalite.conf", ""))
    assert json.loads(json.dumps(vars(conf.queues["serial"])))["name"] == "serial"


def test_queue_default_above_its_maximum_and_a_slice_leaving_the_hierarchy(tmp_path):
    write(
        tmp_path,
        "queues.conf",
        "[serial]\ndefault_memory = 2G\nmax_memory = 1G\ndefault_pids = 50\nmax_pids = 10\n",
    )
    write(tmp_path, "sbatchd.conf", "[sbatchd]\ncgroup_slice = ../escape\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, "lavalite.conf", ""))
    text = str(info.value)
    assert (
        f"queues.conf:2: [serial] default_memory: default_memory ({2 << 30} bytes) exceeds "
        f"max_memory ({1 << 30} bytes)" in text
    )
    assert "queues.conf:4: [serial] default_pids: default_pids (50) exceeds max_pids (10)" in text
    assert (
        "sbatchd.conf:2: [sbatchd] cgroup_slice: expected a relative path without '.' or "
        "'..' parts, got '../escape'" in text
    )


def test_cgroup_slice_derived_per_cluster_unless_given(tmp_path):
    """auto (the default): lavalite-<name>-<8 hex of state_dir>, so two clusters on one host,
    even of one name, never share a slice; an explicit slice is used as it is."""
    a, b = (config.defaults(str(tmp_path / d / "state")) for d in ("a", "b"))
    assert a.sbatchd.cgroup_slice != b.sbatchd.cgroup_slice
    assert re.fullmatch(r"lavalite-lavalite-[0-9a-f]{8}", a.sbatchd.cgroup_slice)
    assert config.cluster_slice("prod/x y", "/s").startswith("lavalite-prod_x_y-")
    path = config.write_state_conf(
        str(tmp_path / "c"),
        {
            "lavalite.conf": {"cluster": {"name": "hpc"}},
            "sbatchd.conf": {"sbatchd": {"cgroup_slice": "site/jobs"}},
        },
    )
    assert config.load(path).sbatchd.cgroup_slice == "site/jobs"
    path = config.write_state_conf(
        str(tmp_path / "d"), {"lavalite.conf": {"cluster": {"name": "hpc"}}}
    )
    assert config.load(path).sbatchd.cgroup_slice.startswith("lavalite-hpc-")
