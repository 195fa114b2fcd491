from qd.config import data_folder

# Timing. Each timing job reserves every core, so nothing else runs beside it and its numbers (and the
# speed claims that read them) do not depend on what the scheduler happened to run in parallel.


def all_cores(w):
    """Every core Snakemake was given, at most this machine's (1 where none is set, e.g. `--report`).

    On a cluster executor each job runs in its own allocation, so nothing trains beside a timing job
    anyway; there it asks for one CPU (Snakemake's unbounded core count would fail the submission)."""
    if not workflow.local_exec:
        return 1
    try:
        cores = workflow.cores
    except Exception:  # Snakemake raises a WorkflowError when asked without --cores
        return 1
    return max(1, min(cores, os.cpu_count() or 1))


# Every run's model as ONNX (evaluation.onnx): exported into its run folder and checked against PyTorch on
# the test set; untimed, so it runs beside training. The latency job times the ONNX models too.
ONNX = CFG["evaluation"]["onnx"]


rule onnx:
    input:
        model=RUN_DIR + "/model.qda",
        data=lambda w: str(data_file(RESULTS, w.task)),
    output:
        RUN_DIR + "/onnx.json",
    log:
        RUN_DIR + "/onnx.log",
    params:
        run=lambda w, output: str(Path(output[0]).parent),
        data=lambda w: str(data_folder(RESULTS, w.task)),
        calibration=ONNX["calibration"],
    shell:
        "qd onnx --run {params.run} --data {params.data} --calibration {params.calibration} > {log} 2>&1"


rule latency:
    input:
        models=[run_files(r, "model.qda") for r in RUNS],
        onnx=[run_files(r, "onnx.json") for r in RUNS] if ONNX["enabled"] else [],
    output:
        RESULTS + "/latency.csv",
    log:
        RESULTS + "/latency.log",
    params:
        config=CONFIG_FILE,
    threads: all_cores
    shell:
        "qd latency --config {params.config} --results " + RESULTS + " --out {output} > {log} 2>&1"


# The paper's speed claim: deep vs shallow architectures timed on this machine, once per preset.
# Its input is its own settings, a file named by content under the untracked .specs/: a fresh checkout
# of a committed record has no .specs/, so its run times the machine it runs on instead of keeping the
# record's latency_depth.csv, and changed settings time it again.
rule latency_depth:
    input:
        settings=str(spec_file(RESULTS, CFG["evaluation"]["depth_latency"])),
    output:
        RESULTS + "/latency_depth.csv",
    log:
        RESULTS + "/latency_depth.log",
    params:
        cfg=CFG["evaluation"]["depth_latency"],
    threads: all_cores
    shell:
        "qd depth-latency --out {output} --batch {params.cfg[batch_size]} --image-size {params.cfg[image_size]}"
        " --warmup {params.cfg[warmup]} --repeats {params.cfg[repeats]} --threads {params.cfg[threads]}"
        " --device {params.cfg[device]} > {log} 2>&1"
