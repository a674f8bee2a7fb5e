"""sbatchd: the worker. Runs jobs, enforces their limits, reports their ends."""


def main(argv: list[str]) -> int:
    if argv[:1] == ["--shepherd"]:  # the job shepherd sbatchd starts beside itself
        from roles.sbatchd.shepherd import main as shepherd

        return shepherd(argv[1:])
    if argv[:1] == ["--relay"]:  # an interactive job's command, as the job (bsub -I)
        from roles.sbatchd.relay_job import main as relay_job

        return relay_job(argv[1:])
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.sbatchd.server import Sbatchd

    return daemon.main(
        "sbatchd", argv, lambda conf, host, args: Sbatchd(conf, host), (KeyFileError, OSError)
    )
