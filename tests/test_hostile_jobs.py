"""One user's bad job never takes capacity or the cluster down: what mbatchd refuses at submit
(by field, mbatchd answering on), what a shepherd does with a spec that gets past it (that job
fails, the shepherd serves on), a bkill that frees the FIFO, a large legal environment."""
import time


def _host_slots(cluster, deadline=60):
    """The slots of the cluster's one host, once its sbatchd has registered."""
    end = time.time() + deadline
    while True:
        hosts = cluster.client.call("hosts")["hosts"]
        if hosts and hosts[0]["slots"]:
            return hosts[0]["slots"]
        assert time.time() < end, cluster.logs()
        time.sleep(0.1)


def test_bkill_of_a_pending_job_lets_the_job_behind_it_start(make_cluster):
    """The wide job holds its user's FIFO; once it is killed the narrow one behind it starts
    with the free slot, without waiting for some other event to wake the scheduler."""
    c = make_cluster(slots=2)
    assert _host_slots(c) == 2
    running = c.submit(["sleep", "300"])
    c.wait_started([running])
    wide, narrow = c.submit(["true"], slots=2), c.submit(["true"])
    # the submit's reply leaves after its turn has scheduled: both wait now
    assert [c.jobs([j])[j]["state"] for j in (wide, narrow)] == ["PEND", "PEND"]
    c.client.kill([wide])
    assert c.wait([narrow], timeout=60)[narrow]["stat"] == "DONE"
    c.client.kill([running])
