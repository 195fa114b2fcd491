# Every student run: the baselines (fp, distill, pm), qt, qd, dq and any custom method. What a run
# reads (the teacher, a source student) comes from its spec, so a new method needs no rule.


def declared_inputs(w, input):
    """The rule's declared inputs as the command's flags (--data, and --teacher / --source where the
    run reads them): the job reads exactly the files the workflow tracks, and works out no path itself."""
    return " ".join(f"--{name} {shlex.quote(input[name])}" for name in ("data", "teacher", "source")
                    if name in input.keys())


rule student:
    input:
        unpack(run_inputs),
    output:
        metrics=RUN_DIR + "/metrics.json",
        model=RUN_DIR + "/model.qda",
        history=RUN_DIR + "/history.csv",
    log:
        RUN_DIR + "/log.txt",
    wildcard_constraints:
        model=alternatives(STUDENTS),
    params:
        spec=lambda w: SPEC_FILES[run_of(w)],
        out=lambda w, output: str(Path(output.metrics).parent),
        inputs=declared_inputs,
        launcher=run_launcher,
    threads: run_threads
    resources:
        gpu=run_gpus,
    shell:
        "{params.launcher} train --spec {params.spec} --out {params.out} {params.inputs} > {log} 2>&1"
