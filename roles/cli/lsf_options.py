"""LSF 10.1's options of the commands LavaLite answers under their LSF names, from IBM's command
reference: each option, whether it takes a value, and whether LavaLite implements it.

Under an LSF name this table is the specification: before any parser reads the line, an option
LSF has and LavaLite does not is refused by name (exit 2), and a word that is no option at all
(a value glued to its option, flags run together, an abbreviation) is refused too, so that
`bsub -oo out.txt true` can never be read as `-o o out.txt true`. Implementing an option is one
line here (NO -> YES) plus its add_argument in the command's setup; tests/test_lsf_options.py
checks the two agree.

A dict literal, imported only when a word is none of the command's own options (to name the
LSF option it refuses): the command lines users type all day never load it.
"""
VALUE, FLAG = True, False       # takes a value (the next word) / takes none
YES, NO = True, False           # LavaLite implements it

OPTIONS: dict[str, dict[str, tuple[bool, bool]]] = {
    "bsub": {
        "-a": (VALUE, NO), "-alloc_flags": (VALUE, NO), "-app": (VALUE, NO), "-ar": (FLAG, NO),
        "-B": (FLAG, NO), "-b": (VALUE, NO), "-C": (VALUE, NO), "-c": (VALUE, NO),
        "-clusters": (VALUE, NO), "-cn_cu": (VALUE, NO), "-cn_mem": (VALUE, NO),
        "-core_isolation": (VALUE, NO), "-csm": (VALUE, NO), "-cwd": (VALUE, NO),
        "-D": (VALUE, NO), "-data": (VALUE, NO), "-datachk": (FLAG, NO),
        "-datagrp": (VALUE, NO), "-E": (VALUE, NO), "-Ep": (VALUE, NO),
        "-e": (VALUE, YES),
        "-env": (VALUE, NO), "-eo": (VALUE, NO), "-eptl": (VALUE, NO), "-ext": (VALUE, NO),
        "-F": (VALUE, NO), "-f": (VALUE, NO), "-freq": (VALUE, NO), "-G": (VALUE, NO),
        "-g": (VALUE, NO), "-gpu": (VALUE, NO), "-H": (FLAG, NO), "-hl": (FLAG, NO),
        "-hostfile": (VALUE, NO), "-I": (FLAG, NO), "-Ip": (FLAG, NO), "-IS": (FLAG, NO),
        "-ISp": (FLAG, NO), "-ISs": (FLAG, NO), "-Is": (FLAG, NO), "-IX": (FLAG, NO),
        "-i": (VALUE, NO), "-io": (VALUE, NO),
        "-J": (VALUE, YES),
        "-Jd": (VALUE, NO), "-jobaff": (VALUE, NO), "-jsdl": (VALUE, NO),
        "-jsdl_strict": (VALUE, NO), "-jsm": (VALUE, NO), "-json": (VALUE, NO),
        "-K": (FLAG, NO), "-k": (VALUE, NO), "-L": (VALUE, NO), "-Lp": (VALUE, NO),
        "-ln_mem": (VALUE, NO), "-ln_slots": (VALUE, NO),
        "-M": (VALUE, YES),
        "-m": (VALUE, NO), "-mig": (VALUE, NO), "-N": (FLAG, NO), "-Ne": (FLAG, NO),
        "-n": (VALUE, YES),
        "-network": (VALUE, NO), "-nnodes": (VALUE, NO), "-notify": (VALUE, NO),
        "-o": (VALUE, YES),
        "-oo": (VALUE, NO), "-outdir": (VALUE, NO), "-P": (VALUE, NO), "-p": (VALUE, NO),
        "-pack": (VALUE, NO), "-ptl": (VALUE, NO), "-Q": (VALUE, NO),
        "-q": (VALUE, YES),
        "-R": (VALUE, NO), "-r": (FLAG, NO), "-rcacct": (VALUE, NO), "-rn": (FLAG, NO),
        "-rnc": (VALUE, NO), "-S": (VALUE, NO), "-s": (VALUE, NO), "-sla": (VALUE, NO),
        "-smt": (VALUE, NO), "-sp": (VALUE, NO), "-stage": (VALUE, NO),
        "-step_cgroup": (VALUE, NO), "-T": (VALUE, NO), "-t": (VALUE, NO), "-ti": (FLAG, NO),
        "-tty": (FLAG, NO), "-U": (VALUE, NO), "-u": (VALUE, NO), "-ul": (FLAG, NO),
        "-v": (VALUE, NO),
        "-W": (VALUE, YES),
        "-We": (VALUE, NO), "-w": (VALUE, NO), "-wa": (VALUE, NO), "-wt": (VALUE, NO),
        "-XF": (FLAG, NO), "-x": (FLAG, NO), "-yaml": (VALUE, NO), "-Zs": (FLAG, NO),
        "-h": (FLAG, YES), "-help": (FLAG, NO), "-V": (FLAG, NO),
    },
    "bjobs": {
        "-A": (FLAG, YES),
        "-a": (FLAG, YES),
        "-aff": (FLAG, NO), "-app": (VALUE, NO), "-aps": (FLAG, NO), "-cname": (FLAG, NO),
        "-d": (FLAG, NO), "-data": (FLAG, NO), "-env": (FLAG, NO), "-fwd": (FLAG, NO),
        "-G": (VALUE, NO), "-g": (VALUE, NO), "-gpu": (FLAG, NO), "-hms": (FLAG, NO),
        "-hostfile": (FLAG, NO), "-J": (VALUE, NO), "-Jd": (VALUE, NO), "-json": (FLAG, NO),
        "-Lp": (VALUE, NO),
        "-l": (FLAG, YES),
        "-m": (VALUE, NO), "-N": (VALUE, NO), "-noheader": (FLAG, NO), "-o": (VALUE, NO),
        "-P": (VALUE, NO), "-p": (FLAG, NO), "-p0": (FLAG, NO), "-p1": (FLAG, NO),
        "-p2": (FLAG, NO), "-p3": (FLAG, NO), "-pei": (FLAG, NO), "-pi": (FLAG, NO),
        "-plan": (FLAG, NO), "-prio": (FLAG, NO), "-psum": (FLAG, NO),
        "-q": (VALUE, YES),
        "-r": (FLAG, NO), "-rusage": (VALUE, NO), "-s": (FLAG, NO), "-script": (FLAG, NO),
        "-sla": (VALUE, NO), "-ss": (FLAG, NO), "-sum": (FLAG, NO), "-U": (VALUE, NO),
        "-UF": (FLAG, NO),
        "-u": (VALUE, YES),
        "-W": (FLAG, NO), "-WF": (FLAG, NO), "-WL": (FLAG, NO), "-WP": (FLAG, NO),
        "-w": (FLAG, NO), "-X": (FLAG, NO), "-x": (FLAG, NO),
        "-h": (FLAG, YES), "-help": (FLAG, NO), "-V": (FLAG, NO),
    },
    "bkill": {
        "-app": (VALUE, NO), "-b": (FLAG, NO), "-C": (VALUE, NO), "-d": (FLAG, NO),
        "-g": (VALUE, NO), "-J": (VALUE, NO), "-l": (FLAG, NO), "-m": (VALUE, NO),
        "-q": (VALUE, NO), "-r": (FLAG, NO), "-s": (VALUE, NO), "-sla": (VALUE, NO),
        "-stat": (VALUE, NO), "-u": (VALUE, NO),
        "-h": (FLAG, YES), "-V": (FLAG, NO),
    },
    "bqueues": {
        "-alloc": (FLAG, NO), "-json": (FLAG, NO), "-l": (FLAG, NO), "-lr": (FLAG, NO),
        "-m": (VALUE, NO), "-noheader": (FLAG, NO), "-o": (VALUE, NO), "-r": (FLAG, NO),
        "-u": (VALUE, NO), "-w": (FLAG, NO),
        "-h": (FLAG, YES), "-V": (FLAG, NO),
    },
    "bhosts": {
        "-a": (FLAG, NO), "-aff": (FLAG, NO), "-alloc": (FLAG, NO), "-attr": (FLAG, NO),
        "-cname": (FLAG, NO), "-e": (FLAG, NO), "-gpu": (FLAG, NO), "-json": (FLAG, NO),
        "-l": (FLAG, NO), "-loc": (FLAG, NO), "-noheader": (FLAG, NO), "-o": (VALUE, NO),
        "-R": (VALUE, NO), "-rc": (FLAG, NO), "-rconly": (FLAG, NO), "-s": (FLAG, NO),
        "-w": (FLAG, NO), "-X": (FLAG, NO), "-x": (FLAG, NO),
        "-h": (FLAG, YES), "-V": (FLAG, NO),
    },
    "bpeek": {
        "-f": (FLAG, YES),
        "-J": (VALUE, NO), "-m": (VALUE, NO), "-q": (VALUE, NO),
        "-h": (FLAG, YES), "-V": (FLAG, NO),
    },
    "bwait": {
        "-r": (VALUE, NO),
        "-t": (VALUE, YES),
        "-w": (VALUE, YES),
        "-h": (FLAG, YES), "-V": (FLAG, NO),
    },
}
